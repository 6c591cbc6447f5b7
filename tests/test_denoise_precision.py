"""The classical denoiser in float32 (the default) against its float64 reference: the cube
product, float16, holds the same values to within one float16 step, on a simulated frame of
each instrument (the pipeline's own reconstruction and calibration)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from onboard.config import load, override
from onboard.runtime.session import build_session
from onboard.stages.denoise import SubspaceDenoiseConfig, decompose, denoise_subspace
from onboard.stages.filters import box_sum


@pytest.fixture(scope="module", params=["imspoc", "pushbroom"])
def sensor_cube(request):
    config = load(None)
    override(config, "run", "sensor", request.param)
    override(config, "engine", "engine", "classical")
    session = build_session(config)
    frames = [f for f, _ in session.frames(2)]
    session.pipeline.process(frames[0])  # the reconstruction's regularisation settles
    return request.param, session.pipeline.process(frames[1]).cube


def test_float32_is_the_default() -> None:
    assert SubspaceDenoiseConfig().precision == "float32"
    with pytest.raises(ValueError, match="precision"):
        SubspaceDenoiseConfig(precision="float16")  # type: ignore[arg-type]


def test_the_passes_run_in_float32(sensor_cube) -> None:
    sensor, cube = sensor_cube
    parts = decompose(cube, SubspaceDenoiseConfig.for_sensor(sensor))
    assert parts.z.dtype == np.float32


def test_float32_equals_float64_within_the_cube_products_float16_step(sensor_cube) -> None:
    sensor, cube = sensor_cube
    config = SubspaceDenoiseConfig.for_sensor(sensor)
    single = denoise_subspace(cube, config).data
    double = denoise_subspace(cube, replace(config, precision="float64")).data
    step = np.spacing(np.abs(double).astype(np.float16)).astype(np.float32)  # one float16 step
    # a quarter of a step at most: after rounding to float16 a value moves one step or none
    assert np.max(np.abs(single - double) / step) < 0.25
    product_single, product_double = single.astype(np.float16), double.astype(np.float16)
    differ = product_single != product_double
    assert differ.mean() < 0.01  # only values within a quarter step of a rounding boundary
    steps = np.abs(product_single[differ].astype(np.float32) - product_double[differ]) / step[differ]
    assert np.all(steps <= 1.0 + 1e-6)


@pytest.mark.parametrize("radius", [1, 2, 3])
def test_a_float32_box_sum_stays_float32_and_equals_the_double_one(radius: int) -> None:
    """The denoiser's window sums in float32 are summed directly (no cumulative sum whose
    differences would cancel); they equal the float64 cumulative-sum result to float32
    rounding, edges (zero outside the image) included."""
    rng = np.random.default_rng(radius)
    a = rng.random((3, 37, 29)) * np.exp(rng.normal(0, 3, (3, 37, 29)))  # magnitudes over decades
    single = box_sum(a.astype(np.float32), radius)
    double = box_sum(a, radius)
    assert single.dtype == np.float32 and double.dtype == np.float64
    np.testing.assert_allclose(single, double, rtol=2e-6 * (2 * radius + 1) ** 2)
    # a lone bright pixel among tiny ones: each window is exactly its own sum
    b = np.full((1, 9, 9), 1e-6, np.float32)
    b[0, 4, 4] = 1e6
    far = box_sum(b, radius)[0, 0, 0]  # the corner window: tiny values only, none lost
    assert far == pytest.approx(1e-6 * (radius + 1) ** 2, rel=1e-5)


def test_the_learned_pushbroom_denoiser_equals_its_float64_run_within_the_quantisation() -> None:
    """The learned denoiser takes the decomposition's whitened eigen-images: a noise estimate
    1 % off (a few outlier decisions flipped by single-precision residuals) moved its output
    by up to 4 float16 steps; the outlier rounds run in double, so both precisions judge the
    same values and the products agree as the classical stage's do."""
    config = load(None)
    override(config, "run", "sensor", "pushbroom")
    session = build_session(config)
    denoiser = session.pipeline.denoise
    assert type(denoiser).__name__ == "LearnedDenoiser"
    cube = session.pipeline.process(next(iter(session.frames(1)))[0]).cube
    reports = {p: decompose(cube, replace(denoiser.config, precision=p)).report for p in ("float32", "float64")}
    assert reports["float32"].impulses == reports["float64"].impulses
    assert reports["float32"].line_defects == reports["float64"].line_defects
    out = {}
    for p in ("float32", "float64"):
        denoiser.config = replace(denoiser.config, precision=p)
        out[p] = denoiser(cube).data
    step = np.spacing(np.abs(out["float64"]).astype(np.float16)).astype(np.float32)
    assert np.max(np.abs(out["float32"] - out["float64"]) / step) < 0.25
