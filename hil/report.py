"""The scenario report: what was expected, what reached the ground, and each criterion.

Definitions (all counted on the flight computer's side of the link):

* **expected**: every product the payload made for the downlink (its on-board archive,
  ``out/products``, less the products its frame manifests mark ``held``: a frame not worth
  sending keeps them on board, onboard/stages/screen.py);
  with real hardware (``--port``) the archive is out of reach and only the per-frame
  residue check applies.
* **delivered**: expected products that reached the ground intact (CFDP CRC-32, then the
  product's own SHA-256, equal to the archived product's).
* **corrupt**: arrivals that are not a valid product or differ from the archived one.
* **duplicated**: arrivals of a product already delivered, beyond those a REQUEST_PRODUCT
  asked for.
* **frame-to-ground latency**: from the moment the sensor feeder made a frame visible to the
  payload to the arrival of that frame's residue product (a frame whose residue never came
  counts with the time it had waited when the scenario ended).
* **deadline misses**, **peak memory**: from the payload's HEALTH telemetry (summed, or the
  maximum, over boots); **degradation events**: degrade-level event products delivered.
* **commands**: every telecommand with the ACK it got. "Bad" ones (forged, replayed,
  unauthenticated other than PING, garbage) must never be accepted.
* **passes** (a scenario with ``[link] passes``): per pass, the payload's forecast (its
  PASS_PLANNED event at the pass's start: products and bytes on the link,
  firmware_bridge/plan.py) against what the ground received in the pass (products arrived
  between its start and 2 s after its end, each costed by the same definition:
  ``transfer_wire_bytes``); the **value** the pass delivered: per product, ``VALUE`` of its
  class (``onboard/stages/value.py``'s classes; health and events 0); the frames it made
  **known** on the ground (the first product of that frame to arrive: a summary or a residue
  map); **summaries late**: frames whose summary did not arrive by the end of the first pass
  that starts after the frame was made (frames after the last pass start do not count).
* **lost silently**: expected products neither delivered, nor still queued in the payload's
  spool at the end, nor named in a SPOOL_EVICTED event the ground received.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass, field
from typing import Any

from firmware_bridge.cfdp.sender import transfer_wire_bytes
from firmware_bridge.messages import EventCode, ResultCode
from hil.flight_computer import FlightComputer
from hil.scenario import Criteria, Scenario
from onboard.formats.products import Product, ProductKind
from onboard.stages.value import ValueRule

#: Value of a delivered product by class (stated, not measured): a frame's summary tells the
#: ground the frame's residue per grid cell and whether it is clear; a clear frame's residue
#: map is the mission's product; a cube of a clear frame serves reprocessing; a cloudy
#: frame's map and a quick-look tell little.
VALUE = {"summary": 4, "residue_clear": 3, "residue_cloudy": 1, "cube": 2, "raw": 2, "quicklook": 1}
#: Arrivals this long after a pass's end still count for it (the link's latency and buffer).
PASS_GRACE_S = 2.0


@dataclass
class RunFacts:
    """What the runner observed besides the flight computer's records."""

    archive: dict[str, Product] | None  # name -> product the payload made (None: unknown)
    frames_written: dict[int, float]  # counter -> time the feeder made it visible
    damaged: set[int]
    boots: int
    kills: int
    crashes: list[int]
    exit_code: int | None
    seconds: float
    boot_s: float | None = None
    ended: float = 0.0  # time.monotonic() when the scenario ended
    cuts_mid_transfer: int = 0  # power cuts while a CFDP transfer was open on the ground
    link_stats: dict[str, Any] = field(default_factory=dict)
    t0: float = 0.0  # time.monotonic() at the scenario's start
    passes: list[tuple[float, float]] = field(default_factory=list)  # (start, end) from t0
    queued_at_end: set[str] = field(default_factory=set)  # in the payload's spool at the end


def product_value(p: Product) -> int:
    """The value of a delivered product (``VALUE``; health, events and the rest: 0)."""
    if p.kind == ProductKind.SUMMARY:
        return VALUE["summary"]
    if p.kind in (ProductKind.HEALTH, ProductKind.EVENT, ProductKind.CALIBRATION_REPORT):
        return 0
    worth = bool(p.meta.get("screen", {}).get("worth_sending", True))
    return VALUE.get(ValueRule().value_class(p.kind, worth), 0)


