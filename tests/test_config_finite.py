"""Non-finite numbers in TOML (issue 11 section 5): TOML allows ``nan`` and ``inf``, NaN passes
every ``<= 0`` range check, so each float key refuses them by name, in the mission file, in
command-line overrides and in HIL scenarios (the same check_scalar)."""

from __future__ import annotations

import dataclasses
import math
import os
import subprocess
import sys
import typing
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hil.scenario import ScenarioError
from hil.scenario import from_dict as scenario_from_dict
from hil.scenario import load as load_scenario
from onboard import config
from onboard.config import Config, ConfigError

#: Every float key of the mission file, as "section.key".
FLOAT_KEYS = [f"{s.name}.{k}" for s in dataclasses.fields(Config)
              for k, hint in typing.get_type_hints(s.default_factory).items()  # type: ignore[arg-type]
              if hint is float or typing.get_args(hint)[:1] == (float,)]


def test_the_reported_keys_are_among_the_checked_ones() -> None:
    assert {"run.deadline_s", "link.telemetry_period_s", "link.spool_quota_mb",
            "run.health_period_s", "link.rate_bytes_per_s", "imspoc.exposure_s"} <= set(FLOAT_KEYS)


@pytest.mark.parametrize("value", ["nan", "+inf", "-inf", "-nan"])
@pytest.mark.parametrize("key", FLOAT_KEYS)
def test_non_finite_float_is_refused_naming_the_key(tmp_path: Path, key: str, value: str) -> None:
    section, name = key.split(".")
    p = tmp_path / "m.toml"
    p.write_text(f"[{section}]\n{name} = {value}\n")
    with pytest.raises(ConfigError, match=rf"\[{section}\] {name}: expected a finite float, got -?(nan|inf)"):
        config.load(p)


def test_override_refuses_nan_too() -> None:
    c = config.load(None)
    with pytest.raises(ConfigError, match=r"\[run\] deadline_s: expected a finite float"):
        config.override(c, "run", "deadline_s", float("nan"))
    config.override(c, "run", "deadline_s", 0.5)
    assert c.run.deadline_s == 0.5


def test_finite_floats_and_ints_still_load(tmp_path: Path) -> None:
    p = tmp_path / "m.toml"
    p.write_text("[run]\ndeadline_s = 1e300\nhealth_period_s = 3\n[link]\nspool_quota_mb = 0.5\n")
    c = config.load(p)
    assert (c.run.deadline_s, c.run.health_period_s, c.link.spool_quota_mb) == (1e300, 3.0, 0.5)
    assert isinstance(c.run.health_period_s, float)


@pytest.mark.parametrize("text,where", [
    ("duration_s = nan\n", "duration_s"),
    ("[sensor]\nrate_hz = inf\n", "sensor.rate_hz"),
    ("[link]\nbit_error_rate = nan\n", "link.bit_error_rate"),
    ("[[commands]]\nat_s = nan\ntype = \"PING\"\n", r"commands\[0\].at_s"),
    ("[criteria]\nmax_latency_p95_s = nan\n", "criteria.max_latency_p95_s"),
])
def test_scenario_refuses_non_finite_numbers(tmp_path: Path, text: str, where: str) -> None:
    p = tmp_path / "s.toml"
    p.write_text('name = "t"\n' + text)
    with pytest.raises(ScenarioError, match=rf"{where}: expected a finite float"):
        load_scenario(p)


def test_cli_refuses_nan_deadline_in_one_line(tmp_path: Path) -> None:
    """`deadline_s = nan` used to turn the deadline guard off silently."""
    p = tmp_path / "m.toml"
    p.write_text("[run]\ndeadline_s = nan\n")
    proc = subprocess.run([sys.executable, "-m", "onboard", "run", "--config", str(p), "--frames", "1",
                           "--out", str(tmp_path / "o")], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")})
    assert proc.returncode != 0
    assert "[run] deadline_s: expected a finite float, got nan" in proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "o" / "products").exists()


_ALL_KEYS = [(s.name, k) for s in dataclasses.fields(Config)
             for k in typing.get_type_hints(s.default_factory)]  # type: ignore[arg-type]
_VALUES = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-2**70, 2**70), st.booleans(),
                    st.text(max_size=8), st.none(), st.lists(st.integers(), max_size=2),
                    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.lists(st.tuples(st.sampled_from(_ALL_KEYS), _VALUES), min_size=1, max_size=4))
def test_fuzzed_mission_tables_load_or_raise_config_error(items: list) -> None:
    """Any value of any type at any key: a Config whose floats are all finite, or ConfigError."""
    data: dict = {}
    for (section, key), value in items:
        data.setdefault(section, {})[key] = value
    try:
        c = config.from_dict(data)
    except ConfigError:
        return
    for section in dataclasses.fields(c):
        for v in vars(getattr(c, section.name)).values():
            assert not isinstance(v, float) or math.isfinite(v)


@settings(max_examples=200, deadline=None, derandomize=True)
@given(st.dictionaries(st.sampled_from(["duration_s", "seed", "description", "sensor", "link", "criteria"]),
                       _VALUES, max_size=3))
def test_fuzzed_scenarios_load_or_raise_scenario_error(data: dict) -> None:
    try:
        scenario_from_dict({"name": "t", **data})
    except ScenarioError:
        pass
