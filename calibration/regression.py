"""Nonlinear regression of every interferometer at once: a batched Levenberg-Marquardt.

The model of interferometer n at line s is the response of :mod:`onboard.physics.fabry_perot`
(its one definition, with its analytic derivatives)::

    f_ns = G_n(t_s) A(2 pi sigma_s opd_n - phase_n, R_n(t_s))

with ``G`` and ``R`` Chebyshev series in the mapped wavenumber ``t`` (domain stored in the
bank). Parameters per interferometer: ``[opd, phase, g_0..g_Dg, r_0..r_Dr]`` (P of them);
the additive offset is held at 0 (with two waves it is not identifiable beside gain and R).

All N problems advance together: the Jacobian is (N, S, P), the normal matrices (N, P, P)
are solved in one batched call, and each interferometer has its own damping, so one hard
interferometer does not slow the others. Details:

* **Robust loss** (optional): Huber on residuals scaled by each interferometer's robust
  noise level (1.4826 x MAD), solved by iteratively reweighted least squares: an outlier
  line (a dead pixel, a saturated or mis-tuned line) costs linearly, not quadratically.
* **Bounds** ``0 <= R(sigma) < 1`` and ``G(sigma) >= 0`` on a dense grid over the whole
  domain (hence on every line): a stiff quadratic penalty on violations while iterating (a
  step cut short at a bound stalls there; a penalty lets the solution slide along it), then
  the constant term is shifted by the small remaining violation, so the stored series never
  leaves the physical range. From there the fit is polished with the points on a bound
  held by the penalty's curvature, or, asked for (``active_set``: the fits a search
  reports), with R's held exactly (an active set, :class:`_ActiveSet`): the points of R on
  a bound are constraints of each step, released where their multiplier says so, added
  where a step would cross.
* **Uncertainty**: ``cov = s^2 (J^T W J)^-1`` at the solution, ``s^2`` the weighted residual
  variance with S - P degrees of freedom.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from numpy.polynomial import chebyshev
from numpy.typing import NDArray

from calibration.initialise import InitialGuess, mapped
from onboard.physics import fabry_perot
from onboard.physics.interferometers import MAX_REFLECTIVITY, InterferometerBank

#: Huber threshold in robust standard deviations: 95 % efficiency on Gaussian noise.
HUBER_C = 1.345
#: Points of the mapped domain [-1, 1] where the penalty watches the bounds while iterating
#: (Chebyshev points, denser than any line spacing a degree <= 12 series can resolve);
#: the final shift uses each series' exact extrema.
BOUND_GRID = np.cos(np.linspace(0.0, np.pi, 129))
#: Upper bound kept strictly below the bank's clip so the fit never relies on clipping.
R_UPPER = MAX_REFLECTIVITY - 0.005
#: A fit whose shift into the bounds moved a coefficient by more than SHIFTED (in R; in
#: gain, times the mean response) is polished there for POLISH_ITERATIONS steps, the points
#: within NEAR_BOUND of a bound held (see :func:`fit`); with R's held as an active set, for
#: up to ACTIVE_ITERATIONS. The active set changes by a point per step, and a polish of
#: the reported fits keeps finding lower costs well past 8 steps: of wfai_1's 408 fits on
#: the bound, 102 went 0.1 % or more lower with 8, 120 with 20 (12 steps cost 1.2x 8, 40
#: 1.4x); imagaz_1's dense scan found 20 fits lower with 20 steps, 14 with 40.
SHIFTED, NEAR_BOUND, POLISH_ITERATIONS, ACTIVE_ITERATIONS = 1e-7, 1e-4, 4, 40
#: Points of a reflectivity series held on its bounds at once (a degree-5 series has at
#: most 2 interior minima and the two ends; see :class:`_ActiveSet`).
ACTIVE_MAX = 4


@dataclass
class FitResult:
    """A fitted bank and its diagnostics (N interferometers, S lines, P parameters).

    rms_normalised (N,): RMS(fit - data) / mean(data), the figure of merit reported.
    residuals (N, S): fit - data. outliers (N, S): lines left out (weight 0).
    sigma_params (N, P): one-sigma uncertainties of [opd, phase, gain_cheb.., refl_cheb..].
    iterations: LM iterations used. converged (N,): relative cost change below tolerance.
    robust_cost (N,): the cost minimised (least squares, or Huber at ``huber_scale``).
    huber_scale (N,): the Huber loss's noise scale of each robust fit, NaN for least squares.
    """

    bank: InterferometerBank
    residuals: NDArray[np.float64]
    rms_normalised: NDArray[np.float64]
    outliers: NDArray[np.bool_]
    sigma_params: NDArray[np.float64]
    iterations: int
    converged: NDArray[np.bool_]
    robust_cost: NDArray[np.float64]
    huber_scale: NDArray[np.float64]

    def bic(self) -> NDArray[np.float64]:
        """Bayesian information criterion per interferometer, Gaussian likelihood of the
        residuals: ``S ln(RSS / S) + P ln S``."""
        n, s = self.residuals.shape
        p = self.sigma_params.shape[1]
        rss = np.maximum((self.residuals**2).sum(1), 1e-300)
        return s * np.log(rss / s) + p * np.log(s)


def _unpack(theta: NDArray, dg: int, centre: float) -> tuple[NDArray, NDArray, NDArray, NDArray]:
    """OPD, phase, gain and reflectivity series of ``theta``, whose second column is the
    phase at the domain's centre wavenumber ``psi = phase - 2 pi centre opd`` (see
    :class:`_Basis`)."""
    opd = theta[:, 0]
    return opd, theta[:, 1] + 2.0 * np.pi * centre * opd, theta[:, 2 : 3 + dg], theta[:, 3 + dg :]


@dataclass
class _Basis:
    """Chebyshev design matrices and their column outer products (for the normal matrix)."""

    sigma: NDArray  # (S,)
    vg: NDArray  # (S, Dg+1)
    vr: NDArray  # (S, Dr+1)
    centre: float  # centre wavenumber of the domain

    def __post_init__(self) -> None:
        # the phase is fitted as the phase at the centre of the domain, so the OPD's column
        # is the derivative at fixed centre phase: ``2 pi (sigma - centre)``. With the phase
        # at sigma = 0 instead, OPD and phase are almost collinear (sigma spans a fraction of
        # its value) and the solver stalls short of the minimum.
        self.two_pi_sigma = 2.0 * np.pi * (self.sigma - self.centre)
        self.vgg = np.einsum("sj,sk->sjk", self.vg, self.vg).reshape(len(self.sigma), -1)
        self.vgr = np.einsum("sj,sk->sjk", self.vg, self.vr).reshape(len(self.sigma), -1)
        self.vrr = np.einsum("sj,sk->sjk", self.vr, self.vr).reshape(len(self.sigma), -1)


def _phase(theta: NDArray, b: _Basis, dg: int) -> NDArray:
    """The interference phase (N, S) of the model at ``theta``."""
    opd, phase, _, _ = _unpack(theta, dg, b.centre)
    return fabry_perot.phase_argument(b.sigma[None, :], opd[:, None], phase[:, None])


def _model(theta: NDArray, b: _Basis, dg: int, harmonics: int | None, cos_x: NDArray | None = None,
           values: bool = True) -> tuple[NDArray | None, tuple[NDArray, NDArray, NDArray, NDArray]]:
    """Model (N, S) and the factors of its Jacobian: the OPD column ``d_opd`` (N, S), the
    phase column is ``-d_opd / (2 pi sigma)``, gain columns ``A T_j`` and reflectivity
    columns ``G dA/dR T_j`` (returned as A (N, S) and G dA/dR (N, S)). ``cos_x``: the cosine
    of the phase, where :func:`_values` computed it at the same ``theta``; ``values=False``:
    the Jacobian's factors alone (the model is None: a rebuild of the normal equations has
    the residuals already)."""
    _, _, gc, rc = _unpack(theta, dg, b.centre)
    gain = gc @ b.vg.T  # (N, S)
    refl = rc @ b.vr.T
    a, a_x, a_r = fabry_perot.response_shape_and_derivatives(_phase(theta, b, dg), refl, harmonics,
                                                             cos_x)
    gx = gain * a_x
    return (gain * a if values else None), (gx * b.two_pi_sigma, -gx, a, gain * a_r)


def _values(theta: NDArray, b: _Basis, dg: int, harmonics: int | None) -> tuple[NDArray, NDArray]:
    """The model (N, S) alone (a trial step needs no derivatives) and the cosine of its
    phase (the derivatives' where the step is taken: :func:`_model`'s ``cos_x``)."""
    _, _, gc, rc = _unpack(theta, dg, b.centre)
    c = np.cos(_phase(theta, b, dg))
    return (gc @ b.vg.T) * fabry_perot.response_shape(c, rc @ b.vr.T, harmonics), c


def _normal_equations(w: NDArray | None, r: NDArray, parts: tuple, b: _Basis, dg: int, dr: int
                      ) -> tuple[NDArray, NDArray]:
    """``J^T W J`` (N, P, P) and ``J^T W r`` (N, P) by blocks, as (N, S) x (S, k) products:
    no (N, S, P) Jacobian is ever formed."""
    j_opd, j_ph, a, ga_r = parts
    n = r.shape[0]
    ng, nr = dg + 1, dr + 1
    p = 2 + ng + nr
    sg, sr = slice(2, 2 + ng), slice(2 + ng, p)
    m = np.empty((n, p, p))
    def weighted(q: NDArray) -> NDArray:
        return q if w is None else w * q  # unit weights (None): no product

    wa, wgr = weighted(a), weighted(ga_r)
    scal = (j_opd, j_ph)
    for i, ji in enumerate(scal):
        wji = weighted(ji)
        for k in range(i, 2):
            m[:, i, k] = m[:, k, i] = (wji * scal[k]).sum(1)
        m[:, i, sg] = m[:, sg, i] = (wji * a) @ b.vg
        m[:, i, sr] = m[:, sr, i] = (wji * ga_r) @ b.vr
    m[:, sg, sg] = ((wa * a) @ b.vgg).reshape(n, ng, ng)
    gr = ((wa * ga_r) @ b.vgr).reshape(n, ng, nr)
    m[:, sg, sr] = gr
    m[:, sr, sg] = gr.transpose(0, 2, 1)
    m[:, sr, sr] = ((wgr * ga_r) @ b.vrr).reshape(n, nr, nr)
    wr = weighted(r)
    g = np.empty((n, p))
    g[:, 0] = (wr * j_opd).sum(1)
    g[:, 1] = (wr * j_ph).sum(1)
    g[:, sg] = (wr * a) @ b.vg
    g[:, sr] = (wr * ga_r) @ b.vr
    return m, g


def _huber(u: NDArray) -> tuple[NDArray, NDArray]:
    """Huber cost and IRLS weight of scaled residuals ``u``."""
    au = np.abs(u)
    cost = np.where(au <= HUBER_C, 0.5 * u * u, HUBER_C * (au - 0.5 * HUBER_C))
    weight = np.where(au <= HUBER_C, 1.0, HUBER_C / np.maximum(au, 1e-300))
    return cost, weight


class _BoundPenalty:
    """Quadratic penalty ``0.5 kappa^2 sum violation^2`` of a Chebyshev series leaving
    ``[lower, upper]`` at the constraint points: lets the solver slide along a bound
    (a step cut short at the boundary stalls there); the small leftover violation is
    removed by :func:`_lift_into_bounds` at the end.

    ``near`` (N,): points this close to a bound, inside it, count as on it in the Gauss-Newton
    Hessian (0 while iterating; the polish after the shift sets it, see :func:`fit`)."""

    def __init__(self, v: NDArray, lower: float, upper: float, kappa: NDArray) -> None:
        self.v, self.lower, self.upper = v, lower, upper
        self.k2 = kappa**2  # (N,)
        self.vv = np.einsum("mj,mk->mjk", v, v).reshape(v.shape[0], -1)
        self.near = np.zeros_like(self.k2)

    def violation(self, coef: NDArray, val: NDArray | None = None) -> NDArray:
        val = coef @ self.v.T if val is None else val
        return np.minimum(val - self.lower, 0.0) + np.maximum(val - self.upper, 0.0)

    def cost(self, coef: NDArray, rows: NDArray | slice) -> NDArray:
        return 0.5 * self.k2[rows] * (self.violation(coef) ** 2).sum(1)

    def normal(self, coef: NDArray, rows: NDArray | slice) -> tuple[NDArray, NDArray]:
        """Gauss-Newton Hessian (n, q, q) and gradient (n, q) of the penalty; only rows
        with a violation are computed."""
        val = coef @ self.v.T
        viol = self.violation(coef, val)
        if self.near.any():  # the points on a bound: outside it or within ``near`` of it
            near = self.near[rows][:, None]
            on = (val - self.lower < near) | (self.upper - val < near)
        else:
            on = viol != 0
        q = coef.shape[1]
        h = np.zeros((coef.shape[0], q, q))
        g = np.zeros((coef.shape[0], q))
        hit = np.flatnonzero(on.any(axis=1))
        if hit.size:
            k2 = self.k2[rows][hit]
            h[hit] = (on[hit].astype(float) @ self.vv).reshape(-1, q, q) * k2[:, None, None]
            g[hit] = (viol[hit] @ self.v) * k2[:, None]
        return h, g


_RANGE_GRID = np.cos(np.linspace(0.0, np.pi, 513))


@functools.cache
def _derivative(size: int) -> NDArray[np.float64]:
    """The matrix (size, size - 1) taking Chebyshev coefficients to their derivative's (a
    product instead of ``chebder``'s per-call set-up: the active set asks every step)."""
    return chebyshev.chebder(np.eye(size), axis=1)


