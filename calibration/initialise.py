"""Starting values for every interferometer from the data alone (and the design's OPD step).

Three guarded steps, all batched over the N interferometers:

1. **Gain** from the flat-field shape: a low-degree Chebyshev least-squares fit of each
   response over the sweep. The Airy response's mean over a period is the gain, so a smooth
   fit through many fringes is the gain (for the few interferometers with under a fringe
   across the sweep it is biased; the regression corrects it).
2. **OPD** from the peak of a periodogram of ``response / gain - 1``, computed as one matrix
   product ``(N, S) @ (S, D)`` of quadrature-weighted complex exponentials, so it is valid for
   irregular line spacing (the weights are the wavenumber spans each line stands for).
   The peak is searched in a window around the *nominal* OPD ``offset + scale x index x
   step``: the step is the design's, the offset and scale (the first gap's thickness and a
   few per cent of scale error) are found by aligning a line with the bank's periodogram
   ridge. Real prototypes need that: ImAGAz's first interferometer sits 8.5 µm from zero.
   A second pass narrows each window to a running median of its neighbours' peaks, which
   follows a ridge that wiggles about the straight line (thickness steps are not uniform).
3. **Phase and reflectivity** from the first Fourier coefficient at that OPD: for every
   model ``response / gain - 1 = 2 sum R^k cos(k(2 pi sigma opd - phase))`` so the first
   coefficient is ``R exp(-i phase)``; its amplitude is clipped into ``[R_MIN, R_MAX]``.
4. **OPD and phase polish** by a linear fit of the first harmonic with smooth amplitudes:
   the drift of its phase with wavenumber measures the OPD's remaining error.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from numpy.polynomial import chebyshev
from numpy.typing import NDArray

#: Amplitude inversion is clipped to this range: a reflectivity of 0 has no phase
#: derivative, and above 0.9 the two-wave inversion is no longer an estimate of R.
R_MIN, R_MAX = 0.02, 0.9
#: Periodogram oversampling relative to the resolution 1 / (sigma span).
OVERSAMPLE = 8


@dataclass
class InitialGuess:
    """Starting values, one row per interferometer.

    opd_um (N,), phase_rad (N,), reflectivity (N,), gain_cheb (N, Dg+1) on ``sigma_domain``;
    reflectivity_cheb: optional (N, Dr'+1) starting series (None: constant ``reflectivity``);
    nominal_opd_um (N,): the centre of each periodogram window; peak_margin (N,): periodogram
    power at the chosen peak over the highest power in the window outside the main lobe (> 1
    means the chosen peak is the window's clear maximum); ridge (offset_um, scale).
    """

    opd_um: NDArray[np.float64]
    phase_rad: NDArray[np.float64]
    reflectivity: NDArray[np.float64]
    gain_cheb: NDArray[np.float64]
    sigma_domain: tuple[float, float]
    nominal_opd_um: NDArray[np.float64]
    peak_margin: NDArray[np.float64]
    ridge: tuple[float, float]
    reflectivity_cheb: NDArray[np.float64] | None = None

    def rows(self, idx: NDArray) -> InitialGuess:
        """The starting values of the interferometers ``idx`` only."""
        return replace(self, opd_um=self.opd_um[idx], phase_rad=self.phase_rad[idx],
                       reflectivity=self.reflectivity[idx], gain_cheb=self.gain_cheb[idx],
                       nominal_opd_um=self.nominal_opd_um[idx], peak_margin=self.peak_margin[idx],
                       reflectivity_cheb=None if self.reflectivity_cheb is None
                       else self.reflectivity_cheb[idx])


def mapped(sigma: NDArray, domain: tuple[float, float]) -> NDArray[np.float64]:
    """Wavenumber mapped onto [-1, 1] (the Chebyshev domain of the bank)."""
    a, b = domain
    return (2.0 * np.asarray(sigma, dtype=float) - (a + b)) / (b - a)


def quadrature_weights(sigma: NDArray) -> NDArray[np.float64]:
    """Trapezoid weights (S,) summing to 1: the wavenumber span each line stands for, so
    clustered lines of an irregular sweep do not dominate the Fourier sums."""
    s = np.asarray(sigma, dtype=float)
    w = np.empty_like(s)
    w[1:-1] = (s[2:] - s[:-2]) / 2
    w[0] = (s[1] - s[0]) / 2
    w[-1] = (s[-1] - s[-2]) / 2
    return w / w.sum()


def fringes(y: NDArray, gain: NDArray, sigma: NDArray) -> NDArray[np.float64]:
    """``y / gain - 1`` with its quadrature-weighted mean removed (N, S): the fringe signal
    whose first Fourier coefficient at an OPD is ``R exp(-i phase)`` for every model."""
    z = y / np.where(np.abs(gain) > 1e-9, gain, 1e-9) - 1.0
    return z - (z * quadrature_weights(sigma)).sum(1, keepdims=True)


def flat_field_gain(y: NDArray, sigma: NDArray, domain: tuple[float, float], degree: int) -> NDArray:
    """Chebyshev coefficients (N, degree+1) of each response's smooth level (weighted LS)."""
    v = chebyshev.chebvander(mapped(sigma, domain), degree)
    w = np.sqrt(quadrature_weights(sigma))[:, None]
    coef, *_ = np.linalg.lstsq(v * w, (y * w[:, 0]).T, rcond=None)
    return coef.T


def fourier_coefficients(z: NDArray, sigma: NDArray, opd: NDArray) -> NDArray[np.complex128]:
    """First Fourier coefficients ``sum_j w_j z_ij exp(-2 pi i sigma_j opd_d)``.

    z: (N, S); opd: (D,) a common grid -> (N, D) as one matrix product, or (N, D) per row ->
    (N, D) batched. A grid is a periodogram, which only has to locate peaks: its products
    run in single precision (twice as fast; relative error ~1e-6 of the peak power), the
    phase is taken modulo 2 pi in double precision first."""
    zw = z * quadrature_weights(sigma)
    if opd.ndim == 1:
        arg = np.mod(np.outer(sigma, opd), 1.0) * (2.0 * np.pi)
        zw32 = zw.astype(np.float32)
        re = zw32 @ np.cos(arg).astype(np.float32)
        im = zw32 @ np.sin(arg).astype(np.float32)
        return (re - 1j * im).astype(np.complex128)
    arg = 2.0 * np.pi * sigma[None, :, None] * opd[:, None, :]
    return np.einsum("ns,nsd->nd", zw, np.cos(arg)) - 1j * np.einsum("ns,nsd->nd", zw, np.sin(arg))


def _ridge(power: NDArray, grid: NDArray, step: float, first_index: int) -> tuple[float, float]:
    """Offset and scale of the straight line ``offset + scale x k x step`` through the bank's
    periodogram ridge: the line that collects the most normalised power, searched over scale
    0.7-1.3 and offsets within half the bank's nominal span."""
    n = power.shape[0]
    rows = np.arange(0, n, max(1, n // 120))  # ~120 rows locate a straight line well enough
    p = power[rows] / power[rows].max(axis=1, keepdims=True)
    k = rows + first_index
    rows = np.arange(rows.size)
    span = n * step
    resolution = (grid[1] - grid[0]) * OVERSAMPLE
    scales = np.linspace(0.7, 1.3, 41)
    offsets = np.arange(-0.5 * span, 0.5 * span, max(min(step, resolution) / 2, grid[1] - grid[0]))
    best, arg = -1.0, (0.0, 1.0)
    dg = grid[1] - grid[0]
    for s in scales:
        line = offsets[:, None] + s * step * k[None, :]  # (O, rows)
        idx = np.rint((line - grid[0]) / dg).astype(int)
        ok = (idx >= 0) & (idx < grid.size)
        score = np.where(ok, p[rows[None, :], idx.clip(0, grid.size - 1)], 0.0).sum(1)
        i = int(np.argmax(score))
        if score[i] > best:
            best, arg = float(score[i]), (float(offsets[i]), float(s))
    return arg


def running_median(x: NDArray, half: int) -> NDArray[np.float64]:
    """Median of ``x[i - half : i + half + 1]`` for every i (windows shortened at the ends,
    never padded: an end value is not repeated into its neighbours' medians)."""
    x = np.asarray(x, dtype=float)
    padded = np.pad(x, half, constant_values=np.nan)
    return np.nanmedian(np.lib.stride_tricks.sliding_window_view(padded, 2 * half + 1), axis=1)


def _windowed_peak(power: NDArray, grid: NDArray, centre: NDArray, half_width: NDArray
                   ) -> tuple[NDArray[np.intp], NDArray[np.float64]]:
    """Index of each row's maximum within ``centre +- half_width``, and the power masked to
    -inf outside the window."""
    inside = np.abs(grid[None, :] - centre[:, None]) <= half_width[:, None]
    masked = np.where(inside, power, -np.inf)
    idx = np.argmax(masked, axis=1)
    return idx, masked


def initialise(
    y: NDArray,
    sigma: NDArray,
    opd_step_um: float,
    gain_degree: int = 5,
    domain: tuple[float, float] | None = None,
    first_index: int = 0,
) -> InitialGuess:
    """Starting values for all interferometers from responses ``y`` (N, S) at ``sigma`` (S,).

    ``opd_step_um`` is the design's OPD step between consecutive interferometers, the only
    prior. Row i of ``y`` is the design's interferometer ``first_index + i`` (a subset of a
    bank keeps its place in the thickness series). See the module docstring for the steps.
    """
    y = np.asarray(y, dtype=float)
    sigma = np.asarray(sigma, dtype=float)
    n = y.shape[0]
    if domain is None:
        domain = (float(sigma.min()), float(sigma.max()))
    gcoef = flat_field_gain(y, sigma, domain, gain_degree)
    gain = chebyshev.chebval(mapped(sigma, domain), gcoef.T)
    z = y / np.where(np.abs(gain) > 1e-6 * np.abs(gain).max(), gain, 1e-6) - 1.0
    z = z - (z * quadrature_weights(sigma)).sum(1, keepdims=True)
    resolution = 1.0 / (sigma.max() - sigma.min())
    nyquist = 0.5 / np.median(np.diff(sigma))
    # the search reaches past the bank's nominal span, but not past the sampling's Nyquist
    top = min(max(1.6 * (first_index + n) * opd_step_um, 10 * resolution), 4 * nyquist)
    grid = np.arange(resolution, top, resolution / OVERSAMPLE)
    power = np.abs(fourier_coefficients(z, sigma, grid)) ** 2
    offset, scale = _ridge(power, grid, opd_step_um, first_index)
    index = first_index + np.arange(n)
    nominal = offset + scale * opd_step_um * index
    # first pass: a generous window around the ridge line
    half = np.full(n, max(4.0 * opd_step_um, 3.0 * resolution, 0.06 * (first_index + n) * opd_step_um))
    idx, wide = _windowed_peak(power, grid, nominal, half)
    wide = np.isfinite(wide)
    first = grid[idx]
    # second pass: a window around the running median of the neighbours' peaks (+- 2 steps)
    local = running_median(first - nominal, 4) + nominal
    half = np.full(n, max(2.0 * opd_step_um, 2.0 * resolution))
    idx, _ = _windowed_peak(power, grid, local, half)
    # refine: parabolic interpolation of the peak on the oversampled grid (the regression
    # polishes the OPD; this only has to land well inside the main lobe)
    i = idx.clip(1, grid.size - 2)
    rows = np.arange(n)
    p0, p1, p2 = power[rows, i - 1], power[rows, i], power[rows, i + 1]
    den = p0 - 2 * p1 + p2
    frac = np.where(den < 0, 0.5 * (p0 - p2) / np.where(den < 0, den, -1.0), 0.0).clip(-0.5, 0.5)
    opd = grid[i] + frac * (grid[1] - grid[0])
    c1 = fourier_coefficients(z, sigma, opd[:, None])[:, 0]
    # margin: chosen peak over the highest other local maximum in the first-pass window
    # (outside the chosen peak's main lobe, +- one resolution)
    is_max = np.zeros_like(power, dtype=bool)
    is_max[:, 1:-1] = (power[:, 1:-1] > power[:, :-2]) & (power[:, 1:-1] >= power[:, 2:])
    lobe = np.abs(grid[None, :] - opd[:, None]) < resolution
    others = np.where(is_max & ~lobe & wide, power, 0.0).max(axis=1)
    margin = np.abs(c1) ** 2 / np.where(others > 0, others, np.nan)
    opd, phase = _linear_refinement(y, sigma, domain, gain_degree, opd, np.angle(np.conj(c1)))
    return InitialGuess(
        opd_um=opd,
        phase_rad=phase,
        reflectivity=np.clip(np.abs(c1), R_MIN, R_MAX),
        gain_cheb=gcoef,
        sigma_domain=domain,
        nominal_opd_um=local,
        peak_margin=np.nan_to_num(margin, nan=np.inf),
        ridge=(offset, scale),
    )


def _linear_refinement(y: NDArray, sigma: NDArray, domain: tuple[float, float], degree: int,
                       opd: NDArray, phase: NDArray) -> tuple[NDArray, NDArray]:
    """Refine the OPD and phase by one batched linear least-squares fit.

    At the periodogram OPD ``d`` the first-harmonic (two-wave) part of the response is
    linear in smooth series: ``y = G(t) + A(t) cos(2 pi sigma d) + B(t) sin(2 pi sigma d)``
    with ``A + iB = 2 G R exp(i phase)`` (the higher harmonics of a high-finesse response
    are nearly orthogonal to these). The phase of ``A + iB`` drifts linearly with sigma by
    ``-2 pi sigma (opd - d)``: its amplitude-weighted slope corrects the OPD (to a fraction
    of the periodogram's grid step). Rows where the correction exceeds half a resolution
    keep the periodogram's values. (Gain and R from this fit were tried as starting values
    too; the regression ended no better on the real prototypes, so they start flat.)
    """
    n = y.shape[0]
    v = chebyshev.chebvander(mapped(sigma, domain), degree)  # (S, q)
    q = degree + 1
    theta = 2.0 * np.pi * sigma[None, :] * opd[:, None]  # (N, S)
    w = quadrature_weights(sigma)[None, :, None]
    # the basis [v, cos(theta) v, sin(theta) v] (N, S, 3q) is never formed: its normal
    # matrix's blocks are the weighted products of v's columns times 1, c, s, c^2, c s, s^2,
    # one (N, S) x (S, q^2) product each (a batched (N, 3q, S) x (N, S, 3q) product and two
    # 50 MB arrays on wfai_1 were a third of the initialisation's time)
    c, sn = np.cos(theta), np.sin(theta)
    wv = w[0]
    vv = np.einsum("sj,sk->sjk", v, v).reshape(sigma.size, -1) * wv
    m = np.empty((n, 3 * q, 3 * q))
    blocks = {(0, 0): None, (0, 1): c, (0, 2): sn, (1, 1): c * c, (1, 2): c * sn, (2, 2): sn * sn}
    for (i, j), f in blocks.items():
        part = (vv.sum(0) if f is None else f @ vv).reshape(-1, q, q)
        m[:, i * q : (i + 1) * q, j * q : (j + 1) * q] = part
        m[:, j * q : (j + 1) * q, i * q : (i + 1) * q] = part.transpose(0, 2, 1)
    m += 1e-10 * np.einsum("npp->np", m).max(axis=1)[:, None, None] * np.eye(3 * q)[None]
    yw = y * wv[:, 0]
    rhs = np.concatenate([yw @ v, (yw * c) @ v, (yw * sn) @ v], axis=1)
    coef = np.linalg.solve(m, rhs[:, :, None])[:, :, 0]
    amp = (coef[:, q : 2 * q] @ v.T) + 1j * (coef[:, 2 * q :] @ v.T)  # 2 G R exp(i phase)
    ang = np.unwrap(np.angle(amp), axis=1)
    wt = np.abs(amp) * w[:, :, 0]
    sw = wt.sum(1)
    sm = (wt * sigma[None, :]).sum(1) / sw
    am = (wt * ang).sum(1) / sw
    ds = sigma[None, :] - sm[:, None]
    slope = (wt * ds * (ang - am[:, None])).sum(1) / (wt * ds**2).sum(1)
    new_opd = opd - slope / (2.0 * np.pi)
    new_phase = np.angle(np.exp(1j * (am + 2.0 * np.pi * sm * (new_opd - opd))))
    ok = np.isfinite(new_opd) & (np.abs(new_opd - opd) < 0.5 / (sigma.max() - sigma.min()))
    return np.where(ok, new_opd, opd), np.where(ok, new_phase, phase)
