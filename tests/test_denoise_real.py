"""The classical denoiser on real scenes (../shared/data/real_cubes, used as clean truth with
noise added here, as the HyDe and HSDT papers evaluate): real texture must be neither counted
as noise nor removed."""

from __future__ import annotations

import numpy as np
import pytest

from export import real_cubes
from onboard.formats.types import Cube
from onboard.stages.denoise import SubspaceDenoiseConfig, denoise_subspace_report

pytestmark = pytest.mark.skipif(real_cubes.folder() is None,
                                reason="../shared/data/real_cubes is not present")


def cube_of(data: np.ndarray, wl: np.ndarray) -> Cube:
    return Cube(data.astype(np.float32), wl, np.ones(data.shape[1:], dtype=bool))


def psnr(x: np.ndarray, truth: np.ndarray) -> float:
    return float(10 * np.log10(1.0 / np.mean((x - truth) ** 2)))


@pytest.mark.parametrize("name", real_cubes.TRAIN + real_cubes.TEST)
def test_texture_of_a_clean_real_cube_is_not_counted_as_noise(name):
    rc = real_cubes.load(name)
    _, report = denoise_subspace_report(cube_of(rc.data, rc.wavelengths_nm),
                                        SubspaceDenoiseConfig(destripe="none"))
    # Target: below 10 % of sigma 0.05 per band. These cubes carry real noise of their own
    # in a few bands (AVIRIS water-vapour edges at 1.38-1.46 and 1.81-2.03 um and its
    # 2.3-2.45 um tail, ROSIS's first blue bands, Samson's last band), where an independent
    # estimate (spatial differences) finds as much: there the estimate is right to be
    # higher. Measured: 88-100 % of the bands below 0.005, median 0.0002-0.0015 (the
    # spatial estimate that counted texture: median 0.002-0.010).
    noise = report.band_noise
    assert np.median(noise) < 0.002, np.median(noise)
    assert np.mean(noise < 0.005) > 0.85, np.mean(noise < 0.005)


@pytest.mark.parametrize("name", real_cubes.TEST)
def test_noise_level_on_a_real_scene_is_measured_not_overestimated(name):
    rc = real_cubes.load(name)
    noisy = rc.data + 0.05 * np.random.default_rng(1).standard_normal(rc.data.shape)
    _, report = denoise_subspace_report(cube_of(noisy, rc.wavelengths_nm),
                                        SubspaceDenoiseConfig(destripe="none"))
    # ~10^4 pixels per band: ~1 % sampling error; measured +1.1 % and +0.3 % (the
    # texture-fooled spatial estimate: +19 % on an AVIRIS scene).
    assert abs(np.median(report.band_noise) / 0.05 - 1) < 0.04


@pytest.mark.parametrize("name", real_cubes.TEST)
def test_real_texture_survives_the_spatial_step(name):
    """The whole stage against its own projection step: the spatial shrinkage of the
    eigen-images must add, not remove, on real texture at sigma 0.05 (measured +1.6 and
    +2.7 dB on the held-out cubes)."""
    rc = real_cubes.load(name)
    noisy = rc.data + 0.05 * np.random.default_rng(2).standard_normal(rc.data.shape)
    cube = cube_of(noisy, rc.wavelengths_nm)
    out, _ = denoise_subspace_report(cube, SubspaceDenoiseConfig(destripe="none"))
    projected, _ = denoise_subspace_report(cube, SubspaceDenoiseConfig(destripe="none",
                                                                      threshold_scale=0.0))
    assert psnr(out.data, rc.data) > psnr(projected.data, rc.data) + 1.5
    assert psnr(out.data, rc.data) > 38.0


@pytest.mark.parametrize("name", real_cubes.TEST)
def test_mixed_noise_stripes_of_some_bands_dead_lines_and_impulses_are_removed(name):
    """Stripes in a third of the bands, dead lines in another third, salt and pepper in
    another, over band-dependent Gaussian noise: the defects are imputed from the other
    bands. Measured 37.7 / 44.0 dB (Jasper / urban, this draw; on the bench's draw HyRes
    27.2 / 25.7 and HyMiNoR 30.1 / 31.2, this stage before the outlier step 27.5 / 25.8)."""
    rc = real_cubes.load(name)
    noisy = real_cubes.add_noise(rc.data, "mixed", np.random.default_rng(0))
    out, report = denoise_subspace_report(cube_of(noisy, rc.wavelengths_nm))
    assert psnr(out.data, rc.data) > 35.0
    assert report.line_defects > 100 and report.impulses > 10_000
    assert report.rank < 12  # the defects no longer pull the rank up (measured 10 and 3)
