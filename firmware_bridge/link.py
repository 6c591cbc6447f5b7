"""A message link over any pyserial port: framing, sequence numbers, pacing, statistics.

``Link.open(url)`` takes anything ``serial.serial_for_url`` does: a device (/dev/ttyTHS1),
a pseudo-terminal path, ``loop://``, ``socket://host:port``. The sender paces itself to a
configured byte rate, because a pseudo-terminal ignores the baud rate and a radio behind
the flight computer is slower than the UART: a frame is written only when the previous
ones have had time to leave at that rate.

The seam for the downlink (``spool.py``/``cfdp/``):

* send one CCSDS space packet: ``link.send_data(packet)`` (``len(packet) <= MAX_BODY``);
  the ground signs what it uplinks: ``link.send_data(packet, signer=UplinkSigner(...))``;
* uplinked CFDP PDUs arrive as DATA frames: ``PayloadEndpoint.open(url, handlers, on_data,
  key_file=..., counter_file=...)`` (or ``PayloadEndpoint(link, dispatcher, on_data)``)
  calls ``on_data(packet: bytes)`` from ``poll()`` for each one that authenticates (the
  dispatcher checks its MAC and counter exactly as a telecommand's); telecommands go to the
  dispatcher, whose ACKs and events go back on the link;
* how long until the queue is out: ``link.drain_time_s(packets)``.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import serial

from firmware_bridge.auth import UplinkSigner
from firmware_bridge.dispatch import CommandDispatcher, EventLimiter, Handler
from firmware_bridge.framing import DELIMITER, MAX_SEQ, Frame, FrameDecoder, encode, wire_size
from firmware_bridge.messages import Data, Direction, EventCode, Message, MsgType

log = logging.getLogger(__name__)

#: A sender that has been silent this long first sends a lone 0x00, so the receiver drops
#: any partial frame left by noise or a cut before the new frame starts.
IDLE_FLUSH_S = 0.1
#: How long one ``read`` waits for bytes; ``receive`` loops on it until its own timeout.
POLL_S = 0.02


@dataclass(frozen=True)
class ByteRate:
    """A link's payload capacity in bytes per second (``math.inf``: no pacing)."""

    bytes_per_s: float

    def __post_init__(self) -> None:
        if not self.bytes_per_s > 0:
            raise ValueError(f"a byte rate must be > 0 bytes/s, got {self.bytes_per_s}")

    @classmethod
    def uart(
        cls, baud: int, data_bits: int = 8, parity: bool = False, stop_bits: int = 1
    ) -> ByteRate:
        """A UART's byte rate: each byte costs a start bit, data bits, parity, stop bits.
        115200 baud 8N1 is 11520 B/s."""
        return cls(baud / (1 + data_bits + int(parity) + stop_bits))

    @classmethod
    def bits(cls, bits_per_s: float) -> ByteRate:
        """A synchronous link (e.g. a 9600 bit/s radio): 8 bits a byte, 1200 B/s at 9600."""
        return cls(bits_per_s / 8)

    def seconds(self, nbytes: int) -> float:
        """Time for ``nbytes`` to leave at this rate."""
        return 0.0 if math.isinf(self.bytes_per_s) else nbytes / self.bytes_per_s

    def drain_time_s(self, bodies: Iterable[bytes | int], authenticated: bool = False) -> float:
        """Time to send one frame per body: exact wire size for bytes, worst case for a length."""
        return self.seconds(wire_bytes(bodies, authenticated))

    def per_hour(self, nbytes: int) -> float:
        """How many ``nbytes`` items (e.g. one frame's products on the wire) leave in an hour."""
        return 3600 * self.bytes_per_s / nbytes


def wire_bytes(bodies: Iterable[bytes | int], authenticated: bool = False) -> int:
    """Bytes on the line for one frame per body: exact for bytes, worst case (COBS) for a length."""
    total = 0
    for b in bodies:
        if isinstance(b, int):
            total += wire_size(b, authenticated)
        elif authenticated:
            total += wire_size(len(b), authenticated)
        else:
            total += len(encode(Frame(0, 0, bytes(b))))
    return total


UNPACED = ByteRate(math.inf)
UART_115200 = ByteRate.uart(115200)
RADIO_9600 = ByteRate.bits(9600)