def _passes(fc: FlightComputer, facts: RunFacts) -> list[dict[str, Any]]:
    """Per pass: forecast, received, value, frames made known (module docstring)."""
    out: list[dict[str, Any]] = []
    known: set[int] = set()
    for start, end in facts.passes:
        lo, hi = facts.t0 + start, facts.t0 + end + PASS_GRACE_S
        arrived = [a.product for a in fc.arrivals if lo <= a.t < hi and a.product is not None]
        forecasts = [json.loads(e.text) for t, e in fc.events if e.code == EventCode.PASS_PLANNED and lo <= t < hi]
        received = sum(transfer_wire_bytes(len(p.to_bytes()), p.name) for p in arrived)
        frames = {p.frame_counter for p in arrived if p.kind in (ProductKind.SUMMARY, ProductKind.RESIDUE)} - known
        known |= frames
        f = forecasts[0] if forecasts else None
        out.append({"start_s": start, "end_s": end, "received_products": len(arrived), "received_bytes": received,
                    "forecast_products": f["products"] if f else None, "forecast_bytes": f["bytes"] if f else None,
                    "error": (received - f["bytes"]) / f["bytes"] if f and f["bytes"] else None,
                    "value": sum(product_value(p) for p in arrived),
                    "frames_known": len(frames), "received_names": [p.name for p in arrived],
                    "forecast_names": f["names"] if f else None})
    return out


def _late_summaries(fc: FlightComputer, facts: RunFacts) -> list[int]:
    """Frames whose summary missed the end of the first pass starting after the frame was made."""
    arrived = {a.product.frame_counter: a.t for a in fc.arrivals
               if a.product is not None and a.product.kind == ProductKind.SUMMARY}
    late = []
    for counter, made in facts.frames_written.items():
        ends = [facts.t0 + end for start, end in facts.passes if facts.t0 + start >= made]
        if counter in facts.damaged or not ends:
            continue
        if arrived.get(counter, float("inf")) > ends[0] + PASS_GRACE_S:
            late.append(counter)
    return sorted(late)


def _lost_silently(fc: FlightComputer, facts: RunFacts, delivered: set[str]) -> list[str] | None:
    if facts.archive is None:
        return None
    evicted = {e.text.split()[1] for _, e in fc.events if e.code == EventCode.SPOOL_EVICTED and len(e.text.split()) > 1}
    return sorted(set(facts.archive) - delivered - facts.queued_at_end - evicted)


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def _is_bad(kind: str, type_name: str) -> bool:
    return kind in ("forged", "replay", "garbage", "leaked") or (kind == "none" and type_name != "PING")


