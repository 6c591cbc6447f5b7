"""The shipped HIL scenarios, run as CI runs them (compressed time), and proof that each can
fail: the same scenario with its fault made worse than the system can handle fails on the
criterion that guards it.

Each run starts the real payload process (``python -m onboard run --port``) behind an
emulated link on pseudo-terminals. The shipped set takes about 2.5 minutes on 2 cores, the
failing variants about 1.5 minutes; both are marked slow.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import tomllib

from hil.runner import Runner
from hil.scenario import from_dict

SCENARIOS = Path(__file__).parents[1] / "hil" / "scenarios"


def run(name: str, change=None, duration_s: float | None = None) -> dict:
    doc = tomllib.loads((SCENARIOS / f"{name}.toml").read_text())
    if change is not None:
        change(doc)
    if duration_s is not None:
        doc["duration_s"] = duration_s
    return Runner(from_dict(doc, name)).run()


def failed(report: dict) -> set[str]:
    return {r["criterion"] for r in report["criteria"] if not r["passed"]}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(p.stem for p in SCENARIOS.glob("*.toml") if not p.stem.startswith("drone_")))
def test_shipped_scenario_passes(name: str) -> None:
    report = run(name)
    assert report["passed"], [r for r in report["criteria"] if not r["passed"]]
    if name == "reboot":  # the power cut did hit a transfer, as the scenario means
        assert report["measures"]["payload"]["cuts_mid_transfer"] == 1


def _link(**kw):
    return lambda doc: doc["link"].update(kw)


@pytest.mark.slow
@pytest.mark.parametrize("name, change, duration_s, guard", [
    # a link 60x slower than the scenario was sized for: products do not all make it down
    ("nominal", _link(bytes_per_s=2000.0), 10, {"all_products_delivered", "max_latency_p95_s"}),
    # the link comes back only after the scenario has ended
    ("link_cut", _link(cuts=[{"at_s": 1.5, "duration_s": 100.0}]), 10,
     {"all_products_delivered"}),
    # power never comes back
    ("reboot", lambda d: d["power"][0].update(off_s=100.0), 10, {"all_products_delivered"}),
    # a link so noisy that no frame survives: the damaged frames' events never arrive
    ("corrupted_frames", _link(bit_error_rate=2e-3), 10, {"damaged_frames_reported"}),
    # frames 10x faster, on a link 1/40 as fast: more than the degraded loop and the
    # link can carry, so products pile up on board
    ("deadline", lambda d: (d["sensor"].update(frames=30, rate_hz=20.0),
                            d["link"].update(bytes_per_s=3000.0)), 15,
     {"all_products_delivered"}),
    # the attacker holds the key: its command is indistinguishable and is executed
    ("command_storm", lambda d: d["commands"].append(
        {"at_s": 0.6, "type": "SET_CONFIG", "auth": "leaked",
         "args": {"key": "run.deadline_s", "value": "9"}}), None, {"max_bad_commands_accepted"}),
    # the payload is not told the passes: no forecast opens a pass, and it starts transfers
    # that the end of a pass cuts
    ("passes", lambda d: d["link"].update(announce_passes=False), 60, {"max_forecast_error"}),
    # the calibration is destroyed as well: the payload cannot fly at all
    ("engine_fallback", lambda d: d["faults"].update(corrupt_calibration=True), 6,
     {"payload_survives", "all_products_delivered", "engine_in_use"}),
])
def test_a_worse_fault_makes_the_scenario_fail(name, change, duration_s, guard) -> None:
    report = run(name, change, duration_s)
    assert not report["passed"]
    assert guard <= failed(report), report["criteria"]


@pytest.mark.slow
def test_real_hardware_mode_drives_a_payload_on_a_serial_port(tmp_path: Path) -> None:
    """``--port``: the flight computer emulator opens a serial device with a payload computer
    behind it (here a payload process on the far side of an emulated link, standing in for
    the hardware) with the flight computer's own key and counter files."""
    import secrets
    import signal
    import subprocess
    import sys

    from firmware_bridge.auth import provision
    from firmware_bridge.linkemu import Impairments, LinkEmulator

    secret = secrets.token_bytes(32)
    provision(tmp_path / "payload.key", tmp_path / "pc.json", secret)
    provision(tmp_path / "fc.key", tmp_path / "fc.json", secret)
    (tmp_path / "m.toml").write_text(
        f'[link]\nkey_file = "{tmp_path / "payload.key"}"\n'
        f'counter_file = "{tmp_path / "pc.json"}"\nrate_bytes_per_s = 115200.0\n'
        "telemetry_period_s = 0.5\n")
    scenario = from_dict({
        "name": "hardware", "duration_s": 60, "link": {"bytes_per_s": 115200.0},
        "commands": [{"at_s": 0.5, "type": "SET_MODE", "args": {"mode": "OPERATE"}},
                     {"at_s": 0.7, "type": "START_CAPTURE", "args": {"frame_count": 2}},
                     {"at_s": 1.0, "type": "SET_MODE", "args": {"mode": "SAFE"}, "auth": "forged"}],
        "criteria": {"residue_every_frame": True, "valid_commands_accepted": True,
                     "max_bad_commands_accepted": 0, "max_corrupt": 0}})
    with LinkEmulator(Impairments(115200.0, buffer_bytes=32768)) as emu:
        proc = subprocess.Popen([sys.executable, "-m", "onboard", "run", "--port", emu.a_path,
                                 "--config", str(tmp_path / "m.toml"), "--out",
                                 str(tmp_path / "out"), "--quiet"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            report = Runner(scenario, tmp_path / "work", port=emu.b_path,
                            key_file=tmp_path / "fc.key", counter_file=tmp_path / "fc.json").run()
        finally:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(30) == 0
    assert report["passed"], report["criteria"]
    m = report["measures"]
    assert m["products_expected"] is None  # the archive is on the payload computer
    assert m["frames_written"] == 2 and m["frames_with_residue"] == 2
    assert m["seconds"] < 50  # ended when the capture was down, not at the time limit
