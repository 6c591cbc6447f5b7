"""The link emulator's impairments, checked on byte counts with explicit times (no clocks)."""

from __future__ import annotations

import math
import os
import random
import signal
import subprocess
import sys

import pytest

from firmware_bridge.framing import Frame, encode
from firmware_bridge.link import UNPACED, Link
from firmware_bridge.linkemu import Channel, Impairments
from firmware_bridge.messages import Ping


@pytest.fixture
def pipe():
    r, w = os.pipe()
    os.set_blocking(w, False)
    yield r, w
    os.close(r)
    os.close(w)


def _channel(pipe, seed: int = 0, cuts=None, **imp) -> Channel:
    return Channel(-1, pipe[1], Impairments(**imp), random.Random(seed), cuts or [])


def test_bit_error_rate_matches_within_statistics(pipe) -> None:
    ch = _channel(pipe, bit_error_rate=1e-3)
    data = bytes(range(1, 256)) * 4000  # ~1 Mbit, no delimiters
    ch.ingest(data, 0.0)
    expected = 8 * len(data) * 1e-3
    assert abs(ch.stats.bits_flipped - expected) < 5 * math.sqrt(expected)
    delivered = b"".join(bytes(p) for _, p in ch.queue)
    flipped = sum(bin(a ^ b).count("1") for a, b in zip(data, delivered, strict=True))
    assert flipped == ch.stats.bits_flipped


def test_frame_drops_are_whole_frames(pipe) -> None:
    ch = _channel(pipe, seed=5, frame_drop=0.02)
    frames = [
        encode(Frame(0x80, i % 65536, i.to_bytes(4, "big") + b"\x01" * 20)) for i in range(5000)
    ]
    ch.ingest(b"".join(frames), 0.0)
    delivered = b"".join(bytes(p) for _, p in ch.queue)
    kept = delivered.split(b"\x00")[:-1]
    assert len(kept) + ch.stats.frames_dropped == len(frames)
    assert set(kept) <= {f[:-1] for f in frames}  # every kept frame whole and unchanged
    assert abs(ch.stats.frames_dropped - 100) < 5 * math.sqrt(100)


def test_throttle_and_latency_schedule(pipe) -> None:
    ch = _channel(pipe, bytes_per_s=1000.0, latency_s=0.25)
    ch.ingest(b"\x01" * 500, 10.0)
    ch.ingest(b"\x02" * 500, 10.1)  # queued behind the first 500 bytes
    assert ch.queue[-1][0] == pytest.approx(10.0 + 1000 / 1000.0 + 0.25)
    ch.deliver(10.5)
    assert ch.stats.bytes_out == 192  # three 64-byte pieces due by t = 10.5
    ch.deliver(12.0)
    assert ch.stats.bytes_out == 1000 and ch.backlog == 0
    assert os.read(pipe[0], 2000) == b"\x01" * 500 + b"\x02" * 500


def test_cut_loses_the_bytes_on_air_to_the_byte(pipe) -> None:
    ch = _channel(pipe, cuts=[(5.0, 5.010)], bytes_per_s=1000.0)
    ch.ingest(bytes(range(1, 31)), 4.995)  # byte k is on the air at 4.995 + k ms
    assert ch.stats.bytes_cut == 10
    delivered = b"".join(bytes(p) for _, p in ch.queue)
    assert delivered == bytes(range(1, 6)) + bytes(range(16, 31))
    assert ch.wire_free_at == pytest.approx(4.995 + 0.030)  # the cut bytes took air time


def test_dropped_frames_take_air_time(pipe) -> None:
    ch = _channel(pipe, frame_drop=1.0, bytes_per_s=1000.0)
    ch.ingest(b"\x05" * 99 + b"\x00", 0.0)
    assert not ch.queue and ch.stats.bytes_dropped == 100
    assert ch.wire_free_at == pytest.approx(0.1)


def test_invalid_impairments_refused() -> None:
    with pytest.raises(ValueError):
        Impairments(bit_error_rate=1.5)
    with pytest.raises(ValueError):
        Impairments(bytes_per_s=0)


def test_command_line_emulator_joins_two_ports() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "firmware_bridge.linkemu", "--rate", "100000"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        a = proc.stdout.readline().split(": ")[1].strip()
        b = proc.stdout.readline().split(": ")[1].strip()
        with Link.open(a, rate=UNPACED) as end_a, Link.open(b, rate=UNPACED) as end_b:
            sent = end_a.send(Ping())
            assert end_b.receive(5.0) == sent
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=10)
    assert proc.returncode == 0 and "a_to_b DirectionStats(bytes_in=" in out


def test_command_line_emulator_stops_on_sigint_even_if_started_ignoring_it() -> None:
    """A shell starts background commands with SIGINT ignored; the tool still stops on it
    (and on SIGTERM) and prints its summary."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        proc = subprocess.Popen(
            [sys.executable, "-m", "firmware_bridge.linkemu"], stdout=subprocess.PIPE, text=True,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
        assert proc.stdout is not None
        assert proc.stdout.readline().startswith("end A: ")
        proc.stdout.readline()
        proc.stdout.readline()
        proc.send_signal(sig)
        out, _ = proc.communicate(timeout=10)
        assert proc.returncode == 0 and "a_to_b DirectionStats(bytes_in=" in out, out
