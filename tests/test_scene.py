"""The farmland simulator: determinism, covers and classes, physics, held-out splits,
unmixing sanity with the true endmembers, the classical bundles, flight tracks."""

import numpy as np
import pytest

from onboard.formats.types import ENDMEMBERS, TILLAGE_THRESHOLDS, tillage_class
from onboard.scene.farmland import (
    COVER_RANGES,
    VARIABILITY,
    FarmlandScene,
    FlightTrack,
    nominal_endmembers,
)

GRID = np.arange(452.5, 1000, 5.0)  # an ImSPOC-like visible/NIR grid
R, S, G = (ENDMEMBERS.index(k) for k in ("residue", "soil", "green"))


@pytest.fixture(scope="module")
def scene() -> FarmlandScene:
    return FarmlandScene.generate(size=256, seed=3, split="eval")


def fcls(spectra: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Reference fully constrained least squares: non-negative, sum-to-one by a heavily
    weighted row of ones (the classical trick). spectra (n, B), x (B,) -> (n,)."""
    from scipy.optimize import nnls

    weight = 1e3
    a = np.vstack([spectra.T, weight * np.ones(len(spectra))])
    return nnls(a, np.append(x, weight))[0]


def test_deterministic_from_seed(scene) -> None:
    again = FarmlandScene.generate(size=256, seed=3, split="eval")
    np.testing.assert_array_equal(again.slot_ids, scene.slot_ids)
    np.testing.assert_array_equal(again.slot_weights, scene.slot_weights)
    np.testing.assert_array_equal(again.tile(GRID, 5, 7, (32, 32)).reflectance,
                                  scene.tile(GRID, 5, 7, (32, 32)).reflectance)
    other = FarmlandScene.generate(size=256, seed=4, split="eval")
    assert not np.array_equal(other.fractions, scene.fractions)


def test_fractions_classes_and_practices_agree(scene) -> None:
    f = scene.fractions
    assert f.dtype == np.float32 and f.shape == (3, 256, 256)
    assert (f >= 0).all() and np.allclose(f.sum(0), 1, atol=1e-6)
    assert scene.tillage.dtype == np.uint8
    np.testing.assert_array_equal(scene.tillage, tillage_class(f[R]))
    # each pixel's class is its parcel's practice, and every practice appears
    np.testing.assert_array_equal(scene.tillage, scene.parcel_practice[scene.parcel_id])
    assert set(np.unique(scene.tillage)) == {0, 1, 2}
    for p, (lo, hi) in enumerate(COVER_RANGES):
        cover = f[R][scene.tillage == p]
        assert cover.min() >= lo - 1e-6 and cover.max() <= hi + 1e-6


def test_class_proportions_follow_the_drawn_covers(scene) -> None:
    """The share of pixels in each class is the area share of the parcels whose drawn cover
    falls in that class, and each parcel's mean cover stays near its drawn cover: the
    texture is +-25 % (one standard deviation) of the cover, averaged over a parcel."""
    ids, area = np.unique(scene.parcel_id, return_counts=True)
    drawn_class = tillage_class(scene.parcel_cover[ids])
    expected = np.bincount(drawn_class, weights=area, minlength=3) / area.sum()
    observed = np.bincount(scene.tillage.ravel(), minlength=3) / scene.tillage.size
    np.testing.assert_allclose(observed, expected, atol=1e-12)
    for i in ids:
        mean = scene.fractions[R][scene.parcel_id == i].mean()
        assert abs(mean - scene.parcel_cover[i]) < 0.25 * scene.parcel_cover[i], i
    assert np.all(np.digitize(scene.parcel_cover, TILLAGE_THRESHOLDS) == scene.parcel_practice)


def test_reflectance_is_physical(scene) -> None:
    t = scene.tile(GRID, 0, 0, (128, 128))
    assert t.reflectance.shape == (len(GRID), 128, 128) and t.reflectance.dtype == np.float32
    assert t.reflectance.min() > 0 and t.reflectance.max() < 1
    # the greenest pixels show the red edge, the least green do not
    nir, red = t.reflectance[GRID.searchsorted(800)], t.reflectance[GRID.searchsorted(670)]
    ndvi = (nir - red) / (nir + red)
    green = t.fractions[G]
    assert ndvi[green > np.percentile(green, 90)].mean() > ndvi[green < np.percentile(green, 10)].mean() + 0.1


def test_wetter_soil_is_darker_in_the_scene(scene) -> None:
    """Among soil-dominated pixels, apparent reflectance at 1650 nm (divided by the known
    shading and brightness) falls as the wet-soil share rises."""
    t = scene.tile([1650.0], 0, 0, (256, 256))
    mask = t.fractions[S] > 0.6
    norm = t.reflectance[0] / (t.illumination * scene.soil_brightness)
    corr = np.corrcoef(scene.soil_moisture[mask], norm[mask])[0, 1]
    assert corr < -0.5, corr


def test_tile_reflectance_is_the_recorded_mixture(scene) -> None:
    t = scene.tile(GRID, 200, 230, (48, 64))  # wraps around both edges
    mixed = np.einsum("kb,khw->bhw", t.basis.astype(float), t.weights.astype(float))
    np.testing.assert_allclose(t.reflectance, mixed, rtol=1e-5, atol=1e-6)
    e = t.pixel_endmembers()
    present = t.fractions > 0
    recon = np.nansum(t.fractions[:, None].astype(float) * np.where(present[:, None], e, 0.0), axis=0)
    np.testing.assert_allclose(t.reflectance, recon, rtol=1e-5, atol=1e-6)
    assert t.origin == (200, 230) and t.parcel_id.shape == (48, 64)
    np.testing.assert_array_equal(t.fractions, np.roll(scene.fractions, (-200, -230), axis=(1, 2))[:, :48, :64])


def test_splits_hold_out_spectra_and_ranges() -> None:
    """Train, eval (validation spectra) and test scenes never share a spectrum (prosail's
    single soil, shared by design, aside), and held-out scenes vary more."""
    scenes = {s: FarmlandScene.generate(size=128, seed=0, split=s) for s in ("train", "eval", "test")}
    lib = scenes["train"].library
    used = {s: {int(i) // 2 for i in sc.basis_ids if lib.splits[int(i) // 2] != "shared"}
            for s, sc in scenes.items()}
    assert all(used.values())
    assert not used["train"] & used["eval"] and not used["train"] & used["test"]
    assert not used["eval"] & used["test"]
    want = {"train": "train", "eval": "val", "test": "test"}
    for s, ids in used.items():
        assert {lib.splits[i] for i in ids} == {want[s]}, s
    tr, ev = scenes["train"], scenes["eval"]
    assert not np.array_equal(tr.fractions, ev.fractions)
    for name in ("brightness_sd", "shade_sd", "moisture_gain", "moisture_bias_sd"):
        assert getattr(VARIABILITY["eval"], name) > getattr(VARIABILITY["train"], name), name
    # the ranges show in the maps: eval's brightness and shading spread wider
    assert ev.soil_brightness.std() > 1.3 * tr.soil_brightness.std()
    assert ev.illumination.std() > 1.3 * tr.illumination.std()
    with pytest.raises(ValueError, match="split"):
        FarmlandScene.generate(size=64, split="validation")


def test_true_endmembers_recover_the_fractions(scene) -> None:
    """Noise-free pixels, FCLS with each pixel's own three endmember spectra (shading and
    brightness included): the mixture is exactly linear and sums to one, so the solver must
    return the truth up to its own tolerance (1e-3 from the weighted sum-to-one row)."""
    t = scene.tile(GRID, 40, 40, (12, 12))
    e = t.pixel_endmembers()
    mean = np.nanmean(e, axis=(2, 3))  # stands in where a class is absent (fraction 0)
    e = np.where(np.isnan(e), mean[:, :, None, None], e)
    est = np.array([fcls(e[:, :, i, j], t.reflectance[:, i, j].astype(float))
                    for i, j in np.ndindex(12, 12)]).T.reshape(3, 12, 12)
    np.testing.assert_allclose(est, t.fractions, atol=2e-3)


def test_bundles_come_from_the_train_split_and_span_each_class() -> None:
    """The classical stage's MESMA-style bundles: several spectra per class, each soil with
    its wet version, all from the train split, and more than one site per class."""
    lib = FarmlandScene.generate(size=16, seed=0).library
    em = nominal_endmembers(GRID)
    assert len(em.names) <= 12
    for kind in ("soil", "residue", "green"):
        names = [n for n, c in zip(em.names, em.classes, strict=True) if c == kind]
        assert len(names) >= 2, kind
    for name in em.names:
        i = lib.names.index(name.removesuffix("+wet"))
        assert lib.splits[i] in ("train", "shared") and lib.kinds[i] == em.classes[em.names.index(name)]
    soils = [n for n, c in zip(em.names, em.classes, strict=True) if c == "soil"]
    assert sum(n.endswith("+wet") for n in soils) == len(soils) // 2
    assert len({lib.sites[lib.names.index(n.removesuffix("+wet"))] for n in soils}) >= 2


def test_flight_track_overlaps_advances_and_sidesteps(scene) -> None:
    track = scene.track(GRID, (96, 96), step=(32, 96))
    assert isinstance(track, FlightTrack)
    tiles = [next(track) for _ in range(9)]
    for a, b in zip(tiles[:7], tiles[1:8], strict=True):  # in a pass, frames overlap by 64 rows
        np.testing.assert_array_equal(a.reflectance[:, 32:], b.reflectance[:, :64])
    assert [t.origin for t in tiles[:3]] == [(0, 0), (32, 0), (64, 0)]
    assert tiles[8].origin == (0, 96)  # 256 / 32 = 8 frames per pass, then a sidestep
    np.testing.assert_array_equal(tiles[8].parcel_id, scene.parcel_id[0:96, 96:192])
    default = scene.track(GRID, (64, 64))  # no overlap by default
    assert [next(default).origin for _ in range(5)] == [(0, 0), (64, 0), (128, 0), (192, 0), (0, 64)]
    with pytest.raises(ValueError, match="step"):
        scene.track(GRID, (64, 64), step=(0, 64))
    with pytest.raises(ValueError, match="fit"):
        scene.track(GRID, (512, 64))


def test_band_averaged_scene_matches_its_endmembers(scene) -> None:
    """A 10 nm push-broom grid with band averaging: the tile and the nominal endmembers are
    resampled the same way, and stay close to point sampling for smooth spectra."""
    grid = np.arange(900.0, 1701.0, 10.0)
    band = next(scene.track(grid, (32, 32), method="band"))
    point = next(scene.track(grid, (32, 32)))
    assert np.abs(band.reflectance - point.reflectance).max() < 0.01
    em_band = nominal_endmembers(grid, method="band")
    lib = scene.library
    first = lib.names.index(em_band.names[0])
    np.testing.assert_allclose(em_band.spectra[0], lib.resample(lib.spectra[first], grid, "band")[0])
