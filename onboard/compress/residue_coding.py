"""The compact residue product: a frame's residue map in a few kilobytes for a slow link.

The class planes (``tillage``, ``guess``: uint8, large uniform regions) stay in the deflated
npz, which codes runs in a few bytes each; the continuous planes (``fractions`` residue, soil,
green and ``confidence``) are quantised to ``STEP`` (0.01: an error of at most 0.005) as
8-bit codes, 255 where
NaN, and coded losslessly with CCSDS 123 as one 4-band cube (the fractions predict each
other: they sum to one). 64 x 64 pixels take about 5 KB instead of 58 KB.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from onboard.compress.ccsds123 import Params, decode, encode
from onboard.compress.cube_coding import CubeCodingError

#: Quantisation step of fractions and confidence; codes 0..254, 255 is NaN.
STEP = 0.01
NAN_CODE = 255
#: Full prediction from the 3 planes before: measured best of P 0-5 on simulated frames.
PARAMS = Params(P=3, full=True)


def _codes(x: NDArray) -> NDArray[np.uint8]:
    codes = np.clip(np.rint(np.nan_to_num(x, nan=0.0) / STEP), 0, NAN_CODE - 1)
    return np.where(np.isnan(x), NAN_CODE, codes).astype(np.uint8)


def _values(codes: NDArray) -> NDArray[np.float32]:
    return np.where(codes == NAN_CODE, np.nan, codes.astype(np.float64) * STEP).astype(np.float32)


def encode_residue(arrays: dict[str, NDArray]) -> dict[str, NDArray]:
    """The compact payload's arrays from the residue product's (onboard/formats/products.py):
    ``tillage`` and ``guess`` as they are, ``ccsds123`` the coded fractions and confidence.
    Fractions outside [0, 2.54] are clipped (fractions are within [0, 1])."""
    planes = np.concatenate([_codes(arrays["fractions"]), _codes(arrays["confidence"])[None]])
    stream = encode(planes, PARAMS, dynamic_range=8, signed=False)
    return {"tillage": arrays["tillage"], "guess": arrays["guess"],
            "ccsds123": np.frombuffer(stream, dtype=np.uint8)}


def meta() -> dict:
    """What the product header states about this coding."""
    return {"coding": "ccsds123", "fraction_step": STEP, "confidence_step": STEP}


def decode_residue(arrays: dict[str, NDArray], max_samples: int) -> dict[str, NDArray]:
    """The residue product's arrays (fractions and confidence float32, NaN where invalid)
    from the compact payload's."""
    if "ccsds123" not in arrays or "tillage" not in arrays:
        raise CubeCodingError(f"residue product coded ccsds123 but its arrays are {sorted(arrays)}")
    planes = decode(arrays["ccsds123"].astype(np.uint8).tobytes(), max_samples=max_samples).cube
    if planes.shape[0] != 4 or planes.shape[1:] != arrays["tillage"].shape:
        raise CubeCodingError(f"residue planes {planes.shape} do not match the class map {arrays['tillage'].shape}")
    return {"tillage": arrays["tillage"], "guess": arrays["guess"], "fractions": _values(planes[:3]),
            "confidence": _values(planes[3])}
