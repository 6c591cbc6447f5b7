"""The downlink's value rule: which of a frame's products go down, and in what order.

A 9.6 kbit/s pass carries a small fraction of what the payload makes (issue 18), so what
reaches the ground first must be what is worth most. The rule (``[value]`` in the mission
file) puts every product in one **value class** and ranks the classes:

* ``summary``: every frame's summary product (residue statistics per grid cell, the
  screening score, time and pose: :func:`summary_product`, a few hundred bytes), with health
  and events;
* ``residue_clear``: the residue map of a frame worth sending (``onboard/stages/screen.py``);
* ``residue_cloudy``: the residue map of a frame that is not (it carries the cloud mask);
* ``cube`` and ``raw``: the denoised cube and the raw frame, spooled only for the frames
  ``cubes`` selects (``"clear"``: those the screening sends, as ``[screen] cloudy_frames``
  says: by default the frames worth sending; ``"all"``: every frame's, cloudy ones too;
  ``"none"``: on ground request only);
* ``quicklook``: the false-colour PNG, last.

A product's class's index in ``order`` is its spool priority, so the one order the sender
and the contact planner use (``firmware_bridge.spool.pick``: priority, then the earliest
deadline, i.e. the oldest) is the value order, and the spool's eviction when storage is
short (the largest priority number first, with an event each) drops by the same rule,
least valuable first. A class in ``never``, or a cube or raw frame ``cubes`` does not
select, is not spooled at all: it stays in the on-board archive (REQUEST_PRODUCT fetches it
while storage lasts), named in the frame's event and marked held in its manifest.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from onboard.formats.products import Product, ProductKind
from onboard.formats.types import INVALID_CLASS, UNCERTAIN_CLASS, ResidueMap
from onboard.stages.screen import CLOUD, Screening

VALUE_CLASSES = ("summary", "residue_clear", "residue_cloudy", "cube", "raw", "quicklook")
CubeSelection = Literal["clear", "all", "none"]
#: Kinds a rule may keep on board: everything but the summaries, health and events.
HOLDABLE = (ProductKind.RESIDUE, ProductKind.QUICKLOOK, ProductKind.CUBE, ProductKind.RAW)
_CUBES = {ProductKind.CUBE, ProductKind.RAW}
#: Kinds that always rank with the summaries: small, and what the ground needs to trust the rest.
_WITH_SUMMARIES = (ProductKind.SUMMARY, ProductKind.HEALTH, ProductKind.EVENT, ProductKind.CALIBRATION_REPORT)


@dataclass(frozen=True)
class ValueRule:
    """The ranks of the value classes (``order``, most valuable first, each class once), which
    frames' cubes and raw frames go down (``cubes``), the classes never spooled (``never``)
    and the side of the summary's grid in cells (``summary_grid``; 0: no summary product, as
    before the rule, for comparison)."""

    order: tuple[str, ...] = VALUE_CLASSES
    cubes: CubeSelection = "clear"
    never: tuple[str, ...] = ()
    summary_grid: int = 4

    def __post_init__(self) -> None:
        if sorted(self.order) != sorted(VALUE_CLASSES):
            raise ValueError(f"order must name each of {', '.join(VALUE_CLASSES)} once, got {list(self.order)}")
        unknown = sorted(set(self.never) - set(VALUE_CLASSES))
        if unknown:
            raise ValueError(f"never: unknown class {unknown[0]!r}; classes are {', '.join(VALUE_CLASSES)}")
        if "summary" in self.never:
            raise ValueError("never: the summaries always go down (they are how the ground knows a frame)")
        if self.cubes not in ("clear", "all", "none"):
            raise ValueError(f"cubes must be clear, all or none, got {self.cubes!r}")
        if not 0 <= self.summary_grid <= 16:
            raise ValueError(f"summary_grid must be 1-16 cells a side (0: no summary), got {self.summary_grid}")

    def value_class(self, kind: ProductKind, worth_sending: bool) -> str:
        """The class of a product of ``kind`` from a frame that is (or is not) worth sending."""
        if kind in _WITH_SUMMARIES:
            return "summary"
        if kind == ProductKind.RESIDUE:
            return "residue_clear" if worth_sending else "residue_cloudy"
        return kind.value  # cube, raw, quicklook

    def priority(self, kind: ProductKind, worth_sending: bool) -> int:
        """The spool priority: the rank of the product's class (0 first)."""
        return self.order.index(self.value_class(kind, worth_sending))

    def held(self, worth_sending: bool, screened: Iterable[ProductKind]) -> set[ProductKind]:
        """The kinds a frame keeps on board (archived, not spooled): those the screening holds
        back for a frame not worth sending (``screened``, ``[screen] cloudy_frames``), the cube
        and raw frame as ``cubes`` says, and the classes in ``never``."""
        held = set() if worth_sending else set(screened)
        if self.cubes != "clear":
            held = held - _CUBES if self.cubes == "all" else held | _CUBES
        return held | {k for k in HOLDABLE if self.value_class(k, worth_sending) in self.never}


