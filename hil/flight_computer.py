"""The flight computer emulator: sends telecommands, receives telemetry and products.

It plays what the flight computer and the ground do together: it opens its end of the serial
link with pyserial (a pseudo-terminal in emulation, a real UART with ``--port``), signs
telecommands with the shared key and a persisted counter (``firmware_bridge.auth``),
signs the ground's uplinked CFDP PDUs the same way (their own counter channel), retransmits a telecommand whose ACK does not come (PROTOCOL.md section 7), and runs the
ground's CFDP entity (``firmware_bridge.cfdp.receiver.DownlinkReceiver``) on the DATA frames,
answering class 2 transfers. Every product that arrives is parsed and its SHA-256 checked
(``onboard.formats.products.Product.from_bytes``) and kept with its arrival time.

Telecommand kinds for fault injection: ``valid`` (signed with the right key and a fresh
counter), ``none`` (no authentication), ``forged`` (signed with a wrong key), ``replay`` (a
valid frame sent earlier, sent again byte for byte) and ``garbage`` (random bytes between
delimiters); ``leaked`` is an attacker holding the real key (signed correctly, with a fresh
counter): the payload cannot tell it apart, and a scenario that sends one must fail.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

from firmware_bridge.auth import AuthKey, CounterStore, UplinkSigner, sign
from firmware_bridge.cfdp.common import DownlinkConfig
from firmware_bridge.cfdp.receiver import DownlinkReceiver, FailedTransfer, ReceivedFile
from firmware_bridge.framing import DELIMITER, Frame, wire_size
from firmware_bridge.link import ByteRate, Link
from firmware_bridge.messages import (
    Abort,
    Ack,
    Event,
    Health,
    Message,
    MessageError,
    Mode,
    MsgType,
    Ping,
    PoseState,
    RequestArea,
    RequestProduct,
    ResultCode,
    SetConfig,
    SetMode,
    SetPasses,
    StartCapture,
    StopCapture,
    unpack_message,
)
from onboard.formats.products import Product, ProductFormatError

#: PROTOCOL.md section 7: retransmit an unanswered telecommand up to 3 times.
RETRIES = 3


def build_message(type_name: str, args: dict) -> Message:
    """The telecommand ``type_name`` with the scenario's ``args``."""
    t = MsgType[type_name]
    if t == MsgType.SET_MODE:
        return SetMode(Mode[args["mode"]])
    if t == MsgType.START_CAPTURE:
        return StartCapture(int(args.get("frame_count", 0)))
    if t == MsgType.SET_CONFIG:
        return SetConfig(str(args["key"]), str(args["value"]))
    if t == MsgType.REQUEST_PRODUCT:
        return RequestProduct(str(args["name"]))
    if t == MsgType.REQUEST_AREA:  # box = [south, west, north, east] degrees, kinds = [...]
        return RequestArea.from_degrees(*args["box"], tuple(args["kinds"]), int(args.get("since_utc", 0)),
                                        int(args.get("until_utc", 0)), int(args.get("max_count", 0)))
    if t == MsgType.SET_PASSES:  # passes = [{in_s, for_s, rate_bit_s}]: from when it is sent (t0_unix)
        now = float(args.get("t0_unix", time.time()))  # whole seconds inside each window: never overrun
        return SetPasses(tuple((math.ceil(now + p["in_s"]), math.floor(now + p["in_s"] + p["for_s"]),
                                int(p["rate_bit_s"])) for p in args["passes"]))
    if t == MsgType.POSE:
        return PoseState(**args)
    return {MsgType.PING: Ping, MsgType.STOP_CAPTURE: StopCapture, MsgType.ABORT: Abort}[t]()


class _Forger:
    """Signs like a flight computer, with a key that is not the payload's."""

    def __init__(self, key: AuthKey, rng: random.Random) -> None:
        self.key, self.rng = key, rng

    def sign(self, message: Message, seq: int) -> Frame:
        return sign(message, seq, self.key, self.rng.randrange(1, 1 << 63))


@dataclass
class SentCommand:
    """One telecommand and what became of it."""

    kind: str  # valid | none | forged | replay | garbage
    type: str
    frame: Frame | None
    sent_at: float
    tries: int = 1
    result: ResultCode | None = None
    acked_at: float | None = None


@dataclass
class Arrival:
    """One product file delivered by CFDP."""

    name: str
    t: float
    sha256: str | None  # None: the file is not a valid product
    error: str | None
    product: Product | None = None


