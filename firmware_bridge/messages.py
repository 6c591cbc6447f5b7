"""Every message of the payload <-> flight computer link, declared in one place.

F Prime style: each message type, result code, event code and mode is declared once, in
the enums below, with its number, direction/severity and a one-line meaning; PROTOCOL.md
lists the same tables and a test checks that the two agree.

Each message is a frozen dataclass whose ``pack()`` gives the frame body and whose
``unpack(body)`` is its exact inverse (the style of ``spacepackets``). ``unpack`` is strict:
a body of the wrong length, trailing bytes, an unknown enum value or invalid UTF-8 raises
:class:`MessageError`, never a half-parsed message. All integers are big-endian.
"""

from __future__ import annotations

import json
import math
import re
import struct
from dataclasses import dataclass, field
from enum import Enum, IntEnum
from typing import Any, ClassVar

from firmware_bridge.errors import BridgeError

#: Largest frame body in bytes (PROTOCOL.md, "Sizes"). A DATA body (one CCSDS space packet)
#: may use all of it.
MAX_BODY = 1024


class MessageError(BridgeError, ValueError):
    """A frame body is not a valid message of its declared type."""


class Direction(str, Enum):
    """Who sends a message: TC flight computer -> payload, TM payload -> flight computer."""

    TC = "TC"
    TM = "TM"
    BOTH = "both"


class Severity(IntEnum):
    """Event severity, carried in every EVENT body."""

    INFO = 0
    WARNING = 1
    ERROR = 2


class MsgType(IntEnum):
    """Message types: (number, direction, meaning). Telecommands 0x01-0x3F, telemetry
    0x40-0x7F, data 0x80-0xBF."""

    direction: Direction
    summary: str

    def __new__(cls, value: int, *meta: Any) -> MsgType:
        obj = int.__new__(cls, value)
        obj._value_ = value
        obj.direction, obj.summary = meta
        return obj

    PING = 0x01, Direction.TC, "Liveness check; answered by ACK OK."
    SET_MODE = 0x02, Direction.TC, "Switch the payload mode (IDLE, OPERATE, SAFE)."
    START_CAPTURE = 0x03, Direction.TC, "Start acquiring frames (count 0: until STOP_CAPTURE)."
    STOP_CAPTURE = 0x04, Direction.TC, "Stop acquiring frames."
    SET_CONFIG = 0x05, Direction.TC, "Set one configuration key to a string value."
    REQUEST_PRODUCT = 0x06, Direction.TC, "Queue the named product for downlink."
    ABORT = 0x07, Direction.TC, "Abort the current activity and return to IDLE."
    SET_PASSES = 0x08, Direction.TC, "Replace the contact plan: pass windows (UTC) and link rates."
    POSE = 0x09, Direction.TC, "The spacecraft's time-stamped position and attitude, for georeferencing."
    REQUEST_AREA = 0x0A, Direction.TC, "Queue the archived products of the kinds named over a lat/lon box."
    ACK = 0x40, Direction.TM, "Result of one telecommand, matched by its sequence number."
    HEALTH = 0x41, Direction.TM, "Health and status as a compact JSON object."
    EVENT = 0x42, Direction.TM, "An event: code, severity, human-readable text."
    DATA = 0x80, Direction.BOTH, "One CCSDS space packet (downlink products, uplink CFDP PDUs)."


class ResultCode(IntEnum):
    """ACK result codes: (number, meaning)."""

    summary: str

    def __new__(cls, value: int, *meta: Any) -> ResultCode:
        obj = int.__new__(cls, value)
        obj._value_ = value
        (obj.summary,) = meta
        return obj

    OK = 0, "Accepted and executed."
    BAD_AUTH = 1, "Authentication tag wrong (forged or corrupted); not executed."
    REPLAY = 2, "Counter not above the last accepted one (replayed or old); not executed."
    UNKNOWN_COMMAND = 3, "Type is not a telecommand this payload handles; not executed."
    BAD_ARGUMENT = 4, "Body malformed or a value out of range; not executed."
    BUSY = 5, "Cannot be executed now (e.g. capture already running); retry later."
    NOT_AUTHENTICATED = 6, "Command requires authentication and the frame carried none."
    FAILED = 7, "Accepted but execution failed; an EVENT says why."
    NO_KEY = 8, "Authenticated frame received but the payload has no key loaded."


