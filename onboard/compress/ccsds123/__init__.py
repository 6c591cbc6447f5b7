"""CCSDS 123.0-B-2 (low-complexity lossless and near-lossless multispectral and hyperspectral
image compression): the adaptive linear predictor, its quantizer and the sample-adaptive
entropy coder; encoder for the flight side, decoder for the ground, both numpy plus the
optional numba kernel (``pip install onboard[compress]``)."""

from ._jit import COMPILED
from .codec import MAX_SAMPLES, Decoded, decode, encode
from .params import Ccsds123Error, CorruptStreamError, Params

__all__ = ["COMPILED", "MAX_SAMPLES", "Ccsds123Error", "CorruptStreamError", "Decoded", "Params", "decode", "encode"]
