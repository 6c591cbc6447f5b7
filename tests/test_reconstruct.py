"""ImSPOC reconstruction against reflectance the test simulates."""

from dataclasses import replace

import numpy as np
import pytest
from conftest import smooth_reflectance

from onboard.stages import radiometric
from onboard.stages.reconstruct import LAMBDA_GRID, Reconstructor, gcv_curve, second_difference


def _truth_on_grid(refl: np.ndarray, grid: np.ndarray, out: np.ndarray) -> np.ndarray:
    b, h, w = refl.shape
    flat = refl.reshape(b, -1)
    return np.stack([np.interp(out, grid, flat[:, p]) for p in range(h * w)], 1).reshape(-1, h, w)


@pytest.fixture(scope="module")
def scene(imspoc, imspoc_calibration):
    grid = imspoc.scene_grid()
    refl = smooth_reflectance(grid, imspoc.thumb_shape, seed=4)
    frame = imspoc.frame(refl, grid, np.random.default_rng(9))
    corrected = radiometric.correct(frame, imspoc_calibration.radiometric, 4094)
    rec = Reconstructor(imspoc_calibration)
    truth = _truth_on_grid(refl, grid, imspoc_calibration.wavelengths_nm)
    return rec, corrected, truth


def test_reconstruction_accuracy_at_realistic_snr(scene) -> None:
    rec, corrected, truth = scene
    cube, lam = rec.reconstruct(corrected)
    assert cube.data.shape == truth.shape and cube.valid.mean() > 0.99
    err = (cube.data - truth)[:, cube.valid]
    rmse = np.sqrt(np.mean(err**2))
    cos = np.sum(cube.data * truth, 0) / (np.linalg.norm(cube.data, axis=0) * np.linalg.norm(truth, axis=0))
    sam = np.degrees(np.arccos(np.clip(cos[cube.valid], -1, 1))).mean()
    # reflectances 0.05-0.7; shot-noise SNR ~50 per sample, 96 samples for 24 bands:
    # 0.05 RMSE and 8 degrees bound what a ~24-band Fabry-Perot inversion achieves here
    assert rmse < 0.05 and sam < 8.0


def test_gcv_weight_is_near_the_oracle_optimum(scene, imspoc_calibration) -> None:
    rec, corrected, truth = scene
    scale = rec.lambda_scale(corrected.exposure_s)
    rmse = []
    for lam in LAMBDA_GRID[::2] * scale:
        cube, _ = rec.reconstruct(corrected, lam=lam)
        rmse.append(np.sqrt(np.mean((cube.data - truth)[:, cube.valid] ** 2)))
    cube, lam = rec.reconstruct(corrected)
    gcv_rmse = np.sqrt(np.mean((cube.data - truth)[:, cube.valid] ** 2))
    # the rule never saw the truth; it must land within 25 % of the best RMSE on the grid
    assert gcv_rmse <= 1.25 * min(rmse)
    assert gcv_rmse < 0.5 * max(rmse)  # and the choice matters: the worst weight is far off


def test_gcv_curve_minimum_on_a_known_problem() -> None:
    # y = A x + noise with a smooth x: GCV's minimum is interior, not at either end
    rng = np.random.default_rng(0)
    a = rng.standard_normal((60, 20))
    x = np.sin(np.linspace(0, 3, 20))[:, None] * np.ones((1, 200))
    y = a @ x + 0.5 * rng.standard_normal((60, 200))
    d = second_difference(20)
    lambdas = np.logspace(-4, 4, 40)
    scores = gcv_curve(a, d, y, lambdas)
    assert 0 < int(np.argmin(scores)) < len(lambdas) - 1


def test_gcv_curve_equals_the_score_computed_weight_by_weight() -> None:
    """The curve from one joint diagonalisation equals the definition, evaluated with an
    explicit inverse per weight, to rounding: the same choice, the same products."""
    rng = np.random.default_rng(1)
    a = rng.standard_normal((96, 24))
    y = rng.standard_normal((96, 500))
    d = second_difference(24)
    lambdas = LAMBDA_GRID * float(np.trace(a.T @ a) / np.trace(d.T @ d))
    m, n = a.T @ a, a.shape[0]
    expected = []
    for lam in lambdas:
        h = a @ np.linalg.inv(m + lam * d.T @ d) @ a.T  # the influence matrix
        expected.append(np.mean(np.sum((y - h @ y) ** 2, axis=0)) / (n - np.trace(h)) ** 2)
    np.testing.assert_allclose(gcv_curve(a, d, y, lambdas), expected, rtol=1e-9)


def test_gcv_curve_refuses_an_undetermined_problem() -> None:
    a = np.zeros((10, 8))
    a[:, 0] = 1.0  # sees only the first band; the prior cannot fix a line's offset and slope
    with pytest.raises(ValueError, match="undetermined"):
        gcv_curve(a, second_difference(8), np.ones((10, 3)), LAMBDA_GRID)


