"""Small spatial filters shared by the stages (numpy only)."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray


def box_sum(a: NDArray, radius: int) -> NDArray[np.float64]:
    """Sum over a (2 radius + 1)^2 window around each pixel of the last two axes, zero
    outside the image; O(1) per pixel through cumulative sums."""
    k = 2 * radius + 1
    pad = [(0, 0)] * (a.ndim - 2) + [(radius + 1, radius), (radius + 1, radius)]
    c = np.pad(np.asarray(a, dtype=np.float64), pad).cumsum(-2).cumsum(-1)
    return c[..., k:, k:] - c[..., :-k, k:] - c[..., k:, :-k] + c[..., :-k, :-k]


def box_mean(image: NDArray, weight: NDArray, radius: int) -> NDArray[np.float64]:
    """Weighted mean over a (2 radius + 1)^2 window (normalised convolution): pixels of zero
    weight do not count; 0 where a window holds no weight. ``image`` (..., rows, cols),
    ``weight`` (rows, cols)."""
    w = box_sum(weight, radius)
    return np.divide(box_sum(image * weight, radius), w, out=np.zeros(np.broadcast(image, weight).shape),
                     where=w > 0)
