"""A farmland scene simulator: parcels, tillage practices, sub-pixel mixing, variability.

The field is a square of ``size`` x ``size`` pixels cut into Voronoi parcels. Each parcel has
a tillage practice and a residue cover drawn inside that practice's range (< 15 %
intensive, 15-30 % reduced, > 30 % conservation), a green-vegetation cover (weeds, volunteer
crop) and bare soil for the rest; smooth random textures vary the covers inside a parcel,
the residue cover staying inside the practice's range (so a pixel's class, computed from its
own cover, is its parcel's practice).
Every pixel is a linear mixture of soil, residue and green vegetation, and every
endmember varies from pixel to pixel, because a simulator with fixed endmembers makes
unmixing trivial (REFERENCES.md):

* soil: a dry/wet mixture of prosail's two soils with a smooth moisture field, times a
  brightness field (0.8-1.2);
* residue: a smooth per-pixel blend of two residue variants chosen per parcel;
* green: a per-parcel canopy variant, blended with a second one by a smooth field;
* illumination: a smooth shading field (0.85-1.15, topography and haze) that multiplies the
  whole pixel.

``split="train"`` draws residue and green variants only from the library's training
variants, ``"eval"`` only from its held-out ones, and the two splits use disjoint seeds.

Reflectance is the apparent reflectance (shading included), (bands, rows, cols) float32 on
any requested grid inside 400-2500 nm; fractions are (3, rows, cols) float32 in
``ENDMEMBERS`` order summing to one; tillage is (rows, cols) uint8 from each pixel's
residue cover. Everything is deterministic from the seed.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from onboard.scene.library import SpectralLibrary, load
from onboard.stages.residue import Endmembers
from onboard.types import TILLAGE_THRESHOLDS, tillage_class

#: Residue-cover range of each tillage practice (intensive, reduced, conservation).
COVER_RANGES = ((0.02, TILLAGE_THRESHOLDS[0] - 0.02), (TILLAGE_THRESHOLDS[0] + 0.02, TILLAGE_THRESHOLDS[1] - 0.02),
                (TILLAGE_THRESHOLDS[1] + 0.03, 0.85))
_SPLIT_SEED = {"train": 0, "eval": 1_000_003}


def smooth_field(rng: np.random.Generator, shape: tuple[int, int], scale_px: float) -> NDArray[np.float64]:
    """Gaussian random field with unit standard deviation and correlation length ~scale_px,
    by filtering white noise in the Fourier domain."""
    ky = np.fft.fftfreq(shape[0])[:, None]
    kx = np.fft.rfftfreq(shape[1])[None, :]
    filt = np.exp(-0.5 * (2 * np.pi * scale_px) ** 2 * (ky**2 + kx**2))
    f = np.fft.irfft2(np.fft.rfft2(rng.standard_normal(shape)) * filt, s=shape)
    return (f - f.mean()) / (f.std() + 1e-12)


@dataclass
class SceneTile:
    """A window of the scene: reflectance (B, h, w) on wavelengths_nm (B,), fractions
    (3, h, w), tillage (h, w), parcel_id (h, w)."""

    reflectance: NDArray[np.float32]
    wavelengths_nm: NDArray[np.float64]
    fractions: NDArray[np.float32]
    tillage: NDArray[np.uint8]
    parcel_id: NDArray[np.int32]


@dataclass
class FarmlandScene:
    """A simulated field. Per-pixel maps are (size, size); ``weights`` are (n_basis, size,
    size): the reflectance of a pixel is ``basis_spectra.T @ weights[:, pixel]`` where the
    basis is (dry soil, wet soil, residue variants..., green variants...)."""

    fractions: NDArray[np.float32]
    tillage: NDArray[np.uint8]
    parcel_id: NDArray[np.int32]
    parcel_practice: NDArray[np.uint8]
    weights: NDArray[np.float32]
    library: SpectralLibrary
    split: str
    residue_idx: NDArray[np.intp]
    green_idx: NDArray[np.intp]

    @classmethod
    def generate(cls, size: int = 512, seed: int = 0, split: str = "eval",
                 parcel_px: float = 80.0, library: SpectralLibrary | None = None) -> FarmlandScene:
        """A new field; ``parcel_px`` is the typical parcel side in pixels."""
        if split not in _SPLIT_SEED:
            raise ValueError(f"split must be 'train' or 'eval', got {split!r}")
        lib = library or load()
        rng = np.random.default_rng(seed + _SPLIT_SEED[split])
        shape = (size, size)
        n_parcels = max(2, int(round((size / parcel_px) ** 2)))
        centres = rng.uniform(0, size, (n_parcels, 2))
        yy, xx = np.mgrid[0:size, 0:size]
        parcel = np.empty(shape, dtype=np.int32)
        best = np.full(shape, np.inf)
        for i, (cy, cx) in enumerate(centres):
            d = (yy - cy) ** 2 + (xx - cx) ** 2
            closer = d < best
            parcel[closer] = i
            best[closer] = d[closer]
        practice = rng.integers(0, 3, n_parcels).astype(np.uint8)
        cover = np.array([rng.uniform(*COVER_RANGES[p]) for p in practice])
        green_cover = rng.uniform(0.0, 0.3, n_parcels) * (1 - cover)
        tex_r = smooth_field(rng, shape, 6.0)
        tex_g = smooth_field(rng, shape, 4.0)
        # texture varies the cover inside a parcel but keeps it inside its practice's range:
        # a parcel under one practice is one tillage class, pixel by pixel
        lo = np.array([COVER_RANGES[p][0] for p in practice])[parcel]
        hi = np.array([COVER_RANGES[p][1] for p in practice])[parcel]
        residue = np.clip(cover[parcel] * (1 + 0.25 * tex_r), lo, hi)
        green = np.clip(green_cover[parcel] * (1 + 0.5 * tex_g), 0.0, None)
        green = np.minimum(green, 1.0 - residue)
        soil = 1.0 - residue - green
        fractions = np.stack([residue, soil, green]).astype(np.float32)

        r_idx = lib.variants("residue", split)
        g_idx = lib.variants("green", split)
        moisture = 1 / (1 + np.exp(-(smooth_field(rng, shape, 20.0) * 1.5 + rng.normal(0, 0.5))))
        brightness = 1.0 + 0.1 * smooth_field(rng, shape, 15.0)
        shade = 1.0 + 0.07 * smooth_field(rng, shape, 30.0)
        r_pair = rng.integers(0, len(r_idx), (n_parcels, 2))
        g_pair = rng.integers(0, len(g_idx), (n_parcels, 2))
        r_mix = 1 / (1 + np.exp(-2 * smooth_field(rng, shape, 8.0)))
        g_mix = 1 / (1 + np.exp(-2 * smooth_field(rng, shape, 8.0)))
        n_basis = 2 + len(r_idx) + len(g_idx)
        w = np.zeros((n_basis, size, size))
        w[0] = soil * brightness * (1 - moisture)
        w[1] = soil * brightness * moisture
        for slot, mix in ((0, r_mix), (1, 1 - r_mix)):
            np.add.at(w, (2 + r_pair[parcel, slot], yy, xx), residue * mix)
        for slot, mix in ((0, g_mix), (1, 1 - g_mix)):
            np.add.at(w, (2 + len(r_idx) + g_pair[parcel, slot], yy, xx), green * mix)
        w *= np.clip(shade, 0.8, 1.2)[None]
        return cls(fractions, tillage_class(residue), parcel, practice, w.astype(np.float32), lib, split,
                   r_idx, g_idx)

    @property
    def size(self) -> int:
        return int(self.fractions.shape[1])

    def basis(self, wavelengths_nm: NDArray) -> NDArray[np.float64]:
        """(n_basis, B) basis spectra on a grid, in the order of ``weights``."""
        lib = self.library
        spectra = np.concatenate([lib.soil, lib.residue[self.residue_idx], lib.green[self.green_idx]])
        return lib.resample(spectra, wavelengths_nm)

    def tile(self, wavelengths_nm: NDArray, row: int, col: int, shape: tuple[int, int],
             basis: NDArray | None = None) -> SceneTile:
        """The window with top-left (row, col) (wrapping around the field's edges)."""
        h, w = shape
        rows = (row + np.arange(h)) % self.size
        cols = (col + np.arange(w)) % self.size
        ix = np.ix_(rows, cols)
        b = self.basis(wavelengths_nm) if basis is None else basis
        weights = self.weights[(slice(None), *ix)].reshape(len(b), -1)
        refl = (b.T @ weights).reshape(-1, h, w).astype(np.float32)
        return SceneTile(refl, np.asarray(wavelengths_nm, dtype=float),
                         self.fractions[(slice(None), *ix)], self.tillage[ix], self.parcel_id[ix])

    def track(self, wavelengths_nm: NDArray, shape: tuple[int, int], step: tuple[int, int] | None = None,
              start: tuple[int, int] = (0, 0)) -> Iterator[SceneTile]:
        """Successive tiles along a flight track: along the rows by ``step`` (default: the
        tile's height, no overlap), sidestepping by the tile's width after each pass."""
        h, w = shape
        dy, dx = step or (h, w)
        b = self.basis(wavelengths_nm)
        row, col = start
        while True:
            yield self.tile(wavelengths_nm, row, col, shape, basis=b)
            row += dy
            if row >= self.size:
                row, col = row % self.size, (col + dx) % self.size


def nominal_endmembers(wavelengths_nm: NDArray, library: SpectralLibrary | None = None) -> Endmembers:
    """The library an unmixing stage is given: dry and wet soil, and the mean of the
    *training* residue and green variants (a field campaign's library, never the held-out
    spectra of evaluation scenes), on ``wavelengths_nm``."""
    lib = library or load()
    spectra = np.concatenate([
        lib.soil,
        lib.residue[lib.variants("residue", "train")].mean(0, keepdims=True),
        lib.green[lib.variants("green", "train")].mean(0, keepdims=True),
    ])
    return Endmembers(lib.resample(spectra, wavelengths_nm), np.asarray(wavelengths_nm, dtype=float),
                      ("soil", "soil", "residue", "green"),
                      ("soil-dry", "soil-wet", "residue-mean", "green-mean"))