@dataclass
class FlightComputer:
    """The emulated flight computer and ground on one end of the link."""

    link: Link
    signer: UplinkSigner | None
    staging: Path
    uplink: bool = True
    ack_timer_s: float = 2.0
    rng: random.Random = field(default_factory=lambda: random.Random(0))
    commands: list[SentCommand] = field(default_factory=list)
    arrivals: list[Arrival] = field(default_factory=list)
    events: list[tuple[float, Event]] = field(default_factory=list)
    health: list[tuple[float, dict]] = field(default_factory=list)
    failed_transfers: list[FailedTransfer] = field(default_factory=list)
    telemetry_errors: int = 0
    ground_errors: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        config = DownlinkConfig(acknowledged=self.uplink, ack_timer_s=self.ack_timer_s,
                                nak_timer_s=self.ack_timer_s, inactivity_s=30 * self.ack_timer_s)
        self.receiver = DownlinkReceiver(self.staging, self._on_file,
                                         self._uplink if self.uplink else None,
                                         config, self.failed_transfers.append)
        self._by_seq: dict[tuple[int, int], list[SentCommand]] = {}
        self._valid_frames: list[Frame] = []
        self._wrong_key = AuthKey(bytes(self.rng.getrandbits(8) for _ in range(32)), "forger")

    @classmethod
    def open(cls, url: str, rate_bytes_per_s: float, key: AuthKey | None, counter_file: Path,
             staging: Path, uplink: bool = True, ack_timer_s: float = 2.0,
             seed: int = 0) -> FlightComputer:
        link = Link.open(url, rate=ByteRate(rate_bytes_per_s))
        signer = UplinkSigner(key, CounterStore(counter_file)) if key is not None else None
        return cls(link, signer, staging, uplink, ack_timer_s, random.Random(seed))

    def close(self) -> None:
        self.link.close()

    def _uplink(self, packet: bytes) -> None:
        """The ground's CFDP PDUs go up signed (without the key, unsigned: the payload
        refuses them, and the scenario shows it)."""
        self.link.send_data(packet, signer=self.signer)

    # -- telecommands ---------------------------------------------------------------------

    def send(self, type_name: str, args: dict, kind: str) -> SentCommand:
        """Send one telecommand of the given kind now."""
        return self.send_message(type_name, build_message(type_name, args), kind)

    def send_message(self, type_name: str, message: Message, kind: str) -> SentCommand:
        """Send ``message`` (built by the caller: a malformed one, say) as :meth:`send` does."""
        now = time.monotonic()
        if kind == "garbage":
            junk = bytes(self.rng.randrange(1, 256) for _ in range(self.rng.randrange(3, 40)))
            self.link.port.write(DELIMITER + junk + DELIMITER)
            cmd = SentCommand(kind, type_name, None, now)
            self.commands.append(cmd)
            return cmd
        if kind == "replay" and self._valid_frames:
            frame = self.link.send_frame(self.rng.choice(self._valid_frames))
        elif kind == "forged":
            frame = self.link.send(message, signer=_Forger(self._wrong_key, self.rng))  # type: ignore[arg-type]
        elif kind in ("valid", "replay", "leaked"):  # replay with nothing to replay: a fresh one
            if self.signer is None:
                raise RuntimeError("valid telecommands need the key: give the scenario's key file")
            frame = self.link.send(message, signer=self.signer)
            if kind == "valid":
                self._valid_frames.append(frame)
        else:
            frame = self.link.send(message)
        cmd = SentCommand(kind, type_name, frame, now)
        self.commands.append(cmd)
        self._by_seq.setdefault((frame.seq, frame.msg_type), []).append(cmd)
        return cmd

    def _retransmit(self) -> None:
        now = time.monotonic()
        for cmd in self.commands:
            if cmd.result is not None or cmd.frame is None or cmd.kind not in ("valid", "none"):
                continue
            wait = 0.5 + 2 * self.link.rate.seconds(wire_size(len(cmd.frame.body), cmd.frame.authenticated))
            if now - cmd.sent_at > wait * cmd.tries:
                if cmd.tries > RETRIES:
                    continue
                self.link.send_frame(cmd.frame)
                cmd.tries += 1

    # -- receiving ------------------------------------------------------------------------

    def _on_file(self, f: ReceivedFile) -> None:
        now = time.monotonic()
        try:
            product = Product.from_bytes(f.data)
        except ProductFormatError as exc:
            self.arrivals.append(Arrival(f.name, now, None, str(exc)))
            return
        error = None if product.name == f.name else f"file {f.name} holds {product.name}"
        self.arrivals.append(Arrival(f.name, now, product.sha256, error, product))

    def _on_frame(self, frame: Frame) -> None:
        if frame.msg_type == MsgType.DATA:
            self._ground(self.receiver.on_packet, frame.body)
            return
        try:
            msg = unpack_message(frame.msg_type, frame.body)
        except MessageError:
            self.telemetry_errors += 1
            return
        now = time.monotonic()
        if isinstance(msg, Ack):
            # the first ACK quoting a frame answers the oldest command sent as that frame; a
            # later one answers a retransmission or a replay of it
            waiting = [c for c in self._by_seq.get((msg.acked_seq, msg.acked_type), [])
                       if c.result is None]
            if waiting:
                waiting[0].result, waiting[0].acked_at = msg.result, now
        elif isinstance(msg, Event):
            self.events.append((now, msg))
        elif isinstance(msg, Health):
            self.health.append((now, msg.values))

    def poll(self, timeout: float) -> None:
        """Receive for up to ``timeout`` seconds, advance CFDP timers and retransmissions."""
        frame = self.link.receive(timeout)
        while frame is not None:
            self._on_frame(frame)
            frame = self.link.receive(0.0)
        self._ground(self.receiver.poll)
        self._retransmit()

    def _ground(self, call, *args) -> None:
        """Run the ground's CFDP entity; an exception it raises (a bug in the ground software,
        not the payload) is recorded for the report instead of ending the scenario."""
        try:
            call(*args)
        except Exception as exc:  # reported in the measures as ground_errors
            self.ground_errors.append(f"{type(exc).__name__}: {exc}")