def _extremum_at(coef: NDArray, start: NDArray, steps: int = 6) -> NDArray[np.float64]:
    """Each series' local extremum nearest ``start`` (``steps`` of Newton on the
    derivative, kept inside [-1, 1]), vectorised over rows: its location."""
    d1 = coef @ _derivative(coef.shape[1])
    d2 = d1 @ _derivative(d1.shape[1]) if coef.shape[1] > 2 else np.zeros_like(d1[:, :1])
    t = start.copy()
    for _ in range(steps):
        v = chebyshev.chebvander(t, d1.shape[1] - 1)  # (d2's columns are its first ones)
        f1 = (v * d1).sum(1)
        f2 = (v[:, : d2.shape[1]] * d2).sum(1)
        step = np.where(np.abs(f2) > 1e-12, f1 / np.where(np.abs(f2) > 1e-12, f2, 1.0), 0.0)
        t = np.clip(t - step, -1.0, 1.0)
    return t


def _extremum(coef: NDArray, start: NDArray) -> NDArray[np.float64]:
    """Each series' value at the local extremum nearest ``start`` (see :func:`_extremum_at`)."""
    return (chebyshev.chebvander(_extremum_at(coef, start), coef.shape[1] - 1) * coef).sum(1)


class _ActiveSet:
    """The points where each reflectivity series rests on a bound, held there exactly while
    the fit is polished on its bounds (an active-set method): its local minima on 0 and
    maxima on ``R_UPPER``, at most ``ACTIVE_MAX`` per series. Each step solves the
    Levenberg-Marquardt equations with those points' values fixed (Lagrange multipliers in
    one batched KKT solve); a point whose multiplier says the cost falls if it leaves the
    bound is released, and a step that would take another point across a bound adds that
    point instead of being taken. A penalty that only holds the points it finds on the bound
    cannot release one, and the fit stays in whichever set of points the shift into the
    bounds left it on (on wfai_1 27 fits ended 0.1-1 % above a minimum at the same OPD).

    ``t`` (N, ACTIVE_MAX): the points' locations in the mapped domain (NaN: a free slot);
    ``side``: +1 on the lower bound, -1 on the upper."""

    def __init__(self, n: int, degree: int) -> None:
        self.t = np.full((n, ACTIVE_MAX), np.nan)
        self.side = np.zeros((n, ACTIVE_MAX))
        self.degree = degree
        self.v = chebyshev.chebvander(BOUND_GRID, degree)

    def add_crossing(self, coef: NDArray, rows: NDArray, tol: float) -> NDArray[np.bool_]:
        """Hold the local minima of ``coef`` (series of ``rows``) under ``tol`` and its maxima
        over ``R_UPPER - tol`` that are not held yet (the lowest first); True where one was."""
        vals = coef @ self.v.T
        added = np.zeros(len(rows), dtype=bool)
        for side, u in ((1.0, vals - tol), (-1.0, R_UPPER - tol - vals)):
            edge = np.full((len(u), 1), np.inf)
            pad = np.concatenate([edge, u, edge], axis=1)
            k, i = np.nonzero((u <= pad[:, :-2]) & (u <= pad[:, 2:]) & (u < 0.0))
            t = BOUND_GRID[i]
            # not held yet (a held point is within a grid step or two of its grid minimum)
            new = ~(np.abs(self.t[rows[k]] - t[:, None]) < 0.05).any(axis=1)
            k, t = k[new], t[new]
            inner = np.abs(t) < 1.0
            if inner.any():
                t[inner] = _extremum_at(coef[k[inner]], t[inner])
            for kk, tt in zip(k, t, strict=True):  # (a handful per call)
                free = np.flatnonzero(np.isnan(self.t[rows[kk]]))
                if free.size:
                    self.t[rows[kk], free[0]], self.side[rows[kk], free[0]] = tt, side
                    added[kk] = True
        return added

    def constraints(self, coef: NDArray, rows: NDArray) -> tuple[NDArray, NDArray]:
        """The held points of ``rows``, relocated to their series' extrema (the ends stay):
        the constraint rows ``C`` (n, ACTIVE_MAX, degree+1, zero in a free slot) and how far
        each point is from its target just inside its bound, ``e`` (``C d = e`` holds it)."""
        t = self.t[rows]
        inner = np.isfinite(t) & (np.abs(t) < 1.0)
        k, j = np.nonzero(inner)
        if k.size:
            t[k, j] = _extremum_at(coef[k], t[k, j], 2)  # (a step moves them little)
            # two points that slid onto one extremum are one constraint
            for a in range(1, ACTIVE_MAX):
                t[:, a] = np.where((np.abs(t[:, :a] - t[:, a : a + 1]) < 0.05).any(axis=1),
                                   np.nan, t[:, a])
            self.t[rows] = t
        held = np.isfinite(t)
        c = chebyshev.chebvander(np.where(held, t, 0.0), self.degree) * held[:, :, None]
        target = np.where(self.side[rows] > 0, 2e-6, R_UPPER - 2e-6)
        e = np.where(held, target - np.einsum("nmj,nj->nm", c, coef), 0.0)
        return c, e

    def release(self, rows: NDArray, nu: NDArray) -> NDArray[np.bool_]:
        """Free, in each of ``rows``, the held point with the most negative multiplier
        (``nu`` from :func:`_kkt_step`), if any; True where one was freed."""
        mu = np.where(np.isfinite(self.t[rows]), -self.side[rows] * nu, np.inf)
        j = np.argmin(mu, axis=1)
        out = mu[np.arange(len(rows)), j] < 0.0
        self.t[rows[out], j[out]] = np.nan
        return out


