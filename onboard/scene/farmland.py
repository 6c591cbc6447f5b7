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

* soil: a smooth per-pixel blend of two library soils chosen per parcel (real soils from
  the ICRAF-ISRIC and ASD collections, or prosail's), each a dry/wet mixture (the wet version
  is the soil times the library's ``wet_ratio``) with a smooth moisture field (logistic of a
  Gaussian field plus a per-field wetness offset), times a brightness field;
* residue: a smooth per-pixel blend of two dry-vegetation spectra chosen per parcel (real
  litter, straw, bark, wood, dry grass; PROSPECT-D residue mats); green: the same with two
  green spectra (PROSAIL canopies, real leaves and canopies);
* illumination: a smooth shading field (topography, haze) that multiplies the whole pixel.

``split="train"`` draws every spectrum from the library's ``train`` split and its variation
ranges from ``VARIABILITY["train"]``; ``"eval"`` (the build's held-out scenes, used for model
choice) from the ``val`` split, ``"test"`` (reported numbers only) from the ``test`` split,
both with wider ranges (their extremes lie outside what training saw); the three use disjoint
seeds. A library restricted to some sources (``SpectralLibrary.only``) gives the simulated set
(``("prosail",)``) or the real one.

Each pixel is stored as ``SLOTS`` (spectrum, weight) pairs, the spectrum an index into the
library (times two, plus one for its wet version): a field holds hundreds of spectra, and a
dense weight per spectrum and pixel would take hundreds of MB.

Reflectance is the apparent reflectance (illumination included), (bands, rows, cols)
float32 on any requested grid inside the library's 400-2450 nm; fractions are (3, rows, cols)
float32 in ``ENDMEMBERS`` order, non-negative, summing to one; tillage is (rows, cols) uint8.
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
_SPLIT_SEED = {"train": 0, "eval": 1_000_003, "test": 2_000_029}
#: Scene split -> the library split its spectra come from.
LIBRARY_SPLIT = {"train": "train", "eval": "val", "test": "test"}
#: Per pixel: soil a dry, soil a wet, soil b dry, soil b wet, residue a, b, green a, b.
SLOTS = 8
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


#: Per split: held-out scenes span wider ranges than training ones.
_HELD_OUT = Variability(brightness_sd=0.10, shade_sd=0.07, moisture_gain=1.5, moisture_bias_sd=0.5)
VARIABILITY = {
    "train": Variability(brightness_sd=0.06, shade_sd=0.04, moisture_gain=1.2, moisture_bias_sd=0.3),
    "eval": _HELD_OUT,
    "test": _HELD_OUT,
}