class EventCode(IntEnum):
    """Event codes: (number, default severity, meaning)."""

    severity: Severity
    summary: str

    def __new__(cls, value: int, *meta: Any) -> EventCode:
        obj = int.__new__(cls, value)
        obj._value_ = value
        obj.severity, obj.summary = meta
        return obj

    AUTH_FAILED = 0x0001, Severity.WARNING, "A telecommand's authentication tag was wrong."
    REPLAY_REFUSED = 0x0002, Severity.WARNING, "A telecommand's counter was not fresh."
    UNAUTHENTICATED_REFUSED = (
        0x0003,
        Severity.WARNING,
        "An unauthenticated telecommand was refused.",
    )
    UNKNOWN_COMMAND = 0x0004, Severity.WARNING, "A telecommand type was not recognised."
    BAD_ARGUMENT = 0x0005, Severity.WARNING, "A telecommand body was malformed."
    BAD_FRAMES = 0x0006, Severity.WARNING, "Frames failed COBS/CRC/header checks (count in text)."
    HANDLER_ERROR = 0x0007, Severity.ERROR, "A command handler raised; the command FAILED."
    MODE_CHANGED = 0x0010, Severity.INFO, "The payload mode changed."
    CAPTURE_STARTED = 0x0011, Severity.INFO, "Frame acquisition started."
    CAPTURE_STOPPED = 0x0012, Severity.INFO, "Frame acquisition stopped."
    CONFIG_CHANGED = 0x0013, Severity.INFO, "A configuration key was set."
    ABORTED = 0x0014, Severity.WARNING, "The current activity was aborted."
    SPOOL_EVICTED = 0x0020, Severity.WARNING, "The downlink spool evicted a product (quota)."
    PRODUCT_QUEUED = 0x0021, Severity.INFO, "A product was queued for downlink."
    PRODUCT_DELIVERED = 0x0022, Severity.INFO, "The ground confirmed a product's delivery."
    PASS_PLANNED = 0x0023, Severity.INFO, "A pass began: what the contact plan forecasts it carries."
    AREA_MATCHED = 0x0024, Severity.INFO, "A REQUEST_AREA's answer: products matched, queued, gone."


class Mode(IntEnum):
    """Payload modes (SET_MODE body)."""

    summary: str

    def __new__(cls, value: int, *meta: Any) -> Mode:
        obj = int.__new__(cls, value)
        obj._value_ = value
        (obj.summary,) = meta
        return obj

    IDLE = 0, "Powered, not acquiring; answers commands."
    OPERATE = 1, "Acquiring and processing frames as commanded."
    SAFE = 2, "Minimum activity; only PING, SET_MODE and ABORT are expected."


#: A product kind's name in REQUEST_AREA (the products' kinds are lower-case words).
_KIND_RE = re.compile(r"[a-z0-9_]{1,32}")


def _enum(enum_cls: type[IntEnum], value: int, what: str) -> Any:
    try:
        return enum_cls(value)
    except ValueError:
        raise MessageError(f"{what} {value} is not declared (PROTOCOL.md lists them)") from None


def _utf8(raw: bytes, what: str) -> str:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MessageError(f"{what} is not valid UTF-8: {exc}") from None
    if "\x00" in text:
        raise MessageError(f"{what} contains a NUL character")
    return text


def _exact(body: bytes, size: int, name: str) -> None:
    if len(body) != size:
        raise MessageError(f"{name} body must be {size} bytes, got {len(body)}")


def _check_size(size: int, name: str) -> None:
    """Checked before packing, so a length too large for its field is a MessageError too."""
    if size > MAX_BODY:
        raise MessageError(f"{name} body is {size} bytes; the maximum is {MAX_BODY}")


@dataclass(frozen=True)
class Message:
    """Base of every message. ``TYPE`` is the declared :class:`MsgType`."""

    TYPE: ClassVar[MsgType]

    def pack(self) -> bytes:
        raise NotImplementedError

    @classmethod
    def unpack(cls, body: bytes) -> Message:
        raise NotImplementedError


@dataclass(frozen=True)
class _Empty(Message):
    """A message with an empty body."""

    def pack(self) -> bytes:
        return b""

    @classmethod
    def unpack(cls, body: bytes) -> Message:
        _exact(body, 0, cls.TYPE.name)
        return cls()


@dataclass(frozen=True)
class Ping(_Empty):
    TYPE: ClassVar[MsgType] = MsgType.PING


