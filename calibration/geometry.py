"""Where the thumbnails lie on the detector, found from a flat (uniformly lit) acquisition.

Each interferometer images the scene through its own aperture, so a flat frame is bright
inside the thumbnails and dark in the gaps and margins between them. The thumbnails sit on
a grid: rows of the detector that cross a thumbnail are bright over a large part of their
length, rows in a gap are not, and likewise for columns. So the layout is read from the
bright-fraction profiles of a thresholded flat: runs of bright rows are the thumbnail rows,
runs of bright columns the thumbnail columns, and each crossing a thumbnail (checked to be
bright). No box is given; only the numbering order ("row": along rows, "column": down
columns) is a convention of the instrument.

A layout whose thumbnails touch (no dark gap, as on ImSPOC-UV-2) cannot be read from a flat
frame this way; :func:`find_thumbnails` says so rather than guess.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from onboard.errors import OnboardError
from onboard.physics.imspoc import ThumbnailLayout


class GeometryError(OnboardError, ValueError):
    """A flat frame from which no consistent thumbnail grid can be read."""


def _runs(mask: NDArray[np.bool_], min_length: int) -> list[tuple[int, int]]:
    """(start, stop) of each run of True at least ``min_length`` long."""
    padded = np.concatenate([[False], mask, [False]])
    edges = np.flatnonzero(np.diff(padded.astype(np.int8)))
    return [(int(a), int(b)) for a, b in zip(edges[::2], edges[1::2], strict=True)
            if b - a >= min_length]


def find_thumbnails(flat: NDArray, order: str = "row", threshold: float = 0.5,
                    min_size: int = 4, expected: int | None = None) -> ThumbnailLayout:
    """The thumbnail layout of a flat frame (rows, cols) of any numeric dtype.

    ``threshold``: a pixel is lit above this fraction of the way from the dark level (1st
    percentile) to the typical lit level (median of the pixels above the mean: robust to
    interferometers of different transmission and to a few hot pixels). Runs shorter
    than ``min_size`` pixels are noise. Dead or hot pixels do not matter: profiles are
    fractions over whole rows and columns. ``expected``: the number of interferometers, if
    known; a different count is an error (thumbnails that touch merge into one).
    """
    img = np.asarray(flat, dtype=np.float64)
    if img.ndim != 2:
        raise GeometryError(f"a flat frame is a 2-D image, got shape {img.shape}")
    dark = np.percentile(img, 1.0)
    above = img[img > img.mean()]
    bright = np.median(above) if above.size else dark
    if not bright > dark:
        raise GeometryError("the flat frame is uniform: no thumbnails to find (is it lit?)")
    lit = img > dark + threshold * (bright - dark)
    row_runs = _runs(lit.mean(axis=1) > 0.25 * lit.mean(axis=1).max(), min_size)
    col_runs = _runs(lit.mean(axis=0) > 0.25 * lit.mean(axis=0).max(), min_size)
    if not row_runs or not col_runs:
        raise GeometryError("no lit thumbnail found in the flat frame")
    heights = [b - a for a, b in row_runs]
    widths = [b - a for a, b in col_runs]
    h, w = min(heights), min(widths)
    if max(heights) > 1.5 * h or max(widths) > 1.5 * w:
        raise GeometryError(
            f"thumbnail runs of {sorted(set(heights))} rows and {sorted(set(widths))} columns: "
            "thumbnails that touch cannot be separated on a flat frame; give the layout "
            "(device.json) instead"
        )
    corners = []
    grid = [(r0, c0) for r0, _ in row_runs for c0, _ in col_runs]
    if order == "column":
        grid = [(r0, c0) for c0, _ in col_runs for r0, _ in row_runs]
    elif order != "row":
        raise ValueError(f"order must be 'row' or 'column', got {order!r}")
    for r0, c0 in grid:
        if lit[r0 : r0 + h, c0 : c0 + w].mean() < 0.5:
            raise GeometryError(f"the grid cell at ({r0}, {c0}) is not lit: the thumbnails "
                                "do not form a full grid")
        corners.append((r0, c0))
    if expected is not None and len(corners) != expected:
        raise GeometryError(
            f"found {len(corners)} thumbnails, expected {expected}: thumbnails that touch "
            "cannot be separated on a flat frame; give the layout (device.json) instead")
    return ThumbnailLayout(tuple(corners), (h, w), img.shape)  # type: ignore[arg-type]
