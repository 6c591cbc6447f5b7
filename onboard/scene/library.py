"""The shipped farmland spectral library, read with numpy only, and spectral resampling.

The file ``data/spectral_library.npz`` is made on the ground by
``onboard export spectra -o onboard/scene/data/spectral_library.npz`` (see
``export/spectral_library.py`` for what is in it and how each spectrum is made): dry and
wet soil, green canopy variants and crop-residue variants, reflectance (0-1) on a 1 nm grid
from 400 to 2500 nm, each green and residue variant labelled ``train`` or ``eval``.
The flight runtime's simulated sensor reads it without prosail, numba or scipy.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from numpy.typing import ArrayLike, NDArray

LIBRARY_PATH = Path(__file__).parent / "data" / "spectral_library.npz"
#: File layouts this reader understands (``meta["format_version"]``).
FORMAT_VERSIONS = (2,)
REBUILD = "rebuild it with 'onboard export spectra -o onboard/scene/data/spectral_library.npz'"
_KEYS = ("wavelengths_nm", "soil", "green", "residue", "green_split", "residue_split",
         "green_names", "residue_names", "meta")


def resample(spectra: ArrayLike, source_nm: ArrayLike, target_nm: ArrayLike,
             method: str = "interp", fwhm_nm: ArrayLike | None = None) -> NDArray[np.float64]:
    """Spectra (n, S) sampled on ``source_nm`` (S,), ascending, onto ``target_nm`` (B,).

    ``method="interp"``: linear interpolation at each band centre (narrow bands).
    ``method="band"``: the mean of the spectrum over each band, a boxcar of width
    ``fwhm_nm`` (scalar or (B,)) centred on the band; by default each band reaches halfway
    to its neighbours, so contiguous bands tile the spectrum (what a grating or filter
    sensor with that band spacing integrates). Edges are clipped to the source range.
    Returns (n, B) float64. Raises ValueError when a band centre lies outside the source.
    """
    src = np.asarray(source_nm, dtype=float)
    tgt = np.atleast_1d(np.asarray(target_nm, dtype=float))
    s = np.atleast_2d(np.asarray(spectra, dtype=float))
    if tgt.ndim != 1 or tgt.size == 0 or not np.isfinite(tgt).all():
        raise ValueError(f"the wavelength grid must be a non-empty 1-D array of nm, got {tgt.shape}")
    if tgt.min() < src[0] or tgt.max() > src[-1]:
        raise ValueError(f"wavelengths {tgt.min():.1f}-{tgt.max():.1f} nm lie outside the "
                         f"library's {src[0]:.0f}-{src[-1]:.0f} nm")
    if method == "interp":
        return np.stack([np.interp(tgt, src, row) for row in s])
    if method != "band":
        raise ValueError(f"resampling method must be 'interp' or 'band', got {method!r}")
    if fwhm_nm is None:
        if tgt.size < 2:
            raise ValueError("band averaging one band needs its width: pass fwhm_nm")
        if np.any(np.diff(tgt) <= 0):
            raise ValueError("band averaging without fwhm_nm needs an ascending grid")
        mid = 0.5 * (tgt[1:] + tgt[:-1])
        lo = np.concatenate([[tgt[0] - (mid[0] - tgt[0])], mid])
        hi = np.concatenate([mid, [tgt[-1] + (tgt[-1] - mid[-1])]])
    else:
        half = 0.5 * np.broadcast_to(np.asarray(fwhm_nm, dtype=float), tgt.shape)
        if np.any(half <= 0):
            raise ValueError("fwhm_nm must be positive")
        lo, hi = tgt - half, tgt + half
    lo, hi = np.clip(lo, src[0], src[-1]), np.clip(hi, src[0], src[-1])
    # integral of the piecewise-linear spectrum from src[0]; exact at the source samples
    steps = 0.5 * (s[:, 1:] + s[:, :-1]) * np.diff(src)
    cum = np.concatenate([np.zeros((len(s), 1)), np.cumsum(steps, axis=1)], axis=1)
    # a band centre lies inside the source range and every width is positive, so hi > lo
    area = np.stack([np.interp(hi, src, c) - np.interp(lo, src, c) for c in cum])
    return area / (hi - lo)


@dataclass(frozen=True)
class SpectralLibrary:
    """Soil (dry, wet), green canopy and crop-residue spectra, each (n, S) float64
    reflectance on ``wavelengths_nm`` (S,), ascending nm.

    ``*_names``, ``*_split``: (n,) per green and residue variant, split "train" or "eval".
    ``meta``: the generator's record (versions, command, every variant's parameters)."""

    wavelengths_nm: NDArray[np.float64]
    soil: NDArray[np.float64]
    green: NDArray[np.float64]
    residue: NDArray[np.float64]
    green_split: tuple[str, ...]
    residue_split: tuple[str, ...]
    green_names: tuple[str, ...]
    residue_names: tuple[str, ...]
    meta: dict

    def resample(self, spectra: ArrayLike, wavelengths_nm: ArrayLike, method: str = "interp",
                 fwhm_nm: ArrayLike | None = None) -> NDArray[np.float64]:
        """Library spectra (n, S) onto ``wavelengths_nm`` (B,) inside 400-2500 nm: (n, B);
        see :func:`resample` for the methods."""
        return resample(spectra, self.wavelengths_nm, wavelengths_nm, method, fwhm_nm)

    def variants(self, kind: str, split: str) -> NDArray[np.intp]:
        """Indices of the ``"green"`` or ``"residue"`` variants of a split."""
        if kind not in ("green", "residue"):
            raise ValueError(f"variant kind must be 'green' or 'residue', got {kind!r}")
        labels = self.green_split if kind == "green" else self.residue_split
        idx = np.flatnonzero(np.asarray(labels) == split)
        if idx.size == 0:
            raise ValueError(f"the library has no {kind} variant for split {split!r}")
        return idx


@lru_cache(maxsize=4)
def load(path: str | None = None) -> SpectralLibrary:
    """Load the library (cached). ``path`` defaults to the shipped file."""
    p = Path(path) if path else LIBRARY_PATH
    if not p.is_file():
        raise FileNotFoundError(f"spectral library {p} is missing: {REBUILD}")
    with np.load(p, allow_pickle=False) as z:
        missing = [k for k in _KEYS if k not in z.files]
        if missing:
            raise ValueError(f"spectral library {p} lacks {missing}: {REBUILD}")
        meta = json.loads(z["meta"].tobytes().decode())
        version = meta.get("format_version", 1)
        if version not in FORMAT_VERSIONS:
            raise ValueError(f"spectral library {p} has format version {version}; this runtime "
                             f"reads {FORMAT_VERSIONS}: {REBUILD}")
        lib = SpectralLibrary(
            wavelengths_nm=z["wavelengths_nm"].astype(float),
            soil=z["soil"].astype(float),
            green=z["green"].astype(float),
            residue=z["residue"].astype(float),
            green_split=tuple(z["green_split"].tolist()),
            residue_split=tuple(z["residue_split"].tolist()),
            green_names=tuple(z["green_names"].tolist()),
            residue_names=tuple(z["residue_names"].tolist()),
            meta=meta,
        )
    n = lib.wavelengths_nm.size
    if lib.soil.shape != (2, n) or lib.green.shape[1:] != (n,) or lib.residue.shape[1:] != (n,):
        raise ValueError(f"spectral library {p} has inconsistent shapes: {REBUILD}")
    return lib