@dataclass(frozen=True)
class StopCapture(_Empty):
    TYPE: ClassVar[MsgType] = MsgType.STOP_CAPTURE


@dataclass(frozen=True)
class Abort(_Empty):
    TYPE: ClassVar[MsgType] = MsgType.ABORT


@dataclass(frozen=True)
class SetMode(Message):
    """Body: mode u8."""

    mode: Mode
    TYPE: ClassVar[MsgType] = MsgType.SET_MODE

    def pack(self) -> bytes:
        return struct.pack(">B", Mode(self.mode))

    @classmethod
    def unpack(cls, body: bytes) -> SetMode:
        _exact(body, 1, "SET_MODE")
        return cls(_enum(Mode, body[0], "mode"))


@dataclass(frozen=True)
class StartCapture(Message):
    """Body: frame_count u32 (0 means until STOP_CAPTURE)."""

    frame_count: int = 0
    TYPE: ClassVar[MsgType] = MsgType.START_CAPTURE

    def pack(self) -> bytes:
        if not 0 <= self.frame_count <= 0xFFFFFFFF:
            raise MessageError(f"frame_count {self.frame_count} does not fit in u32")
        return struct.pack(">I", self.frame_count)

    @classmethod
    def unpack(cls, body: bytes) -> StartCapture:
        _exact(body, 4, "START_CAPTURE")
        return cls(struct.unpack(">I", body)[0])


@dataclass(frozen=True)
class SetConfig(Message):
    """Body: key_length u8 | key UTF-8 (1-255 bytes) | value_length u16 | value UTF-8."""

    key: str
    value: str
    TYPE: ClassVar[MsgType] = MsgType.SET_CONFIG

    def pack(self) -> bytes:
        k, v = self.key.encode(), self.value.encode()
        if not 1 <= len(k) <= 255:
            raise MessageError(f"config key must be 1-255 UTF-8 bytes, got {len(k)}")
        _check_size(1 + len(k) + 2 + len(v), "SET_CONFIG")
        return struct.pack(">B", len(k)) + k + struct.pack(">H", len(v)) + v

    @classmethod
    def unpack(cls, body: bytes) -> SetConfig:
        if len(body) < 4:
            raise MessageError(f"SET_CONFIG body is {len(body)} bytes; at least 4 needed")
        klen = body[0]
        if klen == 0:
            raise MessageError("SET_CONFIG key is empty")
        if len(body) < 1 + klen + 2:
            raise MessageError("SET_CONFIG body ends inside the key or value length")
        (vlen,) = struct.unpack_from(">H", body, 1 + klen)
        _exact(body, 1 + klen + 2 + vlen, "SET_CONFIG")
        key = _utf8(body[1 : 1 + klen], "config key")
        value = _utf8(body[3 + klen :], "config value")
        return cls(key, value)


@dataclass(frozen=True)
class RequestProduct(Message):
    """Body: product name, UTF-8, 1-255 bytes, the whole body."""

    name: str
    TYPE: ClassVar[MsgType] = MsgType.REQUEST_PRODUCT

    def pack(self) -> bytes:
        raw = self.name.encode()
        if not 1 <= len(raw) <= 255:
            raise MessageError(f"product name must be 1-255 UTF-8 bytes, got {len(raw)}")
        return raw

    @classmethod
    def unpack(cls, body: bytes) -> RequestProduct:
        if not 1 <= len(body) <= 255:
            raise MessageError(f"REQUEST_PRODUCT name must be 1-255 bytes, got {len(body)}")
        return cls(_utf8(body, "product name"))