def measure(scenario: Scenario, fc: FlightComputer, facts: RunFacts) -> dict[str, Any]:
    """Every number of the report."""
    arrivals_by_name: dict[str, list] = {}
    for a in fc.arrivals:
        arrivals_by_name.setdefault(a.name, []).append(a)
    archive = facts.archive
    corrupt = 0
    delivered: set[str] = set()
    for name, arrivals in arrivals_by_name.items():
        for a in arrivals:
            good = a.sha256 is not None and a.error is None
            if good and archive is not None and name in archive:
                good = archive[name].sha256 == a.sha256
            if good:
                delivered.add(name)
            else:
                corrupt += 1
    requested = [c.type == "REQUEST_PRODUCT" and c.kind == "valid" and c.result == ResultCode.OK
                 for c in fc.commands]
    duplicated = max(0, sum(max(0, len(v) - 1) for v in arrivals_by_name.values()) - sum(requested))
    expected = set(archive) if archive is not None else None
    residues = {a.product.frame_counter: a.t for a in fc.arrivals
                if a.product is not None and a.product.kind == ProductKind.RESIDUE}
    # a frame whose residue map never came down counts with the latency it had reached when
    # the scenario ended (a lower bound): missing maps must not make the percentiles look good
    latency = sorted(residues.get(c, facts.ended) - t for c, t in facts.frames_written.items()
                     if c in residues or c not in facts.damaged)
    good_frames = [c for c in facts.frames_written if c not in facts.damaged or c in residues]
    events = [a.product for a in fc.arrivals if a.product is not None
              and a.product.kind == ProductKind.EVENT]
    bodies = [json.loads(p.payload) for p in events]
    degrade = {(b.get("frame"), b.get("level")) for b in bodies if b.get("event") == "degrade level"}
    reported = {b.get("frame") for b in bodies if b.get("event") in ("frame not replayed", "frame flagged")}
    misses = processed = 0
    peak, boot_misses, boot_frames, last_uptime = 0.0, 0, 0, -1.0
    for _t, h in fc.health:  # counters restart at each boot: sum each boot's last values
        if h.get("uptime_s", 0) < last_uptime:
            misses, processed = misses + boot_misses, processed + boot_frames
            boot_misses = boot_frames = 0
        last_uptime = h.get("uptime_s", 0)
        boot_misses = max(boot_misses, int(h.get("deadline_misses", 0)))
        boot_frames = max(boot_frames, int(h.get("frames", 0)))
        peak = max(peak, float(h.get("peak_rss_mb", 0)))
    misses, processed = misses + boot_misses, processed + boot_frames
    frames_fed = len(facts.frames_written)
    missing_residue: list = sorted(c for c in good_frames if c not in residues)
    if archive is None and not facts.frames_written:
        # real hardware: the payload's own sensor; every frame it processed needs a residue map
        frames_fed = processed
        missing_residue = [f"{processed - len(residues)} of {processed}"] if len(residues) < processed else []
    commands = {"valid_sent": 0, "valid_accepted": 0, "bad_sent": 0, "bad_accepted": 0,
                "refused": 0, "unanswered": 0, "by_result": {}}
    for c in fc.commands:
        bad = _is_bad(c.kind, c.type)
        commands["bad_sent" if bad else "valid_sent"] += 1
        if c.result is None:
            commands["unanswered"] += 1
            continue
        commands["by_result"][c.result.name] = commands["by_result"].get(c.result.name, 0) + 1
        if c.result == ResultCode.OK:
            commands["bad_accepted" if bad else "valid_accepted"] += 1
        else:
            commands["refused"] += 1
    return {
        "products_expected": len(expected) if expected is not None else None,
        "products_delivered": len(delivered & expected) if expected is not None else len(delivered),
        "products_missing": sorted(expected - delivered) if expected is not None else None,
        "products_corrupt": corrupt,
        "products_duplicated": duplicated,
        "frames_written": frames_fed,
        "frames_damaged": sorted(facts.damaged),
        "frames_with_residue": len(residues),
        "frames_without_residue": missing_residue,
        "damaged_frames_unreported": sorted(facts.damaged - reported),
        "latency_p50_s": _percentile(latency, 50),
        "latency_p95_s": _percentile(latency, 95),
        "deadline_misses": misses,
        "degrade_events": len(degrade),
        "peak_rss_mb": peak or None,
        "commands": commands,
        "failed_transfers": len(fc.failed_transfers),
        "ground_errors": fc.ground_errors,
        "bad_link_frames_at_fc": fc.link.decoder.bad_frames,
        "telemetry": {"health": len(fc.health), "events": len(fc.events)},
        "engine": fc.health[-1][1].get("engine") if fc.health else None,
        "payload": {"boots": facts.boots, "power_cuts": facts.kills, "crashes": facts.crashes,
                    "exit_code": facts.exit_code, "boot_s": facts.boot_s,
                    "cuts_mid_transfer": facts.cuts_mid_transfer},
        "seconds": round(facts.seconds, 1),
        "link": facts.link_stats,
        "passes": _passes(fc, facts),
        "summaries_late": _late_summaries(fc, facts) if facts.passes else None,
        "lost_silently": _lost_silently(fc, facts, delivered),
        "queued_at_end": len(facts.queued_at_end),
    }


