"""The farmland simulator and its shipped spectral library."""

import numpy as np
import pytest

from onboard.scene.farmland import COVER_RANGES, FarmlandScene, nominal_endmembers
from onboard.scene.library import load
from onboard.types import tillage_class

GRID = np.arange(452.5, 1000, 5.0)


@pytest.fixture(scope="module")
def scene() -> FarmlandScene:
    return FarmlandScene.generate(size=256, seed=3, split="eval")


def test_deterministic_from_seed(scene) -> None:
    again = FarmlandScene.generate(size=256, seed=3, split="eval")
    np.testing.assert_array_equal(again.weights, scene.weights)
    other = FarmlandScene.generate(size=256, seed=4, split="eval")
    assert not np.array_equal(other.fractions, scene.fractions)


def test_fractions_classes_and_practices_agree(scene) -> None:
    f = scene.fractions
    assert (f >= 0).all() and np.allclose(f.sum(0), 1, atol=1e-6)
    np.testing.assert_array_equal(scene.tillage, tillage_class(f[0]))
    # each pixel's class is its parcel's practice, and every practice appears
    np.testing.assert_array_equal(scene.tillage, scene.parcel_practice[scene.parcel_id])
    assert set(np.unique(scene.tillage)) == {0, 1, 2}
    for p, (lo, hi) in enumerate(COVER_RANGES):
        cover = f[0][scene.tillage == p]
        assert cover.min() >= lo - 1e-6 and cover.max() <= hi + 1e-6


def test_reflectance_is_physical(scene) -> None:
    t = scene.tile(GRID, 0, 0, (128, 128))
    assert t.reflectance.shape == (len(GRID), 128, 128) and t.reflectance.dtype == np.float32
    assert t.reflectance.min() > 0 and t.reflectance.max() < 1
    lib = load()
    g = lib.resample(lib.green, [670.0, 800.0])
    assert (g[:, 1] > 4 * g[:, 0]).all()  # red edge of green canopies
    soil = lib.resample(lib.soil, [550.0, 1650.0])
    assert (soil[1] < soil[0]).all()  # wet soil darker than dry
    # the greenest pixels show the red edge, the least green do not
    ndvi = (t.reflectance[GRID.searchsorted(800)] - t.reflectance[GRID.searchsorted(670)]) / (
        t.reflectance[GRID.searchsorted(800)] + t.reflectance[GRID.searchsorted(670)])
    green = t.fractions[2]
    assert ndvi[green > np.percentile(green, 90)].mean() > ndvi[green < np.percentile(green, 10)].mean() + 0.1


def test_eval_uses_held_out_spectra() -> None:
    lib = load()
    tr = FarmlandScene.generate(size=64, seed=0, split="train")
    ev = FarmlandScene.generate(size=64, seed=0, split="eval")
    assert set(tr.residue_idx).isdisjoint(ev.residue_idx) and set(tr.green_idx).isdisjoint(ev.green_idx)
    assert not np.array_equal(tr.fractions, ev.fractions)
    assert len(lib.residue_names) == len(lib.residue_split)


def test_noise_free_pixels_unmix_to_the_truth(scene) -> None:
    """Least squares with the scene's own basis recovers the truth exactly; the nominal
    library (training means, two soils) gets within the REFERENCES.md range."""
    from scipy.optimize import nnls

    t = scene.tile(GRID, 40, 40, (32, 32))
    basis = scene.basis(GRID)  # (n_basis, B)
    x = t.reflectance.reshape(len(GRID), -1)
    em = nominal_endmembers(GRID)
    a = np.vstack([em.spectra.T, 100 * np.ones(len(em.names))])  # sum-to-one row trick
    est = np.array([nnls(a, np.append(x[:, p], 100))[0] for p in range(x.shape[1])]).T
    residue = (em.membership @ est)[0]
    mae = np.abs(residue - t.fractions[0].ravel()).mean()
    assert mae < 0.06
    coef = np.linalg.lstsq(basis.T, x, rcond=None)[0]
    np.testing.assert_allclose(basis.T @ coef, x, atol=1e-5)


def test_track_tiles_advance_and_wrap(scene) -> None:
    tiles = scene.track(GRID, (64, 64))
    first = [next(tiles) for _ in range(5)]
    assert not np.array_equal(first[0].fractions, first[1].fractions)
    np.testing.assert_array_equal(first[4].parcel_id, scene.parcel_id[0:64, 64:128])  # sidestep after a pass
