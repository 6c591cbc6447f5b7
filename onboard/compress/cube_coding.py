"""Reflectance cubes as the integers CCSDS 123 codes, and back.

Two ways in, both stated in the product so the ground inverts them:

* lossless on float16: each float16's bits as an ordered 16-bit integer (the sign-magnitude
  bit pattern turned monotone: -0.0 and +0.0 stay distinct, NaNs keep their payload), so the
  predictor sees neighbouring reflectances as neighbouring integers;
* quantised: ``round(reflectance / step)`` as signed integers (the step is the product's
  stated resolution); CCSDS 123's near-lossless mode may then add at most ``max_error`` steps,
  so every valid sample is within ``step * (max_error + 0.5)`` of the reflectance.

Invalid pixels (``valid`` False) are coded as 0 and restored as NaN: the valid mask travels
beside the stream.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from onboard.compress.ccsds123 import Params
from onboard.errors import OnboardError

#: CCSDS 123 settings of product cubes: full prediction from 3 bands (measured best or within
#: 3 % of the best of 48 settings on the ImSPOC and push-broom product cubes,
#: bench/bench_compress.py).
CUBE_PARAMS = Params(P=3, full=True, local_sum="wide-neighbour")
#: Raw ImSPOC thumbnail stacks: the interferogram "bands" predict each other no better than
#: the spatial neighbours (photon noise dominates), so no spectral prediction.
RAW_FRAME_PARAMS = Params(P=0, full=False, local_sum="wide-neighbour")


class CubeCodingError(OnboardError, ValueError):
    """A cube that cannot be coded as asked (a step too small for 32-bit integers)."""


def float16_codes(data: NDArray) -> NDArray[np.uint16]:
    """float16 values as ordered uint16 codes (a bijection, monotone in the value)."""
    bits = np.ascontiguousarray(data, dtype=np.float16).view(np.uint16)
    negative = (bits & 0x8000) != 0
    return np.where(negative, ~bits, bits | 0x8000).astype(np.uint16)


def float16_from_codes(codes: NDArray) -> NDArray[np.float16]:
    """Inverse of :func:`float16_codes`."""
    c = np.asarray(codes, dtype=np.uint16)
    bits = np.where((c & 0x8000) != 0, c & 0x7FFF, ~c).astype(np.uint16)
    return bits.view(np.float16)


def quantise(data: NDArray, valid: NDArray[np.bool_], step: float) -> NDArray[np.int32]:
    """``round(data / step)`` as int32, 0 where invalid or not finite."""
    if not step > 0:
        raise CubeCodingError(f"quantisation step must be > 0, not {step}")
    ok = valid[None] & np.isfinite(data)
    scaled = np.where(ok, np.asarray(data, dtype=np.float64) / step, 0.0)
    if np.abs(scaled).max(initial=0.0) >= 2**30:
        raise CubeCodingError(f"step {step} is too fine for these values: use a larger step")
    return np.rint(scaled).astype(np.int32)


def dequantise(q: NDArray, valid: NDArray[np.bool_], step: float) -> NDArray[np.float32]:
    """Reflectance from quantised integers, NaN where invalid."""
    out = q.astype(np.float64) * step
    return np.where(valid[None], out, np.nan).astype(np.float32)
