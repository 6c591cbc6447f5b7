"""REQUEST_AREA on board: which archived products of the kinds asked lie over a lat/lon box.

The frame manifests (``out/frames``, onboard/runtime/writer.py) say what each frame made;
the products still in the archive (``out/products``) say where and when: every product of a
georeferenced frame (but its events and health) carries the same ``meta["georef"]``, so one
surviving product of a frame locates all of them (onboard/geo/footprint.py), and its header's ``created_utc`` dates them.
Only headers are read, never a cube's payload. A frame whose footprint meets the box, inside
the time window, makes a match of each of its products of the kinds asked: queued when its
archive copy is still there, ``gone`` when storage ran short and it was shed. Products of
frames without georeferencing (or with nothing left to locate them by) never match; they are
counted, so the ground knows what the answer could not see.

Value order: the products' value rank (their priority, onboard/stages/value.py) first, then
the newest first, so that a ``max_count`` keeps the most valuable and the latest views.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from firmware_bridge.messages import RequestArea
from onboard.formats.products import ProductFormatError, read_header
from onboard.geo.footprint import Polygon, footprint_lonlat, meets_box


@dataclass
class AreaAnswer:
    """What a REQUEST_AREA found: archive files to queue (value order), names gone from
    storage, products that could not be located (with one reason per kind of failure), and
    matches left out by ``max_count``."""

    queue: list[Path] = field(default_factory=list)
    gone: list[str] = field(default_factory=list)
    not_located: int = 0
    reasons: set[str] = field(default_factory=set)
    over_max: int = 0

    @property
    def matched(self) -> int:
        return len(self.queue) + len(self.gone) + self.over_max


def _locate(products_dir: Path, entries: list[dict]) -> tuple[float, object] | str:
    """(created_utc, georef) of a frame from the first of its archived products that carries
    a georef (a frame's events and health carry none), or why none."""
    first: tuple[float, object] | None = None
    for e in entries:
        path = products_dir / f"{e['name']}.obp"
        try:
            header = read_header(path)
        except (OSError, ProductFormatError):
            continue
        georef = header.get("meta", {}).get("georef")
        first = first or (float(header.get("created_utc", 0.0)), georef)
        if georef is not None:
            return float(header.get("created_utc", 0.0)), georef
    return first or "no product of the frame left in the archive"


def find_area(products_dir: Path, frames_dir: Path, request: RequestArea) -> AreaAnswer:
    """The archive's answer to ``request`` (see the module's docstring)."""
    answer = AreaAnswer()
    box = request.box_deg
    until = request.until_utc or float("inf")
    found: list[tuple[int, float, str, Path]] = []
    for manifest in sorted(frames_dir.glob("frame_*.json")):
        try:
            entries = json.loads(manifest.read_text())["products"]
        except (OSError, ValueError, KeyError, TypeError):
            continue  # a manifest is written atomically: unreadable means not ours
        wanted = [e for e in entries if e.get("kind") in request.kinds]
        if not wanted:
            continue
        located = _locate(products_dir, entries)
        created = 0.0
        footprint: Polygon | str = located if isinstance(located, str) else ""
        if not isinstance(located, str):
            created, georef = located
            if not request.since_utc <= created <= until:
                continue
            footprint = footprint_lonlat(georef)
        if isinstance(footprint, str):
            answer.not_located += len(wanted)
            answer.reasons.add(footprint)
            continue
        if not meets_box(footprint, box):
            continue
        for e in wanted:
            path = products_dir / f"{e['name']}.obp"
            if path.is_file():
                found.append((int(e.get("priority", 99)), -created, e["name"], path))
            else:
                answer.gone.append(e["name"])
    found.sort()
    keep = found[: request.max_count] if request.max_count else found
    answer.queue = [path for *_, path in keep]
    answer.over_max = len(found) - len(keep)
    return answer


def answer_text(request: RequestArea, answer: AreaAnswer, queued: list[str]) -> str:
    """The AREA_MATCHED event's text: compact JSON within one EVENT (names cut if need be)."""
    body: dict = {"box": list(request.box_deg), "kinds": list(request.kinds),
                  "matched": answer.matched, "queued": len(queued), "gone": len(answer.gone),
                  "over_max": answer.over_max, "not_located": answer.not_located,
                  "why_not_located": sorted(answer.reasons)[:3],
                  "names": queued, "gone_names": answer.gone}
    if not answer.matched:
        body["none"] = "no archived product of these kinds lies over the box in the window"
    text = json.dumps(body, separators=(",", ":"))
    while len(text.encode()) > 900:  # one EVENT: the first names only
        longer = "names" if len(body["names"]) >= len(body["gone_names"]) else "gone_names"
        body[longer] = body[longer][: len(body[longer]) // 2]
        body["why_not_located"] = [w[:120] for w in body["why_not_located"]]
        text = json.dumps(body, separators=(",", ":"))
    return text
