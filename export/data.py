"""Training and evaluation data from the simulators: seeded, reproducible, nothing downloaded.

Every sample is a noisy :class:`~onboard.formats.types.Cube` with the truth it was made from
(reflectance on the cube's band grid, residue / soil / green fractions, tillage class). Three
kinds, so the learned models see both instruments' noise:

* ``imspoc``: a farmland tile flown under the simulated ImSPOC (``default_instrument``),
  read out by its detector, radiometrically corrected with the simulated ground
  calibration and reconstructed by the GCV-Tikhonov stage: noise strongly correlated across
  the 24 reconstructed bands, a realistic regularisation bias, dead and hot pixels.
* ``pushbroom``: the same tiles read line by line by the FINCH-like push-broom (81 bands,
  900-1700 nm): band-dependent shot/read noise, column stripes from the drifted pixel
  responses, dead pixels; through the real pipeline up to the cube.
* ``synthetic``: a clean tile on a random band grid (any band count from 12 to 96) with
  noise added here (:func:`add_noise`): i.i.d. Gaussian, band-dependent Gaussian, and
  band-dependent Gaussian with column stripes and dead pixels. The benchmark uses the same
  function on held-out tiles.

Scenes come from :class:`onboard.scene.farmland.FarmlandScene` with ``split="train"`` for
training (the library's train spectra), ``split="eval"`` (validation spectra, held-out
layouts) for the build's evaluation and model choice, and ``split="test"`` (test spectra) for
the reported numbers only. ``library`` restricts the spectra (``SpectralLibrary.only``: the
simulated set is ``("prosail",)``; the default is every source). A seed fixes everything; the
same seed gives the same samples bit for bit.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Iterator
from dataclasses import dataclass, replace
from itertools import pairwise
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from onboard.formats.calfile import Calibration
from onboard.formats.types import Cube, ResidueMap
from onboard.physics.imspoc import ImspocInstrument, default_instrument
from onboard.physics.pushbroom import PushbroomInstrument, finch_like
from onboard.runtime.pipeline import Pipeline, StageOptions
from onboard.scene.farmland import FarmlandScene
from onboard.scene.library import SpectralLibrary
from onboard.sources.base import band_average
from onboard.sources.simulated import calibrate_imspoc, calibrate_pushbroom
from onboard.stages.denoise import SubspaceDenoiseConfig, denoise_subspace
from onboard.stages.learned import decompose, refiner_input

Kind = Literal["imspoc", "pushbroom", "synthetic"]
NoiseKind = Literal["iid", "band", "band+stripes+dead"]
KINDS: tuple[Kind, ...] = ("imspoc", "pushbroom", "synthetic")
NOISE_KINDS: tuple[NoiseKind, ...] = ("iid", "band", "band+stripes+dead")
#: Tile side (pixels) of every sample: the default ImSPOC thumbnail.
TILE = 64
#: ImSPOC reconstruction grid (bands), as ``onboard run`` uses it.
IMSPOC_BANDS = 24
#: Cross-track pixels of the simulated push-broom for training (a tile's width).
PUSHBROOM_CROSS = TILE
#: Side of each simulated field (pixels): about ten parcels.
SCENE_SIZE = 256
#: Tiles taken from each field before the next one is drawn (a strip down its track).
TILES_PER_FIELD = 4
#: Illumination of the ImSPOC samples, times nominal: the runtime's cubes are reflectance
#: calibrated against a known illumination, with a residual error of about 10 % (sun
#: elevation drifting between calibrations, thin haze). The benchmarks also report the
#: classifiers under 0.5-1.5 x, to show how each degrades beyond that.
ILLUMINATION = (0.9, 1.1)


@dataclass
class Sample:
    """A noisy cube and its truth. ``truth`` (B, H, W) float32: the noise-free cube, i.e. the
    reflectance on the cube's grid times the illumination scale the sample was taken under
    (the pipeline has no illumination correction); ``clean`` (B, H, W) float32: what a
    perfect denoiser returns, the noise-free cube (for ImSPOC the noise-free reconstruction,
    which keeps the regularisation's bias; else ``truth``);
    ``fractions`` (3, H, W) float32 (residue, soil, green); ``tillage`` (H, W) uint8.
    ``destripe``: the stripe model of the sensor (what the denoiser is configured with)."""

    cube: Cube
    truth: NDArray[np.float32]
    clean: NDArray[np.float32]
    fractions: NDArray[np.float32]
    tillage: NDArray[np.uint8]
    kind: str
    destripe: Literal["gain", "offset", "none"]


def denoise_config(sample: Sample) -> SubspaceDenoiseConfig:
    """The subspace settings for a sample's sensor (noise estimate, stripe model)."""
    return replace(SubspaceDenoiseConfig.for_sensor(sample.kind), destripe=sample.destripe)


# --- scenes ---------------------------------------------------------------------------------

def scene_tiles(split: str, seed: int, grid_nm: NDArray, shape: tuple[int, int] = (TILE, TILE),
                library: SpectralLibrary | None = None) -> Iterator:
    """Tiles of simulated farmlands along flight tracks, reflectance on ``grid_nm``;
    endless: ``TILES_PER_FIELD`` successive tiles of one field's track, then a new field
    (next seed). Many small fields rather than one large one: a field draws its own
    practices, residue and canopy variants and soil state, so a data set of n tiles sees
    about n / TILES_PER_FIELD of those draws (one 512 x 512 field gave 64 tiles of one draw).
    Each tile has ``reflectance`` (B, h, w), ``wavelengths_nm``, ``fractions`` (3, h, w) and
    ``tillage`` (h, w)."""
    for k in range(1_000_000):
        scene = FarmlandScene.generate(size=SCENE_SIZE, seed=seed * 1000 + k, split=split,
                                       library=library)
        yield from itertools.islice(scene.track(grid_nm, shape), TILES_PER_FIELD)


# --- instruments ------------------------------------------------------------------------------

@functools.lru_cache(maxsize=2)
def _imspoc(seed: int) -> tuple[ImspocInstrument, Calibration, Pipeline]:
    inst = default_instrument(seed=seed)
    cal = calibrate_imspoc(inst, n_bands=IMSPOC_BANDS)
    return inst, cal, _cube_pipeline(cal, inst.detector_spec.max_dn - 1)


@functools.lru_cache(maxsize=2)
def _pushbroom(seed: int) -> tuple[PushbroomInstrument, Calibration, Pipeline]:
    pb = finch_like(cross_track=PUSHBROOM_CROSS, seed=seed)
    cal = calibrate_pushbroom(pb)
    return pb, cal, _cube_pipeline(cal, pb.detector_spec.max_dn - 1)


def _no_classify(cube: Cube) -> ResidueMap:  # the pipeline wants one; only its cube is used
    shape = cube.valid.shape
    return ResidueMap(np.zeros(shape, np.uint8), np.full((3, *shape), 1 / 3, np.float32))


def _cube_pipeline(cal: Calibration, saturation: int) -> Pipeline:
    """The flight pipeline up to the cube (radiometric correction, reconstruction)."""
    return Pipeline(cal, denoise=lambda c: c, classify=_no_classify, saturation_dn=saturation,
                    options=StageOptions(quicklook=False, cube=False, denoise=False))


def imspoc_grid(seed: int = 0) -> NDArray[np.float64]:
    return _imspoc(seed)[1].wavelengths_nm


def pushbroom_grid(seed: int = 0) -> NDArray[np.float64]:
    return np.asarray(_pushbroom(seed)[1].wavelengths_nm, dtype=float)


def noise_free_reconstruction(pipe: Pipeline, truth: NDArray, lam: float, exposure_s: float
                              ) -> NDArray[np.float32]:
    """What the reconstruction stage gives for ``truth`` (B, H, W) band-averaged reflectance
    without noise: per block, the resolution operator ``W(lam) A'`` (B, B) applied to it."""
    rec = pipe.reconstructor
    assert rec is not None
    ops = rec._operators(lam, exposure_s)
    out = np.empty(truth.shape, dtype=np.float32)
    for i, (r0, r1) in enumerate(pairwise(rec.row_edges)):
        for j, (c0, c1) in enumerate(pairwise(rec.col_edges)):
            res = ops[i][j].astype(np.float64) @ rec._scaled(rec._a[i][j], exposure_s)
            out[:, r0:r1, c0:c1] = np.einsum("ab,bhw->ahw", res, truth[:, r0:r1, c0:c1])
    return out


def imspoc_samples(split: str, seed: int, instrument_seed: int = 0,
                   illumination: tuple[float, float] = ILLUMINATION,
                   library: SpectralLibrary | None = None) -> Iterator[Sample]:
    """Reconstructed ImSPOC cubes (24 bands) with truth; illumination drawn uniformly in
    ``illumination`` x nominal."""
    inst, cal, pipe = _imspoc(instrument_seed)
    rng = np.random.default_rng([seed, 1])
    grid = inst.scene_grid()
    for counter, tile in enumerate(scene_tiles(split, seed, grid, inst.thumb_shape, library)):
        scale = float(rng.uniform(*illumination))
        frame = inst.frame(tile.reflectance, grid, rng, counter=counter, illumination_scale=scale)
        result = pipe.process(frame)
        if result.cube is None or result.regularisation is None:
            continue
        truth = scale * band_average(tile.reflectance, grid, cal.wavelengths_nm)
        clean = noise_free_reconstruction(pipe, truth, result.regularisation, frame.exposure_s)
        yield Sample(result.cube, truth, clean,
                     tile.fractions.astype(np.float32), tile.tillage.astype(np.uint8),
                     "imspoc", "none")


def pushbroom_samples(split: str, seed: int, instrument_seed: int = 0,
                      library: SpectralLibrary | None = None) -> Iterator[Sample]:
    """Push-broom cubes (81 bands, TILE lines x TILE cross-track) with truth."""
    pb, cal, pipe = _pushbroom(instrument_seed)
    rng = np.random.default_rng([seed, 2])
    wl = np.asarray(pb.wavelengths_nm, dtype=float)
    line = 0
    for tile in scene_tiles(split, seed, wl, (TILE, pb.cross_track), library):
        refl = band_average(tile.reflectance, tile.wavelengths_nm, wl)
        scale = float(rng.uniform(0.6, 1.4))
        lines = []
        for row in range(refl.shape[1]):
            lines.append(pb.line(refl[:, row, :], rng, counter=line, illumination_scale=scale))
            line += 1
        cube = pipe.process(lines).cube
        if cube is None:
            continue
        yield Sample(cube, scale * refl, scale * refl, tile.fractions.astype(np.float32),
                     tile.tillage.astype(np.uint8), "pushbroom", "gain")


def random_grid(rng: np.random.Generator) -> NDArray[np.float64]:
    """A band grid of 12-96 bands over 450-1000 nm (silicon) or 900-1700 nm (InGaAs)."""
    lo, hi = (450.0, 1000.0) if rng.uniform() < 0.5 else (900.0, 1700.0)
    n = int(rng.integers(12, 97))
    step = (hi - lo) / n
    return lo + step * (np.arange(n) + 0.5)


def add_noise(clean: NDArray, kind: NoiseKind, rng: np.random.Generator,
              sigma: float | None = None) -> tuple[NDArray[np.float32], NDArray[np.bool_]]:
    """Noisy copy (B, H, W) float32 of a clean reflectance cube and its valid mask (H, W).

    ``iid``: Gaussian noise of one standard deviation ``sigma`` (default: drawn in
    0.003-0.03 reflectance, SNR about 10-100 on a 0.3 field). ``band``: the standard deviation
    varies across bands by a smooth random profile times a random per-band factor (0.3-3 x
    ``sigma``), as absorption bands and a detector's quantum efficiency make it.
    ``band+stripes+dead``: that, times a per-(band, column) gain drifting 1 % (1-sigma) from
    the flat field (gain stripes, as the push-broom's), and 0.3 % dead pixels (stuck at 0,
    flagged invalid as the radiometric stage flags them)."""
    b, h, w = clean.shape
    sigma = float(np.exp(rng.uniform(np.log(0.003), np.log(0.03)))) if sigma is None else sigma
    valid = np.ones((h, w), dtype=bool)
    if kind == "iid":
        return (clean + sigma * rng.standard_normal(clean.shape)).astype(np.float32), valid
    t = np.linspace(0, 1, b)
    profile = np.exp(rng.uniform(-0.7, 0.7) * np.sin(2 * np.pi * (rng.uniform(0.3, 1.5) * t
                                                                   + rng.uniform())))
    per_band = sigma * profile * np.exp(rng.uniform(np.log(0.5), np.log(2.0), b))
    noisy = clean + per_band[:, None, None] * rng.standard_normal(clean.shape)
    if kind == "band":
        return noisy.astype(np.float32), valid
    noisy = noisy * (1.0 + 0.01 * rng.standard_normal((b, 1, w)))
    dead = rng.uniform(size=(h, w)) < 0.003
    noisy[:, dead] = 0.0
    return noisy.astype(np.float32), ~dead


def synthetic_samples(split: str, seed: int, kinds: tuple[NoiseKind, ...] = NOISE_KINDS,
                      grid: NDArray | None = None, library: SpectralLibrary | None = None
                      ) -> Iterator[Sample]:
    """Clean tiles on random band grids (or ``grid``) with :func:`add_noise`, cycling
    through ``kinds``."""
    rng = np.random.default_rng([seed, 3])
    fine = np.arange(400.0, 1750.0, 5.0)
    for i, tile in enumerate(scene_tiles(split, seed + 7919, fine, library=library)):
        g = random_grid(rng) if grid is None else np.asarray(grid, dtype=float)
        clean = band_average(tile.reflectance, tile.wavelengths_nm, g)
        clean = clean * float(rng.uniform(0.6, 1.4))
        kind = kinds[i % len(kinds)]
        noisy, valid = add_noise(clean, kind, rng)
        yield Sample(Cube(noisy, g, valid), clean.astype(np.float32), clean.astype(np.float32),
                     tile.fractions.astype(np.float32), tile.tillage.astype(np.uint8),
                     f"synthetic-{kind}", "gain" if "stripes" in kind else "none")


def samples(kind: Kind, split: str, seed: int, library: SpectralLibrary | None = None
            ) -> Iterator[Sample]:
    return {"imspoc": imspoc_samples, "pushbroom": pushbroom_samples,
            "synthetic": synthetic_samples}[kind](split, seed, library=library)


def take(it: Iterator[Sample], n: int) -> list[Sample]:
    return [s for _, s in zip(range(n), it, strict=False)]


# --- model inputs and targets -----------------------------------------------------------------

@dataclass
class RefinerSet:
    """Denoiser training pairs: inputs (n, 2, H, W) and targets (n, 1, H, W) float32, one
    per eigen-image (whitened units)."""

    inputs: NDArray[np.float32]
    targets: NDArray[np.float32]


def refiner_pairs(batch: list[Sample]) -> RefinerSet:
    """Eigen-image inputs and the correction that would make them the truth's projection
    onto the same subspace: ``project (truth - mean) - y0``."""
    xs, ys = [], []
    for s in batch:
        try:
            dec = decompose(s.cube, denoise_config(s))
        except ValueError:
            continue
        b, h, w = s.clean.shape
        z_true = dec.parts.project @ (s.clean.reshape(b, -1).astype(np.float64)
                                      - dec.parts.mean[:, None])
        xs.append(refiner_input(dec))
        ys.append((z_true.reshape(-1, 1, h, w) - dec.y0[:, None]).astype(np.float32))
    if not xs:
        raise ValueError("no sample could be decomposed (too few valid pixels?)")
    return RefinerSet(np.concatenate(xs), np.concatenate(ys))


@dataclass
class ResidueSet:
    """Classifier training data on one band grid: cubes (n, B, H, W) float32 (classically
    denoised, invalid pixels zero), fractions (n, 3, H, W), tillage (n, H, W) int64 with -1
    where the pixel is invalid."""

    grid_nm: NDArray[np.float64]
    cubes: NDArray[np.float32]
    fractions: NDArray[np.float32]
    tillage: NDArray[np.int64]


def denoised(sample: Sample) -> Cube:
    """The sample's cube classically denoised, keeping the reconstruction's spectral response
    (as the pipeline does): what a residue classifier sees in flight."""
    return replace(denoise_subspace(sample.cube, denoise_config(sample)),
                   response=sample.cube.response)


def residue_set(batch: list[Sample]) -> ResidueSet:
    """Classically denoised cubes (what the classifier sees in flight) with their truth."""
    cubes, fracs, tills = [], [], []
    for s in batch:
        den = denoised(s)
        ok = den.valid & np.isfinite(den.data).all(axis=0)
        cubes.append(np.where(ok[None], den.data, 0.0).astype(np.float32))
        fracs.append(s.fractions)
        tills.append(np.where(ok, s.tillage.astype(np.int64), -1))
    return ResidueSet(np.asarray(batch[0].cube.wavelengths_nm, dtype=float), np.stack(cubes),
                      np.stack(fracs), np.stack(tills))

