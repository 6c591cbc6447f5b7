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
    ("[link]\ncuts = [{ at_s = 1, duration_s = 1 }]\npasses = [{ at_s = 0, duration_s = 5 }]\n", "give cuts or passes"),
    ("[link]\npasses = [{ at_s = 0, duration_s = 5 }, { at_s = 3, duration_s = 5 }]\n",
     "link.passes[1] starts before link.passes[0] ends"),
    ("[sensor]\nframes = 2\nat_s = [1.0]\n", "sensor.at_s: one time per frame"),
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


def test_the_link_is_cut_between_passes() -> None:
    from hil.scenario import Cut, LinkSpec

    link = LinkSpec(passes=[Cut(0.0, 25.0), Cut(45.0, 25.0), Cut(90.0, 10.0)])
    assert link.pass_cuts(160.0) == [Cut(25.0, 20.0), Cut(70.0, 20.0), Cut(100.0, 60.0)]
    assert LinkSpec(passes=[Cut(5.0, 5.0)]).pass_cuts(20.0) == [Cut(0.0, 5.0), Cut(10.0, 10.0)]


def test_pass_measures_count_forecast_value_and_late_summaries() -> None:
    """The report's pass numbers from a flight computer's records: each pass's arrivals costed
    by the plan's definition against its PASS_PLANNED forecast, value by class, frames made
    known, summaries later than the next pass, products neither delivered, queued nor evicted."""
    import json
    from types import SimpleNamespace

    from firmware_bridge.cfdp.sender import transfer_wire_bytes
    from firmware_bridge.messages import Event, EventCode
    from hil.flight_computer import Arrival
    from hil.report import VALUE, RunFacts, _late_summaries, _lost_silently, _passes
    from onboard.formats.products import Product, ProductKind, json_product

    def product(kind: ProductKind, frame: int, worth: bool = True) -> Product:
        if kind == ProductKind.SUMMARY:
            return json_product(kind, frame, 0.0, {"frame": frame}, "x")
        return Product(kind=kind, frame_counter=frame, created_utc=0.0, payload=bytes(500 + frame),
                       encoding="npz", meta={"screen": {"worth_sending": worth}})

    t0 = 1000.0
    made = {0: t0 + 1, 1: t0 + 30, 2: t0 + 31}  # frame 0 in pass 0, frames 1 and 2 between passes
    arrivals = [(t0 + 5, product(ProductKind.SUMMARY, 0)), (t0 + 8, product(ProductKind.RESIDUE, 0)),
                (t0 + 50, product(ProductKind.SUMMARY, 1)), (t0 + 52, product(ProductKind.RESIDUE, 1, False)),
                (t0 + 60, product(ProductKind.QUICKLOOK, 0)), (t0 + 99, product(ProductKind.SUMMARY, 2))]
    cost = {p.name: transfer_wire_bytes(len(p.to_bytes()), p.name) for _, p in arrivals}
    forecast = cost["summary_00000001"] + cost["residue_00000001"] + cost["quicklook_00000000"]
    fc = SimpleNamespace(
        arrivals=[Arrival(p.name, t, p.sha256, None, p) for t, p in arrivals],
        events=[(t0 + 45.5, Event(EventCode.PASS_PLANNED, json.dumps({"products": 3, "bytes": forecast - 100, "names": []}))),
                (t0 + 46, Event(EventCode.SPOOL_EVICTED, "evicted cube_00000002 (cube, priority 3, 9 B)"))])
    facts = RunFacts(archive={n: None for n in [*cost, "cube_00000002", "cube_00000001", "raw_00000001"]},
                     frames_written=made, damaged=set(), boots=1, kills=0, crashes=[], exit_code=0, seconds=100.0,
                     t0=t0, passes=[(0.0, 25.0), (45.0, 70.0), (90.0, 115.0)], queued_at_end={"cube_00000001"})
    first, second, third = _passes(fc, facts)  # type: ignore[arg-type]
    assert first["forecast_products"] is None and first["received_products"] == 2
    assert first["value"] == VALUE["summary"] + VALUE["residue_clear"] and first["frames_known"] == 1
    assert second["received_bytes"] == forecast and second["forecast_bytes"] == forecast - 100
    assert second["error"] == 100 / (forecast - 100)
    assert second["value"] == VALUE["summary"] + VALUE["residue_cloudy"] + VALUE["quicklook"]
    assert second["frames_known"] == 1 and third["frames_known"] == 1
    assert _late_summaries(fc, facts) == [2]  # made at 31 s, the next pass ended at 70 s  # type: ignore[arg-type]
    delivered = set(cost)
    assert _lost_silently(fc, facts, delivered) == ["raw_00000001"]  # type: ignore[arg-type]
