"""Pass windows: when the ground can be reached, and at what rate (``[[downlink.pass]]`` in
the mission file). Kept apart from the planner (``plan.py``), which needs the CFDP stack, so
that loading a mission file does not import it."""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from firmware_bridge.errors import BridgeError
from firmware_bridge.link import ByteRate
from firmware_bridge.storage import atomic_write

PASS_KEYS = ("start_utc", "end_utc", "rate_bit_s")


class PlanError(BridgeError, ValueError):
    """A pass definition that cannot be used; the message names the pass and the key."""


@dataclass(frozen=True)
class Pass:
    """One contact window with the ground: UTC start and end, and the link rate in bit/s."""

    start_utc: dt.datetime
    end_utc: dt.datetime
    rate_bit_s: float

    @property
    def rate(self) -> ByteRate:
        return ByteRate.bits(self.rate_bit_s)

    def capacity_bytes(self, now: dt.datetime | None = None) -> float:
        """Bytes the pass carries from ``max(start, now)`` to its end."""
        begin = self.start_utc if now is None else max(self.start_utc, now)
        return max(0.0, (self.end_utc - begin).total_seconds()) * self.rate.bytes_per_s


def _utc(where: str, value: Any) -> dt.datetime:
    """A UTC datetime from a TOML datetime or an ISO 8601 string; a time without an offset is
    taken as UTC (the key says so), a date alone is refused (a pass needs a time of day)."""
    if isinstance(value, str):
        try:
            value = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError as exc:
            raise PlanError(f"{where}: expected an ISO 8601 UTC time such as "
                            f"2026-12-08T10:15:00Z, got {value!r}") from exc
    if not isinstance(value, dt.datetime):
        raise PlanError(f"{where}: expected a date and time such as 2026-12-08T10:15:00Z, "
                        f"got {type(value).__name__} {value!r}")
    if value.tzinfo is None:
        return value.replace(tzinfo=dt.timezone.utc)
    return value.astimezone(dt.timezone.utc)


def parse_passes(tables: Any, where: str = "[[downlink.pass]]") -> list[Pass]:
    """Passes from TOML tables (``[[downlink.pass]]`` with ``start_utc``, ``end_utc``,
    ``rate_bit_s``), sorted by start. Refuses, naming the pass (1-based, as written) and the
    key: a missing or unknown key, a bad time, an end not after the start, a rate not > 0,
    and passes that overlap (one radio: two windows at once are a mistake in the file)."""
    if not isinstance(tables, list):
        raise PlanError(f"{where}: expected an array of tables ([[downlink.pass]]), got {tables!r}")
    passes = []
    for i, table in enumerate(tables, 1):
        at = f"{where} #{i}"
        if not isinstance(table, Mapping):
            raise PlanError(f"{at}: expected a table of {', '.join(PASS_KEYS)}, got {table!r}")
        unknown = sorted(set(table) - set(PASS_KEYS))
        if unknown:
            raise PlanError(f"{at} {unknown[0]}: unknown key; a pass has {', '.join(PASS_KEYS)}")
        missing = [k for k in PASS_KEYS if k not in table]
        if missing:
            raise PlanError(f"{at} {missing[0]}: missing; a pass has {', '.join(PASS_KEYS)}")
        start = _utc(f"{at} start_utc", table["start_utc"])
        end = _utc(f"{at} end_utc", table["end_utc"])
        if end <= start:
            raise PlanError(f"{at} end_utc: {end.isoformat()} is not after start_utc {start.isoformat()}")
        rate = table["rate_bit_s"]
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not math.isfinite(rate) or rate <= 0:
            raise PlanError(f"{at} rate_bit_s: expected a number of bit/s > 0, got {rate!r}")
        passes.append(Pass(start, end, float(rate)))
    passes.sort(key=lambda p: p.start_utc)
    for a, b in zip(passes, passes[1:], strict=False):
        if b.start_utc < a.end_utc:
            raise PlanError(f"{where}: the pass starting {b.start_utc.isoformat()} overlaps the one "
                            f"ending {a.end_utc.isoformat()}")
    return passes


def from_unix(passes: Sequence[tuple[int, int, int]], where: str = "SET_PASSES") -> list[Pass]:
    """Passes from (start, end, rate) in Unix seconds and bit/s (the SET_PASSES telecommand),
    checked as the mission file's are (:func:`parse_passes`: overlaps refused)."""
    def utc(t: int) -> dt.datetime:
        return dt.datetime.fromtimestamp(t, dt.timezone.utc)

    return parse_passes([{"start_utc": utc(s), "end_utc": utc(e), "rate_bit_s": r} for s, e, r in passes],
                        where)


class ContactPlan:
    """The passes ahead, as the payload knows them: from the mission file, replaced by a
    SET_PASSES telecommand and then kept in ``path`` (JSON, written atomically) so that a
    reboot keeps the ground's latest plan rather than the mission file's."""

    def __init__(self, passes: Sequence[Pass], path: Path | None = None) -> None:
        self.path = path
        self.passes = list(passes)
        self.problem = ""  # why a kept plan was not used (the payload reports it)
        if path is not None and path.exists():
            try:
                self.passes = from_unix([tuple(p) for p in json.loads(path.read_text())], str(path))
            except (OSError, ValueError, TypeError) as exc:
                self.problem = f"{path} unreadable ({exc}): the mission file's passes are used"

    def replace(self, passes: Sequence[Pass]) -> None:
        """The ground's new plan, kept durably before it is used."""
        if self.path is not None:
            atomic_write(self.path, json.dumps([[int(p.start_utc.timestamp()), int(p.end_utc.timestamp()),
                                                 p.rate_bit_s] for p in passes]).encode())
        self.passes = list(passes)

    def current(self, now: dt.datetime) -> Pass | None:
        """The pass under way at ``now``, if any."""
        return next((p for p in self.passes if p.start_utc <= now < p.end_utc), None)

    def room_bytes(self, now: dt.datetime) -> float | None:
        """Bytes the link carries from ``now`` to the end of the current pass: None with no
        plan at all (the link is taken to be always up), 0 between passes."""
        if not self.passes:
            return None
        window = self.current(now)
        return 0.0 if window is None else window.capacity_bytes(now)


def adapted_period_s(base_s: float, message_bytes: float, rate_bytes_per_s: float, share: float) -> float:
    """How often a periodic message of ``message_bytes`` (on the link) may go so that it takes
    at most ``share`` of a link of ``rate_bytes_per_s``, and never more often than ``base_s``
    (a 2 KB health product at a 2 % share: every 10 s at 115.2 kbit/s, every 84 s at 9.6)."""
    return max(base_s, message_bytes / (share * rate_bytes_per_s))
