"""The shipped farmland spectral library, read with numpy only, and spectral resampling.

The file ``data/spectral_library.npz`` is made on the ground by
``onboard export spectra -o onboard/scene/data/spectral_library.npz`` (see
``export/spectral_library.py`` for its sources, the split rule, the compact subset's rule and
the water-band bridge): real soils, real dry vegetation (the crop-residue class) and green
vegetation from earthlib and the USGS 1995 library, and the project's PROSPECT-D / PROSAIL
spectra, reflectance (0-1) on a 10 nm grid from 400 to 2450 nm, each spectrum in one split,
``train``, ``val``, ``test`` (or ``shared`` by all three: prosail's single soil).
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
FORMAT_VERSIONS = (3,)
REBUILD = "rebuild it with 'onboard export spectra -o onboard/scene/data/spectral_library.npz'"
_KEYS = ("wavelengths_nm", "spectra", "measured", "kinds", "splits", "names", "sources", "sites",
         "wet_ratio", "meta")
KINDS = ("soil", "residue", "green")
SPLITS = ("train", "val", "test")


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
    """Soil, crop-residue and green vegetation spectra, (N, S) float64 reflectance on
    ``wavelengths_nm`` (S,), ascending nm.

    Per spectrum (N,): ``kinds`` (one of ``KINDS``), ``splits`` (one of ``SPLITS`` or
    ``"shared"``), ``names``, ``sources`` (``earthlib``, ``usgs1995``, ``prosail``) and
    ``sites``. ``measured`` (N, S): False where the sample was bridged across a gap of the
    source. ``wet_ratio`` (S,): a wet soil over the same soil dry (the simulator's moisture).
    ``meta``: the generator's record (versions, command, rules)."""

    wavelengths_nm: NDArray[np.float64]
    spectra: NDArray[np.float64]
    measured: NDArray[np.bool_]
    kinds: tuple[str, ...]
    splits: tuple[str, ...]
    names: tuple[str, ...]
    sources: tuple[str, ...]
    sites: tuple[str, ...]
    wet_ratio: NDArray[np.float64]
    meta: dict

    def resample(self, spectra: ArrayLike, wavelengths_nm: ArrayLike, method: str = "interp",
                 fwhm_nm: ArrayLike | None = None) -> NDArray[np.float64]:
        """Library spectra (n, S) onto ``wavelengths_nm`` (B,) inside the library's range:
        (n, B); see :func:`resample` for the methods."""
        return resample(spectra, self.wavelengths_nm, wavelengths_nm, method, fwhm_nm)

    def indices(self, kind: str, split: str) -> NDArray[np.intp]:
        """Indices of the spectra of a kind in a split (``"shared"`` ones belong to all)."""
        if kind not in KINDS:
            raise ValueError(f"spectrum kind must be one of {KINDS}, got {kind!r}")
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        k, s = np.asarray(self.kinds), np.asarray(self.splits)
        idx = np.flatnonzero((k == kind) & ((s == split) | (s == "shared")))
        if idx.size == 0:
            raise ValueError(f"the library has no {kind} spectrum in split {split!r}")
        return idx

    def only(self, sources: tuple[str, ...]) -> SpectralLibrary:
        """The spectra of some sources only (e.g. ``("prosail",)``: the simulated set)."""
        keep = np.flatnonzero(np.isin(self.sources, sources))
        if keep.size == 0:
            raise ValueError(f"no spectrum from {sources}; the library has {sorted(set(self.sources))}")

        def pick(values: tuple[str, ...]) -> tuple[str, ...]:
            return tuple(values[i] for i in keep)

        return SpectralLibrary(self.wavelengths_nm, self.spectra[keep], self.measured[keep],
                               pick(self.kinds), pick(self.splits), pick(self.names),
                               pick(self.sources), pick(self.sites), self.wet_ratio,
                               {**self.meta, "sources_kept": list(sources)})


@lru_cache(maxsize=4)
def load(path: str | None = None) -> SpectralLibrary:
    """Load the library (cached). ``path`` defaults to the shipped file."""
    p = Path(path) if path else LIBRARY_PATH
    if not p.is_file():
        raise FileNotFoundError(f"spectral library {p} is missing: {REBUILD}")
    with np.load(p, allow_pickle=False) as z:
        missing = [k for k in _KEYS if k not in z.files]
        meta = json.loads(z["meta"].tobytes().decode()) if "meta" in z.files else {}
        version = meta.get("format_version", 1)
        if version not in FORMAT_VERSIONS:
            raise ValueError(f"spectral library {p} has format version {version}; this runtime "
                             f"reads {FORMAT_VERSIONS}: {REBUILD}")
        if missing:
            raise ValueError(f"spectral library {p} lacks {missing}: {REBUILD}")

        def text(key: str) -> tuple[str, ...]:
            return tuple(str(v) for v in z[key].tolist())

        lib = SpectralLibrary(
            wavelengths_nm=z["wavelengths_nm"].astype(float),
            spectra=z["spectra"].astype(float),
            measured=z["measured"].astype(bool),
            kinds=text("kinds"), splits=text("splits"), names=text("names"),
            sources=text("sources"), sites=text("sites"),
            wet_ratio=z["wet_ratio"].astype(float),
            meta=meta,
        )
    n, count = lib.wavelengths_nm.size, lib.spectra.shape[0]
    if (lib.spectra.shape != (count, n) or lib.measured.shape != (count, n) or lib.wet_ratio.shape != (n,)
            or not all(len(v) == count for v in (lib.kinds, lib.splits, lib.names, lib.sources, lib.sites))):
        raise ValueError(f"spectral library {p} has inconsistent shapes: {REBUILD}")
    return lib
