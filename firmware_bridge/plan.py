"""The contact plan: which queued product goes down in which pass, and what does not go at all.

A CubeSat talks to the ground only in pass windows, each at its own link rate. For the spool
as it is (read with :func:`firmware_bridge.spool.queued`, which writes nothing) and the
passes ahead, :func:`plan` forecasts what the downlink does with them, modelling the sender
as it is (``cfdp/sender.py``), not an ideal one:

* **Order.** Products leave one at a time in the spool's delivery order
  (:attr:`SpoolEntry.order`: priority, then age), the one order the sender uses.
* **Cost.** A product costs its transfer's bytes on the link
  (:func:`~firmware_bridge.cfdp.sender.transfer_packet_sizes` through
  :func:`~firmware_bridge.link.wire_bytes`: CFDP PDUs in space packets in link frames, COBS
  at its worst case), at the pass's rate (:meth:`ByteRate.bits`: ``rate_bit_s / 8`` bytes a
  second). A pass of ``d`` seconds carries ``rate_bit_s * d / 8`` bytes; a pass already under
  way counts from ``now``.
* **A transfer cut by the end of a pass** is lost: the sender cannot suspend one (cfdp-py
  keeps no state across a silence; class 2 restarts it from scratch under a new transaction),
  so the rest of that pass is wasted and the product starts again at the next pass.
* **Head-of-line blocking.** A product whose transfer is longer than every pass ahead never
  goes, and the sender, which keeps to the spool's order, sends nothing behind it of the same
  or a less urgent priority: the plan says so for each product left behind.

Losses and retransmissions are not forecast (an upper bound on what a pass carries), nor are
class 2's ACK of each Finished PDU (a few tens of bytes a product) and class 1's repeats
(``class1_repeats``, 1 by default); the whole rate is taken for the downlink: HEALTH and
events take their share of a real pass.
"""

from __future__ import annotations

import datetime as dt
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from firmware_bridge.cfdp.common import DownlinkConfig
from firmware_bridge.cfdp.sender import transfer_packet_sizes
from firmware_bridge.link import wire_bytes
from firmware_bridge.passes import Pass
from firmware_bridge.spool import SpoolEntry, queued


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
    """One pass ahead: what it carries (``products``, in send order), the bytes they take on
    the link, and the bytes of a transfer the pass's end cuts (``cut``, wasted)."""

    window: Pass
    capacity_bytes: float
    products: list[PlannedProduct] = field(default_factory=list)
    cut: str | None = None
    cut_bytes: float = 0.0

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
                "used_bytes": pp.used_bytes, "cut": pp.cut, "cut_bytes": math.floor(pp.cut_bytes),
                "products": [product(p) for p in pp.products],
            } for pp in self.passes],
            "not_sent": [product(p) for p in self.not_sent],
        }


def _iso(t: dt.datetime | None) -> str | None:
    return None if t is None else t.isoformat().replace("+00:00", "Z")


def plan(entries: Iterable[SpoolEntry], passes: Sequence[Pass], now: dt.datetime,
         config: DownlinkConfig | None = None) -> Plan:
    """Forecast the downlink of ``entries`` (in the spool's delivery order) over the passes
    that end after ``now``, as the module docstring says."""
    ordered = sorted(entries, key=lambda e: e.order)
    costs = [wire_bytes(transfer_packet_sizes(e, config)) for e in ordered]
    ahead = [p for p in sorted(passes, key=lambda p: p.start_utc) if p.end_utc > now]
    plans: list[PassPlan] = []
    i = 0
    for index, window in enumerate(ahead):
        begin = max(window.start_utc, now)
        capacity = window.capacity_bytes(now)
        carried: list[PlannedProduct] = []
        used = 0
        while i < len(ordered) and used + costs[i] <= capacity:
            e, cost = ordered[i], costs[i]
            start = begin + dt.timedelta(seconds=window.rate.seconds(used))
            carried.append(PlannedProduct(e.name, e.kind, e.priority, e.size, cost, index, start,
                                          window.rate.seconds(cost)))
            used += cost
            i += 1
        cut = ordered[i].name if i < len(ordered) and capacity > used else None
        plans.append(PassPlan(window, capacity, carried, cut, capacity - used if cut else 0.0))
    return Plan(now, plans, _left_behind(ordered[i:], costs[i:], plans))


def _left_behind(rest: Sequence[SpoolEntry], costs: Sequence[int],
                 plans: Sequence[PassPlan]) -> list[PlannedProduct]:
    """The products no pass carries, each with why: the first one either never fits a pass
    (and blocks the rest) or is the first for which the passes ran out."""
    if not rest:
        return []
    largest = max((pp.capacity_bytes for pp in plans), default=0.0)
    head, head_cost = rest[0], costs[0]
    if not plans:
        why = "no pass ahead"
    elif head_cost > largest:
        why = (f"its transfer takes {head_cost} B on the link, more than any pass ahead carries "
               f"(at most {math.floor(largest)} B): it is cut at the end of every pass")
    else:
        why = "the passes ahead are full before its turn"
    out = [PlannedProduct(head.name, head.kind, head.priority, head.size, head_cost, reason=why)]
    blocked = why if head_cost <= largest or not plans else (
        f"behind {head.name}, which never fits a pass: the sender keeps to the spool's order")
    out += [PlannedProduct(e.name, e.kind, e.priority, e.size, c, reason=blocked)
            for e, c in zip(rest[1:], costs[1:], strict=True)]
    return out


def plan_spool(root: str | os.PathLike[str], passes: Sequence[Pass], now: dt.datetime,
               config: DownlinkConfig | None = None) -> Plan:
    """:func:`plan` for the spool at ``root``, read without writing anything."""
    return plan(queued(root), passes, now, config)
