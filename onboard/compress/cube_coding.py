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

from dataclasses import dataclass, replace

import numpy as np
from numpy.typing import NDArray

from onboard.compress.ccsds123 import Params, decode, encode
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


#: Cube product codings: the header's ``meta["coding"]`` names one (absent: "npz").
CODINGS = ("npz", "ccsds123", "ccsds123-float16")


@dataclass(frozen=True)
class CubeCoding:
    """How the cube product is coded.

    ``npz``: float16 (or float32) values in a deflated npz (the format before CCSDS 123).
    ``ccsds123``: reflectance quantised to ``step``, CCSDS 123 near-lossless within
    ``max_error`` steps (0: lossless of the quantised values): every valid sample within
    ``step * (max_error + 0.5)``. ``ccsds123-float16``: the float16 cube bit-exact.
    """

    kind: str = "npz"
    step: float = 1e-4
    max_error: int = 4

    def __post_init__(self) -> None:
        if self.kind not in CODINGS:
            raise CubeCodingError(f"cube coding {self.kind!r} is not one of {CODINGS}")
        if not (self.step > 0 and np.isfinite(self.step)) or not 0 <= self.max_error < 1 << 15:
            raise CubeCodingError(f"cube coding needs step > 0 and 0 <= max_error < 32768, not {self.step}, {self.max_error}")

    def meta(self) -> dict:
        """What the product header states about the coding."""
        if self.kind == "ccsds123":
            return {"coding": self.kind, "step": self.step, "max_error_steps": self.max_error,
                    "max_error": self.step * (self.max_error + 0.5)}
        return {"coding": self.kind}


def encode_cube(data: NDArray, valid: NDArray[np.bool_], coding: CubeCoding) -> dict[str, NDArray]:
    """The coded cube's arrays (the product adds the wavelengths and the valid mask):
    ``ccsds123`` (the stream as uint8) for the CCSDS codings."""
    if coding.kind == "ccsds123-float16":
        stream = encode(float16_codes(data), CUBE_PARAMS)
    else:
        q = quantise(data, valid, coding.step)
        params = replace(CUBE_PARAMS, absolute_error=coding.max_error) if coding.max_error else CUBE_PARAMS
        stream = encode(q, params, signed=True)
    return {"ccsds123": np.frombuffer(stream, dtype=np.uint8)}


def decode_cube(arrays: dict[str, NDArray], meta: dict, max_samples: int) -> NDArray[np.float32]:
    """The cube (float32, NaN where invalid) from a CCSDS-coded product's arrays and header
    ``meta``; :class:`CubeCodingError` or the codec's error for anything inconsistent."""
    kind = meta.get("coding")
    if kind not in CODINGS[1:] or "ccsds123" not in arrays or "valid" not in arrays:
        raise CubeCodingError(f"cube product coding {kind!r} with arrays {sorted(arrays)}: not a CCSDS-coded cube")
    cube = decode(arrays["ccsds123"].astype(np.uint8).tobytes(), max_samples=max_samples).cube
    valid = np.asarray(arrays["valid"], dtype=bool)
    if valid.shape != cube.shape[1:]:
        raise CubeCodingError(f"valid mask {valid.shape} does not match the cube {cube.shape}")
    if kind == "ccsds123-float16":
        return float16_from_codes(cube).astype(np.float32)
    step = meta.get("step")
    if not isinstance(step, float) or not step > 0:
        raise CubeCodingError(f"cube product states step {step!r}: expected a number > 0")
    return dequantise(cube, valid, step)
