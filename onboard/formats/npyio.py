"""Reading ``.npy`` / ``.npz`` data that came from outside, with the size checked first.

``numpy.load`` allocates what a header declares before reading a byte of data: a 1 kB file
whose header declares a (2**20, 2**20) array costs 2 TiB, and a zip member that inflates
from 700 bytes to gigabytes is a compression bomb. These readers check every declared size
against the available bytes and a limit the caller gives (one per format: calibration
files, product payloads, recorded frames) before allocating, never unpickle, and turn every
failure of the container (bad zip, bad deflate stream, bad header) into the caller's error
class, so a reader raises its own error and nothing else.
"""

from __future__ import annotations

import io
import tokenize
import warnings
import zipfile
import zlib
from typing import IO, BinaryIO

import numpy as np
from numpy.lib import format as npformat

#: Failures of the zip/deflate/npy layers that mean "these bytes are damaged".
_CONTAINER_ERRORS = (zipfile.BadZipFile, zlib.error, ValueError, OSError, EOFError, KeyError,
                     NotImplementedError, RuntimeError, OverflowError, SyntaxError, TypeError,
                     tokenize.TokenError)  # numpy tokenizes the header of old .npy files


def read_header(fp: IO[bytes]) -> tuple[tuple[int, ...], np.dtype, bool]:
    """(shape, dtype, fortran_order) of the ``.npy`` stream ``fp``, left at the data.
    ``ValueError`` if the header is not a plain array header (object dtypes included)."""
    version = npformat.read_magic(fp)
    # numpy evaluates the header as a Python literal: a damaged one may hold escape sequences
    # Python warns about; the header is refused or checked below, the warning is only noise
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", (DeprecationWarning, SyntaxWarning))
        if version == (1, 0):
            shape, fortran, dtype = npformat.read_array_header_1_0(fp)
        elif version in ((2, 0), (3, 0)):
            shape, fortran, dtype = npformat.read_array_header_2_0(fp)
        else:
            raise ValueError(f"unsupported .npy version {version}")
    if dtype.hasobject:
        raise ValueError("array of Python objects (would need unpickling)")
    if any(not isinstance(n, int) or n < 0 for n in shape):
        raise ValueError(f"invalid shape {shape}")
    return tuple(shape), dtype, bool(fortran)


def _nbytes(shape: tuple[int, ...], dtype: np.dtype) -> int:
    n = dtype.itemsize
    for d in shape:
        n *= d
    return n


def _read(fp: IO[bytes], available: int, max_bytes: int, what: str) -> np.ndarray:
    """One array from ``fp`` holding ``available`` bytes (header included)."""
    start = fp.tell()
    shape, dtype, fortran = read_header(fp)
    need = _nbytes(shape, dtype)
    if need > max_bytes:
        raise ValueError(f"{what} declares {shape} {dtype}: {need} bytes, over the limit of {max_bytes}")
    have = available - (fp.tell() - start)
    if need != have:
        raise ValueError(f"{what} declares {shape} {dtype} ({need} bytes) but holds {have} bytes")
    buf = bytearray(need)
    view, got = memoryview(buf), 0
    while got < need:
        n = fp.readinto(view[got:])  # type: ignore[attr-defined]
        if not n:
            raise ValueError(f"{what} is truncated: {got} of {need} bytes")
        got += n
    return np.frombuffer(buf, dtype=dtype).reshape(shape, order="F" if fortran else "C")


def load_npy(fp: BinaryIO, size: int, max_bytes: int, what: str, error: type[Exception]) -> np.ndarray:
    """The array in the ``.npy`` stream ``fp`` of ``size`` bytes, at most ``max_bytes`` of data;
    anything else raises ``error("<what> (<reason>)")``: ``what`` says which file and what it
    should have been."""
    try:
        return _read(fp, size, max_bytes, "the array")
    except _CONTAINER_ERRORS as exc:
        raise error(f"{what} ({exc})") from exc


def load_npz(source: bytes | BinaryIO, max_bytes: int, what: str, error: type[Exception]
             ) -> dict[str, np.ndarray]:
    """Every array of the ``.npz`` archive ``source``, name -> array (without ``.npy``).

    The sum of the members' declared sizes must stay within ``max_bytes``: checked from the
    zip directory before anything is inflated, then again from each array's header. Anything
    else (not a zip, a bad deflate stream, a member that is not an array, a duplicate name)
    raises ``error("<what> (<reason>)")``."""
    fh = io.BytesIO(source) if isinstance(source, bytes | bytearray) else source
    try:
        with zipfile.ZipFile(fh) as z:
            infos = z.infolist()
            names = [i.filename for i in infos]
            if len(set(names)) != len(names):
                raise ValueError("duplicate member names")
            declared = sum(i.file_size for i in infos)
            if declared > max_bytes:
                raise ValueError(f"members declare {declared} bytes, over the limit of {max_bytes}")
            out: dict[str, np.ndarray] = {}
            for info in infos:
                if not info.filename.endswith(".npy"):
                    raise ValueError(f"member {info.filename!r} is not an .npy array")
                with z.open(info) as member:
                    out[info.filename[:-4]] = _read(member, info.file_size, max_bytes,
                                                    f"member {info.filename!r}")
            return out
    except _CONTAINER_ERRORS as exc:
        raise error(f"{what} ({exc})") from exc