def _frames(imspoc, cal, refl: np.ndarray, n: int, rng: np.random.Generator) -> list:
    grid = imspoc.scene_grid()
    return [radiometric.correct(imspoc.frame(refl, grid, rng), cal.radiometric, 4094) for _ in range(n)]


def _wavy_field(imspoc) -> np.ndarray:
    """Spectra with a ripple (period ~50 nm) in varied phase: GCV picks an interior weight,
    not the grid's end as on the smooth field."""
    grid, (h, w) = imspoc.scene_grid(), imspoc.thumb_shape
    return 0.4 + 0.25 * np.sin(grid[:, None, None] / 8 + np.random.default_rng(3).uniform(0, 6, (1, h, w)))


def test_a_kept_weight_equals_the_full_gcv_choice_on_a_stable_scene(imspoc, imspoc_calibration) -> None:
    rec = Reconstructor(imspoc_calibration, reuse_frames=4)
    full = Reconstructor(imspoc_calibration, reuse_frames=0)
    decisions, chosen = [], set()
    for frame in _frames(imspoc, imspoc_calibration, _wavy_field(imspoc), 10, np.random.default_rng(11)):
        _, lam = rec.reconstruct(frame)
        _, lam_full = full.reconstruct(frame)
        assert lam == lam_full
        decisions.append(rec.last_choice)
        chosen.add(lam)
        assert full.last_choice == "grid"
    # interior choice (both neighbours judged); the whole grid again after 4 kept frames
    scale = rec.lambda_scale(imspoc.exposure_s)
    assert len(chosen) == 1 and 0 < np.argmin(abs(LAMBDA_GRID * scale - chosen.pop())) < len(LAMBDA_GRID) - 1
    assert decisions == ["grid"] + ["kept"] * 4 + ["grid"] + ["kept"] * 4


def test_a_scene_change_makes_the_weight_be_chosen_again(imspoc, imspoc_calibration) -> None:
    grid, (h, w) = imspoc.scene_grid(), imspoc.thumb_shape
    rng = np.random.default_rng(12)
    rec = Reconstructor(imspoc_calibration)
    for frame in _frames(imspoc, imspoc_calibration, smooth_reflectance(grid, (h, w), seed=4), 3, rng):
        _, before = rec.reconstruct(frame)
    assert rec.last_choice == "kept"
    # the wavy field: the smooth scene's weight (the grid's end) stays a local minimum of GCV,
    # but the curve's level moved; the global minimum is 11 points lower
    frame = _frames(imspoc, imspoc_calibration, _wavy_field(imspoc), 1, rng)[0]
    _, after = rec.reconstruct(frame)
    _, want = Reconstructor(imspoc_calibration).reconstruct(frame)
    assert rec.last_choice == "grid" and after == want and after < before / 100


def test_operators_of_recent_weights_are_kept_and_equal_fresh_ones(scene, imspoc_calibration) -> None:
    """A weight chosen again after another (the choice moves to a neighbour and back) reuses
    its block operators instead of solving them again; they equal a fresh reconstructor's, and
    the cube's response follows the weight in use."""
    rec, corrected, _ = scene
    scale, e = rec.lambda_scale(corrected.exposure_s), corrected.exposure_s
    a, b = LAMBDA_GRID[10] * scale, LAMBDA_GRID[12] * scale
    ops_a = rec._operators(a, e)
    response_a = rec._response
    rec._operators(b, e)
    assert rec._response is not response_a
    assert rec._operators(a, e) is ops_a and rec._response is response_a
    fresh = Reconstructor(imspoc_calibration)
    for got, want in zip(sum(ops_a, []), sum(fresh._operators(a, e), []), strict=True):
        np.testing.assert_array_equal(got, want)
    cube_again, _ = rec.reconstruct(corrected, lam=a)
    np.testing.assert_array_equal(cube_again.data, fresh.reconstruct(corrected, lam=a)[0].data)
    assert cube_again.response is response_a


def test_the_gcv_choice_follows_the_exposure(imspoc, imspoc_calibration) -> None:
    """The GCV basis is kept per exposure: a reconstructor that has seen another exposure
    chooses the weight a fresh one chooses."""
    frame = _frames(imspoc, imspoc_calibration, _wavy_field(imspoc), 1, np.random.default_rng(5))[0]
    rec = Reconstructor(imspoc_calibration, reuse_frames=0)
    shorter = replace(frame, exposure_s=frame.exposure_s / 2, pixels=(frame.pixels / 2).astype(np.float32))
    for f in (frame, shorter, frame, shorter):
        assert rec.reconstruct(f)[1] == Reconstructor(imspoc_calibration).reconstruct(f)[1]
