"""Encode an integer cube to a CCSDS 123.0-B-2 stream and decode it back.

A stream is the standard's header followed by the sample-adaptive coded body, padded to the
output word size: any conformant decoder (ESA's SHyLoC, CNES's tool, NTNU's model) reads it.
Decoding checks before it allocates: the header's image size against ``max_samples`` and
against the stream's length (every sample costs at least one bit), so a damaged header cannot
make the ground allocate gigabytes; a truncated or damaged body stops with the index of the
sample where it went wrong.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import entropy, header, predictor
from ._jit import compile_kernels
from .params import Ccsds123Error, CorruptStreamError, Params, Resolved, resolve

#: Largest image a decoder allocates by default (64 Mi samples, 512 MiB of int64 work arrays).
MAX_SAMPLES = 1 << 26


@dataclass(frozen=True)
class Decoded:
    """A decoded cube ``[z, y, x]`` in the smallest numpy integer type of its dynamic range,
    and the settings its header stated."""

    cube: np.ndarray
    settings: Resolved


def _dynamic_range(cube: np.ndarray, signed: bool) -> int:
    lo, hi = int(cube.min()), int(cube.max())
    if signed:
        need = max((-lo - 1).bit_length() if lo < 0 else 0, hi.bit_length()) + 1
    else:
        need = hi.bit_length()
    return max(2, need)


def _cube(cube: np.ndarray) -> np.ndarray:
    arr = np.asarray(cube)
    if arr.ndim != 3 or not np.issubdtype(arr.dtype, np.integer):
        raise Ccsds123Error(f"CCSDS 123 codes an integer cube [bands, lines, columns]; got {arr.dtype} of shape {arr.shape}")
    if arr.dtype.itemsize > 4 and arr.size and (int(arr.min()) < -(1 << 31) or int(arr.max()) >= 1 << 32):
        raise Ccsds123Error("CCSDS 123 samples are at most 32 bits")
    return arr


def encode(cube: np.ndarray, params: Params | None = None, *, dynamic_range: int | None = None,
           signed: bool | None = None) -> bytes:
    """``cube`` ``[z, y, x]`` (integers) as a CCSDS 123.0-B-2 stream.

    ``signed`` defaults to the dtype's signedness; ``dynamic_range`` (D, bits) to the fewest
    bits that hold the data (and the error limits, which need fewer than D bits), which the
    header states so the decoder needs nothing else.
    """
    compile_kernels()
    arr = _cube(cube)
    signed = bool(np.issubdtype(arr.dtype, np.signedinteger)) if signed is None else signed
    params = params or Params()
    if dynamic_range is None:  # the fewest bits that hold the data and state the error limits
        limits = [int(x) for v in (params.absolute_error, params.relative_error) if v is not None
                  for x in ((v,) if isinstance(v, int) else v)]
        D = max(_dynamic_range(arr, signed), max(limits, default=0).bit_length() + 1)
    else:
        D = dynamic_range
    r = resolve(params, arr.shape, D, signed)
    s = arr.astype(np.int64)
    if int(s.min()) < r.smin or int(s.max()) > r.smax:
        raise Ccsds123Error(f"samples {int(s.min())}..{int(s.max())} do not fit {D}-bit {'signed' if signed else 'unsigned'} samples")
    delta = np.empty_like(s)
    predictor.run(s, delta, False, predictor.scalars(r), predictor.tables(r))
    head = header.pack(r)
    word = r.output_word_size
    buf = np.zeros(len(head) + (entropy.max_bits(r) + 7) // 8 + word, dtype=np.uint8)
    buf[: len(head)] = np.frombuffer(head, dtype=np.uint8)
    end = entropy.encode(delta.reshape(r.nz, -1), entropy.order(r), entropy.k_prime(r), r.D,
                         r.u_max, r.gamma0, r.gamma_star, buf, 8 * len(head))
    nbytes = (end + 7) // 8
    nbytes += -nbytes % word
    return buf[:nbytes].tobytes()


def _dtype(r: Resolved) -> np.dtype:
    size = 8 if r.D <= 8 else 16 if r.D <= 16 else 32
    return np.dtype(f"{'int' if r.signed else 'uint'}{size}")


def _where(r: Resolved, flat: int) -> str:
    z, rest = divmod(flat, r.nx * r.ny)
    y, x = divmod(rest, r.nx)
    return f"sample {flat} (band {z}, line {y}, column {x})"


def decode(stream: bytes, *, max_samples: int = MAX_SAMPLES) -> Decoded:
    """The cube a CCSDS 123.0-B-2 ``stream`` holds; :class:`CorruptStreamError` says where a
    truncated or damaged stream fails, or why a header is refused."""
    compile_kernels()
    data = bytes(stream)
    r, start = header.parse(data)
    if r.samples > max_samples:
        raise CorruptStreamError(f"header declares {r.nz} x {r.ny} x {r.nx} = {r.samples} samples, over the limit of {max_samples}: damaged header, or raise max_samples")
    body_bits = 8 * (len(data) - start)
    least = r.nz * r.D + (r.samples - r.nz)
    if least > body_bits:
        raise CorruptStreamError(f"header declares {r.samples} samples, which need at least {least} bits; the stream has {body_bits}: truncated, or a damaged header")
    buf = np.frombuffer(data, dtype=np.uint8)
    seq = entropy.order(r)
    delta = np.empty((r.nz, r.ny * r.nx), dtype=np.int64)
    end, failed = entropy.decode(buf, 8 * len(data), 8 * start, seq, entropy.k_prime(r), r.D,
                                 r.u_max, r.gamma0, r.gamma_star, delta)
    if failed >= 0:
        raise CorruptStreamError(f"CCSDS 123 stream truncated: bits ran out at {_where(r, int(seq[failed]))}, sample {failed} in coding order, byte {end // 8} of {len(data)}")
    s = np.empty((r.nz, r.ny, r.nx), dtype=np.int64)
    bad = predictor.run(s, delta.reshape(s.shape), True, predictor.scalars(r), predictor.tables(r))
    if bad >= 0:
        raise CorruptStreamError(f"CCSDS 123 stream damaged: {_where(r, int(bad))} decodes to a value outside the {r.D}-bit range")
    _check_tail(data, end, r.output_word_size)
    return Decoded(s.astype(_dtype(r)), r)


def _check_tail(data: bytes, end: int, word: int) -> None:
    nbytes = (end + 7) // 8
    nbytes += -nbytes % word
    if len(data) != nbytes:
        raise CorruptStreamError(f"CCSDS 123 stream damaged: the samples end at byte {nbytes}, the stream has {len(data)} bytes")
    tail = int.from_bytes(data[end // 8:], "big") & ((1 << (8 * (len(data) - end // 8) - end % 8)) - 1)
    if tail:
        raise CorruptStreamError(f"CCSDS 123 stream damaged: fill bits after the last sample (byte {end // 8}) are not zero")