@dataclass(frozen=True)
class SetPasses(Message):
    """Body: count u8 (0-85: 0 clears the plan) | count x (start u32 | end u32 | rate u32):
    UTC start and end in seconds since the Unix epoch, end after start, rate in bit/s > 0.
    Whether passes overlap is for the payload to check (it answers BAD_ARGUMENT)."""

    passes: tuple[tuple[int, int, int], ...] = ()
    TYPE: ClassVar[MsgType] = MsgType.SET_PASSES
    _PASS: ClassVar[struct.Struct] = struct.Struct(">III")

    def pack(self) -> bytes:
        if len(self.passes) > 85:
            raise MessageError(f"SET_PASSES holds at most 85 passes, got {len(self.passes)}")
        for start, end, rate in self.passes:
            if not (0 <= start < end <= 0xFFFFFFFF and 0 < rate <= 0xFFFFFFFF):
                raise MessageError(f"pass ({start}, {end}, {rate}): need 0 <= start < end < 2^32 "
                                   "and 0 < rate < 2^32")
        return bytes([len(self.passes)]) + b"".join(self._PASS.pack(*p) for p in self.passes)

    @classmethod
    def unpack(cls, body: bytes) -> SetPasses:
        if not body:
            raise MessageError("SET_PASSES body is empty; at least the count is needed")
        _exact(body, 1 + body[0] * cls._PASS.size, "SET_PASSES")
        passes = tuple(cls._PASS.unpack_from(body, 1 + i * cls._PASS.size) for i in range(body[0]))
        for start, end, rate in passes:
            if end <= start or rate == 0:
                raise MessageError(f"SET_PASSES pass ({start}, {end}, {rate}): end must be after "
                                   "start and the rate > 0")
        return cls(passes)


@dataclass(frozen=True)
class RequestArea(Message):
    """Body: south i32 | west i32 | north i32 | east i32 (WGS 84 degrees x 1e7, as MAVLink
    carries them) | since u32 | until u32 (UTC seconds since 1970; until 0: no end) |
    max_count u16 (0: every match) | kinds, UTF-8, comma-separated product kind names
    (``cube,raw``), 1-255 bytes, the rest of the body.

    South <= north within +-90 deg, west <= east within +-180 deg (a box across the
    antimeridian is two requests), since <= until unless until is 0; a kind name is 1-32 of
    a-z 0-9 _, none twice. Whether the payload makes such a kind is for it to check."""

    south_e7: int
    west_e7: int
    north_e7: int
    east_e7: int
    kinds: tuple[str, ...]
    since_utc: int = 0
    until_utc: int = 0
    max_count: int = 0
    TYPE: ClassVar[MsgType] = MsgType.REQUEST_AREA
    _HEAD: ClassVar[struct.Struct] = struct.Struct(">iiiiIIH")

    def __post_init__(self) -> None:
        object.__setattr__(self, "kinds", tuple(self.kinds))

    @classmethod
    def from_degrees(cls, south: float, west: float, north: float, east: float, kinds: tuple[str, ...],
                     since_utc: int = 0, until_utc: int = 0, max_count: int = 0) -> RequestArea:
        """The request for a box in degrees (rounded to 1e-7 deg, about 1 cm)."""
        s, w, n, e = (round(v * 1e7) for v in (south, west, north, east))
        return cls(s, w, n, e, tuple(kinds), since_utc, until_utc, max_count)

    @property
    def box_deg(self) -> tuple[float, float, float, float]:
        """(south, west, north, east) in degrees."""
        return (self.south_e7 / 1e7, self.west_e7 / 1e7, self.north_e7 / 1e7, self.east_e7 / 1e7)

    def _check(self) -> None:
        s, w, n, e = self.south_e7, self.west_e7, self.north_e7, self.east_e7
        if not -900_000_000 <= s <= n <= 900_000_000:
            raise MessageError(f"REQUEST_AREA latitudes south {s / 1e7} north {n / 1e7}: need "
                               "-90 <= south <= north <= 90")
        if not -1_800_000_000 <= w <= e <= 1_800_000_000:
            raise MessageError(f"REQUEST_AREA longitudes west {w / 1e7} east {e / 1e7}: need "
                               "-180 <= west <= east <= 180 (across the antimeridian: two requests)")
        if not (0 <= self.since_utc <= 0xFFFFFFFF and 0 <= self.until_utc <= 0xFFFFFFFF
                and (self.until_utc == 0 or self.since_utc <= self.until_utc)):
            raise MessageError(f"REQUEST_AREA window {self.since_utc}-{self.until_utc}: need u32 "
                               "seconds, since <= until (until 0: no end)")
        if not 0 <= self.max_count <= 0xFFFF:
            raise MessageError(f"REQUEST_AREA max_count {self.max_count} does not fit in u16")
        if not self.kinds or len(set(self.kinds)) != len(self.kinds) or not all(
                _KIND_RE.fullmatch(k) for k in self.kinds):
            raise MessageError(f"REQUEST_AREA kinds {','.join(self.kinds)[:64]!r}: need 1 or more "
                               "distinct names of 1-32 a-z 0-9 _")

    def pack(self) -> bytes:
        self._check()
        kinds = ",".join(self.kinds).encode()
        if len(kinds) > 255:
            raise MessageError(f"REQUEST_AREA kinds are {len(kinds)} bytes; at most 255")
        return self._HEAD.pack(self.south_e7, self.west_e7, self.north_e7, self.east_e7,
                               self.since_utc, self.until_utc, self.max_count) + kinds

    @classmethod
    def unpack(cls, body: bytes) -> RequestArea:
        size = cls._HEAD.size
        if not size + 1 <= len(body) <= size + 255:
            raise MessageError(f"REQUEST_AREA body must be {size + 1}-{size + 255} bytes, got {len(body)}")
        s, w, n, e, since, until, most = cls._HEAD.unpack_from(body)
        msg = cls(s, w, n, e, tuple(_utf8(body[size:], "REQUEST_AREA kinds").split(",")), since, until, most)
        msg._check()
        return msg