def judge(criteria: Criteria, m: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per criterion the scenario sets: name, limit, measured value, passed."""
    rows: list[dict[str, Any]] = []

    def row(name: str, limit: Any, value: Any, passed: bool) -> None:
        rows.append({"criterion": name, "limit": limit, "value": value, "passed": bool(passed)})

    def at_most(name: str, key: str) -> None:
        """The criterion ``name`` (a limit, None: not set) on the measure ``key`` (None: not
        measured, which fails)."""
        limit, v = getattr(criteria, name), m[key]
        if limit is not None:
            row(name, limit, v, v is not None and v <= limit)

    c = criteria
    if c.all_products_delivered:
        ok = m["products_expected"] is None or (m["products_delivered"] == m["products_expected"]
                                                 and m["products_expected"] > 0)
        row("all_products_delivered", "all", f"{m['products_delivered']}/{m['products_expected']}", ok)
    if c.residue_every_frame:
        row("residue_every_frame", "every good frame", f"missing {m['frames_without_residue']}",
            not m["frames_without_residue"] and m["frames_written"] > 0)
    at_most("max_corrupt", "products_corrupt")
    at_most("max_duplicated", "products_duplicated")
    at_most("max_latency_p95_s", "latency_p95_s")
    if c.min_degrade_events is not None:
        row("min_degrade_events", c.min_degrade_events, m["degrade_events"],
            m["degrade_events"] >= c.min_degrade_events)
    at_most("max_deadline_misses", "deadline_misses")
    at_most("max_peak_rss_mb", "peak_rss_mb")
    if c.damaged_frames_reported:
        row("damaged_frames_reported", "all", f"unreported {m['damaged_frames_unreported']}",
            not m["damaged_frames_unreported"])
    if c.valid_commands_accepted:
        cm = m["commands"]
        row("valid_commands_accepted", cm["valid_sent"], cm["valid_accepted"],
            cm["valid_accepted"] == cm["valid_sent"])
    if c.max_bad_commands_accepted is not None:
        cm = m["commands"]
        row("max_bad_commands_accepted", c.max_bad_commands_accepted,
            f"{cm['bad_accepted']} of {cm['bad_sent']}", cm["bad_accepted"] <= c.max_bad_commands_accepted)
    if c.payload_survives:
        p = m["payload"]
        row("payload_survives", "no crash, clean stop", f"crashes {p['crashes']}, exit {p['exit_code']}",
            not p["crashes"] and p["exit_code"] in (0, None))
    if c.max_forecast_error is not None:
        # every pass must open with a forecast; one of nothing (an empty spool) has no ratio
        errors = [p["error"] for p in m["passes"] if p["forecast_bytes"]]
        worst = max((abs(e) for e in errors), default=None)
        row("max_forecast_error", c.max_forecast_error, None if worst is None else round(worst, 3),
            worst is not None and all(p["forecast_products"] is not None for p in m["passes"])
            and worst <= c.max_forecast_error)
    if c.summaries_by_next_pass:
        late = m["summaries_late"]
        row("summaries_by_next_pass", "every frame", f"late {late}", late == [] and m["frames_written"] > 0)
    if c.no_silent_loss:
        lost = m["lost_silently"]
        row("no_silent_loss", "none", f"lost {lost}", lost == [])
    if c.engine_in_use:
        engine = m["engine"] or ""
        row("engine_in_use", c.engine_in_use, engine,
            all(part in engine for part in c.engine_in_use))
    return rows


def table(report: dict[str, Any]):
    """The summary table (rich)."""
    from rich.table import Table

    m = report["measures"]
    t = Table(title=f"hil scenario {report['scenario']}: {'PASS' if report['passed'] else 'FAIL'}")
    t.add_column("measure")
    t.add_column("value", justify="right")

    def fmt(v: Any) -> str:
        return "-" if v is None else f"{v:.2f}" if isinstance(v, float) else str(v)

    cm = m["commands"]
    for name, value in (
        ("products expected", m["products_expected"]),
        ("products delivered", m["products_delivered"]),
        ("products corrupt", m["products_corrupt"]),
        ("products duplicated", m["products_duplicated"]),
        ("frames fed / with residue on ground", f"{m['frames_written']} / {m['frames_with_residue']}"),
        ("frame-to-ground latency p50 (s)", m["latency_p50_s"]),
        ("frame-to-ground latency p95 (s)", m["latency_p95_s"]),
        ("deadline misses", m["deadline_misses"]),
        ("degradation events", m["degrade_events"]),
        ("peak memory (MiB RSS)", m["peak_rss_mb"]),
        ("commands accepted (valid / bad)", f"{cm['valid_accepted']}/{cm['valid_sent']} / "
                                             f"{cm['bad_accepted']}/{cm['bad_sent']}"),
        ("commands refused / unanswered", f"{cm['refused']} / {cm['unanswered']}"),
        ("payload boots / power cuts (mid-transfer)", f"{m['payload']['boots']} / "
         f"{m['payload']['power_cuts']} ({m['payload']['cuts_mid_transfer']})"),
        ("payload boot time (s)", m["payload"]["boot_s"]),
        ("ground software errors", len(m["ground_errors"])),
        ("scenario time (s)", m["seconds"]),
    ):
        t.add_row(name, fmt(value))
    for r in report["criteria"]:
        t.add_row(f"[{'green' if r['passed'] else 'red'}]{'PASS' if r['passed'] else 'FAIL'}[/] "
                  f"{r['criterion']} (limit {r['limit']})", fmt(r["value"]))
    return t
