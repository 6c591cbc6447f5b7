"""The response's analytic derivatives (used by the characterisation's Jacobian) against
central finite differences of the one response definition."""

import numpy as np
import pytest

from onboard.physics import fabry_perot as fp


@pytest.mark.parametrize("harmonics", [None, 1, 2, 5])
@pytest.mark.parametrize("r", [0.05, 0.4, 0.8])
def test_shape_derivatives_match_finite_differences(harmonics: int | None, r: float) -> None:
    x = np.linspace(-7.0, 7.0, 301)
    shape, d_x, d_r = fp.response_shape_and_derivatives(x, r, harmonics)
    sigma = x / (2 * np.pi)  # opd 1, phase 0: the phase argument is x
    np.testing.assert_allclose(shape, fp.response(sigma, 1.0, r, harmonics=harmonics), atol=1e-12)
    h = 1e-6
    fd_x = (fp.response((x + h) / (2 * np.pi), 1.0, r, harmonics=harmonics)
            - fp.response((x - h) / (2 * np.pi), 1.0, r, harmonics=harmonics)) / (2 * h)
    fd_r = (fp.response(sigma, 1.0, r + h, harmonics=harmonics)
            - fp.response(sigma, 1.0, r - h, harmonics=harmonics)) / (2 * h)
    # central differences are exact to O(h^2) ~ 1e-12 plus rounding ~ 1e-16 / h = 1e-10;
    # the Airy function's slopes reach ~ 1/(1-R)^2 = 25, so allow 1e-7 relative
    scale = 1.0 + np.abs(fd_x).max()
    np.testing.assert_allclose(d_x, fd_x, atol=1e-7 * scale)
    np.testing.assert_allclose(d_r, fd_r, atol=1e-7 * (1.0 + np.abs(fd_r).max()))


def test_rejects_zero_harmonics() -> None:
    with pytest.raises(ValueError, match="harmonics must be >= 1"):
        fp.response_shape_and_derivatives(0.0, 0.5, 0)


@pytest.mark.parametrize("harmonics", [None, 1, 3, 8])
def test_a_cosine_passed_in_gives_the_same_values_to_the_bit(harmonics: int | None) -> None:
    """A fit reuses its trial step's cos(x) for the derivatives at the point it takes: the
    shape and derivatives must be those computed from the phase, not merely close (the
    characterisation's fits must not move)."""
    rng = np.random.default_rng(3)
    sigma, opd = rng.uniform(0.5, 3.0, 97), rng.uniform(0.0, 100.0, (5, 1))
    x = fp.phase_argument(sigma, opd, 0.3)
    r = rng.uniform(0.0, 0.9, (5, 97))
    c = np.cos(x)
    for got, want in zip(fp.response_shape_and_derivatives(x, r, harmonics, cos_x=c),
                         fp.response_shape_and_derivatives(x, r, harmonics), strict=True):
        np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(fp.response_shape(c, r, harmonics),
                                  fp.response(sigma, opd, r, phase=0.3, harmonics=harmonics))
