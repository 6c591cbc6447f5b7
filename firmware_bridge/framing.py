"""Frames: header, optional security fields, body, CRC-16, COBS, 0x00 delimiter.

A frame before stuffing (PROTOCOL.md, "Frame layout"), all integers big-endian::

    version u8 | type u8 | flags u8 | seq u16 | length u16        header, 7 bytes
    [counter u64]                                                  if flags & AUTH
    body (length bytes, 0..MAX_BODY)
    [mac 16 bytes]                                                 if flags & AUTH
    crc u16                                                        CRC-16/CCITT-FALSE

The CRC covers every byte before it; the MAC (see ``auth.py``) covers every byte before it.
On the wire the frame is COBS-encoded (so it holds no 0x00) and followed by one 0x00.

The CRC is ``binascii.crc_hqx(data, 0xFFFF)``: poly 0x1021, init 0xFFFF, no reflection,
no final XOR, i.e. CRC-16/CCITT-FALSE, the CCSDS CRC-16. COBS is the ``cobs`` package.
"""

from __future__ import annotations

import binascii
import struct
from collections import Counter
from dataclasses import dataclass

from cobs import cobs

from firmware_bridge.errors import BridgeError
from firmware_bridge.messages import MAX_BODY, Message, unpack_message

PROTOCOL_VERSION = 1
DELIMITER = b"\x00"
FLAG_AUTH = 0x01
#: Flag bits a receiver accepts; a frame with any other bit set is refused.
KNOWN_FLAGS = FLAG_AUTH
HEADER = struct.Struct(">BBBHH")
COUNTER = struct.Struct(">Q")
MAC_LEN = 16
CRC_LEN = 2
MAX_SEQ = 0xFFFF
#: Largest unstuffed frame: header, counter, body, MAC, CRC.
MAX_FRAME = HEADER.size + COUNTER.size + MAX_BODY + MAC_LEN + CRC_LEN
#: Largest frame on the wire: COBS adds at most 1 byte per 254 (and at least 1), plus delimiter.
MAX_WIRE_FRAME = MAX_FRAME + (MAX_FRAME + 253) // 254 + 1


def crc16(data: bytes) -> int:
    """CRC-16/CCITT-FALSE (CCSDS) of ``data``: check value of b"123456789" is 0x29B1."""
    return binascii.crc_hqx(data, 0xFFFF)


