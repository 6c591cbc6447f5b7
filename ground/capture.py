"""The downlink capture file: every space packet as received, with its direction and time.

Capture file format (big-endian)::

    file header   8 bytes  b"OBDLCAP1"
    record        1 byte   direction: 0 downlink (payload -> ground), 1 uplink
                  8 bytes  receive time, microseconds since 1970-01-01 UTC, u64
                  2 bytes  packet length L, u16, 7 <= L <= 1024
                  L bytes  one CCSDS space packet, exactly as carried by a DATA frame
                  4 bytes  CRC-32 (zlib/ISO-HDLC) of the 11 header bytes and the packet

A reader refuses a record whose CRC, direction or length is wrong, and a file that ends
inside a record, saying at which record and byte offset; records before that are decoded.
"""

from __future__ import annotations

import struct
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from firmware_bridge.messages import MAX_BODY
from onboard.errors import OnboardError

CAPTURE_MAGIC = b"OBDLCAP1"
_RECORD = struct.Struct(">BQH")
_CRC = struct.Struct(">I")
DOWN, UP = 0, 1


class CaptureError(OnboardError, ValueError):
    """A capture file is truncated or corrupt."""


# -- capture files ------------------------------------------------------------------------


class CaptureWriter:
    """Appends space packets to a capture file, flushed record by record."""

    def __init__(self, path: Path) -> None:
        self.path = path
        new = not path.exists() or path.stat().st_size == 0
        self._fh: BinaryIO = open(path, "ab")  # noqa: SIM115 (closed in close())
        if new:
            self._fh.write(CAPTURE_MAGIC)
        self.records = 0

    def write(self, direction: int, packet: bytes, t_us: int | None = None) -> None:
        head = _RECORD.pack(direction, time.time_ns() // 1000 if t_us is None else t_us,
                            len(packet))
        self._fh.write(head + packet + _CRC.pack(zlib.crc32(head + packet)))
        self._fh.flush()
        self.records += 1

    def close(self) -> None:
        self._fh.close()


def read_capture(path: Path) -> Iterator[tuple[int, int, bytes]]:
    """(direction, time_us, packet) per record; CaptureError at the first bad one."""
    data = path.read_bytes()
    if data[: len(CAPTURE_MAGIC)] != CAPTURE_MAGIC:
        raise CaptureError(
            f"{path} is not a downlink capture: it starts with {data[:8]!r}, expected "
            f"{CAPTURE_MAGIC!r} (write one with 'onboard ground receive')"
        )
    pos, n = len(CAPTURE_MAGIC), 0
    while pos < len(data):
        n += 1
        where = f"{path}: record {n} at byte {pos}"
        if pos + _RECORD.size > len(data):
            raise CaptureError(f"{where}: file ends inside the record header (truncated capture)")
        direction, t_us, length = _RECORD.unpack_from(data, pos)
        end = pos + _RECORD.size + length + _CRC.size
        if direction not in (DOWN, UP) or not 7 <= length <= MAX_BODY:
            raise CaptureError(f"{where}: direction {direction}, length {length}: corrupt record")
        if end > len(data):
            raise CaptureError(
                f"{where}: record needs {end - pos} bytes, only {len(data) - pos} left "
                "(truncated capture)")
        (crc,) = _CRC.unpack_from(data, end - _CRC.size)
        if zlib.crc32(data[pos : end - _CRC.size]) != crc:
            raise CaptureError(f"{where}: CRC-32 mismatch (corrupt capture)")
        yield direction, t_us, data[pos + _RECORD.size : end - _CRC.size]
        pos = end
