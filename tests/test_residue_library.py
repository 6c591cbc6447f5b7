"""Residue unmixing on the project's farmland simulator, simulated set (the library's
prosail / PROSPECT-D spectra, ``SpectralLibrary.only(("prosail",))``).

The scene (``onboard.scene.farmland``, eval split) varies every endmember pixel to pixel:
soil moisture and brightness, which residue and canopy variants, shading. Unmixing
libraries: the stage's bundles (``nominal_endmembers``: medoids of the *training* spectra
per class, each soil with its wet version), or one mean per class (dry and wet soil, the
training variants' mean residue and canopy), never the held-out spectra. Noise is added at
SNR 100, what the classical stage sees before denoising (FINCH's stated SNR).
"""

from __future__ import annotations

import numpy as np
import pytest

from onboard.formats.types import Cube
from onboard.physics.imspoc import default_instrument
from onboard.scene.farmland import FarmlandScene, nominal_endmembers, spectra_of
from onboard.scene.library import SpectralLibrary, load
from onboard.stages.reconstruct import output_grid
from onboard.stages.residue import Endmembers, UnmixConfig, unmix_fcls

GRIDS = {
    "imspoc": output_grid(default_instrument(seed=0).band_nm, 24),  # the run's ImSPOC bands
    "finch": np.arange(900.0, 1701.0, 10.0),
}


SIMULATED: SpectralLibrary = load().only(("prosail",))


@pytest.fixture(scope="module")
def scene() -> FarmlandScene:
    return FarmlandScene.generate(size=256, seed=3, split="eval", library=SIMULATED)  # ~10 parcels


def bundles(grid: np.ndarray) -> Endmembers:
    return nominal_endmembers(grid, library=SIMULATED)


def mean_library(grid: np.ndarray) -> Endmembers:
    """Dry and wet soil, the mean training residue and the mean training canopy."""
    lib = SIMULATED
    soil = 2 * lib.indices("soil", "train")[0]
    spectra = np.concatenate([spectra_of(lib, np.array([soil, soil + 1])),
                              lib.spectra[lib.indices("residue", "train")].mean(0, keepdims=True),
                              lib.spectra[lib.indices("green", "train")].mean(0, keepdims=True)])
    return Endmembers(lib.resample(spectra, grid), grid, ("soil", "soil", "residue", "green"),
                      ("soil-dry", "soil-wet", "residue-mean", "green-mean"))


