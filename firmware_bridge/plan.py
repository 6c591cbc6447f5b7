"""The contact plan: which queued product goes down in which pass, and what does not go at all.

A CubeSat talks to the ground only in pass windows, each at its own link rate. For the spool
as it is (read with :func:`firmware_bridge.spool.queued`, which writes nothing) and the
passes ahead, :func:`plan` forecasts what the downlink does with them, modelling the sender
as it is (``cfdp/sender.py``), not an ideal one:

* **Order.** Products leave one at a time, each chosen by :func:`firmware_bridge.spool.pick`,
  the one choice the sender makes too: the first in the spool's delivery order (value rank,
  then deadline) whose transfer fits the bytes left in the pass.
* **Cost.** A product costs its transfer's bytes on the link
  (:class:`~firmware_bridge.cfdp.sender.TransferCosts`: CFDP PDUs in space packets in link
  frames, COBS at its worst case), at the pass's rate (:meth:`ByteRate.bits`: ``rate_bit_s /
  8`` bytes a second). A pass of ``d`` seconds carries ``rate_bit_s * d / 8`` bytes; a pass
  already under way counts from ``now``.
* **Nothing is cut.** The sender starts a transfer only if it ends before the pass does
  (cfdp-py cannot suspend one: a cut transfer would start again from scratch), so a product
  larger than the room left waits and the next one that fits goes instead: no product blocks
  those behind it. One larger than every pass ahead is named as such.

* **What else a product costs the pass** (:class:`LinkModel`, the payload's sender chooses with
  the same): the PRODUCT_DELIVERED event that follows it, and, in class 2, the link's idle
  time while the ground's Finished PDU comes back (``turnaround_s``: the sender measures it,
  ``DownlinkSender.turnaround_s``; 0 by default); ``reserve_share`` of the rate is kept for
  HEALTH (``[link] telemetry_share``).

Losses and retransmissions are not forecast (an upper bound on what a pass carries), nor are
class 2's ACK of each Finished PDU (a few tens of bytes a product), class 1's repeats
(``class1_repeats``, 1 by default), and the events of products queued during the pass.
"""

from __future__ import annotations

import datetime as dt
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from firmware_bridge.cfdp.common import DownlinkConfig
from firmware_bridge.cfdp.sender import TransferCosts
from firmware_bridge.link import wire_bytes
from firmware_bridge.passes import Pass
from firmware_bridge.spool import SpoolEntry, SpoolEvent, pick, queued


@dataclass(frozen=True)
class PlannedProduct:
    """One queued product and its fate: ``pass_index`` (0-based into :attr:`Plan.passes`) and
    ``start_utc`` when it goes, else None and ``reason``."""

    name: str
    kind: str
    priority: int
    size: int
    wire_bytes: int
    pass_index: int | None = None
    start_utc: dt.datetime | None = None
    seconds: float = 0.0
    reason: str = ""


@dataclass(frozen=True)
class PassPlan:
    """One pass ahead: what it carries (``products``, in send order) and the bytes they take
    on the link."""

    window: Pass
    capacity_bytes: float
    products: list[PlannedProduct] = field(default_factory=list)

    @property
    def used_bytes(self) -> int:
        return sum(p.wire_bytes for p in self.products)


