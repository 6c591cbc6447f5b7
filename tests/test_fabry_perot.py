"""Fabry-Perot physics against closed forms."""

import numpy as np
import pytest

from onboard.physics import fabry_perot as fp

SIGMA = np.linspace(0.5, 3.0, 20001)


@pytest.mark.parametrize("r", [0.05, 0.3, 0.7, 0.95])
def test_airy_extrema_and_lossless_energy(r: float) -> None:
    opd = 12.0
    t = fp.etalon_transmittance(SIGMA, opd, r)
    # peaks of 1 where sigma*opd is an integer, minima (1-R)^2/(1+R)^2 at half-integers
    m = np.arange(7, 36)
    np.testing.assert_allclose(fp.etalon_transmittance(m / opd, opd, r), 1.0, rtol=1e-12)
    np.testing.assert_allclose(
        fp.etalon_transmittance((m + 0.5) / opd, opd, r), ((1 - r) / (1 + r)) ** 2, rtol=1e-12
    )
    assert t.max() <= 1 + 1e-12 and t.min() >= ((1 - r) / (1 + r)) ** 2 - 1e-12
    np.testing.assert_allclose(t + fp.etalon_reflectance(SIGMA, opd, r), 1.0)


@pytest.mark.parametrize("r", [0.5, 0.8, 0.9])
def test_finesse_is_fsr_over_fwhm(r: float) -> None:
    opd = 10.0
    fsr = 1.0 / opd
    s = np.linspace(1.0 - fsr / 2, 1.0 + fsr / 2, 2_000_001)  # one order around a peak at 1.0
    t = fp.etalon_transmittance(s, opd, r)
    above = s[t >= 0.5]
    fwhm = above.max() - above.min()
    # the closed form pi sqrt(R)/(1-R) is the small-angle limit; exact is pi / (2 asin(1/sqrt F))
    exact = np.pi / (2 * np.arcsin(1 / np.sqrt(fp.coefficient_of_finesse(r))))
    assert fsr / fwhm == pytest.approx(exact, rel=1e-4)
    assert fsr / fwhm == pytest.approx(float(fp.finesse(r)), rel=0.05 if r >= 0.8 else 0.15)


def test_two_wave_limit_as_reflectivity_vanishes() -> None:
    for r in [1e-2, 1e-3, 1e-4]:
        exact = fp.response(SIGMA, 7.0, r)
        two_wave = fp.response(SIGMA, 7.0, r, harmonics=1)
        # the first neglected harmonic is 2R^2 cos(2x): error is O(R^2)
        assert np.max(np.abs(exact - two_wave)) <= 2.1 * r**2


@pytest.mark.parametrize("r", [0.1, 0.5, 0.8])
@pytest.mark.parametrize("k", [1, 2, 4, 8])
def test_truncation_error_bound_holds_and_is_tight(r: float, k: int) -> None:
    err = np.max(np.abs(fp.response(SIGMA, 9.0, r) - fp.response(SIGMA, 9.0, r, harmonics=k)))
    bound = fp.truncation_error_bound(r, k)
    assert err <= bound * (1 + 1e-9)
    assert err >= 0.9 * bound  # reached where all neglected cosines are 1 (the peaks)


def test_periodic_in_wavenumber_with_period_one_over_opd() -> None:
    opd, r = 23.4, 0.6
    np.testing.assert_allclose(
        fp.response(SIGMA, opd, r, gain=2.0, phase=0.3),
        fp.response(SIGMA + 1.0 / opd, opd, r, gain=2.0, phase=0.3),
        rtol=1e-9,
    )


def test_gain_is_the_mean_over_a_period() -> None:
    x = np.linspace(0, 1, 100000, endpoint=False)
    assert fp.response(x, 1.0, 0.8, gain=3.0).mean() == pytest.approx(3.0, rel=1e-9)


def test_harmonics_for_tolerance_and_opd() -> None:
    k = fp.harmonics_for_tolerance(0.7, 1e-3)
    assert fp.truncation_error_bound(0.7, k) <= 1e-3 < fp.truncation_error_bound(0.7, k - 1)
    assert fp.opd_from_thickness(0.0875, 1.0, 0.0) == pytest.approx(0.175)
    assert fp.opd_from_thickness(1.0, 1.0, np.pi / 3) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="harmonics"):
        fp.response(1.0, 1.0, 0.5, harmonics=0)


@pytest.mark.parametrize("harmonics", [None, 1, 3])
def test_band_average_equals_numerical_mean(harmonics: int | None) -> None:
    centers = np.array([1.1, 1.7, 2.2])
    width = 0.02
    opd = np.array([[0.0], [3.5], [14.0]])
    got = fp.band_averaged_response(centers, width, opd, 0.6, gain=1.3, phase=0.2, offset=0.1,
                                    harmonics=harmonics)
    fine = (np.arange(20000) + 0.5) / 20000 - 0.5  # midpoint rule, error O(1e-8)
    want = np.stack([
        fp.response(c + fine[:, None] * width, opd.T, 0.6, gain=1.3, phase=0.2, offset=0.1,
                    harmonics=harmonics).mean(axis=0)
        for c in centers
    ], axis=-1)
    np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-6)