def noisy_tiles(scene: FarmlandScene, grid: np.ndarray, seed: int = 0):
    """The field as 16 tiles of 64 x 64: (cube at SNR 100, true residue cover, tillage)."""
    rng = np.random.default_rng(seed)
    for row, col in np.ndindex(scene.size // 64, scene.size // 64):
        tile = scene.tile(grid, 64 * row, 64 * col, (64, 64))
        x = tile.reflectance.astype(np.float64)
        x = x + x.mean(axis=0) / 100.0 * rng.standard_normal(x.shape)
        yield (Cube(x.astype(np.float32), grid, np.ones((64, 64), dtype=bool)),
               tile.fractions[0], tile.tillage)


def scores(scene: FarmlandScene, grid: np.ndarray, endmembers: Endmembers,
           config: UnmixConfig | None = None) -> tuple[float, float]:
    """Residue-cover MAE and tillage accuracy over the tiles."""
    errors, hits = [], []
    for cube, cover, tillage in noisy_tiles(scene, grid):
        result = unmix_fcls(cube, endmembers, config)
        errors.append(np.abs(result.fractions[0] - cover).mean())
        hits.append((result.tillage == tillage).mean())
    return float(np.mean(errors)), float(np.mean(hits))


@pytest.fixture(scope="module")
def variants() -> dict[str, Endmembers]:
    """Several spectra per class: dry and wet soil and every training residue and canopy
    variant as its own endmember (12), on each sensor's grid."""
    lib = SIMULATED
    residue, green = lib.indices("residue", "train"), lib.indices("green", "train")
    soil = 2 * lib.indices("soil", "train")[0]
    spectra = np.concatenate([spectra_of(lib, np.array([soil, soil + 1])), lib.spectra[residue],
                              lib.spectra[green]])
    classes = ("soil", "soil") + ("residue",) * len(residue) + ("green",) * len(green)
    names = ("soil-dry", "soil-wet") + tuple(lib.names[i] for i in np.concatenate([residue, green]))
    return {sensor: Endmembers(lib.resample(spectra, grid), grid, classes, names)
            for sensor, grid in GRIDS.items()}


# Measured on this field (simulated set, 10 nm library), ImSPOC bands: residue MAE 0.051 with
# one mean per class, 0.041 with the 12 training spectra as endmembers (0.035 / 0.078 with the
# former 1 nm library). Other fields agree within ~0.01 in MAE; tillage accuracy swings more,
# as it depends on how many parcels sit near a class threshold.


@pytest.mark.parametrize("sensor,max_mae,min_accuracy", [("imspoc", 0.10, 0.8), ("finch", 0.08, 0.85)])
def test_defaults_meet_the_mission_on_their_own(scene, sensor, max_mae, min_accuracy):
    """The mission asks residue MAE <= 0.10 and tillage accuracy >= 80 % of the whole
    pipeline; the stage with its defaults must meet that on SNR-100 spectra by itself."""
    grid = GRIDS[sensor]
    mae, accuracy = scores(scene, grid, bundles(grid))
    assert mae < max_mae and accuracy > min_accuracy, (mae, accuracy)


def test_training_variants_as_endmembers_beat_their_mean(scene, variants):
    grid = GRIDS["imspoc"]
    mae_mean, _ = scores(scene, grid, mean_library(grid))
    mae_variants, accuracy = scores(scene, grid, variants["imspoc"])
    assert mae_variants < 0.85 * mae_mean, (mae_variants, mae_mean)
    assert accuracy > 0.95


def test_brightness_prior_pays_once_the_library_spans_the_variants(scene, variants):
    """With a library that holds the variants, what is left to explain is brightness
    (shading, soil brightness), and the prior beats FCLS."""
    grid = GRIDS["finch"]
    fcls, _ = scores(scene, grid, variants["finch"])
    prior, _ = scores(scene, grid, variants["finch"], UnmixConfig(brightness="prior"))
    assert prior < 0.9 * fcls, (prior, fcls)


def test_one_soil_spectrum_is_not_enough(scene):
    """REFERENCES.md: with soil moisture varying, a single soil spectrum gets residue MAE
    0.22-0.38 where dry and wet soil as two endmembers get 0.01-0.03. With moistening as a
    water film (export/spectral_library.py) the gap is smaller: 0.144 against 0.077 here."""
    grid = GRIDS["finch"]
    both = mean_library(grid)
    keep = [i for i, name in enumerate(both.names) if name != "soil-wet"]
    dry_only = Endmembers(both.spectra[keep], grid, tuple(both.classes[i] for i in keep),
                          tuple(both.names[i] for i in keep))
    mae_both, _ = scores(scene, grid, both)
    mae_dry, _ = scores(scene, grid, dry_only)
    assert mae_dry > 1.5 * mae_both, (mae_dry, mae_both)


def test_brightness_models_pay_when_moisture_darkens_flatly(scene):
    """Moistening darkens a soil by a near-flat factor (a water film, export/spectral_library.py),
    a brightness change the brightness models absorb: with one mean spectrum per class on the
    ImSPOC bands, the prior and the free model beat FCLS (0.050, 0.049 against 0.059 here;
    with the former prosail dry/wet soil pair FCLS was best)."""
    grid = GRIDS["imspoc"]
    lib = mean_library(grid)
    mae = {mode: scores(scene, grid, lib, UnmixConfig(brightness=mode))[0]
           for mode in ("sum-to-one", "prior", "free")}
    assert mae["prior"] < 0.95 * mae["sum-to-one"] and mae["free"] < 0.95 * mae["sum-to-one"], mae
