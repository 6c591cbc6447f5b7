"""Small spatial filters shared by the stages (numpy only)."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray


def box_sum(a: NDArray, radius: int) -> NDArray[np.floating]:
    """Sum over a (2 radius + 1)^2 window around each pixel of the last two axes, zero
    outside the image. float32 input stays float32, summed directly along each axis (4
    radius adds a pixel: for the denoiser's radius 2, a sixth of the time of the cumulative
    sums, which float32 could not hold: a small window's sum would be the difference of two
    large ones); any other input in float64 through cumulative sums, O(1) per pixel."""
    if a.dtype == np.float32:
        return _box_sum_direct(a, radius)
    k = 2 * radius + 1
    pad = [(0, 0)] * (a.ndim - 2) + [(radius + 1, radius), (radius + 1, radius)]
    c = np.pad(np.asarray(a, dtype=np.float64), pad).cumsum(-2).cumsum(-1)
    return c[..., k:, k:] - c[..., :-k, k:] - c[..., k:, :-k] + c[..., :-k, :-k]


def _box_sum_direct(a: NDArray[np.float32], radius: int) -> NDArray[np.float32]:
    h, w = a.shape[-2:]
    p = np.pad(a, [(0, 0)] * (a.ndim - 2) + [(radius, radius), (radius, radius)])
    rows = p[..., :h, :].copy()
    for i in range(1, 2 * radius + 1):
        rows += p[..., i : i + h, :]
    out = rows[..., :w].copy()
    for j in range(1, 2 * radius + 1):
        out += rows[..., j : j + w]
    return out


def box_mean(image: NDArray, weight: NDArray, radius: int) -> NDArray[np.float64]:
    """Weighted mean over a (2 radius + 1)^2 window (normalised convolution): pixels of zero
    weight do not count; 0 where a window holds no weight. ``image`` (..., rows, cols),
    ``weight`` (rows, cols)."""
    w = box_sum(weight, radius)
    return np.divide(box_sum(image * weight, radius), w, out=np.zeros(np.broadcast(image, weight).shape),
                     where=w > 0)
