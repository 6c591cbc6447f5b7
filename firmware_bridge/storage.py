"""Writing to the payload's disk: whole or not at all, durable, and never past a free-space floor.

Everything the payload writes goes through here, so a full disk, a short write or a power
cut has one behaviour everywhere:

* :func:`atomic_write` replaces a file with new bytes so that a power cut leaves the old or
  the new content: a temporary file in the same directory, written until every byte is in
  (``os.write`` may write fewer bytes than asked near a full disk; a write of 0 bytes is
  ENOSPC), fsynced, renamed over the target, and the directory fsynced. Any failure removes
  the temporary file and raises :class:`OSError`: a file is never left truncated.
* :class:`SlotRecord` keeps a small record (the spool's counters) in two fixed slots of a
  file written once, and updates it by overwriting the older slot in place: no new block is
  ever needed, so the record can be updated on a disk with no free byte, and a torn slot
  leaves the other one (each slot carries a generation and a CRC-32).
* :class:`StorageBudget` is the free-space floor: before writing ``n`` bytes a writer asks
  :meth:`StorageBudget.deficit`; when the write would leave less than ``floor_bytes`` free,
  the writer sheds (archive copies first, then low-priority products: see
  ``firmware_bridge/spool.py`` and ``onboard/runtime/writer.py``) and reports each.

Overwriting in place needs no new block on the file systems a payload uses (ext4, f2fs,
tmpfs, FAT); a copy-on-write file system (btrfs, ZFS) allocates even then, so keep the
payload's data off one.
"""

from __future__ import annotations

import errno
import os
import struct
import zlib
from collections.abc import Callable
from pathlib import Path

TMP_SUFFIX = ".tmp"


def write_all(fd: int, data: bytes | memoryview, offset: int | None = None) -> None:
    """Write every byte of ``data`` to ``fd`` (at ``offset`` with pwrite when given), looping
    over short writes; a write that makes no progress raises ENOSPC."""
    view = memoryview(data)
    while view:
        n = os.write(fd, view) if offset is None else os.pwrite(fd, view, offset)
        if n <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        view = view[n:]
        if offset is not None:
            offset += n


def fsync_dir(path: Path) -> None:
    """Make a directory's entries (a rename, a new or removed file) durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Replace ``path`` with ``data``: after a power cut it holds the old or the new bytes,
    never part of them. Raises OSError (nothing changed, no temporary file left) when the
    bytes cannot all be written and synced, e.g. ENOSPC."""
    path = Path(path)
    tmp = path.with_name(path.name + TMP_SUFFIX)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        try:
            write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def free_bytes(path: Path) -> int:
    """Bytes an unprivileged writer may still use on the file system holding ``path``."""
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


class StorageBudget:
    """The free-space floor every payload writer keeps: ``deficit(path, n)`` is how many bytes
    must be freed before ``n`` more bytes may be written under ``path`` (0: go ahead).

    ``shed_archive`` (set by the owner of the on-board archive) deletes archive copies until
    the given number of bytes is freed on the file system of the given path and returns the
    events to report; writers call :meth:`shed_archive_for` before shedding anything of
    their own, which is the stated order: archive copies, then low-priority products."""

    def __init__(self, floor_bytes: int, free: Callable[[Path], int] = free_bytes) -> None:
        if floor_bytes < 0:
            raise ValueError(f"floor_bytes must be >= 0, got {floor_bytes}")
        self.floor_bytes = floor_bytes
        self._free = free
        self.shed_archive: Callable[[Path, int], list] | None = None

    def deficit(self, path: Path, size: int) -> int:
        return max(0, size + self.floor_bytes - self._free(path))

    def shed_archive_for(self, path: Path, size: int) -> list:
        """Shed archive copies until ``size`` bytes fit above the floor (or none is left);
        the events of what was shed."""
        need = self.deficit(path, size)
        if need <= 0 or self.shed_archive is None:
            return []
        return self.shed_archive(path, need)


class SlotRecord:
    """A record of at most ``MAX_RECORD`` bytes updated in place, power-safe, on a full disk.

    File layout: two slots of ``SLOT`` bytes, each ``b"OBSR"``, a u64 generation, a u16
    length, the record, zero padding and a CRC-32 (zlib) of everything before it in the
    slot. Reading takes the valid slot with the higher generation; :meth:`write` overwrites
    the other slot and fsyncs, so a cut during a write leaves the previous record."""

    SLOT = 512
    _HEAD = struct.Struct(">4sQH")
    _MAGIC = b"OBSR"
    MAX_RECORD = SLOT - _HEAD.size - 4

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._generation = -1

    def read(self) -> bytes | None:
        """The newest intact record, or None when the file does not exist. ValueError when
        it exists and no slot is intact."""
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return None
        best: tuple[int, bytes] | None = None
        for i in range(2):
            slot = raw[i * self.SLOT:(i + 1) * self.SLOT]
            if len(slot) != self.SLOT:
                continue
            magic, generation, length = self._HEAD.unpack_from(slot)
            crc = int.from_bytes(slot[-4:], "big")
            if (magic != self._MAGIC or length > self.MAX_RECORD
                    or zlib.crc32(slot[:-4]) != crc):
                continue
            if best is None or generation > best[0]:
                best = (generation, slot[self._HEAD.size:self._HEAD.size + length])
        if best is None:
            raise ValueError(f"{self.path}: neither slot is intact")
        self._generation = best[0]
        return best[1]

    def _slot(self, generation: int, record: bytes) -> bytes:
        if len(record) > self.MAX_RECORD:
            raise ValueError(f"record of {len(record)} B exceeds {self.MAX_RECORD} B")
        body = self._HEAD.pack(self._MAGIC, generation, len(record)) + record
        body += bytes(self.SLOT - 4 - len(body))
        return body + zlib.crc32(body).to_bytes(4, "big")

    def create(self, record: bytes) -> None:
        """Write the file with ``record`` in both slots (this one write needs disk space)."""
        self._generation = 1
        atomic_write(self.path, self._slot(0, record) + self._slot(1, record))

    def write(self, record: bytes) -> None:
        """Replace the record in place (no new disk block); creates the file if absent."""
        if not self.path.exists():
            self.create(record)
            return
        if self._generation < 0:
            self.read()
        generation = self._generation + 1
        fd = os.open(self.path, os.O_WRONLY)
        try:
            write_all(fd, self._slot(generation, record), (generation % 2) * self.SLOT)
            os.fsync(fd)
        finally:
            os.close(fd)
        self._generation = generation
