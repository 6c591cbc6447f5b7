"""A farmland scene simulator: parcels, tillage practices, sub-pixel mixing, variability.

Used by the simulated sensors of the runtime (per frame: numpy only, no prosail) and by
``export`` to make training and evaluation data. Everything is deterministic from the seed.

The field is a square of ``size`` x ``size`` pixels cut into Voronoi parcels. Each parcel has
a tillage practice and a residue cover drawn inside that practice's range (< 15 %
intensive, 15-30 % reduced, > 30 % conservation; ``COVER_RANGES`` keep 2-3 points off the
thresholds), a green-vegetation cover (weeds, volunteer crop, 0-30 % of what residue leaves)
and bare soil for the rest. Smooth random textures vary the covers inside a parcel, the
residue cover staying inside the practice's range, so a pixel's class (from its own cover,
``onboard.formats.types.tillage_class``) is its parcel's practice.

Every pixel is a linear mixture of soil, residue and green vegetation, and every endmember
varies from pixel to pixel, because a simulator with fixed endmembers makes unmixing trivial
(REFERENCES.md: one soil spectrum gives residue MAE 0.22-0.38 when soil varies):

* soil: a dry/wet mixture of prosail's two soils with a smooth moisture field (logistic of
  a Gaussian field plus a per-field wetness offset), times a brightness field;
* residue: a smooth per-pixel blend of two residue variants (age, moisture) chosen per
  parcel; green: the same with two canopy variants (chlorophyll, water, LAI);
* illumination: a smooth shading field (topography, haze) that multiplies the whole pixel.

``split="train"`` draws residue and green variants only from the library's training
variants and its variation ranges from ``VARIABILITY["train"]``; ``"eval"`` uses only the
held-out variants and wider ranges (its extremes lie outside what training saw), and the two
splits use disjoint seeds.

Reflectance is the apparent reflectance (illumination included), (bands, rows, cols)
float32 on any requested grid inside 400-2500 nm; fractions are (3, rows, cols) float32 in
``ENDMEMBERS`` order, non-negative, summing to one; tillage is (rows, cols) uint8.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from onboard.formats.types import ENDMEMBERS, TILLAGE_THRESHOLDS, tillage_class
from onboard.scene.library import SpectralLibrary, load
from onboard.stages.residue import Endmembers

#: Residue-cover range of each tillage practice (intensive, reduced, conservation).
COVER_RANGES = ((0.02, TILLAGE_THRESHOLDS[0] - 0.02), (TILLAGE_THRESHOLDS[0] + 0.02, TILLAGE_THRESHOLDS[1] - 0.02),
                (TILLAGE_THRESHOLDS[1] + 0.03, 0.85))
_SPLIT_SEED = {"train": 0, "eval": 1_000_003}
_RESIDUE, _SOIL, _GREEN = (ENDMEMBERS.index(k) for k in ("residue", "soil", "green"))


@dataclass(frozen=True)
class Variability:
    """How much the endmembers and the light vary from pixel to pixel in one split.

    Soil brightness is ``1 + brightness_sd * F`` and illumination ``1 + shade_sd * F``
    (clipped to 0.8-1.2), F a unit Gaussian random field; the wet-soil share is
    ``logistic(moisture_gain * F + N(0, moisture_bias_sd))``."""

    brightness_sd: float
    shade_sd: float
    moisture_gain: float
    moisture_bias_sd: float


#: Per split: evaluation scenes span wider ranges than training ones.
VARIABILITY = {
    "train": Variability(brightness_sd=0.06, shade_sd=0.04, moisture_gain=1.2, moisture_bias_sd=0.3),
    "eval": Variability(brightness_sd=0.10, shade_sd=0.07, moisture_gain=1.5, moisture_bias_sd=0.5),
}


def smooth_field(rng: np.random.Generator, shape: tuple[int, int], scale_px: float) -> NDArray[np.float64]:
    """Gaussian random field with unit standard deviation and correlation length ~scale_px,
    by filtering white noise in the Fourier domain (periodic, so crops wrap seamlessly)."""
    ky = np.fft.fftfreq(shape[0])[:, None]
    kx = np.fft.rfftfreq(shape[1])[None, :]
    filt = np.exp(-0.5 * (2 * np.pi * scale_px) ** 2 * (ky**2 + kx**2))
    f = np.fft.irfft2(np.fft.rfft2(rng.standard_normal(shape)) * filt, s=shape)
    return (f - f.mean()) / (f.std() + 1e-12)


@dataclass
class SceneTile:
    """A window of the scene, as a sensor sees it.

    ``reflectance``: (B, h, w) float32 apparent reflectance (0-1) on ``wavelengths_nm`` (B,).
    ``fractions``: (3, h, w) float32 sub-pixel covers in ``ENDMEMBERS`` order, sum to one.
    ``tillage``: (h, w) uint8 class of each pixel's residue cover. ``parcel_id``: (h, w).
    ``origin``: (row, col) of the top-left pixel in the scene (wrapped).
    ``illumination``: (h, w) float32 shading factor applied to the whole pixel.
    The endmember spectra actually used: ``basis`` (n_basis, B) float32 reflectance,
    ``basis_class`` (n_basis,) index into ``ENDMEMBERS``, ``basis_names``, and ``weights``
    (n_basis, h, w) float32 with ``reflectance == einsum('kb,khw->bhw', basis, weights)``;
    for each class the weights sum to fraction x illumination (x brightness for soil).
    """

    reflectance: NDArray[np.float32]
    wavelengths_nm: NDArray[np.float64]
    fractions: NDArray[np.float32]
    tillage: NDArray[np.uint8]
    parcel_id: NDArray[np.int32]
    origin: tuple[int, int] = (0, 0)
    illumination: NDArray[np.float32] | None = None
    basis: NDArray[np.float32] | None = None
    basis_class: NDArray[np.uint8] | None = None
    basis_names: tuple[str, ...] = ()
    weights: NDArray[np.float32] | None = None

    def pixel_endmembers(self) -> NDArray[np.float64]:
        """The true endmember spectrum of each class at each pixel: (3, B, h, w) float64,
        illumination (and soil brightness) included, so that ``reflectance`` equals
        ``sum_k fractions[k] * pixel_endmembers()[k]``; NaN where that class is absent."""
        if self.basis is None or self.weights is None or self.basis_class is None:
            raise ValueError("this tile carries no endmember record (basis and weights)")
        out = np.full((len(ENDMEMBERS), *self.reflectance.shape), np.nan)
        for k in range(len(ENDMEMBERS)):
            sel = self.basis_class == k
            spec = np.einsum("kb,khw->bhw", self.basis[sel].astype(float), self.weights[sel].astype(float))
            f = self.fractions[k].astype(float)
            np.divide(spec, f, out=out[k], where=f > 0)
        return out


@dataclass
class FarmlandScene:
    """A simulated field. Per-pixel maps are (size, size); per-parcel arrays are (n_parcels,).

    ``weights`` (n_basis, size, size): the reflectance of a pixel is
    ``basis(grid).T @ weights[:, pixel]`` with the basis (dry soil, wet soil, this split's
    residue variants..., its green variants...); ``basis_class`` gives each basis
    spectrum's class index into ``ENDMEMBERS``. ``illumination`` (size, size) is the
    shading, ``soil_moisture`` the wet-soil share and ``soil_brightness`` the soil factor.
    """

    fractions: NDArray[np.float32]
    tillage: NDArray[np.uint8]
    parcel_id: NDArray[np.int32]
    parcel_practice: NDArray[np.uint8]
    weights: NDArray[np.float32]
    library: SpectralLibrary
    split: str
    residue_idx: NDArray[np.intp]
    green_idx: NDArray[np.intp]
    parcel_cover: NDArray[np.float64]
    parcel_green: NDArray[np.float64]
    illumination: NDArray[np.float32]
    soil_moisture: NDArray[np.float32]
    soil_brightness: NDArray[np.float32]

    @classmethod
    def generate(cls, size: int = 512, seed: int = 0, split: str = "eval",
                 parcel_px: float = 80.0, library: SpectralLibrary | None = None) -> FarmlandScene:
        """A new field of ``size`` x ``size`` pixels; ``parcel_px`` is the typical parcel
        side in pixels. Takes about 1 s at 512 (do it once; crop tiles per frame)."""
        if split not in _SPLIT_SEED:
            raise ValueError(f"split must be 'train' or 'eval', got {split!r}")
        if size < 8 or parcel_px <= 0:
            raise ValueError(f"a scene needs size >= 8 and parcel_px > 0; got {size}, {parcel_px}")
        lib = library or load()
        var = VARIABILITY[split]
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
        fractions = np.zeros((len(ENDMEMBERS), size, size), dtype=np.float32)
        fractions[_RESIDUE], fractions[_SOIL], fractions[_GREEN] = residue, soil, green

        r_idx = lib.variants("residue", split)
        g_idx = lib.variants("green", split)
        moist_field = smooth_field(rng, shape, 20.0) * var.moisture_gain
        moisture = 1 / (1 + np.exp(-(moist_field + rng.normal(0, var.moisture_bias_sd))))
        brightness = 1.0 + var.brightness_sd * smooth_field(rng, shape, 15.0)
        shade = np.clip(1.0 + var.shade_sd * smooth_field(rng, shape, 30.0), 0.8, 1.2)
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
        w *= shade[None]
        return cls(fractions, tillage_class(residue), parcel, practice, w.astype(np.float32), lib, split,
                   r_idx, g_idx, cover, green_cover, shade.astype(np.float32),
                   moisture.astype(np.float32), brightness.astype(np.float32))

    @property
    def size(self) -> int:
        return int(self.fractions.shape[1])

    @property
    def basis_class(self) -> NDArray[np.uint8]:
        """(n_basis,) class index (into ``ENDMEMBERS``) of each basis spectrum."""
        return np.array([_SOIL, _SOIL] + [_RESIDUE] * len(self.residue_idx) + [_GREEN] * len(self.green_idx),
                        dtype=np.uint8)

    @property
    def basis_names(self) -> tuple[str, ...]:
        lib = self.library
        return (("soil-dry", "soil-wet") + tuple(lib.residue_names[i] for i in self.residue_idx)
                + tuple(lib.green_names[i] for i in self.green_idx))

    def basis(self, wavelengths_nm: ArrayLike, method: str = "interp",
              fwhm_nm: ArrayLike | None = None) -> NDArray[np.float64]:
        """(n_basis, B) basis spectra on a grid (nm, inside 400-2500), in the order of
        ``weights``; ``method``/``fwhm_nm`` as in :func:`onboard.scene.library.resample`."""
        lib = self.library
        spectra = np.concatenate([lib.soil, lib.residue[self.residue_idx], lib.green[self.green_idx]])
        return lib.resample(spectra, wavelengths_nm, method, fwhm_nm)

    def tile(self, wavelengths_nm: ArrayLike, row: int, col: int, shape: tuple[int, int],
             basis: NDArray | None = None) -> SceneTile:
        """The window of ``shape`` (h, w) with top-left (row, col), wrapping around the
        field's edges. ``basis``: this scene's :meth:`basis` on the grid, when the caller
        has it already (a flight track computes it once). Every array is a fresh copy."""
        grid = np.asarray(wavelengths_nm, dtype=float)
        b = self.basis(grid) if basis is None else np.asarray(basis)
        if b.shape != (self.weights.shape[0], grid.size):
            raise ValueError(f"basis {b.shape} is not (n_basis={self.weights.shape[0]}, bands={grid.size})")
        row, col = row % self.size, col % self.size
        crop = _window(row, col, shape, self.size)
        weights = np.array(self.weights[(slice(None), *crop)])
        # einsum's own loop, not BLAS: a (B x n_basis) @ (n_basis x h*w) product is too small
        # for BLAS threads, which on a busy machine cost tens of ms in wake-ups
        refl = np.einsum("kb,khw->bhw", b.astype(np.float32), weights)
        return SceneTile(refl, grid, np.array(self.fractions[(slice(None), *crop)]), np.array(self.tillage[crop]),
                         np.array(self.parcel_id[crop]), (row, col), np.array(self.illumination[crop]),
                         b.astype(np.float32),
                         self.basis_class, self.basis_names, weights)

    def track(self, wavelengths_nm: ArrayLike, shape: tuple[int, int], step: tuple[int, int] | None = None,
              start: tuple[int, int] = (0, 0), method: str = "interp",
              fwhm_nm: ArrayLike | None = None) -> FlightTrack:
        """Successive tiles along a flight track (see :class:`FlightTrack`)."""
        return FlightTrack(self, wavelengths_nm, shape, step, start, method, fwhm_nm)


def _window(row: int, col: int, shape: tuple[int, int], size: int) -> tuple:
    """Index of a (h, w) window at (row, col) of a periodic size x size map: plain slices
    (a cheap copy-free view) unless the window wraps around an edge."""
    h, w = shape
    rows = slice(row, row + h) if row + h <= size else (row + np.arange(h)) % size
    cols = slice(col, col + w) if col + w <= size else (col + np.arange(w)) % size
    if isinstance(rows, slice) or isinstance(cols, slice):
        return rows, cols
    return np.ix_(rows, cols)


class FlightTrack:
    """The tiles a drone or CubeSat sees as it flies over a scene, one per frame.

    The sensor moves down the rows by ``step[0]`` pixels per frame (successive tiles
    overlap by ``h - step[0]`` rows; the default step is the tile's height, no overlap);
    when it passes the scene's end it moves over by ``step[1]`` columns (default: the tile's
    width) and flies on, wrapping around the field. The basis spectra are resampled once,
    so each frame is a crop and one (B x n_basis) @ (n_basis x h*w) product: a few ms for a
    96 x 96 x 30-band tile. An endless iterator; ``position`` is the next tile's top-left.
    """

    def __init__(self, scene: FarmlandScene, wavelengths_nm: ArrayLike, shape: tuple[int, int],
                 step: tuple[int, int] | None = None, start: tuple[int, int] = (0, 0),
                 method: str = "interp", fwhm_nm: ArrayLike | None = None) -> None:
        h, w = shape
        dy, dx = step or (h, w)
        if min(h, w) < 1 or max(h, w) > scene.size:
            raise ValueError(f"tile {shape} must fit in the {scene.size}-pixel scene")
        if not (0 < dy <= scene.size and 0 <= dx <= scene.size):
            raise ValueError(f"step {(dy, dx)}: the along-track step must be 1..{scene.size} pixels "
                             f"and the sidestep 0..{scene.size}")
        self.scene, self.shape, self.step = scene, (h, w), (dy, dx)
        self.wavelengths_nm = np.asarray(wavelengths_nm, dtype=float)
        self.basis = scene.basis(self.wavelengths_nm, method, fwhm_nm)
        self.position = (start[0] % scene.size, start[1] % scene.size)

    def __iter__(self) -> FlightTrack:
        return self

    def __next__(self) -> SceneTile:
        row, col = self.position
        tile = self.scene.tile(self.wavelengths_nm, row, col, self.shape, basis=self.basis)
        row += self.step[0]
        if row >= self.scene.size:
            row, col = row % self.scene.size, (col + self.step[1]) % self.scene.size
        self.position = (row, col)
        return tile


def nominal_endmembers(wavelengths_nm: ArrayLike, library: SpectralLibrary | None = None,
                       method: str = "interp", fwhm_nm: ArrayLike | None = None) -> Endmembers:
    """The library an unmixing stage is given, on ``wavelengths_nm`` (nm, 400-2500): dry
    soil, wet soil (two soil endmembers: one alone cannot follow soil moisture), and the mean
    of the *training* residue and green variants (a field campaign's library, never the
    held-out spectra of evaluation scenes); ``method``/``fwhm_nm`` as for the scene."""
    lib = library or load()
    spectra = np.concatenate([
        lib.soil,
        lib.residue[lib.variants("residue", "train")].mean(0, keepdims=True),
        lib.green[lib.variants("green", "train")].mean(0, keepdims=True),
    ])
    return Endmembers(lib.resample(spectra, wavelengths_nm, method, fwhm_nm),
                      np.asarray(wavelengths_nm, dtype=float),
                      ("soil", "soil", "residue", "green"),
                      ("soil-dry", "soil-wet", "residue-mean", "green-mean"))
