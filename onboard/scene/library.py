"""The shipped farmland spectral library, read with numpy only.

The file ``data/spectral_library.npz`` is made on the ground by
``onboard export spectra -o onboard/scene/data/spectral_library.npz`` (see
``export/spectral_library.py`` for what is in it and how each spectrum is made).
Spectra are reflectance (0-1) on a 5 nm grid from 400 to 2500 nm.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

LIBRARY_PATH = Path(__file__).parent / "data" / "spectral_library.npz"


@dataclass(frozen=True)
class SpectralLibrary:
    """Soil (dry, wet), green canopy and crop-residue spectra, each (n, B) on ``wavelengths_nm``.

    ``*_split``: (n,) "train" or "eval" for each green and residue variant."""

    wavelengths_nm: NDArray[np.float64]
    soil: NDArray[np.float64]
    green: NDArray[np.float64]
    residue: NDArray[np.float64]
    green_split: tuple[str, ...]
    residue_split: tuple[str, ...]
    green_names: tuple[str, ...]
    residue_names: tuple[str, ...]
    meta: dict

    def resample(self, spectra: NDArray, wavelengths_nm: NDArray) -> NDArray[np.float64]:
        """Spectra (n, B) linearly interpolated onto ``wavelengths_nm`` (must lie in 400-2500)."""
        target = np.asarray(wavelengths_nm, dtype=float)
        lo, hi = self.wavelengths_nm[0], self.wavelengths_nm[-1]
        if target.min() < lo or target.max() > hi:
            raise ValueError(f"wavelengths {target.min():.0f}-{target.max():.0f} nm outside the "
                             f"library's {lo:.0f}-{hi:.0f} nm")
        return np.stack([np.interp(target, self.wavelengths_nm, s) for s in np.atleast_2d(spectra)])

    def variants(self, kind: str, split: str) -> NDArray[np.intp]:
        """Indices of the green or residue variants of a split."""
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
        raise FileNotFoundError(f"spectral library {p} is missing: rebuild it with "
                                "'onboard export spectra -o onboard/scene/data/spectral_library.npz'")
    with np.load(p, allow_pickle=False) as z:
        return SpectralLibrary(
            wavelengths_nm=z["wavelengths_nm"].astype(float),
            soil=z["soil"].astype(float),
            green=z["green"].astype(float),
            residue=z["residue"].astype(float),
            green_split=tuple(z["green_split"].tolist()),
            residue_split=tuple(z["residue_split"].tolist()),
            green_names=tuple(z["green_names"].tolist()),
            residue_names=tuple(z["residue_names"].tolist()),
            meta=json.loads(z["meta"].tobytes().decode()),
        )
