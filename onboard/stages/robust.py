"""The median along an axis from one selection, equal to ``numpy.median`` bit for bit.

``numpy.median`` asks its partition for two or three order statistics at once (the middle
pair, and the last element to see a NaN), and numpy answers a partition at several positions
with its generic introselect, while a partition at one position goes to its vectorised
selection (x86-simd-sort, AVX-512 or AVX2). Here: one position, the middle (upper) one; the
lower middle of an even count is the largest value before it, a NaN (numpy's largest) shows
after it; short lanes are sorted instead (``SORT_UP_TO``). Lanes along another axis than the
last are first copied contiguous (numpy would select in a strided copy, at twice the cost).
On this project's 2-core Xeon (AVX-512) that is 9 times faster on the denoiser's (24, 4096)
float32 rows and 3-6 times on its column medians; where numpy has no vectorised selection (an
Arm core without it) both run the same introselect, about as fast.
"""

from __future__ import annotations

from typing import TypeVar

import numpy as np
from numpy.typing import NDArray

Float = TypeVar("Float", bound=np.floating)

#: Longest lane that is sorted rather than selected: numpy's vectorised sort of short lanes
#: costs less than a selection and the pass for the lower middle (1.4 against 2.2 ms for
#: 600 000 values in lanes of 256, 1.3 against 3.1 in lanes of 64; even at 512).
SORT_UP_TO = 256


def median(a: NDArray[Float], axis: int = -1, keepdims: bool = False) -> NDArray[Float]:
    """``numpy.median(a, axis, keepdims=keepdims)`` of a floating array, bit for bit (NaN where
    a lane holds one; the pair of an even count averaged in ``a``'s precision, as numpy does).
    ``ValueError`` for an empty axis (numpy warns and gives NaN)."""
    if not np.issubdtype(a.dtype, np.floating):
        raise TypeError(f"median of {a.dtype} values: this median is for floating arrays")
    lanes = np.moveaxis(a, axis, -1)
    n = lanes.shape[-1]
    if n == 0:
        raise ValueError("median over an empty axis")
    half = n // 2
    part = np.array(lanes, order="C")  # each lane contiguous: the selection walks memory in order
    nan: NDArray[np.bool_]
    if n <= SORT_UP_TO:
        part.sort(axis=-1)
        lower, nan = part[..., half - 1], np.asarray(np.isnan(part[..., -1]))  # numpy sorts NaN last
    else:
        part.partition(half, axis=-1)
        lower = part[..., :half].max(axis=-1)
        nan = np.asarray(np.isnan(part[..., half:]).any(axis=-1))  # at the middle or after it
    out = part[..., half]
    if n % 2 == 0:
        out = (lower + out) / 2
    if nan.any():
        out = np.where(nan, np.asarray(np.nan, a.dtype), out)
    return np.expand_dims(out, axis) if keepdims else out