class Link:
    """Framed messages over one serial port. ``send`` is thread-safe; ``receive`` is meant
    for one reader thread."""

    def __init__(
        self,
        port: serial.SerialBase,
        rate: ByteRate = UART_115200,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.port = port
        self.rate = rate
        self.decoder = FrameDecoder()
        self._clock = clock
        self._sleep = sleep
        self._cond = threading.Condition()
        self._urgent_waiting = 0
        self._seq = 0
        self._busy_until = -math.inf  # when the bytes written so far have left at `rate`
        self._pending: deque[Frame] = deque()
        self.frames_sent = 0
        self.bytes_sent = 0

    @classmethod
    def open(cls, url: str, *, baudrate: int = 115200, rate: ByteRate | None = None) -> Link:
        """Open ``url`` with pyserial; ``rate`` defaults to the UART rate of ``baudrate`` 8N1."""
        port = serial.serial_for_url(url, baudrate=baudrate, timeout=POLL_S, write_timeout=10)
        return cls(port, rate if rate is not None else ByteRate.uart(baudrate))

    def close(self) -> None:
        self.port.close()

    def __enter__(self) -> Link:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- sending ---------------------------------------------------------------------------

    def send(self, message: Message, *, signer: UplinkSigner | None = None) -> Frame:
        """Frame ``message`` (signed with a fresh counter if ``signer``), pace, write.

        Blocks until the line is free at the configured rate. Control messages (everything
        but DATA) go before DATA frames waiting in other threads, so ACKs are not stuck
        behind a product download. Returns the frame sent, whose ``seq`` an ACK will quote.
        Raises ``MessageError`` for a message that does not fit, and pyserial's
        ``SerialTimeoutException`` if the port accepts nothing for 10 s.
        """
        message.pack()  # refuse a bad message now, not when the line is free

        def build(seq: int) -> Frame:
            return signer.sign(message, seq) if signer else Frame.of(message, seq)

        return self._send(build, urgent=message.TYPE != MsgType.DATA, new_seq=True)

    def send_frame(self, frame: Frame) -> Frame:
        """Write a frame exactly as given, seq included (retransmission, fault injection)."""
        return self._send(lambda _: frame, urgent=frame.msg_type != MsgType.DATA, new_seq=False)

    def send_data(self, packet: bytes, signer: UplinkSigner | None = None) -> Frame:
        """Send one CCSDS space packet (1 to MAX_BODY bytes) as a DATA message; uplinked
        ones are signed (``signer``), downlinked ones need not be."""
        return self.send(Data(packet), signer=signer)

    def _send(self, build: Callable[[int], Frame], urgent: bool, new_seq: bool) -> Frame:
        with self._cond:
            try:
                self._urgent_waiting += urgent
                try:
                    self._wait_for_line(urgent)
                finally:
                    self._urgent_waiting -= urgent
                frame = build(self._seq)
                if new_seq:
                    self._seq = (self._seq + 1) & MAX_SEQ
                self._write(encode(frame))
                return frame
            finally:
                self._cond.notify_all()

    def _wait_for_line(self, urgent: bool) -> None:
        """Return (holding the lock) when the line is free and it is this sender's turn."""
        while True:
            now = self._clock()
            if self._busy_until > now:
                self._cond.release()
                try:
                    self._sleep(self._busy_until - now)
                finally:
                    self._cond.acquire()
            elif urgent or not self._urgent_waiting:
                return
            else:
                self._cond.wait(1.0)  # a control frame goes first and notifies when written

    def _write(self, wire: bytes) -> None:
        now = self._clock()
        if now - self._busy_until > IDLE_FLUSH_S:
            wire = DELIMITER + wire
        self.port.write(wire)
        self._busy_until = max(now, self._busy_until) + self.rate.seconds(len(wire))
        self.bytes_sent += len(wire)
        self.frames_sent += 1

    def backlog_s(self) -> float:
        """Seconds until the bytes already written have left at the configured rate."""
        return max(0.0, self._busy_until - self._clock())

    def drain_time_s(
        self, bodies: Iterable[bytes | int] = (), authenticated: bool = False
    ) -> float:
        """Seconds until the current backlog and one frame per ``bodies`` item have left."""
        return self.backlog_s() + self.rate.drain_time_s(bodies, authenticated)

    # -- receiving -------------------------------------------------------------------------

    def receive(self, timeout: float = 0.0) -> Frame | None:
        """The next good frame, waiting up to ``timeout`` seconds; None if none came.

        Bad frames are skipped and counted in ``self.decoder`` (``bad``, ``bytes_discarded``).
        """
        deadline = self._clock() + timeout
        while not self._pending:
            waiting = self.port.in_waiting
            if not waiting and self._clock() >= deadline:
                return None
            data = self.port.read(max(1, waiting))
            if data:
                self._pending.extend(self.decoder.feed(data))
        return self._pending.popleft()


_TELEMETRY = frozenset(t for t in MsgType if t.direction is Direction.TM)


class PayloadEndpoint:
    """The payload's end of the link: telecommands to a dispatcher (ACK and events go back),
    DATA bodies that authenticate to ``on_data`` (uplinked CFDP PDUs in space packets; the
    rest are dropped with a rate-limited event), bad-frame counts reported as BAD_FRAMES
    events."""

    def __init__(
        self,
        link: Link,
        dispatcher: CommandDispatcher,
        on_data: Callable[[bytes], None],
        events: EventLimiter | None = None,
    ) -> None:
        self.link = link
        self.dispatcher = dispatcher
        self.on_data = on_data
        self.events = events or EventLimiter()
        self.unexpected = 0  # frames of a type the flight computer should not send
        self.data_errors = 0  # DATA bodies on_data raised on (logged, HANDLER_ERROR event)
        self._bad_reported = 0

    @classmethod
    def open(
        cls,
        url: str,
        handlers: Mapping[MsgType, Handler],
        on_data: Callable[[bytes], None],
        *,
        key_file: str | os.PathLike[str] | None = None,
        counter_file: str | os.PathLike[str] | None = None,
        baudrate: int = 115200,
        rate: ByteRate | None = None,
        allow_unauthenticated: Iterable[MsgType] = (MsgType.PING,),
    ) -> PayloadEndpoint:
        """The payload's end from its settings: the port, the key file (mode 0600) and the
        file holding the last accepted counter. Without a key only allow-listed commands run.
        Raises ``KeyFileError``/``CounterStoreError`` with what to fix before opening the port
        (a key file without its counter file among them).
        """
        dispatcher = CommandDispatcher.from_files(
            handlers, key_file, counter_file, allow_unauthenticated=allow_unauthenticated)
        return cls(Link.open(url, baudrate=baudrate, rate=rate), dispatcher, on_data)

    def close(self) -> None:
        self.link.close()

    def poll(self, timeout: float = 0.0) -> int:
        """Handle every frame that arrives within ``timeout``; returns how many."""
        handled = 0
        frame = self.link.receive(timeout)
        while frame is not None:
            self.handle(frame)
            handled += 1
            frame = self.link.receive(0.0)
        self._report_bad_frames()
        return handled

    def handle(self, frame: Frame) -> None:
        """Route one frame."""
        if frame.msg_type == MsgType.DATA:
            accepted, refused = self.dispatcher.accept_data(frame)
            if refused is not None:
                self.link.send(refused)
            if not accepted:
                return
            try:
                self.on_data(frame.body)
            except Exception as exc:  # a bad uplinked packet must not stop the command path
                self.data_errors += 1
                log.exception("on_data failed on a %d-byte DATA frame", len(frame.body))
                event = self.events.event(
                    EventCode.HANDLER_ERROR, f"uplinked DATA refused: {type(exc).__name__}: {exc}"
                )
                if event is not None:
                    self.link.send(event)
        elif MsgType._value2member_map_.get(frame.msg_type) in _TELEMETRY:
            self.unexpected += 1
        else:  # telecommands, and anything undeclared: the dispatcher refuses it with an ACK
            for reply in self.dispatcher.dispatch(frame):
                self.link.send(reply)

    def _report_bad_frames(self) -> None:
        bad = self.link.decoder.bad_frames
        if bad > self._bad_reported:
            detail = ", ".join(f"{k} {v}" for k, v in sorted(self.link.decoder.bad.items()))
            event = self.events.event(EventCode.BAD_FRAMES, f"{bad} bad frames in total: {detail}")
            if event is not None:
                self._bad_reported = bad
                self.link.send(event)