def spectra_of(library: SpectralLibrary, ids: NDArray[np.integer]) -> NDArray[np.float64]:
    """Library spectra (n, S) of basis ids (library index times two, plus one: wet)."""
    ids = np.asarray(ids)
    wet = (ids % 2 == 1)[:, None]
    return library.spectra[ids // 2] * np.where(wet, library.wet_ratio[None, :], 1.0)


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

    ``slot_ids`` (SLOTS, size, size) int32 and ``slot_weights`` (SLOTS, size, size) float32:
    the reflectance of a pixel is ``sum_k slot_weights[k] * spectrum(slot_ids[k])`` with the
    spectra of :func:`spectra_of` (module docstring); ``basis_ids`` (n_basis,) are the
    distinct ids the scene uses, in ascending order. ``illumination`` (size, size) is the
    shading, ``soil_moisture`` the wet-soil share and ``soil_brightness`` the soil factor.
    """

    fractions: NDArray[np.float32]
    tillage: NDArray[np.uint8]
    parcel_id: NDArray[np.int32]
    parcel_practice: NDArray[np.uint8]
    slot_ids: NDArray[np.int32]
    slot_weights: NDArray[np.float32]
    library: SpectralLibrary
    split: str
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
            raise ValueError(f"split must be one of {tuple(_SPLIT_SEED)}, got {split!r}")
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

        moist_field = smooth_field(rng, shape, 20.0) * var.moisture_gain
        moisture = 1 / (1 + np.exp(-(moist_field + rng.normal(0, var.moisture_bias_sd))))
        brightness = 1.0 + var.brightness_sd * smooth_field(rng, shape, 15.0)
        shade = np.clip(1.0 + var.shade_sd * smooth_field(rng, shape, 30.0), 0.8, 1.2)
        ids = np.empty((SLOTS, size, size), dtype=np.int32)
        weights = np.empty((SLOTS, size, size))
        slot = 0
        for kind, cover_k in (("soil", soil * brightness), ("residue", residue), ("green", green)):
            pool = lib.indices(kind, LIBRARY_SPLIT[split])
            pair = pool[rng.integers(0, len(pool), (n_parcels, 2))]
            mix = 1 / (1 + np.exp(-2 * smooth_field(rng, shape, 8.0)))
            for k, share in ((0, mix), (1, 1 - mix)):
                base = 2 * pair[parcel, k]
                if kind == "soil":  # dry and wet versions of the same soil
                    ids[slot], weights[slot] = base, cover_k * share * (1 - moisture)
                    ids[slot + 1], weights[slot + 1] = base + 1, cover_k * share * moisture
                    slot += 2
                else:
                    ids[slot], weights[slot] = base, cover_k * share
                    slot += 1
        weights *= shade[None]
        return cls(fractions, tillage_class(residue), parcel, practice, ids, weights.astype(np.float32),
                   lib, split, cover, green_cover, shade.astype(np.float32),
                   moisture.astype(np.float32), brightness.astype(np.float32))

    @property
    def size(self) -> int:
        return int(self.fractions.shape[1])

    @property
    def basis_ids(self) -> NDArray[np.int64]:
        """(n_basis,) the distinct spectrum ids of the scene, ascending."""
        return np.unique(self.slot_ids).astype(np.int64)

    def basis_class(self, ids: NDArray[np.integer]) -> NDArray[np.uint8]:
        """(n,) class index (into ``ENDMEMBERS``) of spectrum ids."""
        kinds = self.library.kinds
        return np.array([ENDMEMBERS.index(kinds[i // 2]) for i in np.asarray(ids)], dtype=np.uint8)

    def basis_names(self, ids: NDArray[np.integer]) -> tuple[str, ...]:
        names = self.library.names
        return tuple(names[i // 2] + ("+wet" if i % 2 else "") for i in np.asarray(ids))

    def basis(self, wavelengths_nm: ArrayLike, method: str = "interp",
              fwhm_nm: ArrayLike | None = None) -> NDArray[np.float64]:
        """(n_basis, B) spectra of ``basis_ids`` on a grid (nm, inside the library's range);
        ``method``/``fwhm_nm`` as in :func:`onboard.scene.library.resample`."""
        return self.library.resample(spectra_of(self.library, self.basis_ids), wavelengths_nm,
                                     method, fwhm_nm)

    def tile(self, wavelengths_nm: ArrayLike, row: int, col: int, shape: tuple[int, int],
             basis: NDArray | None = None) -> SceneTile:
        """The window of ``shape`` (h, w) with top-left (row, col), wrapping around the
        field's edges. ``basis``: this scene's :meth:`basis` on the grid, when the caller
        has it already (a flight track computes it once). Every array is a fresh copy."""
        grid = np.asarray(wavelengths_nm, dtype=float)
        all_ids = self.basis_ids
        b = self.basis(grid) if basis is None else np.asarray(basis)
        if b.shape != (all_ids.size, grid.size):
            raise ValueError(f"basis {b.shape} is not (n_basis={all_ids.size}, bands={grid.size})")
        row, col = row % self.size, col % self.size
        crop = _window(row, col, shape, self.size)
        pos = np.searchsorted(all_ids, self.slot_ids[(slice(None), *crop)])  # (SLOTS, h, w)
        used, local = np.unique(pos, return_inverse=True)
        h, w = pos.shape[1:]
        pixel = np.broadcast_to(np.arange(h * w), (SLOTS, h * w)).ravel()
        weights = np.bincount(local.ravel() * (h * w) + pixel,
                              weights=self.slot_weights[(slice(None), *crop)].ravel().astype(float),
                              minlength=used.size * h * w).reshape(used.size, h, w).astype(np.float32)
        tile_basis = b[used].astype(np.float32)
        # einsum's own loop, not BLAS: a (B x n_basis) @ (n_basis x h*w) product is too small
        # for BLAS threads, which on a busy machine cost tens of ms in wake-ups
        refl = np.einsum("kb,khw->bhw", tile_basis, weights)
        ids = all_ids[used]
        return SceneTile(refl, grid, np.array(self.fractions[(slice(None), *crop)]), np.array(self.tillage[crop]),
                         np.array(self.parcel_id[crop]), (row, col), np.array(self.illumination[crop]),
                         tile_basis, self.basis_class(ids), self.basis_names(ids), weights)

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


#: Endmembers per class of the classical stage's bundles: soils (each with its wet version),
#: residue, green; 2 x 3 + 4 + 2 = 12, the unmixing solver's most.
BUNDLE_SIZES = {"soil": 3, "residue": 4, "green": 2}


def _medoids(shapes: NDArray[np.float64], k: int, iterations: int = 10) -> list[int]:
    """Indices of ``k`` representative rows of ``shapes`` (n, B): k-means in Euclidean
    distance from a farthest-point start (the row nearest the mean first), each cluster then
    represented by its member nearest its centre. Deterministic."""
    if len(shapes) <= k:
        return list(range(len(shapes)))
    d_mean = np.linalg.norm(shapes - shapes.mean(0), axis=1)
    chosen = [int(np.argmin(d_mean))]
    while len(chosen) < k:
        d = np.min(np.linalg.norm(shapes[:, None] - shapes[chosen][None], axis=2), axis=1)
        chosen.append(int(np.argmax(d)))
    centres = shapes[chosen]
    for _ in range(iterations):
        label = np.argmin(np.linalg.norm(shapes[:, None] - centres[None], axis=2), axis=1)
        centres = np.stack([shapes[label == j].mean(0) if (label == j).any() else centres[j]
                            for j in range(k)])
    label = np.argmin(np.linalg.norm(shapes[:, None] - centres[None], axis=2), axis=1)
    out = []
    for j in range(k):
        members = np.flatnonzero(label == j)
        if members.size:
            out.append(int(members[np.argmin(np.linalg.norm(shapes[members] - centres[j], axis=1))]))
    return sorted(set(out))


def nominal_endmembers(wavelengths_nm: ArrayLike, library: SpectralLibrary | None = None,
                       method: str = "interp", fwhm_nm: ArrayLike | None = None) -> Endmembers:
    """The classical stage's endmember bundles on ``wavelengths_nm`` (nm, inside the
    library), MESMA-style: several spectra per class (``BUNDLE_SIZES``), the class fraction
    the sum of its spectra's abundances. Drawn from the library's *train* split only (a field
    campaign's library, never the held-out spectra of evaluation scenes): per class, the
    medoids of a k-means on the spectra's shapes (each divided by its mean over the grid, so
    that brightness, which the unmixing handles, does not pick them), on the grid the sensor
    sees; each soil comes with its wet version. ``method``/``fwhm_nm`` as for the scene."""
    lib = library or load()
    grid = np.asarray(wavelengths_nm, dtype=float)
    ids, names, classes = [], [], []
    for kind, k in BUNDLE_SIZES.items():
        pool = lib.indices(kind, "train")
        on_grid = lib.resample(lib.spectra[pool], grid, method, fwhm_nm)
        shapes = on_grid / on_grid.mean(axis=1, keepdims=True)
        for j in _medoids(shapes, k):
            versions = (0, 1) if kind == "soil" else (0,)
            ids += [2 * int(pool[j]) + v for v in versions]
            names += [lib.names[pool[j]] + ("+wet" if v else "") for v in versions]
            classes += [kind] * len(versions)
    spectra = lib.resample(spectra_of(lib, np.array(ids)), grid, method, fwhm_nm)
    return Endmembers(spectra, grid, tuple(classes), tuple(names))
