"""The downlink spool: products waiting for the ground, on disk, safe against power loss.

The spool stores opaque bytes (a product file, ``onboard.formats.products.Product.to_bytes()``) under
a name, a kind and a priority; it never parses them. The downlink (``cfdp/``) takes the
next entry, delivers it and calls :meth:`Spool.delivered`.

Layout of a spool directory::

    queue/PP.SSSSSSSSSS.KIND.NAME   one file per product, its bytes exactly as given
                                    (PP priority, S spool sequence number, both zero-padded)
    queue/*.tmp                     a write in progress; deleted when the spool is opened
    state.bin                       {"next_seq": .., "next_transaction": ..} (JSON) in a
                                    ``firmware_bridge.storage.SlotRecord``: updated in place,
                                    so it needs no free disk space (a spool written by an
                                    older version keeps it in ``state.json``, read once)

**Order of delivery** (:func:`pick`, the one definition the sender and the contact planner
use). Priority ascending: the producer's value rank (``onboard/stages/value.py``: every
frame's summary, health and events first, then residue maps of clear frames, ...; without a
rule ``onboard.formats.products``'s DEFAULT_PRIORITY), and within a priority the earliest
deadline first: every product of a rank has the same deadline after capture (the next pass),
so that is the oldest (spool sequence number). When the room left in the current pass is
known, the first product in that order whose transfer fits it goes: a product larger than
the pass waits for a longer one instead of blocking every product behind it.

**Quota and eviction.** The spool holds at most ``quota_bytes`` of product files. To make
room for a new product it evicts the lowest-priority product (largest priority number), the
oldest first among equals, and only products whose priority is the same as or lower than the
new one's: a cube never pushes out a residue map. If that cannot free enough room, the new
product is refused instead and nothing is evicted. The product being delivered right now is
never evicted. Every eviction and every refusal returns a :class:`SpoolEvent` (kind
``evicted``/``refused``) that the caller sends as a SPOOL_EVICTED telemetry event
(:meth:`SpoolEvent.message`); so does :meth:`Spool.discard` (a product the downlink cannot
send, e.g. its file vanished). Nothing is dropped silently.

**Full disk.** With a :class:`~firmware_bridge.storage.StorageBudget`, a put also keeps the
file system's free space above the budget's floor: it first has the archive's copies shed
(the budget's ``shed_archive``), then evicts products by the quota's rule (lower priority
first, oldest first among equals, never a more important one) and, if that cannot make
room, refuses the new product. A write that fails all the same (another writer filled the
disk) is a ``refused`` event, never an exception and never a truncated file. Delivering and
evicting only delete, and the transaction counter is updated in place, so the downlink goes
on with no free byte at all.

**Power loss.** A product file is written to ``NAME.tmp``, fsynced, renamed into place and
the directory fsynced, so after a power cut a product is either whole in the queue or absent
(and :meth:`put` had not returned). Opening the spool deletes leftover ``.tmp`` files and
reports them in :attr:`Spool.recovery`. A delivered product's file is unlinked and the
directory fsynced; if power fails between the ground's confirmation and the unlink, the
product is sent again after the restart and the ground drops the duplicate (it keys products
by name and SHA-256). ``state.bin`` is updated slot by slot and holds the counters that must
never go backwards: the next spool sequence number and the next CFDP transaction sequence
number (``cfdp-py`` keeps transfers in memory only, so a transfer cut by a reboot is started
again from scratch under a new transaction number and the ground never mixes the two).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from firmware_bridge.errors import BridgeError
from firmware_bridge.messages import Event, EventCode
from firmware_bridge.storage import TMP_SUFFIX, SlotRecord, StorageBudget, atomic_write, fsync_dir

#: Names and kinds are used in file names and CFDP file names: keep them plain.
_NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_FILE_RE = re.compile(r"^(\d{2})\.(\d{10})\.([A-Za-z0-9_-]{1,64})\.([A-Za-z0-9_-]{1,64})$")
STATE_FILE = "state.bin"
LEGACY_STATE_FILE = "state.json"
QUEUE_DIR = "queue"


class SpoolError(BridgeError, RuntimeError):
    """The spool cannot do what was asked (bad name, unreadable state, ...)."""


@dataclass(frozen=True)
class SpoolEntry:
    """One queued product file."""

    priority: int
    seq: int
    kind: str
    name: str
    path: Path
    size: int

    @property
    def order(self) -> tuple[int, int]:
        """Delivery order: priority, then age."""
        return (self.priority, self.seq)


@dataclass(frozen=True)
class SpoolEvent:
    """Something the flight computer should hear about: ``what`` is ``queued``,
    ``evicted``, ``refused``, ``delivered`` or ``shed`` (an archive copy deleted or not
    written to keep the disk's free-space floor, ``onboard/runtime/writer.py``)."""

    what: str
    name: str
    kind: str
    priority: int
    size: int
    reason: str = ""

    _CODES = {
        "queued": EventCode.PRODUCT_QUEUED,
        "evicted": EventCode.SPOOL_EVICTED,
        "refused": EventCode.SPOOL_EVICTED,
        "shed": EventCode.SPOOL_EVICTED,
        "delivered": EventCode.PRODUCT_DELIVERED,
    }

    def message(self) -> Event:
        """The telemetry EVENT for this record (PROTOCOL.md event codes 0x0020-0x0022)."""
        text = f"{self.what} {self.name} ({self.kind}, priority {self.priority}, {self.size} B)"
        return Event(self._CODES[self.what], f"{text}: {self.reason}" if self.reason else text)


@dataclass(frozen=True)
class RecoveryReport:
    """What opening the spool found: queued products and discarded partial writes."""

    entries: int
    queued_bytes: int
    partial_files_discarded: int
    partial_bytes_discarded: int


def _entry(path: Path) -> SpoolEntry:
    """The queued product a spool file name describes; SpoolError for any other file."""
    m = _FILE_RE.match(path.name)
    if m is None or not path.is_file():
        raise SpoolError(f"unexpected file {path} in the spool queue: move it out of {path.parent}")
    return SpoolEntry(int(m[1]), int(m[2]), m[3], m[4], path, path.stat().st_size)


def pick(entries: Iterable[SpoolEntry], room: float | None = None,
         cost: Callable[[SpoolEntry], float] | None = None) -> SpoolEntry | None:
    """The product to send next: the first in delivery order (:attr:`SpoolEntry.order`) whose
    transfer, ``cost(entry)`` bytes on the link, fits the ``room`` bytes left in the pass;
    with no ``room`` (no contact plan) simply the first. None when nothing fits. The sender
    (``cfdp/sender.py``) and the planner (``plan.py``) both choose with this function."""
    for entry in sorted(entries, key=lambda e: e.order):
        if room is None or cost is None or cost(entry) <= room:
            return entry
    return None


def queued(root: str | os.PathLike[str]) -> list[SpoolEntry]:
    """The products queued in the spool at ``root``, in delivery order, read without writing
    anything (no recovery, no folder made): for estimates and inspection of a spool another
    process owns. Partial ``.tmp`` files are not products and are not listed."""
    queue_dir = Path(root) / QUEUE_DIR
    if not queue_dir.is_dir():
        raise SpoolError(f"{root} is not a spool (it has no {QUEUE_DIR}/ folder)")
    entries = [_entry(p) for p in queue_dir.iterdir() if not p.name.endswith(TMP_SUFFIX)]
    return sorted(entries, key=lambda e: e.order)


class Spool:
    """A directory of products waiting for downlink. Not thread-safe: one owner."""

    def __init__(self, root: str | os.PathLike[str], quota_bytes: int,
                 budget: StorageBudget | None = None) -> None:
        if quota_bytes <= 0:
            raise ValueError(f"quota_bytes must be > 0, got {quota_bytes}")
        self.root = Path(root)
        self.queue_dir = self.root / QUEUE_DIR
        self.quota_bytes = quota_bytes
        self.budget = budget
        self._state_record = SlotRecord(self.root / STATE_FILE)
        self.queue_dir.mkdir(parents=True, exist_ok=True)
        self._in_flight: int | None = None  # seq of the entry being delivered
        self._state = self._read_state()
        if not self._state_record.path.exists():
            # Created now, while there is room, so that later updates need none; on a full
            # disk the first reserve_transaction tries again.
            with contextlib.suppress(OSError):
                self._state_record.create(json.dumps(self._state).encode())
        self._entries: dict[int, SpoolEntry] = {}
        self.recovery = self._recover()

    # -- opening ---------------------------------------------------------------------------

    def _read_state(self) -> dict[str, int]:
        path = self.root / STATE_FILE
        try:
            raw = self._state_record.read()
            if raw is None:
                path = self.root / LEGACY_STATE_FILE
                if not path.exists():
                    return {"next_seq": 0, "next_transaction": 0}
                raw = path.read_bytes()
            state = json.loads(raw)
            return {"next_seq": int(state["next_seq"]),
                    "next_transaction": int(state["next_transaction"])}
        except (ValueError, KeyError, TypeError) as exc:
            # Never guess the counters: a reused transaction number could merge two transfers.
            raise SpoolError(
                f"spool state {path} is unreadable ({exc}); if the spool is to be kept, delete "
                f"it and write {self.root / LEGACY_STATE_FILE} holding "
                '{"next_seq": N, "next_transaction": M} with numbers above any used'
            ) from exc

    def _recover(self) -> RecoveryReport:
        discarded = discarded_bytes = 0
        for path in sorted(self.queue_dir.iterdir()):
            if path.name.endswith(TMP_SUFFIX):
                discarded += 1
                discarded_bytes += path.stat().st_size
                path.unlink()
                continue
            entry = _entry(path)
            self._entries[entry.seq] = entry
        if discarded:
            fsync_dir(self.queue_dir)
        if self._entries:
            self._state["next_seq"] = max(self._state["next_seq"], max(self._entries) + 1)
        return RecoveryReport(len(self._entries), self.used_bytes, discarded, discarded_bytes)

    # -- queries ---------------------------------------------------------------------------

    @property
    def used_bytes(self) -> int:
        return sum(e.size for e in self._entries.values())

    def entries(self) -> list[SpoolEntry]:
        """Queued products in delivery order."""
        return sorted(self._entries.values(), key=lambda e: e.order)

    def __len__(self) -> int:
        return len(self._entries)

    def next(self, room: float | None = None,
             cost: Callable[[SpoolEntry], float] | None = None) -> SpoolEntry | None:
        """The product to deliver next, chosen by :func:`pick` (it is protected from eviction
        until :meth:`delivered` or :meth:`release`)."""
        entry = pick(self._entries.values(), room, cost)
        self._in_flight = None if entry is None else entry.seq
        return entry

    def release(self) -> None:
        """The product handed out by :meth:`next` was not delivered; it stays queued."""
        self._in_flight = None

    # -- changes ---------------------------------------------------------------------------

    def put(self, name: str, data: bytes, priority: int, kind: str) -> list[SpoolEvent]:
        """Queue ``data`` durably; returns the events to report (``queued``, and any
        ``evicted``, or a single ``refused``). When it returns with ``queued``, the product
        survives a power cut. Putting the same name with the same bytes again is a no-op
        (returns no event), so a producer may safely repeat a put after a restart."""
        for what, value in (("name", name), ("kind", kind)):
            if not _NAME_RE.match(value):
                raise SpoolError(f"product {what} {value!r} must be 1-64 of A-Z a-z 0-9 _ -")
        if not 0 <= priority <= 99:
            raise SpoolError(f"priority must be 0-99, got {priority}")
        for e in self._entries.values():
            if e.name == name and e.size == len(data) and e.path.read_bytes() == data:
                return []
        size = len(data)
        quota_victims = self._victims(self.used_bytes + size - self.quota_bytes, priority, [])
        if quota_victims is None:
            why = (f"spool quota {self.quota_bytes} B: {self.used_bytes} B queued and no "
                   f"product of priority >= {priority} can make room")
            return [SpoolEvent("refused", name, kind, priority, size, why)]
        events = [SpoolEvent("evicted", v.name, v.kind, v.priority, v.size,
                             f"quota {self.quota_bytes} B, room for {name}") for v in quota_victims]
        disk_victims: list[SpoolEntry] = []
        if self.budget is not None:
            shed = self.budget.shed_archive_for(self.queue_dir, size)
            need = self.budget.deficit(self.queue_dir, size) - sum(v.size for v in quota_victims)
            found = self._victims(need, priority, quota_victims)
            if found is None:
                why = (f"free space below the floor of {self.budget.floor_bytes} B and no "
                       f"product of priority >= {priority} can make room")
                return [*shed, SpoolEvent("refused", name, kind, priority, size, why)]
            events += shed
            disk_victims = found
            events += [SpoolEvent("evicted", v.name, v.kind, v.priority, v.size,
                                  f"disk free space floor {self.budget.floor_bytes} B, room for "
                                  f"{name}") for v in disk_victims]
        for v in (*quota_victims, *disk_victims):
            self._remove(v)
        seq = self._state["next_seq"]
        path = self.queue_dir / f"{priority:02d}.{seq:010d}.{kind}.{name}"
        try:
            atomic_write(path, data)
        except OSError as exc:
            return [*events, SpoolEvent("refused", name, kind, priority, size,
                                        f"cannot write it: {exc.strerror or exc}")]
        self._state["next_seq"] = seq + 1
        self._entries[seq] = SpoolEntry(priority, seq, kind, name, path, size)
        events.append(SpoolEvent("queued", name, kind, priority, size))
        return events

    def _victims(self, need: int, priority: int,
                 taken: list[SpoolEntry]) -> list[SpoolEntry] | None:
        """Entries (besides ``taken``) to evict to free ``need`` bytes, or None if impossible."""
        if need <= 0:
            return []
        candidates = sorted(
            (e for e in self._entries.values()
             if e.priority >= priority and e.seq != self._in_flight and e not in taken),
            key=lambda e: (-e.priority, e.seq),
        )
        victims: list[SpoolEntry] = []
        for e in candidates:
            if need <= 0:
                break
            victims.append(e)
            need -= e.size
        return victims if need <= 0 else None

    def delivered(self, entry: SpoolEntry) -> SpoolEvent:
        """The ground has the product: remove it from the spool (durably)."""
        self._remove(entry)
        return SpoolEvent("delivered", entry.name, entry.kind, entry.priority, entry.size)

    def discard(self, entry: SpoolEntry, reason: str) -> SpoolEvent:
        """Drop a product that cannot be delivered (its file is gone or unreadable); the
        event says why."""
        self._remove(entry)
        return SpoolEvent("evicted", entry.name, entry.kind, entry.priority, entry.size, reason)

    def _remove(self, entry: SpoolEntry) -> None:
        if self._in_flight == entry.seq:
            self._in_flight = None
        self._entries.pop(entry.seq, None)
        try:
            entry.path.unlink()
        except FileNotFoundError:
            pass
        fsync_dir(self.queue_dir)

    def reserve_transaction(self) -> int:
        """A CFDP transaction sequence number never used before, even across power cuts:
        the counter is persisted before the number is handed out."""
        number = self._state["next_transaction"]
        self._state["next_transaction"] = number + 1
        self._state_record.write(json.dumps(self._state).encode())
        return number
