"""A serial link emulator between two pseudo-terminal pairs, for tests and the HIL harness.

Each end opens one pty path with pyserial (``emu.a_path``, ``emu.b_path``) as it would open
a UART. A thread forwards bytes between the two pty masters, in each direction:

* at a byte rate (a pty ignores the baud rate and a writer blocks past ~16 KiB of unread
  data, so the emulator throttles itself) with a bounded buffer: past ``buffer_bytes`` of
  backlog it stops reading, and the writer feels back-pressure as from a real UART;
* after a fixed latency;
* flipping bits at a bit error rate (independent errors, positions drawn from the
  geometric distribution, so the pattern depends on the seed and the byte count only);
* dropping whole frames (runs of bytes up to and including a 0x00 delimiter) with a given
  probability;
* losing every byte on the air while the link is cut (``cut(duration_s, after_s)``), to
  the byte, so frames straddling the cut's edges arrive truncated as they would by radio.
  Dropped and cut bytes still take their air time.

The emulator keeps its own descriptor on each pty slave, so an end may close and reopen
its port (or be killed and restarted) without the emulator seeing an error.

Run ``python -m firmware_bridge.linkemu --help`` to use it from a shell.
"""

from __future__ import annotations

import math
import os
import random
import select
import sys
import threading
import time
import tty
from collections import deque
from dataclasses import dataclass, field

import click

from firmware_bridge.stopping import stop_on_signals

#: Largest piece delivered at once; smaller pieces make the throttled delivery smoother.
PIECE = 64


@dataclass(frozen=True)
class Impairments:
    """What one direction of the link does to the bytes. ``bytes_per_s`` inf: no throttle."""

    bytes_per_s: float = 11520.0
    latency_s: float = 0.0
    bit_error_rate: float = 0.0
    frame_drop: float = 0.0
    buffer_bytes: int = 4096

    def __post_init__(self) -> None:
        if not self.bytes_per_s > 0:
            raise ValueError(f"bytes_per_s must be > 0, got {self.bytes_per_s}")
        if not 0 <= self.bit_error_rate < 1 or not 0 <= self.frame_drop <= 1:
            raise ValueError("bit_error_rate must be in [0, 1) and frame_drop in [0, 1]")
        if self.latency_s < 0 or self.buffer_bytes < 1:
            raise ValueError("latency_s must be >= 0 and buffer_bytes >= 1")


@dataclass
class DirectionStats:
    """Byte and fault counts for one direction."""

    bytes_in: int = 0
    bytes_out: int = 0
    bits_flipped: int = 0
    frames_dropped: int = 0
    bytes_dropped: int = 0
    bytes_cut: int = 0