@dataclass(frozen=True)
class Ack(Message):
    """Body: acked_seq u16 | acked_type u8 | result u8."""

    acked_seq: int
    acked_type: int
    result: ResultCode
    TYPE: ClassVar[MsgType] = MsgType.ACK

    def pack(self) -> bytes:
        return struct.pack(">HBB", self.acked_seq, self.acked_type, ResultCode(self.result))

    @classmethod
    def unpack(cls, body: bytes) -> Ack:
        _exact(body, 4, "ACK")
        seq, mtype, result = struct.unpack(">HBB", body)
        # acked_type stays an int: a refused frame may carry an undeclared type.
        return cls(seq, mtype, _enum(ResultCode, result, "result code"))


@dataclass(frozen=True)
class Health(Message):
    """Body: one JSON object, UTF-8, compact separators, keys sorted."""

    values: dict[str, Any] = field(default_factory=dict)
    TYPE: ClassVar[MsgType] = MsgType.HEALTH

    def pack(self) -> bytes:
        raw = json.dumps(self.values, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()
        _check_size(len(raw), "HEALTH")
        return raw

    @classmethod
    def unpack(cls, body: bytes) -> Health:
        try:
            values = json.loads(_utf8(body, "HEALTH body"))
        except json.JSONDecodeError as exc:
            raise MessageError(f"HEALTH body is not JSON: {exc}") from None
        if not isinstance(values, dict):
            raise MessageError(f"HEALTH body must be a JSON object, got {type(values).__name__}")
        return cls(values)


@dataclass(frozen=True)
class Event(Message):
    """Body: code u16 | severity u8 | text UTF-8 (rest of the body, may be empty)."""

    code: EventCode
    text: str = ""
    severity: Severity | None = None  # None: the code's declared severity
    TYPE: ClassVar[MsgType] = MsgType.EVENT

    def __post_init__(self) -> None:
        if self.severity is None:
            object.__setattr__(self, "severity", EventCode(self.code).severity)

    def pack(self) -> bytes:
        severity = EventCode(self.code).severity if self.severity is None else self.severity
        body = struct.pack(">HB", EventCode(self.code), severity) + self.text.encode()
        _check_size(len(body), "EVENT")
        return body

    @classmethod
    def unpack(cls, body: bytes) -> Event:
        if len(body) < 3:
            raise MessageError(f"EVENT body is {len(body)} bytes; at least 3 needed")
        code, severity = struct.unpack_from(">HB", body)
        return cls(
            _enum(EventCode, code, "event code"),
            _utf8(body[3:], "event text"),
            _enum(Severity, severity, "severity"),
        )


@dataclass(frozen=True)
class Data(Message):
    """Body: opaque bytes, 1 to MAX_BODY (one CCSDS space packet by convention)."""

    payload: bytes
    TYPE: ClassVar[MsgType] = MsgType.DATA

    def pack(self) -> bytes:
        if not self.payload:
            raise MessageError("DATA payload is empty")
        _check_size(len(self.payload), "DATA")
        return bytes(self.payload)

    @classmethod
    def unpack(cls, body: bytes) -> Data:
        if not body:
            raise MessageError("DATA body is empty")
        return cls(bytes(body))


@dataclass(frozen=True)
class PoseState(Message):
    """Body (112 bytes): time_us u64 (UTC, microseconds since 1970-01-01 00:00:00, POSIX:
    no leap seconds) | position x, y, z f64 (m, ECEF, WGS 84) | velocity x, y, z f64 (m/s,
    ECEF) | attitude w, x, y, z f64 (unit quaternion, Hamilton, body to ECEF) | rates x, y, z
    f64 (rad/s, body axes). IEEE 754 binary64, big-endian. Every value finite, the
    quaternion's norm within :data:`QUATERNION_TOLERANCE` of 1, the time after 2000."""

    time_us: int
    position_m: tuple[float, float, float]
    velocity_m_s: tuple[float, float, float]
    quaternion: tuple[float, float, float, float]
    rates_rad_s: tuple[float, float, float] = (0.0, 0.0, 0.0)
    TYPE: ClassVar[MsgType] = MsgType.POSE
    LAYOUT: ClassVar[str] = ">Q13d"
    #: How far from 1 a quaternion's norm may be (a sender's rounding, not a wrong attitude).
    QUATERNION_TOLERANCE: ClassVar[float] = 1e-3
    #: 2000-01-01 UTC in microseconds: an earlier time stamp is a clock that was never set.
    EPOCH_2000_US: ClassVar[int] = 946_684_800_000_000

    def __post_init__(self) -> None:  # lists (from JSON, say) compare equal once tuples
        for name in ("position_m", "velocity_m_s", "quaternion", "rates_rad_s"):
            object.__setattr__(self, name, tuple(float(v) for v in getattr(self, name)))

    def _values(self) -> tuple[float, ...]:
        return (*self.position_m, *self.velocity_m_s, *self.quaternion, *self.rates_rad_s)

    def _check(self) -> None:
        values = self._values()
        if len(values) != 13:
            raise MessageError("POSE needs 3 position, 3 velocity, 4 quaternion and 3 rate values")
        if not all(math.isfinite(v) for v in values):
            raise MessageError("POSE holds a value that is not finite")
        if not self.EPOCH_2000_US <= self.time_us <= 0xFFFFFFFFFFFFFFFF:
            raise MessageError(f"POSE time {self.time_us} us is before 2000 (a clock never set)")
        norm = math.sqrt(sum(q * q for q in self.quaternion))
        if abs(norm - 1.0) > self.QUATERNION_TOLERANCE:
            raise MessageError(f"POSE quaternion norm {norm:.6f} is not 1")

    def pack(self) -> bytes:
        self._check()
        return struct.pack(self.LAYOUT, self.time_us, *self._values())

    @classmethod
    def unpack(cls, body: bytes) -> PoseState:
        _exact(body, struct.calcsize(cls.LAYOUT), "POSE")
        t, *v = struct.unpack(cls.LAYOUT, body)
        msg = cls(t, (v[0], v[1], v[2]), (v[3], v[4], v[5]), (v[6], v[7], v[8], v[9]), (v[10], v[11], v[12]))
        msg._check()
        return msg


#: The class of each declared message type.
MESSAGE_CLASSES: dict[MsgType, type[Message]] = {
    cls.TYPE: cls
    for cls in (
        Ping,
        SetMode,
        StartCapture,
        StopCapture,
        SetConfig,
        RequestProduct,
        Abort,
        SetPasses,
        PoseState,
        RequestArea,
        Ack,
        Health,
        Event,
        Data,
    )
}
assert set(MESSAGE_CLASSES) == set(MsgType), "every declared type needs a class"


def unpack_message(msg_type: int, body: bytes) -> Message:
    """The message of type ``msg_type`` from its body; MessageError if either is invalid."""
    mtype = _enum(MsgType, msg_type, "message type")
    return MESSAGE_CLASSES[mtype].unpack(bytes(body))


def protocol_tables() -> str:
    """The declaration tables as Markdown, exactly as PROTOCOL.md lists them."""
    out = ["| type | name | direction | meaning |", "|---|---|---|---|"]
    out += [f"| 0x{t:02X} | {t.name} | {t.direction.value} | {t.summary} |" for t in MsgType]
    out += ["", "| code | name | meaning |", "|---|---|---|"]
    out += [f"| {r.value} | {r.name} | {r.summary} |" for r in ResultCode]
    out += ["", "| code | name | severity | meaning |", "|---|---|---|---|"]
    out += [f"| 0x{e:04X} | {e.name} | {e.severity.name} | {e.summary} |" for e in EventCode]
    out += ["", "| mode | name | meaning |", "|---|---|---|"]
    out += [f"| {m.value} | {m.name} | {m.summary} |" for m in Mode]
    return "\n".join(out) + "\n"
