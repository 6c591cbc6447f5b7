"""The payload service as flown: ``python -m onboard run --port PTY`` in a subprocess, a flight
computer (hil's emulator, pyserial) on the other end of an emulated link. Each telecommand
gets the ACK the protocol says; a commanded capture's products come down by CFDP; a clean
stop exits 0."""

from __future__ import annotations

import json
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

import pytest

from firmware_bridge.auth import load_key, provision
from firmware_bridge.linkemu import Impairments, LinkEmulator
from firmware_bridge.messages import EventCode, Message, ResultCode
from hil.flight_computer import FlightComputer
from hil.sensor import make_frames
from onboard.sources.replay import write_frame

RATE = 115200.0  # bytes/s: 10x a 115200 baud UART, to keep the test short


def wait_for(fc: FlightComputer, what, timeout: float = 20.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        fc.poll(0.05)
        got = what()
        if got:
            return got
    raise AssertionError(f"timed out waiting for {what.__doc__ or what}")


def command(fc: FlightComputer, type_name: str, args: dict | Message | None = None, kind: str = "valid"):
    """Send a telecommand (``args``: the builder's, or the message itself, e.g. one whose body no
    builder would make) and wait for its ACK's result."""
    cmd = fc.send_message(type_name, args, kind) if isinstance(args, Message) else fc.send(type_name, args or {}, kind)
    wait_for(fc, lambda: cmd.result is not None)
    return cmd.result


@contextmanager
def running_payload(tmp_path: Path, mission: str | Callable[[Path], str] = "", replay: bool = True):
    """The payload on an emulated link, ``mission`` added to its mission file (a function: called
    with the folder before the payload starts, to leave an archive there, and returns what to
    add); frames from the drop folder ``tmp_path/drop`` with ``replay``, else from its simulator."""
    secret = secrets.token_bytes(32)
    provision(tmp_path / "payload.key", tmp_path / "counter.json", secret)
    provision(tmp_path / "fc.key", tmp_path / "fc-counter.json", secret)
    emu = LinkEmulator(Impairments(RATE, buffer_bytes=32768)).start()
    (tmp_path / "mission.toml").write_text(
        "[products]\ncube = false\n[link]\n"
        f'key_file = "{tmp_path / "payload.key"}"\ncounter_file = "{tmp_path / "counter.json"}"\n'
        f"rate_bytes_per_s = {RATE}\ntelemetry_period_s = 0.5\nack_timer_s = 1.0\n"
        + (mission(tmp_path) if callable(mission) else mission))
    proc = subprocess.Popen(
        [sys.executable, "-m", "onboard", "run", "--port", emu.a_path, "--config",
         str(tmp_path / "mission.toml"), *(["--replay", str(tmp_path / "drop")] if replay else []),
         "--out", str(tmp_path / "out"), "--quiet", "--json", str(tmp_path / "summary.json")],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    fc = FlightComputer.open(emu.b_path, RATE, load_key(tmp_path / "fc.key"),
                             tmp_path / "fc-counter.json", tmp_path / "staging", ack_timer_s=1.0)
    try:
        wait_for(fc, lambda: fc.events, timeout=60)  # "payload up"
        yield fc, proc, tmp_path
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        fc.close()
        emu.stop()


@pytest.fixture
def payload(tmp_path: Path, request):
    """The payload on an emulated link; ``request.param`` (indirect parametrisation), if any, is
    :func:`running_payload`'s ``mission``."""
    with running_payload(tmp_path, getattr(request, "param", "")) as running:
        yield running


def test_commands_capture_downlink_and_clean_stop(payload) -> None:
    fc, proc, tmp = payload
    assert command(fc, "PING", kind="none") == ResultCode.OK
    assert command(fc, "SET_MODE", {"mode": "OPERATE"}, kind="none") == ResultCode.NOT_AUTHENTICATED
    assert command(fc, "SET_MODE", {"mode": "OPERATE"}, kind="forged") == ResultCode.BAD_AUTH
    assert command(fc, "START_CAPTURE", {"frame_count": 1}) == ResultCode.BUSY  # still IDLE
    assert command(fc, "SET_MODE", {"mode": "OPERATE"}) == ResultCode.OK
    # the handler's event follows the command's ACK (PROTOCOL.md section 4)
    (t_event,) = wait_for(fc, lambda: [t for t, e in fc.events if "IDLE -> OPERATE" in e.text])
    assert t_event >= fc.commands[-1].acked_at
    assert command(fc, "SET_CONFIG", {"key": "run.bogus", "value": "1"}) == ResultCode.BAD_ARGUMENT
    assert command(fc, "SET_CONFIG", {"key": "run.deadline_s", "value": "-1"}) == ResultCode.BAD_ARGUMENT
    for not_finite in ("inf", "nan", "-inf"):  # an infinite deadline would turn the guard off
        assert command(fc, "SET_CONFIG", {"key": "run.deadline_s", "value": not_finite}) == ResultCode.BAD_ARGUMENT
    assert command(fc, "SET_CONFIG", {"key": "run.deadline_s", "value": "30"}) == ResultCode.OK  # roomy: no degradation drops the quick-look counted below
    assert command(fc, "REQUEST_PRODUCT", {"name": "residue_00000000"}) == ResultCode.BAD_ARGUMENT
    assert command(fc, "STOP_CAPTURE", kind="replay") == ResultCode.REPLAY

    (frame,) = make_frames({}, 1)
    write_frame(tmp / "drop", frame)
    assert command(fc, "START_CAPTURE", {"frame_count": 1}) == ResultCode.OK
    assert command(fc, "START_CAPTURE", {"frame_count": 1}) in (ResultCode.BUSY, ResultCode.OK)

    def residue_down():
        return [a for a in fc.arrivals if a.name == "residue_00000000"]

    (arrival,) = wait_for(fc, residue_down, timeout=60)
    archived = (tmp / "out" / "products" / "residue_00000000.obp").read_bytes()
    assert arrival.sha256 is not None and arrival.error is None
    assert arrival.product.to_bytes() == archived  # bit-exact on the ground
    # the ground asks for it again: it comes down a second time. Asked before the payload has
    # taken the ground's Finished PDU in, the request finds it still queued and is a no-op.
    wait_for(fc, lambda: [e for _, e in fc.events if e.text.startswith("delivered residue_00000000")])
    assert command(fc, "REQUEST_PRODUCT", {"name": "residue_00000000"}) == ResultCode.OK
    wait_for(fc, lambda: len(residue_down()) == 2, timeout=30)

    codes = {e.code for _, e in fc.events}
    assert {EventCode.MODE_CHANGED, EventCode.CONFIG_CHANGED, EventCode.CAPTURE_STARTED,
            EventCode.CAPTURE_STOPPED, EventCode.AUTH_FAILED, EventCode.PRODUCT_QUEUED,
            EventCode.PRODUCT_DELIVERED} <= codes
    # HEALTH is periodic: wait for one sent after the re-request was spooled
    (health,) = wait_for(fc, lambda: [h for _, h in fc.health[-1:] if h["products_spooled"] >= 3], timeout=10)
    assert health["mode"] == "OPERATE" and health["frames"] == 1  # residue, quick-look, re-request

    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0, proc.stdout.read().decode()
    summary = json.loads((tmp / "summary.json").read_text())
    assert summary["commands"]["OK"] >= 5 and summary["commands"]["BAD_AUTH"] == 1
    # the ground's CFDP PDUs went up signed, and every one was accepted
    assert summary["uplink_data"]["OK"] >= 4 and set(summary["uplink_data"]) == {"OK"}


@pytest.mark.parametrize("payload", ["[screen]\nmax_cloud_share = 0.0\n"], indirect=True)
def test_a_frame_not_worth_sending_sends_its_residue_and_its_event_only(payload) -> None:
    """Under a rule no frame passes (cloud share under 0 %), a captured frame's residue map and
    its event ("not worth sending", naming the quick-look) and its summary come down; the
    quick-look is archived on board and never queued: the spool drains with three products."""
    fc, proc, tmp = payload
    assert command(fc, "SET_MODE", {"mode": "OPERATE"}) == ResultCode.OK
    assert command(fc, "SET_CONFIG", {"key": "run.deadline_s", "value": "30"}) == ResultCode.OK
    (frame,) = make_frames({}, 1)
    write_frame(tmp / "drop", frame)
    assert command(fc, "START_CAPTURE", {"frame_count": 1}) == ResultCode.OK
    for name in ("residue_00000000", "event_00000000", "summary_00000000"):
        wait_for(fc, lambda name=name: [a for a in fc.arrivals if a.name == name], timeout=60)
    (event,) = [a for a in fc.arrivals if a.name == "event_00000000"]
    assert b"not worth sending" in event.product.payload and b"quicklook" in event.product.payload
    wait_for(fc, lambda: [h for _, h in fc.health[-1:] if h["spool_bytes"] == 0], timeout=20)
    assert fc.health[-1][1]["products_spooled"] == 3
    assert (tmp / "out" / "products" / "quicklook_00000000.obp").is_file()
    assert not [a for a in fc.arrivals if a.name.startswith("quicklook")]
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0, proc.stdout.read().decode()


def test_passes_by_telecommand_hold_the_downlink_until_a_pass_opens_with_its_forecast(payload) -> None:
    """SET_PASSES (authenticated) replaces the contact plan: overlapping passes are refused
    with an event saying why; with a pass only tomorrow a captured frame's products stay
    queued; a pass opening now starts with a PASS_PLANNED event whose forecast products all
    come down, in the forecast's order."""
    fc, proc, tmp = payload
    assert command(fc, "SET_MODE", {"mode": "OPERATE"}) == ResultCode.OK
    assert command(fc, "SET_CONFIG", {"key": "run.deadline_s", "value": "30"}) == ResultCode.OK
    overlapping = [{"in_s": 100, "for_s": 60, "rate_bit_s": 9600}, {"in_s": 130, "for_s": 60, "rate_bit_s": 9600}]
    assert command(fc, "SET_PASSES", {"passes": overlapping}) == ResultCode.BAD_ARGUMENT
    wait_for(fc, lambda: [e for _, e in fc.events if "overlaps" in e.text])
    assert command(fc, "SET_PASSES", {"passes": overlapping}, kind="none") == ResultCode.NOT_AUTHENTICATED
    tomorrow = [{"in_s": 86_400, "for_s": 600, "rate_bit_s": 9600}]
    assert command(fc, "SET_PASSES", {"passes": tomorrow}) == ResultCode.OK
    kept = json.loads((tmp / "out" / "contact_plan.json").read_text())
    assert len(kept) == 1 and 599 <= kept[0][1] - kept[0][0] <= 600 and kept[0][2] == 9600  # whole seconds inside
    (frame,) = make_frames({}, 1)
    write_frame(tmp / "drop", frame)
    assert command(fc, "START_CAPTURE", {"frame_count": 1}) == ResultCode.OK
    wait_for(fc, lambda: (tmp / "out" / "frames" / "frame_00000000.json").is_file(), timeout=60)
    wait_for(fc, lambda: [h for _, h in fc.health[-1:] if h["spool_products"] >= 2], timeout=20)
    assert fc.arrivals == [] and not [e for _, e in fc.events if e.code == EventCode.PASS_PLANNED]
    assert command(fc, "SET_PASSES", {"passes": [{"in_s": -1, "for_s": 300, "rate_bit_s": 9600}]}) == ResultCode.OK
    (planned,) = wait_for(fc, lambda: [json.loads(e.text) for _, e in fc.events if e.code == EventCode.PASS_PLANNED])
    assert planned["rate_bit_s"] == 9600 and "residue_00000000" in planned["names"]
    assert planned["products"] == len(planned["names"]) >= 2 and planned["bytes"] > 0
    wait_for(fc, lambda: {a.name for a in fc.arrivals} >= set(planned["names"]), timeout=60)
    assert [a.name for a in fc.arrivals][: len(planned["names"])] == planned["names"]
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0, proc.stdout.read().decode()


def test_a_key_file_readable_by_others_is_refused_before_the_link_opens(tmp_path: Path) -> None:
    key = tmp_path / "k.key"
    key.write_text(secrets.token_hex(32))
    key.chmod(0o644)
    (tmp_path / "m.toml").write_text(
        f'[link]\nkey_file = "{key}"\ncounter_file = "{tmp_path / "c.json"}"\n')
    out = subprocess.run(
        [sys.executable, "-m", "onboard", "run", "--port", "loop://", "--config",
         str(tmp_path / "m.toml"), "--out", str(tmp_path / "out"), "--quiet"],
        capture_output=True, text=True, timeout=60)
    assert out.returncode != 0
    assert f"chmod 600 {key}" in out.stderr and "cannot start the payload service" in out.stderr


@pytest.mark.slow
def test_the_payload_survives_a_full_disk_and_drains_after_a_restart_on_it(tmp_path: Path) -> None:
    """bench/bench_disk_full.py, shortened: the real payload with its output on a 3 MB tmpfs
    (1 MB spool quota) for 40 frames, then restarted with 0 bytes free."""
    import os

    if os.geteuid() != 0:
        pytest.skip("the disk-full soak mounts a tmpfs: that needs root")
    bench = Path(__file__).parents[1] / "bench" / "bench_disk_full.py"
    out = tmp_path / "soak.json"
    done = subprocess.run([sys.executable, str(bench), "--frames", "40", "--fs-mb", "3",
                           "--quota-mb", "1", "--json", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert out.exists(), done.stdout[-3000:] + done.stderr[-3000:]
    res = json.loads(out.read_text())
    assert res["first_run_exit"] == 0 and res["second_run_exit"] == 0  # never died
    assert res["queued_not_delivered_without_event"] == []
    assert res["not_bit_exact"] == [] and res["ground_errors"] == []
    assert res["archive_shed"] > 0  # the disk did fill: the archive went first
    assert res["free_at_restart_b"] == 0 and res["delivered_after_restart"] > 0
    assert done.returncode == 0