def _kkt_step(lhs: NDArray, grad: NDArray, c: NDArray, e: NDArray, cols: slice
              ) -> tuple[NDArray, NDArray]:
    """The damped Gauss-Newton step ``d`` (n, P) with ``C d[cols] = e`` (the held points)
    and the constraints' multipliers ``nu`` (n, M): one batched solve of the KKT system (a
    free slot's row is the identity, its multiplier 0)."""
    n, p = grad.shape
    m = c.shape[1]
    cols = slice(cols.start, cols.start + c.shape[2])
    kkt = np.zeros((n, p + m, p + m))
    kkt[:, :p, :p] = lhs
    kkt[:, p:, cols] = c
    kkt[:, cols, p:] = c.transpose(0, 2, 1)
    free: NDArray[np.bool_] = ~np.any(c, axis=2)
    kkt[:, p:, p:] = np.eye(m)[None] * free[:, :, None]
    sol = np.linalg.solve(kkt, np.concatenate([-grad, e], axis=1)[:, :, None])[:, :, 0]
    return sol[:, :p], sol[:, p:]


def series_range(coef: NDArray, lower: float | None = None, upper: float | None = None
                 ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Minimum and maximum over [-1, 1] of each Chebyshev series (rows of ``coef``): located
    on a 513-point grid (the fit's series, of degree <= 8, have at most 7 extrema, each
    resolved there: within 1e-8 of a 200 001-point grid's over 2 000 random series of
    degree 8) and polished by Newton's method on the derivative to the exact extremum.
    Given ``lower`` / ``upper``, only the extrema within a hundredth of the series' scale of
    them (or beyond) are polished, the others keep the grid's value (within 1e-3 of the
    scale of the exact one): a fit asks only whether its series leave their bounds,
    thousands of times."""
    vals = coef @ chebyshev.chebvander(_RANGE_GRID, coef.shape[1] - 1).T
    lo, hi = vals.min(1), vals.max(1)
    if coef.shape[1] < 3:
        return lo, hi
    slack = 0.01 * np.abs(vals).max(axis=1)
    for ext, gap, arg, pick in ((lo, None if lower is None else lo - lower, np.argmin, np.minimum),
                                (hi, None if upper is None else upper - hi, np.argmax, np.maximum)):
        rows = np.arange(len(ext)) if gap is None else np.flatnonzero(gap < slack)
        if rows.size:
            ext[rows] = pick(ext[rows], _extremum(coef[rows], _RANGE_GRID[arg(vals[rows], axis=1)]))
    return lo, hi


def _lift_into_bounds(coef: NDArray, lower: float, upper: float) -> NDArray:
    """Shift each series' constant term (T_0 = 1) by the least amount that puts it inside
    ``[lower, upper]`` over the whole domain [-1, 1] (exactly: see :func:`series_range`);
    a series whose range is wider than the bounds is first scaled down about its middle."""
    out = coef.copy()
    lo, hi = series_range(out, lower, upper)
    room = upper - lower - 4e-6
    near = np.flatnonzero((hi - lo) > 0.9 * room)  # (both extrema exact where it matters)
    if near.size:
        lo[near], hi[near] = series_range(out[near])
    wide = (hi - lo) > room
    if wide.any():
        mid = (hi + lo) / 2
        f = np.where(wide, room / np.maximum(hi - lo, 1e-300), 1.0)
        out[:, 1:] *= f[:, None]
        out[:, 0] = mid + (out[:, 0] - mid) * f
        lo, hi = series_range(out, lower, upper)
    out[:, 0] += np.where(lo < lower, lower - lo + 2e-6, 0.0) + np.where(hi > upper, upper - hi - 2e-6, 0.0)
    return out


def fit(
    y: NDArray,
    sigma: NDArray,
    guess: InitialGuess,
    harmonics: int | None = None,
    reflectivity_degree: int = 5,
    robust: bool = True,
    line_weights: NDArray | None = None,
    start: InterferometerBank | None = None,
    max_iterations: int = 100,
    tolerance: float = 1e-6,
    uncertainty: bool = True,
    fixed_opd: bool = False,
    exact_bounds: bool = True,
    huber_scale: NDArray | None = None,
    active_set: bool = False,
) -> FitResult:
    """Fit all interferometers' responses ``y`` (N, S) at ``sigma`` (S,) from ``guess``.

    ``harmonics``: None for the Airy function, K for the K-harmonic series.
    ``line_weights`` (N, S) or (S,): each residual is multiplied by its weight (the inverse
    of its noise level), e.g. the source's power when ``y`` is data divided by it; 0 drops
    a line. ``start``: continue from a fitted bank (same degrees) instead of ``guess``.
    ``uncertainty=False`` leaves ``sigma_params`` NaN (a fit that only ranks candidates
    saves the normal matrix and its pseudo-inverse at the solution). ``fixed_opd``: the OPDs
    stay at their starting values and everything else is fitted (a point of the cost's
    profile in OPD; its ``sigma_params`` are NaN). ``exact_bounds=False`` leaves the series
    where the bound penalty put them (violations of order 1e-3) and the penalty in the
    cost: enough to rank starts, without the exact range search of the shift.
    ``huber_scale`` (N,): with ``robust``, the Huber loss's noise scale of each
    interferometer, held (by default each is 1.4826 x MAD of its starting residuals, which
    differ from start to start: fits from several starts compare only at one scale); NaN
    fits that interferometer by least squares (robust and least-squares fits in one batch).
    ``active_set``: the polish on the bounds holds R's points on a bound exactly (see
    :class:`_ActiveSet`) rather than by the penalty's curvature: it reaches the minimum at
    the fit's OPD where the penalty stops 0.1-20 % above it with other points on the
    bound, at up to ten times the polish's steps and a KKT solve each; for the fits a
    search reports, not for those that only rank its starts. Every series on a bound is
    polished, not only those the shift moved: ``max_iterations=0`` polishes a fitted
    ``start`` on its bounds.
    """
    y = np.asarray(y, dtype=float)
    sigma = np.asarray(sigma, dtype=float)
    n, s = y.shape
    domain = guess.sigma_domain
    dg = guess.gain_cheb.shape[1] - 1
    dr = reflectivity_degree
    t = mapped(sigma, domain)
    centre = 0.5 * (domain[0] + domain[1])
    basis = _Basis(sigma, chebyshev.chebvander(t, dg), chebyshev.chebvander(t, dr), centre)
    tb = BOUND_GRID
    vgb, vrb = chebyshev.chebvander(tb, dg), chebyshev.chebvander(tb, dr)
    theta = np.zeros((n, 4 + dg + dr))
    theta[:, 0] = guess.opd_um
    theta[:, 1] = guess.phase_rad
    gc = guess.gain_cheb.copy()
    low = (gc @ vgb.T).min(axis=1) <= 0  # a gain fit that dips below 0 starts flat instead
    gc[low] = 0.0
    gc[low, 0] = np.maximum(np.abs(y[low]).mean(axis=1), 1e-6)
    theta[:, 2 : 3 + dg] = gc
    if guess.reflectivity_cheb is not None and guess.reflectivity_cheb.shape[1] - 1 <= dr:
        theta[:, 3 + dg : 4 + dg + guess.reflectivity_cheb.shape[1] - 1] = guess.reflectivity_cheb
    else:
        theta[:, 3 + dg] = np.clip(guess.reflectivity, 0.02, R_UPPER - 0.05)
    if start is not None:
        theta[:, 0], theta[:, 1] = start.opd_um, start.phase_rad
        theta[:, 2 : 3 + dg], theta[:, 3 + dg :] = start.gain_cheb, start.reflectivity_cheb
    theta[:, 1] -= 2.0 * np.pi * centre * theta[:, 0]
    sg, sr = slice(2, 3 + dg), slice(3 + dg, None)

    # unit weights (least squares, no line weights) are None: their products are skipped
    lw = None if line_weights is None and not robust else (
        np.ones((n, s)) if line_weights is None else np.broadcast_to(line_weights, (n, s)))
    if max_iterations > 0:
        f, parts = _model(theta, basis, dg, harmonics)
    else:  # (a polish only: the derivatives are built for the rows it moves)
        f = _values(theta, basis, dg, harmonics)[0]
    r = f - y
    scale = np.ones(n)
    if robust and huber_scale is not None:
        scale = np.asarray(huber_scale, dtype=float).copy()
    elif robust:
        scale = robust_scale(r * lw, y * lw)
    # a bound violation of 0.01 costs as much as 100 lines at 3 robust sigma
    level = np.abs(y if lw is None else y * lw).mean(axis=1)
    least_squares = ~np.isfinite(scale)  # rows of a robust batch fitted by least squares
    scale[least_squares] = 1.0
    kappa = 300.0 * np.sqrt(s / tb.size) * np.maximum(scale, 1e-3 * level) * np.sqrt(10.0)
    # with a scale this large the Huber loss is the squared residual / 2, its weight 1
    scale[least_squares] = 1e100
    pen_r = _BoundPenalty(vrb, 0.0, R_UPPER, kappa)
    pen_g = _BoundPenalty(vgb, 0.0, np.inf, kappa / np.maximum(level, 1e-300))

    def cost_and_weights(res: NDArray, th: NDArray, rows: NDArray | slice = slice(None)
                         ) -> tuple[NDArray, NDArray | None]:
        """Cost and IRLS weights (of the unweighted residuals) of some rows (None: unit)."""
        pen = pen_r.cost(th[:, sr], rows) + pen_g.cost(th[:, sg], rows)
        if lw is None:
            return 0.5 * (res**2).sum(1) + pen, None
        u = res * lw[rows]
        if not robust:
            return 0.5 * (u**2).sum(1) + pen, lw[rows] ** 2
        c, w = _huber(u / scale[rows, None])
        return (c * scale[rows, None] ** 2).sum(1) + pen, w * lw[rows] ** 2

    def normal(rows: NDArray | slice, parts_rows: tuple | None = None,
               cos_x: NDArray | None = None) -> tuple[NDArray, NDArray]:
        """Normal matrix (n, P, P) and gradient (n, P) of the cost, penalty included, at
        ``theta[rows]`` (``cos_x``: the cosine of its phase, if known)."""
        th = theta[rows]
        if parts_rows is None:
            _, parts_rows = _model(th, basis, dg, harmonics, cos_x, values=False)
        a, g = _normal_equations(None if w is None else w[rows], r[rows], parts_rows, basis, dg, dr)
        for pen, sl in ((pen_r, sr), (pen_g, sg)):
            h, gp = pen.normal(th[:, sl], rows)
            a[:, sl, sl] += h
            g[:, sl] += gp
        return a, g

    cost, w = cost_and_weights(r, theta)
    if max_iterations > 0:
        normal_all, grad_all = normal(slice(None), parts)
    else:  # (a polish only: built for the rows it moves)
        normal_all, grad_all = np.empty((n,) + (theta.shape[1],) * 2), np.empty(theta.shape)
    lam = np.full(n, 1e-3)
    converged = np.zeros(n, dtype=bool)
    eye = np.eye(theta.shape[1])
    iterations = 0
    limit = max_iterations
    lifted: NDArray | None = None
    touched = np.arange(0)
    for stage in ("free", "polish"):
        if stage == "polish":
            # the shift into the bounds moves a series that ends on a bound, and nothing else
            # follows it: from the shifted point, steps in which the points on the bound are
            # held (R's exactly, as an active set; the gain's by their curvature in the
            # model) let the phase, gain and the rest of the series adapt (on imspoc_uv_2 the
            # shift alone left 0.2-5 % of the cost of 6 interferometers on the table)
            if not exact_bounds:
                break
            before = theta.copy()
            theta[:, sr] = _lift_into_bounds(theta[:, sr], 0.0, R_UPPER)
            theta[:, sg] = _lift_into_bounds(theta[:, sg], 0.0, np.inf)
            shifted = ((np.abs(theta[:, sr] - before[:, sr]).max(axis=1) > SHIFTED)
                       | (np.abs(theta[:, sg] - before[:, sg]).max(axis=1) > SHIFTED * level))
            if active_set:  # and those already on a bound (a fit polished again)
                lo_r, hi_r = series_range(theta[:, sr], NEAR_BOUND, R_UPPER - NEAR_BOUND)
                shifted |= (lo_r < NEAR_BOUND) | (hi_r > R_UPPER - NEAR_BOUND)
            lifted = hit = np.flatnonzero(shifted)  # (the others are where the shift put them)
            touched = np.flatnonzero((theta != before).any(axis=1) | shifted)
            if hit.size == 0:
                break
            if active_set:
                active = _ActiveSet(n, dr)
                active.add_crossing(theta[hit, sr], hit, NEAR_BOUND)
            else:
                pen_r.near[:] = NEAR_BOUND
            pen_g.near[:] = NEAR_BOUND * level
            first = converged.copy()
            f_hit, parts_hit = _model(theta[hit], basis, dg, harmonics)
            r[hit] = f_hit - y[hit]
            converged[:] = True
            converged[hit] = False
            lam[hit] = 1e-3
            cost[hit], w_hit = cost_and_weights(r[hit], theta[hit], hit)
            if w is not None and w_hit is not None:
                w[hit] = w_hit
            normal_all[hit], grad_all[hit] = normal(hit, parts_hit)
            limit = iterations + (ACTIVE_ITERATIONS if active_set else POLISH_ITERATIONS)
        cost_10 = cost.copy()
        while iterations < limit and not converged.all():
            iterations += 1
            # only the interferometers still moving are computed; a trial is evaluated without
            # derivatives, and the normal equations are rebuilt only where a step was taken
            # (about half the trials are rejected, and a rejected row keeps its matrix)
            act = np.flatnonzero(~converged)
            a = normal_all[act]
            d = np.maximum(np.einsum("npp->np", a), 1e-12)
            lhs = a + lam[act, None, None] * d[:, :, None] * eye[None]
            grad = grad_all[act]
            if fixed_opd:  # the OPD's row and column decoupled, its gradient zero: no OPD step
                lhs[:, 0, :] = lhs[:, :, 0] = 0.0
                lhs[:, 0, 0] = 1.0
                grad[:, 0] = 0.0
            crossed = np.zeros(act.size, dtype=bool)
            if stage == "polish" and active_set:
                c, e = active.constraints(theta[act, sr], act)
                step, nu = _kkt_step(lhs, grad, c, e, sr)
                freed = np.flatnonzero(active.release(act, nu))
                if freed.size:
                    c, e = active.constraints(theta[act[freed], sr], act[freed])
                    step[freed] = _kkt_step(lhs[freed], grad[freed], c, e, sr)[0]
                trial = theta[act] + step
                crossed = active.add_crossing(trial[:, sr], act, 0.0)
            else:
                trial = theta[act] - np.linalg.solve(lhs, grad[:, :, None])[:, :, 0]
            f_t, cos_t = _values(trial, basis, dg, harmonics)
            r_t = f_t - y[act]
            cost_t, w_t = cost_and_weights(r_t, trial, act)
            better = (cost_t < cost[act]) & ~crossed
            rel = (cost[act] - cost_t) / np.maximum(cost[act], 1e-300)
            ok = act[better]
            theta[ok] = trial[better]
            r[ok], cost[ok] = r_t[better], cost_t[better]
            if w is not None and w_t is not None:
                w[ok] = w_t[better]
            lam[act] = np.where(better, np.maximum(lam[act] / 3.0, 1e-9),
                                np.where(crossed, lam[act], np.minimum(lam[act] * 4.0, 1e9)))
            converged[act] = (better & (rel < tolerance)) | (lam[act] >= 1e9)
            if iterations % 10 == 0:
                # rows crawling (under 1e-5 relative over 10 iterations) have converged too
                crawl = (cost_10 - cost) / np.maximum(cost_10, 1e-300) < 10 * tolerance
                converged |= crawl
                cost_10 = cost.copy()
            keep = ~converged[ok]
            moving = ok[keep]
            if moving.size and iterations < limit:  # (the last step needs no rebuild)
                # the trial's cosines serve the derivatives at the point taken: a third of
                # the fit's cosines, its largest cost, saved (same numbers)
                cos_moving = cos_t[np.flatnonzero(better)[keep]]
                normal_all[moving], grad_all[moving] = normal(moving, cos_x=cos_moving)
        if stage == "polish":  # (a polish cut short leaves a fit as converged as it was)
            converged = first
    sig = np.full(theta.shape, np.nan)
    if lifted is not None and lifted.size:
        # all were shifted into the bounds before the polish; the polished ones can have
        # left them again (by the penalty's 1e-3 at most): shift those out
        theta[lifted, sr] = _lift_into_bounds(theta[lifted, sr], 0.0, R_UPPER)
        theta[lifted, sg] = _lift_into_bounds(theta[lifted, sg], 0.0, np.inf)
    if uncertainty and not fixed_opd:
        f, parts = _model(theta, basis, dg, harmonics)
        r = f - y
        _, w = cost_and_weights(r, theta)
        # from the weighted normal matrix at the solution
        a, _ = _normal_equations(w, r, parts, basis, dg, dr)
        dof = max(s - theta.shape[1], 1)
        s2 = ((1.0 if w is None else w) * r * r).sum(1) / dof
        cov = _inverse(a) * s2[:, None, None]
        var = np.einsum("npp->np", cov)
        # the phase's variance from the centre phase's: phase = psi + 2 pi centre opd
        k = 2.0 * np.pi * centre
        var[:, 1] = var[:, 1] + k * k * cov[:, 0, 0] + 2.0 * k * cov[:, 0, 1]
        sig = np.sqrt(np.maximum(var, 0.0))
    elif touched.size:  # (the residuals of the fits the shifts into the bounds moved)
        r[touched] = _values(theta[touched], basis, dg, harmonics)[0] - y[touched]
    if exact_bounds:
        # the cost of the bank returned (after the shift into the bounds), so that fits
        # from different starts compare by what they report
        cost, _ = cost_and_weights(r, theta)
    opd, phase, gcf, rcf = _unpack(theta, dg, centre)
    bank = InterferometerBank(
        opd_um=opd.copy(), phase_rad=np.angle(np.exp(1j * phase)), gain_cheb=gcf.copy(),
        reflectivity_cheb=rcf.copy(), offset=np.zeros(n), sigma_domain=domain, harmonics=harmonics,
    )
    return FitResult(
        bank=bank,
        residuals=r,
        rms_normalised=rms_normalised(r, y),
        outliers=np.zeros((n, s), dtype=bool) if lw is None else lw == 0,
        sigma_params=sig,
        iterations=iterations,
        converged=converged,
        robust_cost=cost,
        huber_scale=np.where(least_squares | (not robust), np.nan, scale),
    )


def _inverse(a: NDArray) -> NDArray[np.float64]:
    """Inverses of the normal matrices (n, P, P): by LU (a fifth of the pseudo-inverse's
    SVD time on a bank), the pseudo-inverse where that fails or does not invert (singular
    or ill-conditioned: a parameter the data do not constrain keeps a finite variance)."""
    eye = np.eye(a.shape[1])
    try:
        out = np.linalg.inv(a)
        bad = ~(np.abs(a @ out - eye).max(axis=(1, 2)) < 1e-6)
    except np.linalg.LinAlgError:
        out, bad = np.empty(a.shape), np.ones(len(a), dtype=bool)
    if bad.any():
        out[bad] = np.linalg.pinv(a[bad])
    return out


def robust_scale(residuals: NDArray, y: NDArray) -> NDArray[np.float64]:
    """Each interferometer's robust noise level, 1.4826 x MAD of its (weighted) residuals,
    floored at 1e-9 of its mean response (a perfect fit has no noise to scale by)."""
    u = residuals
    scale = 1.4826 * np.median(np.abs(u - np.median(u, axis=1, keepdims=True)), axis=1)
    return np.maximum(scale, 1e-9 * np.abs(y).mean(axis=1) + 1e-300)


def rms_normalised(residuals: NDArray, y: NDArray) -> NDArray[np.float64]:
    """Mean-normalised RMS residual per interferometer: ``RMS(fit - data) / mean(data)``."""
    return np.sqrt((residuals**2).mean(axis=1)) / np.abs(np.asarray(y).mean(axis=1))


def subset_result(r: FitResult, rows: NDArray) -> FitResult:
    """The interferometers ``rows`` of a fit."""
    return FitResult(bank_rows(r.bank, rows), r.residuals[rows], r.rms_normalised[rows],
                     r.outliers[rows], r.sigma_params[rows], r.iterations, r.converged[rows],
                     r.robust_cost[rows], r.huber_scale[rows])


def bank_rows(bank: InterferometerBank, rows: NDArray) -> InterferometerBank:
    """The interferometers ``rows`` of a bank (repeats allowed: one row per start)."""
    return InterferometerBank.from_arrays(
        {k: (v[rows] if k not in ("sigma_domain", "harmonics") else v)
         for k, v in bank.arrays().items()})


def merge_rows(result: FitResult, part: FitResult, rows: NDArray, y: NDArray) -> FitResult:
    """``result`` with the interferometers ``rows`` replaced by ``part``'s."""
    a = {k: v.copy() for k, v in result.bank.arrays().items()}
    for k, v in part.bank.arrays().items():
        if k not in ("sigma_domain", "harmonics"):
            a[k][rows] = v
    res = result.residuals.copy()
    res[rows] = part.residuals
    sig = result.sigma_params.copy()
    sig[rows] = part.sigma_params
    conv = result.converged.copy()
    conv[rows] = part.converged
    cost = result.robust_cost.copy()
    cost[rows] = part.robust_cost
    scale = result.huber_scale.copy()
    scale[rows] = part.huber_scale
    return FitResult(InterferometerBank.from_arrays(a), res, rms_normalised(res, y),
                     result.outliers, sig, result.iterations + part.iterations, conv, cost, scale)