@dataclass(eq=False)
class Channel:
    """One direction of the link: applies the impairments to bytes read from ``src`` and
    delivers them to ``dst`` when their time comes (``ingest``/``deliver`` take the time)."""

    src: int
    dst: int
    imp: Impairments
    rng: random.Random
    cuts: list[tuple[float, float]]
    stats: DirectionStats = field(default_factory=DirectionStats)
    queue: deque[tuple[float, bytearray]] = field(default_factory=deque)
    backlog: int = 0
    wire_free_at: float = 0.0
    frame_start: bool = True
    dropping: bool = False
    bits_to_next_error: int = 0

    def __post_init__(self) -> None:
        self.bits_to_next_error = self._draw_gap()

    def _draw_gap(self) -> int:
        """Error-free bits before the next error (geometric distribution)."""
        p = self.imp.bit_error_rate
        if p == 0:
            return 1 << 62
        return int(math.log(1.0 - self.rng.random()) / math.log1p(-p))

    def ingest(self, data: bytes, now: float) -> None:
        """Take bytes the sender wrote at ``now``: put them on the wire after what is
        already there, drop frames, flip bits, lose what is on the air during a cut, and
        queue the rest for delivery after the latency."""
        self.stats.bytes_in += len(data)
        pos = 0
        while pos < len(data):
            if self.frame_start and data[pos] == 0:  # a lone delimiter (sync flush)
                stop, drop = pos + 1, False
            else:
                if self.frame_start:
                    self.dropping = self.rng.random() < self.imp.frame_drop
                    self.stats.frames_dropped += self.dropping
                end = data.find(0, pos)
                stop, drop = (len(data) if end < 0 else end + 1), self.dropping
                self.frame_start = end >= 0
            self._transmit(bytearray(data[pos:stop]), now, drop)
            pos = stop

    def _transmit(self, segment: bytearray, now: float, drop: bool) -> None:
        """Send ``segment`` on the wire (it takes air time even when it is lost)."""
        if drop:
            self.stats.bytes_dropped += len(segment)
        else:
            self._flip_bits(segment)
        rate = self.imp.bytes_per_s
        for i in range(0, len(segment), PIECE):
            piece = segment[i : i + PIECE]
            start = max(now, self.wire_free_at)
            self.wire_free_at = start + len(piece) / rate
            if drop:
                continue
            if any(a < self.wire_free_at and start < b for a, b in self.cuts):
                on_air = [start + k / rate for k in range(len(piece))]
                piece = bytearray(
                    byte
                    for byte, t in zip(piece, on_air, strict=True)
                    if not any(a <= t < b for a, b in self.cuts)
                )
                self.stats.bytes_cut += len(on_air) - len(piece)
            if piece:
                self.queue.append((self.wire_free_at + self.imp.latency_s, piece))
                self.backlog += len(piece)

    def _flip_bits(self, buf: bytearray) -> None:
        nbits = 8 * len(buf)
        pos = self.bits_to_next_error
        while pos < nbits:
            buf[pos // 8] ^= 0x80 >> (pos % 8)
            self.stats.bits_flipped += 1
            pos += 1 + self._draw_gap()
        self.bits_to_next_error = pos - nbits

    def deliver(self, now: float) -> bool:
        """Write the bytes whose time has come; True if the far end's pty is full."""
        while self.queue and self.queue[0][0] <= now:
            piece = self.queue[0][1]
            try:
                n = os.write(self.dst, piece)
            except BlockingIOError:
                return True  # the far end is not reading: keep the bytes, back-pressure builds
            self.stats.bytes_out += n
            self.backlog -= n
            if n < len(piece):
                del piece[:n]
                return True
            self.queue.popleft()
        return False

    def next_due(self) -> float | None:
        return self.queue[0][0] if self.queue else None


class LinkEmulator:
    """Two pty pairs joined by an impaired link. End A opens ``a_path``, end B ``b_path``."""

    def __init__(
        self,
        a_to_b: Impairments | None = None,
        b_to_a: Impairments | None = None,
        seed: int = 0,
    ) -> None:
        self._fds: list[int] = []
        ma, sa = self._pty()
        mb, sb = self._pty()
        self.a_path = os.ttyname(sa)
        self.b_path = os.ttyname(sb)
        self._cuts: list[tuple[float, float]] = []
        rng = random.Random(seed)
        a_to_b = a_to_b or Impairments()
        self._dirs = {
            "a_to_b": Channel(ma, mb, a_to_b, random.Random(rng.random()), self._cuts),
            "b_to_a": Channel(mb, ma, b_to_a or a_to_b, random.Random(rng.random()), self._cuts),
        }
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None

    def _pty(self) -> tuple[int, int]:
        master, slave = os.openpty()
        tty.setraw(slave)  # no echo, no CR/LF translation before the end configures the port
        os.set_blocking(master, False)
        self._fds += [master, slave]
        return master, slave

    @property
    def stats(self) -> dict[str, DirectionStats]:
        return {name: d.stats for name, d in self._dirs.items()}

    def cut(self, duration_s: float, after_s: float = 0.0) -> None:
        """Cut the link (both directions) for ``duration_s``, starting ``after_s`` from now."""
        start = time.monotonic() + after_s
        self._cuts.append((start, start + duration_s))

    def start(self) -> LinkEmulator:
        self._thread = threading.Thread(target=self._run, name="linkemu", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        for fd in self._fds:
            os.close(fd)
        self._fds.clear()

    def __enter__(self) -> LinkEmulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                now = time.monotonic()
                blocked = [d for d in self._dirs.values() if d.deliver(now)]
                readable = [d.src for d in self._dirs.values() if d.backlog < d.imp.buffer_bytes]
                dues = [
                    t
                    for d in self._dirs.values()
                    if d not in blocked and (t := d.next_due()) is not None
                ]
                wait = min([0.01, *(max(0.0, t - now) for t in dues)])
                ready, _, _ = select.select(readable, [d.dst for d in blocked], [], wait)
                now = time.monotonic()
                for d in self._dirs.values():
                    if d.src in ready:
                        try:
                            data = os.read(d.src, 4096)
                        except (BlockingIOError, InterruptedError):
                            continue
                        d.ingest(data, now)
        except BaseException as exc:  # surfaced to the owner through .error
            self.error = exc
            raise


@click.command(help=(__doc__ or "").splitlines()[0],
               context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--rate", type=float, default=11520.0, show_default=True, help="bytes/s (11520: 115200 8N1)")
@click.option("--latency", type=float, default=0.0, show_default=True, help="seconds")
@click.option("--ber", type=float, default=0.0, show_default=True, help="bit error rate")
@click.option("--drop", type=float, default=0.0, show_default=True, help="frame drop probability")
@click.option("--seed", type=int, default=0, show_default=True)
def main(rate: float, latency: float, ber: float, drop: float, seed: int) -> None:
    imp = Impairments(rate, latency, ber, drop)
    with stop_on_signals() as stop, LinkEmulator(imp, seed=seed) as emu:
        click.echo(f"end A: {emu.a_path}\nend B: {emu.b_path}\nCtrl-C to stop")
        sys.stdout.flush()
        while not stop:
            time.sleep(0.1)
    for name, st in emu.stats.items():
        click.echo(f"{name} {st}")

if __name__ == "__main__":
    main()