def _starts(n: int, grid: int) -> NDArray[np.intp]:
    """First index of each of ``grid`` parts of ``n`` (numpy's array_split: the first
    ``n % grid`` parts one longer), and ``n`` after the last."""
    sizes = np.full(grid, n // grid)
    sizes[: n % grid] += 1
    return np.concatenate([[0], np.cumsum(sizes)])


def _cell_sums(image: NDArray, rows: NDArray[np.intp], cols: NDArray[np.intp]) -> NDArray[np.float64]:
    """Sums (grid, grid) of ``image`` over the cells that ``rows`` and ``cols`` (:func:`_starts`)
    cut, in double; 0 for an empty cell (a grid finer than the image)."""
    out = np.zeros((len(rows) - 1, len(cols) - 1))
    r = np.flatnonzero(np.diff(rows) > 0)  # non-empty parts (reduceat would repeat, not skip, empty ones)
    c = np.flatnonzero(np.diff(cols) > 0)
    if r.size and c.size:
        partial = np.add.reduceat(image.astype(np.float64), rows[r], axis=0)
        out[np.ix_(r, c)] = np.add.reduceat(partial, cols[c], axis=1)
    return out


def _percents(x: NDArray[np.float64], keep: NDArray[np.bool_]) -> list[list[int | None]]:
    """Whole percents of ``x`` (grid, grid) where ``keep``, None elsewhere."""
    whole = np.rint(100 * np.where(keep, x, 0.0)).astype(int).tolist()
    return [[v if k else None for v, k in zip(row, kr, strict=True)]
            for row, kr in zip(whole, keep.tolist(), strict=True)]


def _percent(x: float) -> int | None:
    return None if not np.isfinite(x) else int(round(100 * x))


def summary_arrays(residue: ResidueMap, mask: NDArray[np.uint8], grid: int) -> dict[str, list[list[int | None]]]:
    """Per grid cell (row-major ``grid`` x ``grid``; cells cut as numpy's array_split cuts),
    in whole percent: ``valid`` (pixels with a residue estimate), ``cloud`` (of all pixels, the
    screening mask's CLOUD bit), ``residue`` and ``residue_sd`` (mean and standard deviation
    of the residue-cover fraction over the valid pixels; None where there are none),
    ``uncertain`` (of the valid pixels, the classifier's uncertain ones). All cells at once
    (sums over cells by ``np.add.reduceat``, in double; the deviations from each cell's mean
    in a second pass, as numpy's std takes them): a loop over the cells cost 2 ms a frame."""
    valid = residue.tillage != INVALID_CLASS
    uncertain = valid & (residue.uncertain if residue.uncertain is not None
                         else residue.tillage == UNCERTAIN_CLASS)
    rows, cols = _starts(valid.shape[0], grid), _starts(valid.shape[1], grid)
    size = np.outer(np.diff(rows), np.diff(cols))
    n = _cell_sums(valid, rows, cols)
    some = n > 0
    per = np.maximum(n, 1)
    fraction = np.where(valid, residue.fractions[0], 0.0)
    mean = _cell_sums(fraction, rows, cols) / per
    cell_mean = np.repeat(np.repeat(mean, np.diff(rows), axis=0), np.diff(cols), axis=1)
    spread = np.sqrt(_cell_sums(np.where(valid, fraction - cell_mean, 0.0) ** 2, rows, cols) / per)
    return {"valid": _percents(n / np.maximum(size, 1), np.ones_like(some)),
            "cloud": _percents(_cell_sums((mask & CLOUD) != 0, rows, cols) / np.maximum(size, 1), size > 0),
            "residue": _percents(mean, some), "residue_sd": _percents(spread, some),
            "uncertain": _percents(_cell_sums(uncertain, rows, cols) / per, some)}


def summary_product(residue: ResidueMap, screening: Screening, instrument: str, grid: int,
                    pose: tuple[float, ...] | None) -> Product:
    """The frame's summary product (kind ``summary``, compact JSON): the screening score, the
    time (the header's) and the pose, and :func:`summary_arrays`. Small enough that every
    frame's summary fits the next pass (no model versions: the residue map carries them)."""
    body = {"frame": residue.counter, "pose": None if pose is None else [round(float(x), 6) for x in pose],
            "screen": {"worth_sending": screening.worth_sending, "cloud": _percent(screening.cloud_share),
                       "shadow": _percent(screening.shadow_share), "haze": _percent(screening.haze_share),
                       "invalid": _percent(screening.invalid_share),
                       "blur_px": None if screening.blur_px is None else round(screening.blur_px, 2)},
            "grid": grid, "method": residue.method.split(" ")[0], **summary_arrays(residue, screening.mask, grid)}
    payload = json.dumps(body, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()
    return Product(kind=ProductKind.SUMMARY, frame_counter=residue.counter, created_utc=residue.timestamp,
                   payload=payload, encoding="json", instrument=instrument, meta={})