class FrameError(BridgeError, ValueError):
    """A received frame failed a check. ``reason`` is one word, used in link statistics:
    cobs, short, crc, version, flags, length, oversize."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"bad frame ({reason}): {detail}")
        self.reason = reason


@dataclass(frozen=True)
class Frame:
    """One frame, before stuffing. ``counter`` and ``mac`` are set iff ``flags & FLAG_AUTH``."""

    msg_type: int
    seq: int
    body: bytes = b""
    flags: int = 0
    counter: int | None = None
    mac: bytes | None = None
    version: int = PROTOCOL_VERSION

    def __post_init__(self) -> None:
        if not 0 <= self.seq <= MAX_SEQ:
            raise ValueError(f"seq {self.seq} does not fit in u16")
        if len(self.body) > MAX_BODY:
            raise ValueError(f"body is {len(self.body)} bytes; the maximum is {MAX_BODY}")
        if self.authenticated:
            if self.counter is None or not 0 <= self.counter < 2**64:
                raise ValueError("an authenticated frame needs a u64 counter")
            if self.mac is None or len(self.mac) != MAC_LEN:
                raise ValueError(f"an authenticated frame needs a {MAC_LEN}-byte MAC")
        elif self.counter is not None or self.mac is not None:
            raise ValueError("counter and mac are only carried when flags has FLAG_AUTH")

    @property
    def authenticated(self) -> bool:
        return bool(self.flags & FLAG_AUTH)

    @classmethod
    def of(cls, message: Message, seq: int) -> Frame:
        """An unauthenticated frame carrying ``message``."""
        return cls(int(message.TYPE), seq, message.pack())

    def message(self) -> Message:
        """The body parsed as its declared type (raises ``MessageError``)."""
        return unpack_message(self.msg_type, self.body)

    def signed_part(self) -> bytes:
        """Header, counter (if any) and body: the bytes the MAC covers."""
        head = HEADER.pack(self.version, self.msg_type, self.flags, self.seq, len(self.body))
        if self.authenticated:
            head += COUNTER.pack(self.counter)
        return head + self.body

    def pack(self) -> bytes:
        """The unstuffed frame: signed part, MAC (if any), CRC."""
        data = self.signed_part() + (self.mac or b"")
        return data + struct.pack(">H", crc16(data))

    @classmethod
    def unpack(cls, data: bytes) -> Frame:
        """Inverse of :meth:`pack`; raises :class:`FrameError` naming the failed check."""
        if len(data) < HEADER.size + CRC_LEN:
            raise FrameError("short", f"{len(data)} bytes; a frame has at least 9")
        (crc,) = struct.unpack_from(">H", data, len(data) - CRC_LEN)
        if crc16(data[:-CRC_LEN]) != crc:
            raise FrameError("crc", "CRC-16 mismatch (corrupted in transit)")
        version, msg_type, flags, seq, length = HEADER.unpack_from(data)
        if version != PROTOCOL_VERSION:
            raise FrameError(
                "version", f"protocol version {version}; this end speaks {PROTOCOL_VERSION}"
            )
        if flags & ~KNOWN_FLAGS:
            raise FrameError("flags", f"reserved flag bits set: 0x{flags:02X}")
        if length > MAX_BODY:
            raise FrameError("oversize", f"length {length} exceeds the maximum body {MAX_BODY}")
        auth = bool(flags & FLAG_AUTH)
        extra = COUNTER.size + MAC_LEN if auth else 0
        expected = HEADER.size + extra + length + CRC_LEN
        if len(data) != expected:
            raise FrameError("length", f"frame is {len(data)} bytes; its header implies {expected}")
        pos = HEADER.size
        counter = mac = None
        if auth:
            (counter,) = COUNTER.unpack_from(data, pos)
            pos += COUNTER.size
        body = bytes(data[pos : pos + length])
        if auth:
            mac = bytes(data[pos + length : pos + length + MAC_LEN])
        return cls(msg_type, seq, body, flags, counter, mac, version)


def encode(frame: Frame) -> bytes:
    """The frame as sent on the wire: COBS-stuffed, followed by the 0x00 delimiter."""
    return cobs.encode(frame.pack()) + DELIMITER


def decode(chunk: bytes) -> Frame:
    """One frame from the bytes between two delimiters (delimiters excluded)."""
    if len(chunk) > MAX_WIRE_FRAME:
        raise FrameError("oversize", f"{len(chunk)} bytes between delimiters")
    try:
        data = cobs.decode(chunk)
    except cobs.DecodeError as exc:
        raise FrameError("cobs", str(exc)) from None
    return Frame.unpack(data)


def wire_size(body_len: int, authenticated: bool = False) -> int:
    """Worst-case bytes on the wire for a frame with a ``body_len``-byte body (incl. delimiter).

    COBS adds exactly ceil(n/254) bytes (at least 1) in the worst case; a body with no 0x00
    in any 254-byte run reaches it.
    """
    n = HEADER.size + body_len + CRC_LEN + (COUNTER.size + MAC_LEN if authenticated else 0)
    return n + max(1, (n + 253) // 254) + 1


class FrameDecoder:
    """Splits a byte stream into frames and resynchronises after garbage.

    Bytes are buffered up to the next 0x00; each chunk between delimiters is one frame or
    one bad frame. An empty chunk (two delimiters in a row) is a sync flush, not an error.
    A chunk that grows past :data:`MAX_WIRE_FRAME` is discarded up to the next delimiter.
    Bad frames are counted by reason in ``bad`` and their bytes in ``bytes_discarded``;
    nothing is dropped without being counted.
    """

    def __init__(self) -> None:
        self._buf = bytearray()
        self._overflow = False
        self.frames = 0
        self.bad: Counter[str] = Counter()
        self.bytes_discarded = 0
        self.last_error: FrameError | None = None

    @property
    def bad_frames(self) -> int:
        return sum(self.bad.values())

    def feed(self, data: bytes) -> list[Frame]:
        """Frames completed by ``data``, in order."""
        out: list[Frame] = []
        start = 0
        while True:
            end = data.find(DELIMITER, start)
            piece = data[start:] if end < 0 else data[start:end]
            if self._overflow:
                self.bytes_discarded += len(piece)
            else:
                self._buf += piece
                if len(self._buf) > MAX_WIRE_FRAME:
                    self._overflow = True
                    self.bytes_discarded += len(self._buf)
                    self._buf.clear()
            if end < 0:
                return out
            start = end + 1
            if self._overflow:
                self._overflow = False
                self._reject(FrameError("oversize", "no delimiter within the maximum frame"), 1)
                continue
            chunk = bytes(self._buf)
            self._buf.clear()
            if not chunk:
                continue
            try:
                out.append(decode(chunk))
                self.frames += 1
            except FrameError as exc:
                self._reject(exc, len(chunk) + 1)

    def _reject(self, exc: FrameError, nbytes: int) -> None:
        self.bad[exc.reason] += 1
        self.bytes_discarded += nbytes
        self.last_error = exc