@dataclass(frozen=True)
class Plan:
    """The forecast: passes ahead with their contents, and the products that will not go
    before the end of the last pass, each with why."""

    now: dt.datetime
    passes: list[PassPlan]
    not_sent: list[PlannedProduct]

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON types (times as ISO 8601 UTC strings)."""

        def product(p: PlannedProduct) -> dict[str, Any]:
            d = {k: getattr(p, k) for k in ("name", "kind", "priority", "size", "wire_bytes")}
            if p.pass_index is None:
                d["reason"] = p.reason
            else:
                d.update(pass_index=p.pass_index, start_utc=_iso(p.start_utc),
                         seconds=round(p.seconds, 3))
            return d

        return {
            "now_utc": _iso(self.now),
            "passes": [{
                "start_utc": _iso(pp.window.start_utc), "end_utc": _iso(pp.window.end_utc),
                "rate_bit_s": pp.window.rate_bit_s, "capacity_bytes": math.floor(pp.capacity_bytes),
                "used_bytes": pp.used_bytes,
                "products": [product(p) for p in pp.products],
            } for pp in self.passes],
            "not_sent": [product(p) for p in self.not_sent],
        }


def _iso(t: dt.datetime | None) -> str | None:
    return None if t is None else t.isoformat().replace("+00:00", "Z")


@dataclass(frozen=True)
class LinkModel:
    """What a pass spends on a product besides its transfer, and what it keeps for HEALTH
    (module docstring). ``events`` false: a sender that reports no PRODUCT_DELIVERED event
    (``python -m firmware_bridge.cfdp``)."""

    turnaround_s: float = 0.0
    reserve_share: float = 0.0
    events: bool = True

    def capacity(self, window: Pass, now: dt.datetime) -> float:
        """Bytes of the pass, from ``now``, left for products."""
        return window.capacity_bytes(now) * (1.0 - self.reserve_share)

    def cost(self, transfer: TransferCosts, entry: SpoolEntry, rate_bytes_per_s: float) -> float:
        """Bytes of a pass that ``entry`` takes: its transfer, its PRODUCT_DELIVERED event and
        the turnaround at the pass's rate."""
        event = SpoolEvent("delivered", entry.name, entry.kind, entry.priority, entry.size).message()
        event_bytes = wire_bytes([event.pack()]) if self.events else 0
        return transfer(entry) + event_bytes + self.turnaround_s * rate_bytes_per_s


def plan(entries: Iterable[SpoolEntry], passes: Sequence[Pass], now: dt.datetime,
         config: DownlinkConfig | None = None, model: LinkModel | None = None) -> Plan:
    """Forecast the downlink of ``entries`` over the passes that end after ``now``, as the
    module docstring says."""
    transfer = TransferCosts(config)
    model = model or LinkModel()
    left = list(entries)
    ahead = [p for p in sorted(passes, key=lambda p: p.start_utc) if p.end_utc > now]
    plans: list[PassPlan] = []
    for index, window in enumerate(ahead):
        begin = max(window.start_utc, now)
        capacity = model.capacity(window, now)
        rate = window.rate.bytes_per_s

        def cost(e: SpoolEntry, rate: float = rate) -> float:
            return model.cost(transfer, e, rate)

        carried: list[PlannedProduct] = []
        used = 0.0
        while (e := pick(left, capacity - used, cost)) is not None:
            start = begin + dt.timedelta(seconds=used / rate)
            carried.append(PlannedProduct(e.name, e.kind, e.priority, e.size, transfer(e), index, start,
                                          cost(e) / rate))
            used += cost(e)
            left.remove(e)
        plans.append(PassPlan(window, capacity, carried))
    largest = max((pp.capacity_bytes for pp in plans), default=0.0)

    def why(e: SpoolEntry) -> str:
        if not plans:
            return "no pass ahead"
        if all(model.cost(transfer, e, pp.window.rate.bytes_per_s) > pp.capacity_bytes for pp in plans):
            return (f"its transfer takes {transfer(e)} B on the link, more than any pass ahead carries "
                    f"(at most {math.floor(largest)} B): it waits for a longer pass")
        return "the passes ahead are full before its turn"

    not_sent = [PlannedProduct(e.name, e.kind, e.priority, e.size, transfer(e), reason=why(e))
                for e in sorted(left, key=lambda e: e.order)]
    return Plan(now, plans, not_sent)


def plan_spool(root: str | os.PathLike[str], passes: Sequence[Pass], now: dt.datetime,
               config: DownlinkConfig | None = None) -> Plan:
    """:func:`plan` for the spool at ``root``, read without writing anything."""
    return plan(queued(root), passes, now, config)
