"""The Fabry-Perot interferometer's transmittance: the one definition used everywhere.

Simulation, characterisation (``calibration/``), reconstruction and training data all call
these functions, so the instrument has a single physical model.

Conventions
-----------
* ``sigma``: wavenumber in 1/µm (1000 / wavelength in nm).
* ``opd``: optical path difference in µm, ``2 n e cos(theta)`` for an air gap of thickness
  ``e`` (µm), refractive index ``n`` and incidence angle ``theta`` inside the gap.
* ``reflectivity``: the intensity reflectance R of each mirror, 0 <= R < 1.

The *response* of one interferometer as the IRCA paper writes it is mean-normalised::

    response = gain * (1 - R^2) / (1 + R^2 - 2 R cos(2 pi sigma opd - phase)) + offset
             = gain * (1 + 2 sum_{k>=1} R^k cos(k (2 pi sigma opd - phase))) + offset

so ``gain`` is the mean level over a period and the k-th harmonic weighs ``2 R^k``. A lossless
etalon's transmittance (peak 1) is ``(1 - R) / (1 + R)`` times the unit-gain response.
Truncating the series after ``K`` harmonics (``K = 1`` is the two-wave approximation of low
finesse) leaves an error of at most ``2 gain R^(K+1) / (1 - R)``.

All functions broadcast over their arguments with numpy rules.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

FloatArray = NDArray[np.floating]


def opd_from_thickness(
    thickness_um: ArrayLike, refractive_index: ArrayLike = 1.0, angle_rad: ArrayLike = 0.0
) -> FloatArray:
    """Optical path difference (µm) of a gap of ``thickness_um``: ``2 n e cos(theta)``."""
    return (
        2.0
        * np.asarray(refractive_index, dtype=float)
        * np.asarray(thickness_um, dtype=float)
        * np.cos(np.asarray(angle_rad, dtype=float))
    )


def phase_argument(sigma: ArrayLike, opd: ArrayLike, phase: ArrayLike = 0.0) -> FloatArray:
    """The interference phase ``2 pi sigma opd - phase`` (radians)."""
    return 2.0 * np.pi * np.asarray(sigma, dtype=float) * np.asarray(opd, dtype=float) - np.asarray(
        phase, dtype=float
    )


def response(
    sigma: ArrayLike,
    opd: ArrayLike,
    reflectivity: ArrayLike,
    gain: ArrayLike = 1.0,
    phase: ArrayLike = 0.0,
    offset: ArrayLike = 0.0,
    harmonics: int | None = None,
) -> FloatArray:
    """Mean-normalised interferometer response at wavenumber ``sigma``.

    ``harmonics=None`` gives the exact Airy function; an integer ``K >= 1`` gives the Fourier
    series truncated after ``K`` harmonics (``K = 1``: two-wave, ``gain (1 + 2R cos x)``).
    """
    shape = response_shape(np.cos(phase_argument(sigma, opd, phase)), reflectivity, harmonics)
    return np.asarray(gain, dtype=float) * shape + np.asarray(offset, dtype=float)


def response_shape(cos_x: ArrayLike, reflectivity: ArrayLike, harmonics: int | None = None) -> FloatArray:
    """The unit-gain shape ``A`` of :func:`response` (``response = gain * A + offset``) from
    the cosine of the interference phase ``x`` (:func:`phase_argument`).

    From the cosine, not the phase: a fit evaluates a trial step, then the derivatives at the
    same phase where it takes it, and one cosine serves both (the cosines are the largest
    cost of a characterisation; see :func:`response_shape_and_derivatives`' ``cos_x``).
    """
    r = np.asarray(reflectivity, dtype=float)
    c = np.asarray(cos_x, dtype=float)
    if harmonics is None:
        return (1.0 - r * r) / (1.0 + r * r - 2.0 * r * c)
    return _series(c, r, harmonics)


def _series(c1: FloatArray, r: FloatArray, harmonics: int, damping_arg: FloatArray | None = None) -> FloatArray:
    """``1 + 2 sum_{k=1..K} R^k cos(k x) [sinc(k damping_arg)]``, from ``c1 = cos(x)``: the
    truncated Fourier series of the unit-gain response, each harmonic optionally band-averaged."""
    if harmonics < 1:
        raise ValueError(f"harmonics must be >= 1 (1 is the two-wave model), got {harmonics}")
    # cos(kx) by the Chebyshev recurrence: one trigonometric call for any K; the sum built in
    # place from its first term (the characterisation calls this thousands of times on
    # arrays larger than the cache: each full-size pass saved is time)
    ck = c1
    two_c1 = 2.0 * c1
    c_prev: FloatArray | float = 1.0
    two_rk = 2.0 * r
    shape: FloatArray | None = None
    for k in range(1, harmonics + 1):
        if k > 1:
            nxt = two_c1 * ck
            nxt -= c_prev
            ck, c_prev = nxt, ck
            two_rk *= r
        term = two_rk * ck
        if damping_arg is not None:
            term = term * np.sinc(k * damping_arg)
        if shape is None:
            shape = term + 1.0
        else:
            shape += term
    assert shape is not None
    return shape


def response_shape_and_derivatives(
    x: ArrayLike, reflectivity: ArrayLike, harmonics: int | None = None, cos_x: ArrayLike | None = None
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """The unit-gain shape ``A`` of :func:`response` and its analytic partial derivatives.

    ``x`` is the interference phase (:func:`phase_argument`). Returns ``(A, dA/dx, dA/dR)``,
    broadcast over ``x`` and ``reflectivity``; ``response = gain * A + offset``, so a fit's
    Jacobian follows by the chain rule (``dx/dopd = 2 pi sigma``, ``dx/dphase = -1``). Same
    models as :func:`response`: ``harmonics=None`` exact Airy, ``K`` the K-harmonic series.
    ``cos_x``: ``cos(x)`` where the caller has it (see :func:`response_shape`); the same
    values, to the bit, as without it.
    """
    x = np.asarray(x, dtype=float)
    r = np.asarray(reflectivity, dtype=float)
    c = np.cos(x) if cos_x is None else np.asarray(cos_x, dtype=float)
    if harmonics is None:
        inv = 1.0 / (1.0 + r * r - 2.0 * r * c)
        shape = (1.0 - r * r) * inv
        d_x = -2.0 * r * np.sin(x) * shape * inv
        d_r = -2.0 * (r + shape * (r - c)) * inv
        return shape, d_x, d_r
    if harmonics < 1:
        raise ValueError(f"harmonics must be >= 1 (1 is the two-wave model), got {harmonics}")
    # cos(kx), sin(kx) by the Chebyshev recurrence: two trigonometric calls for any K
    c1, s1 = c, np.sin(x)
    ck, sk = c1, s1
    # cos(0 x), sin(0 x): scalars, no full-size arrays
    c_prev: FloatArray | float = 1.0
    s_prev: FloatArray | float = 0.0
    two_r = 2.0 * r
    shape = 1.0 + two_r * ck
    d_x = -two_r * sk
    d_r = 2.0 * ck
    rk = r
    two_c1 = 2.0 * c1
    # the sums built in place, each product once: the same operations as the expressions
    # in the comments, to the bit (2 k R^k = k (2 R^k) exactly: a factor 2 rounds nothing)
    for k in range(2, harmonics + 1):
        nxt = two_c1 * ck  # cos(kx) = 2 cos(x) cos((k-1)x) - cos((k-2)x)
        nxt -= c_prev
        ck, c_prev = nxt, ck
        nxt = two_c1 * sk  # sin(kx) likewise
        nxt -= s_prev
        sk, s_prev = nxt, sk
        term = (2.0 * k) * rk  # d_r += 2 k R^(k-1) cos(kx)  (rk is R^(k-1) here)
        term *= ck
        d_r += term
        rk = rk * r
        term = 2.0 * rk  # shape += 2 R^k cos(kx)
        shape += term * ck
        term *= k  # d_x -= 2 k R^k sin(kx)
        term *= sk
        d_x -= term
    return shape, d_x, d_r


def band_averaged_response(
    sigma_center: ArrayLike,
    sigma_width: ArrayLike,
    opd: ArrayLike,
    reflectivity: ArrayLike,
    gain: ArrayLike = 1.0,
    phase: ArrayLike = 0.0,
    offset: ArrayLike = 0.0,
    harmonics: int | None = None,
    tolerance: float = 1e-7,
) -> FloatArray:
    """Mean of :func:`response` over a box band ``sigma_center +- sigma_width / 2``.

    A detector integrates the response over each spectral sample, and sampling the response
    pointwise aliases once the OPD is large; averaging each harmonic exactly multiplies it by
    ``sinc(k opd width)``. Gain and reflectivity are taken at the band centre. The exact
    Airy function (``harmonics=None``) is summed until the truncation bound is below
    ``tolerance`` (relative to the gain).
    """
    r = np.asarray(reflectivity, dtype=float)
    if harmonics is None:
        harmonics = harmonics_for_tolerance(float(np.max(r, initial=0.0)), tolerance)
    x = phase_argument(sigma_center, opd, phase)
    damping_arg = np.asarray(opd, dtype=float) * np.asarray(sigma_width, dtype=float)
    shape = _series(np.cos(x), r, harmonics, damping_arg)
    return np.asarray(gain, dtype=float) * shape + np.asarray(offset, dtype=float)


def etalon_transmittance(sigma: ArrayLike, opd: ArrayLike, reflectivity: ArrayLike) -> FloatArray:
    """Transmittance of a lossless etalon: the Airy function, 1 at its peaks.

    ``(1-R)^2 / (1 + R^2 - 2R cos(2 pi sigma opd))``; its reflectance is ``1 - T``.
    """
    r = np.asarray(reflectivity, dtype=float)
    return (1.0 - r) / (1.0 + r) * response(sigma, opd, r)


def etalon_reflectance(sigma: ArrayLike, opd: ArrayLike, reflectivity: ArrayLike) -> FloatArray:
    """Reflectance of a lossless etalon (energy conservation: ``R_etalon = 1 - T``)."""
    return 1.0 - etalon_transmittance(sigma, opd, reflectivity)


def coefficient_of_finesse(reflectivity: ArrayLike) -> FloatArray:
    """``F = 4R / (1-R)^2``, so that ``T = 1 / (1 + F sin^2(pi sigma opd))``."""
    r = np.asarray(reflectivity, dtype=float)
    return 4.0 * r / (1.0 - r) ** 2


def finesse(reflectivity: ArrayLike) -> FloatArray:
    """Reflective finesse ``pi sqrt(R) / (1 - R)``: free spectral range over peak FWHM."""
    r = np.asarray(reflectivity, dtype=float)
    return np.pi * np.sqrt(r) / (1.0 - r)


def truncation_error_bound(reflectivity: ArrayLike, harmonics: int, gain: ArrayLike = 1.0) -> FloatArray:
    """Largest absolute error of the series truncated after ``harmonics`` terms."""
    r = np.asarray(reflectivity, dtype=float)
    return 2.0 * np.asarray(gain, dtype=float) * r ** (harmonics + 1) / (1.0 - r)


def harmonics_for_tolerance(reflectivity: float, tolerance: float) -> int:
    """Fewest harmonics whose truncation error bound (unit gain) is below ``tolerance``."""
    if not 0.0 <= reflectivity < 1.0:
        raise ValueError(f"reflectivity must be in [0, 1), got {reflectivity}")
    if reflectivity == 0.0:
        return 1
    k = np.log(tolerance * (1.0 - reflectivity) / 2.0) / np.log(reflectivity) - 1.0
    return max(1, int(np.ceil(k)))
