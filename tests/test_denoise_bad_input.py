"""Bad input to the denoiser: a clear reason, the cube passed on undenoised, an event product;
and constant bands (dead or saturated channels) passed through while the others are denoised."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import smooth_reflectance

from onboard.formats.products import ProductKind
from onboard.formats.types import Cube
from onboard.runtime.pipeline import Pipeline
from onboard.stages.denoise import (
    MIN_BANDS,
    NotDenoised,
    SubspaceDenoiseConfig,
    denoise_subspace,
    denoise_subspace_report,
)
from onboard.stages.residue import Endmembers, unmix_fcls


def noisy_cube(bands: int = 20, seed: int = 0) -> tuple[Cube, np.ndarray]:
    """Three spectra mixed smoothly over 48 x 48 pixels, noise 0.01: (cube, clean)."""
    rng = np.random.default_rng(seed)
    wl = np.linspace(450.0, 950.0, bands)
    lam = (wl - wl[0]) / np.ptp(wl)
    spectra = np.stack([0.1 + 0.3 * lam, 0.3 - 0.1 * lam, 0.05 + 0.4 * (lam > 0.5)])
    yy, xx = np.mgrid[0:48, 0:48] / 48.0
    mix = np.stack([np.sin(3 * yy) ** 2, np.cos(2 * xx) ** 2, 0.3 + 0.0 * xx])
    mix /= mix.sum(axis=0)
    clean = np.einsum("khw,kb->bhw", mix, spectra)
    noisy = clean + 0.01 * rng.standard_normal(clean.shape)
    return Cube(noisy.astype(np.float32), wl, np.ones((48, 48), bool)), clean


def corrupt(cube: Cube, how: str) -> Cube:
    data = cube.data.copy()
    if how == "nan band":
        data[3] = np.nan
    elif how == "constant":
        data[:] = 0.25
    elif how == "few varying bands":
        data[MIN_BANDS - 1:] = 1.0  # saturated channels: only MIN_BANDS - 1 vary
    elif how == "few bands":
        return Cube(data[: MIN_BANDS - 1], cube.wavelengths_nm[: MIN_BANDS - 1], cube.valid)
    elif how == "nan pixels":
        data[:, :, :] = np.nan
        data[:, 0, :10] = 0.2  # 10 finite pixels for 20 bands
    return Cube(data, cube.wavelengths_nm, cube.valid)


REASONS = {"nan band": "no finite value", "constant": "every band is constant",
           "few varying bands": "bands are constant", "few bands": f"at least {MIN_BANDS} bands",
           "nan pixels": "NaN or inf"}


@pytest.mark.parametrize("how", REASONS)
def test_bad_cube_is_refused_with_its_reason(how):
    cube, _ = noisy_cube()
    with pytest.raises(NotDenoised, match=REASONS[how]):
        denoise_subspace(corrupt(cube, how))


def test_constant_bands_are_passed_through_and_the_others_denoised():
    """A dead channel (0) and a saturated one (1) among 20: they come back as they were,
    the other bands are denoised as if they were absent."""
    cube, clean = noisy_cube()
    data = cube.data.copy()
    data[5], data[12] = 0.0, 1.0
    out, report = denoise_subspace_report(Cube(data, cube.wavelengths_nm, cube.valid),
                                          SubspaceDenoiseConfig(destripe="offset"))
    assert (out.data[5] == 0.0).all() and (out.data[12] == 1.0).all()
    assert report.band_noise[5] == 0 and report.band_noise[12] == 0
    others = np.setdiff1d(np.arange(20), [5, 12])
    alone = denoise_subspace(Cube(cube.data[others], cube.wavelengths_nm[others], cube.valid),
                             SubspaceDenoiseConfig(destripe="offset"))
    np.testing.assert_allclose(out.data[others], alone.data, atol=1e-6)
    err = np.sqrt(np.mean((out.data[others] - clean[others]) ** 2))
    assert err < 0.5 * np.sqrt(np.mean((cube.data[others] - clean[others]) ** 2))


@pytest.fixture(scope="module")
def pipeline_of(imspoc_calibration):
    wl = imspoc_calibration.wavelengths_nm
    x = (wl - wl[0]) / np.ptp(wl)
    spectra = np.stack([0.15 + 0.25 * x, 0.25 + 0.1 * x, 0.05 + 0.45 * (x > 0.5)])
    em = Endmembers(spectra, wl, ("residue", "soil", "green"), ("r", "s", "g"))

    def make(how: str) -> Pipeline:
        # the frame's cube reaches the denoiser corrupted as ``how`` says
        return Pipeline(imspoc_calibration,
                        lambda c: denoise_subspace(corrupt(c, how), SubspaceDenoiseConfig.for_sensor("imspoc")),
                        lambda c: unmix_fcls(c, em), saturation_dn=4094)
    return make


@pytest.mark.parametrize("how", ["nan band", "constant", "few bands"])
def test_pipeline_passes_the_cube_on_undenoised_with_an_event(imspoc, pipeline_of, how):
    grid = imspoc.scene_grid()
    frame = imspoc.frame(smooth_reflectance(grid, imspoc.thumb_shape), grid,
                         np.random.default_rng(3), counter=7)
    r = pipeline_of(how).process(frame)
    assert r.denoised is r.cube  # undenoised, nothing lost
    assert any("not denoised" in f and REASONS[how] in f for f in r.flags), r.flags
    events = [p for p in r.products if p.kind == ProductKind.EVENT]
    assert len(events) == 1 and REASONS[how] in json.loads(events[0].payload)["detail"]
    assert ProductKind.RESIDUE in [p.kind for p in r.products]
