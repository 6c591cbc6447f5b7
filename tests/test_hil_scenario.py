"""The scenario format: every shipped scenario loads; bad files get one clear error naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from hil.scenario import ScenarioError, load

SCENARIOS = sorted(p for p in (Path(__file__).parents[1] / "hil" / "scenarios").glob("*.toml")
                   if not p.stem.startswith("drone_"))  # MAVLink scenarios: tests/test_drone_hil.py
REQUIRED = {"nominal", "link_cut", "reboot", "corrupted_frames", "engine_fallback", "deadline",
            "command_storm"}


def test_every_required_scenario_ships_and_loads() -> None:
    loaded = {load(p).name: load(p) for p in SCENARIOS}
    assert REQUIRED <= set(loaded)
    for s in loaded.values():
        # every scenario checks something, and commands the payload to capture
        assert any(v is not None for v in vars(s.criteria).values()), s.name
        assert any(c.type == "START_CAPTURE" and c.auth == "valid" for c in s.commands), s.name


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "s.toml"
    p.write_text('name = "t"\n' + text)
    return p


@pytest.mark.parametrize("text, message", [
    ("durationn_s = 3\n", "unknown key 'durationn_s'"),
    ("duration_s = 'long'\n", "duration_s: expected float, got str"),
    ("[sensor]\nframes = 2.5\n", "sensor.frames: expected int"),
    ("[[commands]]\ntype = 'PING'\n", "missing required key 'at_s'"),
    ("[[commands]]\nat_s = 1\ntype = 'ACK'\n", "commands[0].type 'ACK' is not a telecommand"),
    ("[[commands]]\nat_s = 1\ntype = 'PING'\nauth = 'maybe'\n", "commands[0].auth 'maybe'"),
    ("[[commands]]\nat_s = 1\ntype = 'SET_MODE'\nargs = { mode = 'FAST' }\n", "args.mode"),
    ("[link]\ncuts = [{ at_s = 1, duration_s = 0 }]\n", "link.cuts[0].duration_s must be > 0"),
    ("[[power]]\nat_s = 3\nmid_transfer = true\nwait_s = -1\n", "power[0]: at_s, off_s and wait_s must be >= 0"),
    ("[[power]]\nat_s = 3\nmid_transfer = 'yes'\n", "power[0].mid_transfer: expected bool"),
    ("[criteria]\nmax_corrupt = true\n", "criteria.max_corrupt: expected int, got bool"),
    ("[faults]\ncorrupt_models = 'denoiser.fp32.onnx'\n", "faults.corrupt_models: expected a list"),
])
def test_bad_scenarios_are_refused_naming_the_key(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ScenarioError) as exc:
        load(write(tmp_path, text))
    assert message in str(exc.value)
    assert str(tmp_path / "s.toml") in str(exc.value)


def test_missing_and_invalid_files(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError, match="does not exist"):
        load(tmp_path / "nope.toml")
    (tmp_path / "bad.toml").write_text("name = \n")
    with pytest.raises(ScenarioError, match="not valid TOML"):
        load(tmp_path / "bad.toml")
    (tmp_path / "noname.toml").write_text("duration_s = 3\n")
    with pytest.raises(ScenarioError, match="missing required key 'name'"):
        load(tmp_path / "noname.toml")


def test_cli_refuses_a_bad_scenario_with_one_clear_error(tmp_path: Path) -> None:
    import subprocess
    import sys

    p = write(tmp_path, "[sensor]\nrate = 3\n")
    out = subprocess.run([sys.executable, "-m", "onboard", "hil", "run", str(p)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode != 0
    assert "sensor: unknown key 'rate'" in out.stderr and "Traceback" not in out.stderr


@pytest.mark.slow
def test_cli_exits_1_and_writes_the_report_when_a_criterion_fails(tmp_path: Path) -> None:
    """The real command: a payload that cannot start (destroyed calibration) fails the run."""
    import json
    import subprocess
    import sys

    text = (SCENARIOS[0].parent / "engine_fallback.toml").read_text()
    text = text.replace("duration_s = 40", "duration_s = 4").replace(
        "[faults]\n", "[faults]\ncorrupt_calibration = true\n")
    p = tmp_path / "broken.toml"
    p.write_text(text)
    out = subprocess.run([sys.executable, "-m", "onboard", "hil", "run", str(p), "--json",
                          str(tmp_path / "r.json"), "--work", str(tmp_path / "w")],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 1, out.stderr
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["passed"] is False and "FAIL payload_survives" in out.stdout
    # the payload said why it could not start
    assert "calibration" in (tmp_path / "w" / "engine_fallback" / "payload.log").read_text()
