"""The payload's downlink process stops promptly on SIGINT/SIGTERM while a class 2 transfer
waits for a ground that is gone (the pass ended, the link is cut for good), and the product
stays queued for the next pass.

The real process (``python -m firmware_bridge.cfdp SPOOL --port PTY``, class 2, signed
uplink, as bench/bench_plan.py starts it) serves one product through the pty link emulator
to a silent far end; the test waits until the process logs that all data is out and it waits
for the ground's confirmation, cuts the link for good, signals, and bounds the exit.
"""

from __future__ import annotations

import queue
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_downlink_link import follow

from firmware_bridge.auth import provision
from firmware_bridge.linkemu import Impairments, LinkEmulator
from firmware_bridge.spool import Spool, queued

NAME = "health_00000001"
WAITING = f"{NAME} sent, waiting for the ground's confirmation"


def wait_for_line(lines: queue.Queue[str], text: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            line = lines.get(timeout=max(deadline - time.monotonic(), 0.0))
        except queue.Empty:
            raise AssertionError(f"the payload never logged {text!r}") from None
        if not line:
            raise AssertionError(f"the payload exited before logging {text!r}")
        if text in line:
            return


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@pytest.mark.parametrize(("sig", "started_ignoring_sigint"), [
    (signal.SIGINT, False),
    (signal.SIGINT, True),  # a shell starts background commands (the bench, a service) so
    (signal.SIGTERM, False),
], ids=["sigint", "sigint-background", "sigterm"])
def test_class2_downlink_stops_on_signal_after_the_link_is_cut_for_good(
        tmp_path: Path, sig: signal.Signals, started_ignoring_sigint: bool) -> None:
    data = secrets.token_bytes(3000)
    Spool(tmp_path / "spool", 10_000_000).put(NAME, data, 5, "health")
    provision(tmp_path / "payload.key", tmp_path / "payload.counter", secrets.token_bytes(32))
    with LinkEmulator(Impairments(bytes_per_s=11520, latency_s=0.05)) as emu:
        payload = subprocess.Popen(
            [sys.executable, "-m", "firmware_bridge.cfdp", str(tmp_path / "spool"), "--port",
             emu.a_path, "--rate", "11520", "--ack-timer", "1", "--key-file",
             str(tmp_path / "payload.key"), "--counter-file", str(tmp_path / "payload.counter")],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            preexec_fn=_ignore_sigint if started_ignoring_sigint else None)
        try:
            assert payload.stderr is not None
            lines, seen = follow(payload.stderr)
            wait_for_line(lines, WAITING, timeout=60)
            emu.cut(1e9)  # the pass is over: nothing more gets through, either way
            payload.send_signal(sig)
            payload.wait(timeout=10)
        finally:
            if payload.poll() is None:
                payload.kill()
                payload.wait()
    while lines.get(timeout=10):  # the rest of the log, up to its end
        pass
    err = "".join(seen)
    assert payload.stdout is not None
    out = payload.stdout.read()
    assert payload.returncode == 128 + sig.value, err
    assert f"stopped by {sig.name}; 1 products stay queued" in err
    assert "transfers_started=1, delivered=0" in out  # the summary is printed
    entries = queued(tmp_path / "spool")  # read-only listing: the product waits for the next pass
    assert [e.name for e in entries] == [NAME]
    assert entries[0].path.read_bytes() == data


def test_downlink_stops_on_sigint_while_its_write_is_blocked(tmp_path: Path) -> None:
    """The far end stops reading (its process hung, a UART with flow control held): the link
    fills and the payload's write blocks in the port. SIGINT must cut that write short, not
    wait for the port's write timeout and die on it."""
    data = secrets.token_bytes(1_000_000)
    Spool(tmp_path / "spool", 10_000_000).put(NAME, data, 5, "health")
    provision(tmp_path / "payload.key", tmp_path / "payload.counter", secrets.token_bytes(32))
    with LinkEmulator(Impairments(bytes_per_s=1e9)) as emu:
        payload = subprocess.Popen(
            [sys.executable, "-m", "firmware_bridge.cfdp", str(tmp_path / "spool"), "--port",
             emu.a_path, "--rate", "1e9", "--key-file", str(tmp_path / "payload.key"),
             "--counter-file", str(tmp_path / "payload.counter")],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert payload.stderr is not None
            lines, seen = follow(payload.stderr)
            wait_for_line(lines, f"sending {NAME}", timeout=60)
            a_to_b = emu.stats["a_to_b"]
            deadline = time.monotonic() + 60
            while a_to_b.bytes_in - a_to_b.bytes_out < Impairments().buffer_bytes:  # link full
                assert time.monotonic() < deadline, "the link never filled"
                with pytest.raises(subprocess.TimeoutExpired):  # still running: look again
                    payload.wait(timeout=0.05)
            payload.send_signal(signal.SIGINT)
            payload.wait(timeout=5)
        finally:
            if payload.poll() is None:
                payload.kill()
                payload.wait()
    while lines.get(timeout=10):
        pass
    err = "".join(seen)
    assert payload.returncode == 130, err
    assert [e.name for e in queued(tmp_path / "spool")] == [NAME]
