"""The global minimum in OPD of every interferometer's fit, and the ones the data leave open.

A least-squares fit from one start stops in the minimum of that start's basin. In OPD the
cost has several: the periodogram's side lobes a resolution cell ``1 / span(sigma)`` apart,
and, with the gain and reflectivity series free, minima a fraction of a cell apart (on
imspoc_uv_2 interferometer 53 stopped at 10.099 µm, cost 0.443, with a minimum at 9.856 µm,
0.346). The search, batched over all interferometers:

1. **Starts** per interferometer: a scan of the OPD over ``SCAN_CELLS`` resolution cells
   around the fit, the ``PEAKS`` highest periodogram peaks (of ``y / gain - 1``) outside
   the fit's main lobe within ``PEAK_WINDOW_CELLS`` of it, the OPD its neighbours'
   trend predicts, and, for a fit ``PHASE_BASIN_RAD`` or more off the data's phase at its
   own OPD, that OPD with the data's phase (refitted whatever the screen says).
2. **Screening** (:func:`_screen`): each start's cost with the data's phase at its OPD, the
   fit's reflectivity and the gain series solved in closed form (the model is linear in it:
   a variable projection, one response evaluation and one small batched solve per start).
   Interferometers with under ``FEW_FRINGES`` fringes across the
   sweep are also profiled finely (``RUGGED_*``: the OPD held, the rest fitted), since
   their gain and reflectivity trade against the OPD and their minima lie a fraction of a
   cell apart, where the screen cannot follow. The screen only ranks: the minimum another
   start leads to is 3-30 % below its screened cost on wfai_1 (the reflectivity's shape
   and the phase must change with the OPD), and a grid of reflectivity scales (0.5-1.45
   times the fit's) did not rank those minima better, so it is not used.
3. **Refinement**: each interferometer's best start is fitted freely (all parameters)
   where its screened cost is under the fit's plus ``SCREEN_MARGIN`` noise margins; the refined fit
   replaces the current one where it lowers the cost by ``IMPROVEMENT``. Those that moved
   are searched again from where they landed (``ROUNDS``). The unconverged fits are
   iterated on before the rounds (a lower refinement that converged would otherwise
   replace a fit that goes much lower) and those a round left unconverged after them
   (``POLISH_*``, in passes with the damping started afresh; not the few-fringe ones,
   which crawl).
4. **On the bounds** (:func:`_hold_bounds`): every fit reported whose reflectivity rests
   on a bound (``ON_BOUND``) is polished with R's points on the bound held exactly (an
   active set), from itself and from the data's phase at its OPD, and the lower kept.
   Which points of the series rest on the bound differs from minimum to minimum, and the
   penalty's polish of the search's fits stops in one 0.1-20 % above another at the same
   OPD (a dense scan polishing its points this way found 103 of wfai_1's 672 fits, 21 of
   imagaz_1's 79).
5. **Ambiguity**: where the better and the worse of the two minima are a tenth of a cell
   apart or more and their costs differ by less than the noise (``AMBIGUOUS_CHI2`` in
   units of the residual variance: ``(S - P) delta_cost / cost < AMBIGUOUS_CHI2``, a
   likelihood ratio of e^2 at most), the interferometer is ambiguous; both OPDs are
   reported.

The cost compared is each fit's own: least squares on ``y``, or, for an interferometer with
outlier lines, the Huber loss without those lines at the noise scale held since they were
named (``FitResult.huber_scale``: a Huber cost at each fit's own scale would not compare
from start to start). The two kinds are searched in separate batches. Every fit compared
ends polished on its bounds (:func:`calibration.regression.fit`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from numpy.polynomial import chebyshev
from numpy.typing import NDArray

from calibration.initialise import (
    InitialGuess,
    fringes,
    mapped,
    quadrature_weights,
)
from calibration.regression import (
    NEAR_BOUND,
    R_UPPER,
    FitResult,
    bank_rows,
    fit,
    merge_rows,
    series_range,
    subset_result,
)
from onboard.physics import fabry_perot
from onboard.physics.interferometers import InterferometerBank

#: OPD offsets of the scan around the fit, in resolution cells (wfai_1 has second minima
#: 1.2-1.4 cells away; starts half a cell away, in the fit's own lobe, slid back to it on
#: the slices checked and cost a sixth of the screen).
SCAN_CELLS = (-1.5, -1.25, -1.0, 1.0, 1.25, 1.5)
#: Periodogram peaks tried per interferometer, and how far from the fit they are looked for.
PEAKS, PEAK_WINDOW_CELLS = 2, 4.0
#: Under this many fringes across the sweep an interferometer's OPD is also profiled finely
#: (+- RUGGED_CELLS, RUGGED_STEP_CELLS apart, OPD held, RUGGED_ITERATIONS each).
FEW_FRINGES = 4
RUGGED_CELLS, RUGGED_STEP_CELLS, RUGGED_ITERATIONS = 1.0, 0.25, 4
#: A fit this far (radians) from the data's phase at its own OPD is refitted from it.
PHASE_BASIN_RAD = 0.2
#: Rounds of the search (the next round searches only the interferometers that moved).
ROUNDS = 3
#: Iterations of the refinement of the best start, and of each pass of the last polish of
#: the unconverged fits (a second pass, with the damping started afresh, for those still
#: unconverged: wfai_1 109 stopped 8 % above its minimum with its damping grown, which two
#: steps from a fresh start reach).
REFINE_ITERATIONS, POLISH_ITERATIONS, POLISH_PASSES = 30, 60, 2
#: A start is refined where its screened cost is under the fit's plus this many noise
#: margins (``AMBIGUOUS_CHI2 / (S - P)``): the screen holds the fit's reflectivity and
#: overestimates a start that needs another (wfai_1's minima 1.3 cells away screened up to
#: 4 margins above the fit; with one margin, 4 of 5 on interferometers 150-179 were missed).
SCREEN_MARGIN = 4.0
#: A refined start replaces the fit where its cost is lower by this fraction.
IMPROVEMENT = 1e-3
#: Two minima whose costs differ by less than this many residual variances are ambiguous.
AMBIGUOUS_CHI2 = 4.0
#: Minima closer than this (resolution cells) are the same minimum.
DISTINCT_CELLS = 0.1
#: A fit within this (radians) of the data's phase at its OPD is not polished on its bounds
#: from there too (the same start: of the 36 wfai_1 fits and 18 imagaz_1 fits this close,
#: one went 0.1 % lower from the data's phase when the search restarted them there).
SAME_PHASE_RAD = 0.01
#: A reflectivity series whose minimum is under this (or maximum over ``R_UPPER`` less
#: this) rests on its bound (the fit shifts it to 2e-6 inside).
ON_BOUND = NEAR_BOUND


@dataclass
class SearchResult:
    """What the search found, per interferometer (N,).

    moved: the fit was replaced by a lower minimum a tenth of a cell away or more.
    ambiguous: the best two minima are within the noise; ``alternative_opd_um`` and
    ``alternative_cost`` (NaN elsewhere) are the other one's. starts: starts screened.
    """

    moved: NDArray[np.bool_]
    ambiguous: NDArray[np.bool_]
    alternative_opd_um: NDArray[np.float64]
    alternative_cost: NDArray[np.float64]
    starts: int
    refined: int

    def summary(self) -> dict:
        return {"search_starts": self.starts, "search_refined": self.refined,
                "search_moved": int(self.moved.sum()), "ambiguous": int(self.ambiguous.sum()),
                "search_moved_index": np.flatnonzero(self.moved).tolist(),
                "ambiguous_index": np.flatnonzero(self.ambiguous).tolist()}


def _fit_kw(harmonics: int | None, degree: int) -> dict:
    """The search's fits: no uncertainties (computed once for the fits it reports, see
    :func:`calibration.characterise.with_uncertainty`)."""
    return {"harmonics": harmonics, "reflectivity_degree": degree, "uncertainty": False}


def loss_kwargs(huber_scale: NDArray, keep: NDArray[np.bool_] | None, rows: NDArray) -> dict:
    """The cost of the fits of ``rows``, each its own: least squares on every line where
    ``huber_scale`` is NaN, elsewhere the Huber loss at the scale held since the outliers
    were named, without the outlier lines (``keep`` False)."""
    scale = huber_scale[rows]
    if not np.isfinite(scale).any():
        return {"robust": False, "line_weights": _weights(keep, rows)}
    lw = np.ones((rows.size, 1)) if keep is None else keep[rows].astype(float)
    return {"robust": True, "huber_scale": scale, "line_weights": lw}


def _weights(keep: NDArray[np.bool_] | None, rows: NDArray) -> NDArray | None:
    """Line weights of ``rows`` (None where every line is kept: the fast unit-weight path)."""
    if keep is None or keep[rows].all():
        return None
    return keep[rows].astype(float)


def _start_phase(result: FitResult, y: NDArray, sigma: NDArray, rows: NDArray,
                 opd_um: NDArray) -> NDArray[np.float64]:
    """The phase of the first Fourier coefficient of ``y / gain - 1`` of ``rows[i]`` at
    ``opd_um[i]``: the data's own phase at a start's OPD (for every model the first
    harmonic's). In single precision (a start's phase within 1e-4 rad is as good as exact,
    the fits move it further; nine times faster, and thousands of starts are screened)."""
    zw = (fringes(y, result.bank.gain(sigma), sigma) * quadrature_weights(sigma))[rows]
    zw = zw.astype(np.float32)
    cycles = sigma.astype(np.float32)[None, :] * np.asarray(opd_um, np.float32)[:, None]
    arg = (cycles - np.floor(cycles)) * np.float32(2.0 * np.pi)
    return np.arctan2((zw * np.sin(arg)).sum(1), (zw * np.cos(arg)).sum(1)).astype(float)


def _start_bank(result: FitResult, rows: NDArray, opd_um: NDArray, phase_rad: NDArray,
                gain_cheb: NDArray | None = None) -> InterferometerBank:
    """The fit of ``rows`` (one start per entry) moved to ``opd_um`` and ``phase_rad``."""
    bank = bank_rows(result.bank, rows)
    return replace(bank, opd_um=np.asarray(opd_um, dtype=float), phase_rad=phase_rad,
                   gain_cheb=bank.gain_cheb if gain_cheb is None else gain_cheb)


def _screen(result: FitResult, y: NDArray, sigma: NDArray, rows: NDArray, opd_um: NDArray,
            keep: NDArray[np.bool_]) -> tuple[NDArray, NDArray, NDArray]:
    """Cost (M,), phase (M,) and gain series (M, Dg+1) of each start: OPD ``opd_um``, the
    data's phase there, the fit's reflectivity, the gain series refitted by linear least
    squares (the model is linear in it). One response evaluation per start, no
    derivatives: a tenth of a fit's cost, and it ranks the starts (a screening fit of
    one to three iterations with everything else free picked the same starts on imspoc_uv_2
    and wfai_1)."""
    bank = result.bank
    phase = _start_phase(result, y, sigma, rows, opd_um)
    refl = bank.reflectivity(sigma)[rows]
    a = fabry_perot.response(sigma[None, :], opd_um[:, None], refl, 1.0, phase[:, None], 0.0,
                             bank.harmonics)
    vg = chebyshev.chebvander(mapped(sigma, bank.sigma_domain), bank.gain_cheb.shape[1] - 1)
    q = vg.shape[1]
    vgg = np.einsum("sj,sk->sjk", vg, vg).reshape(sigma.size, -1)
    ys = y[rows]
    if not keep[rows].all():  # outlier lines left out (a Huber cost is at most this)
        a, ys = a * keep[rows], ys * keep[rows]
    m = ((a * a) @ vgg).reshape(-1, q, q)
    m += 1e-12 * np.einsum("npp->np", m).max(axis=1)[:, None, None] * np.eye(q)[None]
    rhs = (a * ys) @ vg
    coef = np.linalg.solve(m, rhs[:, :, None])[:, :, 0]
    return 0.5 * ((ys * ys).sum(1) - (coef * rhs).sum(1)), phase, coef


def profile_costs(result: FitResult, y: NDArray, sigma: NDArray, g: InitialGuess,
                  harmonics: int | None, degree: int, rows: NDArray, opd_um: NDArray,
                  keep: NDArray[np.bool_] | None = None, iterations: int = 30,
                  exact_bounds: bool = False, active_set: bool = False) -> FitResult:
    """The cost profile in OPD: each ``rows[i]`` fitted with its OPD held at ``opd_um[i]``
    (everything else from the fit, the phase from the data), batched. ``exact_bounds``: a
    cost of series shifted into the bounds (a point the search could report) rather than
    the penalised cost (enough to rank starts); ``active_set``: polished there as the
    search polishes the fits it reports (see :func:`_hold_bounds`)."""
    start = _start_bank(result, rows, opd_um, _start_phase(result, y, sigma, rows, opd_um))
    return fit(y[rows], sigma, g.rows(rows), start=start, max_iterations=iterations,
               fixed_opd=True, exact_bounds=exact_bounds, active_set=active_set,
               **loss_kwargs(result.huber_scale, keep, rows), **_fit_kw(harmonics, degree))


def _peaks(result: FitResult, y: NDArray, sigma: NDArray, resolution: float) -> NDArray:
    """The ``PEAKS`` highest local maxima (N, PEAKS) of each periodogram of ``y / gain - 1``
    within ``PEAK_WINDOW_CELLS`` of the fit, outside its main lobe (NaN where fewer), an
    eighth of a cell apart. Each row's window only: the data demodulated at the fit's OPD,
    then one grid of offsets for all rows (single-precision matrix products; a grid over
    every OPD up to the largest cost ten times as much on imspoc_uv_2)."""
    opd = result.bank.opd_um
    half = (PEAK_WINDOW_CELLS + 1) * resolution
    offsets = np.arange(-half, half + resolution / 16, resolution / 8)
    zw = (fringes(y, result.bank.gain(sigma), sigma) * quadrature_weights(sigma)).astype(np.float32)
    cycles = sigma.astype(np.float32)[None, :] * opd.astype(np.float32)[:, None]
    arg0 = (cycles - np.floor(cycles)) * np.float32(2.0 * np.pi)
    zr, zi = zw * np.cos(arg0), -zw * np.sin(arg0)  # z exp(-i 2 pi sigma opd)
    arg = (np.mod(np.outer(sigma, offsets), 1.0) * (2.0 * np.pi)).astype(np.float32)
    cd, sd = np.cos(arg), np.sin(arg)
    power = (zr @ cd + zi @ sd).astype(float) ** 2 + (zi @ cd - zr @ sd).astype(float) ** 2
    is_max = np.zeros_like(power, dtype=bool)
    is_max[:, 1:-1] = (power[:, 1:-1] > power[:, :-2]) & (power[:, 1:-1] >= power[:, 2:])
    dist = np.abs(offsets)[None, :]
    at = opd[:, None] + offsets[None, :]
    is_max &= (dist >= resolution) & (dist <= PEAK_WINDOW_CELLS * resolution)
    is_max &= at > 0.5 * resolution
    ranked = np.argsort(np.where(is_max, -power, np.inf), axis=1)[:, :PEAKS]
    return np.where(np.take_along_axis(is_max, ranked, axis=1),
                    np.take_along_axis(at, ranked, axis=1), np.nan)


def search(result: FitResult, y: NDArray, sigma: NDArray, g: InitialGuess,
           harmonics: int | None, degree: int, trend_opd_um: NDArray, keep: NDArray[np.bool_]
           ) -> tuple[FitResult, SearchResult]:
    """The search of the module docstring on every interferometer of ``result``, each on
    its own cost (least squares, or Huber at its held scale without the lines ``keep``
    drops), in rounds: one that moved is searched again from where it landed (few-fringe
    ones have chains of minima a fraction of a cell apart, each lower than the last), up to
    ``ROUNDS`` times. The two kinds are searched apart, so the least-squares batch keeps its
    unit-weight products."""
    n = y.shape[0]
    found = SearchResult(np.zeros(n, bool), np.zeros(n, bool), np.full(n, np.nan),
                         np.full(n, np.nan), 0, 0)
    robust = np.isfinite(result.huber_scale)
    for group in (np.flatnonzero(~robust), np.flatnonzero(robust)):
        result = _search_rounds(result, y, sigma, g, harmonics, degree, trend_opd_um, keep,
                                group, found)
    # the polish on the bounds lowers the reported fits after the minima were compared: one
    # now lower than the other by more than the noise is not ambiguous (wfai_1 620-639)
    p = 2 + result.bank.gain_cheb.shape[1] + result.bank.reflectivity_cheb.shape[1]
    margin = AMBIGUOUS_CHI2 / max(y.shape[1] - p, 1)
    with np.errstate(invalid="ignore"):
        found.ambiguous &= found.alternative_cost - result.robust_cost < margin * result.robust_cost
    found.alternative_opd_um[~found.ambiguous] = np.nan
    found.alternative_cost[~found.ambiguous] = np.nan
    return result, found


def _search_rounds(result: FitResult, y: NDArray, sigma: NDArray, g: InitialGuess,
                   harmonics: int | None, degree: int, trend_opd_um: NDArray,
                   keep: NDArray[np.bool_], rows: NDArray, found: SearchResult) -> FitResult:
    """The rounds of :func:`search` on ``rows``, what they find recorded in ``found``, between
    a polish of the unconverged fits (:func:`_polish`) and one of those a round left
    unconverged."""
    # the unconverged first: a refinement a little lower that converged would otherwise
    # replace a fit that iterated on goes much lower (wfai_1 133: 0.7 % against 10 %)
    result = _polish(result, y, sigma, g, harmonics, degree, keep, rows)
    every, before = rows, result.robust_cost.copy()
    for _ in range(ROUNDS):
        if rows.size == 0:
            break
        part, f = _search_once(subset_result(result, rows), y[rows], sigma, g.rows(rows),
                                      harmonics, degree, trend_opd_um[rows], keep[rows])
        result = merge_rows(result, part, rows, y)
        found.moved[rows] |= f.moved
        found.ambiguous[rows] = f.ambiguous | (found.ambiguous[rows] & ~f.moved)
        found.alternative_opd_um[rows[f.ambiguous]] = f.alternative_opd_um[f.ambiguous]
        found.alternative_cost[rows[f.ambiguous]] = f.alternative_cost[f.ambiguous]
        found.starts += f.starts
        found.refined += f.refined
        rows = rows[f.moved]
    # then those a refinement or restart left unconverged
    changed = every[result.robust_cost[every] != before[every]]
    result = _polish(result, y, sigma, g, harmonics, degree, keep, changed)
    return _hold_bounds(result, y, sigma, g, harmonics, degree, keep, every)


def _hold_bounds(result: FitResult, y: NDArray, sigma: NDArray, g: InitialGuess,
                 harmonics: int | None, degree: int, keep: NDArray[np.bool_], every: NDArray
                 ) -> FitResult:
    """The fits of ``every`` whose reflectivity rests on a bound (not the few-fringe ones,
    which crawl), polished there with its points on the bound held exactly
    (``fit(active_set=True)``), from the fit and from the data's phase at its OPD; the
    lower kept where it lowers the fit's cost. Which points of R rest on the bound differs
    from minimum to minimum at one OPD, and the penalty's polish cannot release one. Each
    start alone leaves some 0.1 % or more above the other's (wfai_1: 19 from the fit, 76
    from the data's phase, of 408; imspoc_uv_2 59 0.12 % from the fit). Only the reported
    fits: held exactly in every fit of the search, the same gain cost 1.0-1.16x the whole
    characterisation's CPU. This replaces the search's restarts from the data's phase
    (with the penalty's polish) of the fits on the bound, at the same cost: wfai_1's dense
    scan 73 -> 63 lower points."""
    lo, hi = series_range(result.bank.reflectivity_cheb[every], ON_BOUND, R_UPPER - ON_BOUND)
    resolution = 1.0 / float(np.ptp(sigma))
    part = every[((lo < ON_BOUND) | (hi > R_UPPER - ON_BOUND))
                 & (result.bank.opd_um[every] >= FEW_FRINGES * resolution)]
    if part.size == 0:
        return result
    # from the fit, and from the data's phase at its OPD where that is another start
    opd = result.bank.opd_um[part]
    phase = _start_phase(result, y, sigma, part, opd)
    other = np.flatnonzero(np.abs(np.angle(np.exp(1j * (phase - result.bank.phase_rad[part]))))
                           >= SAME_PHASE_RAD)
    starts = _stack(bank_rows(result.bank, part),
                    _start_bank(result, part[other], opd[other], phase[other]))
    both = np.concatenate([part, part[other]])
    held = fit(y[both], sigma, g.rows(both), start=starts, max_iterations=0, active_set=True,
               **loss_kwargs(result.huber_scale, keep, both), **_fit_kw(harmonics, degree))
    pick = np.arange(part.size)
    lower_there = held.robust_cost[part.size:] < held.robust_cost[other]
    pick[other[lower_there]] = part.size + np.flatnonzero(lower_there)
    held = subset_result(held, pick)
    lower = np.flatnonzero(held.robust_cost < result.robust_cost[part])
    # (a polish leaves a fit as converged as it was)
    held = replace(subset_result(held, lower), converged=result.converged[part[lower]])
    return merge_rows(result, held, part[lower], y)


def _polish(result: FitResult, y: NDArray, sigma: NDArray, g: InitialGuess,
            harmonics: int | None, degree: int, keep: NDArray[np.bool_], every: NDArray
            ) -> FitResult:
    """The unconverged fits of ``every`` iterated on, in passes with the damping started
    afresh (imspoc_uv_2 121: 5 % lower 30 iterations on; wfai_1 109 stopped 8 % above its
    minimum with its damping grown, which two steps from a fresh start reach). Not those
    with under ``FEW_FRINGES`` fringes: most of them crawl unconverged (63 % on imagaz_1),
    and iterating on every one cost a quarter of that prototype's time."""
    resolution = 1.0 / float(np.ptp(sigma))
    part = every[~result.converged[every]
                 & (result.bank.opd_um[every] >= FEW_FRINGES * resolution)]
    for _ in range(POLISH_PASSES):
        if part.size == 0:
            break
        polished = fit(y[part], sigma, g.rows(part), start=bank_rows(result.bank, part),
                       max_iterations=POLISH_ITERATIONS, **loss_kwargs(result.huber_scale, keep, part),
                       **_fit_kw(harmonics, degree))
        lower = polished.robust_cost < result.robust_cost[part]
        result = merge_rows(result, subset_result(polished, np.flatnonzero(lower)), part[lower], y)
        part = part[lower & ~polished.converged]
    return result


def _search_once(result: FitResult, y: NDArray, sigma: NDArray, g: InitialGuess,
                 harmonics: int | None, degree: int, trend_opd_um: NDArray,
                 keep: NDArray[np.bool_]) -> tuple[FitResult, SearchResult]:
    """One round of the search on every interferometer of ``result``."""
    n, s = y.shape
    resolution = 1.0 / float(np.ptp(sigma))
    opd = result.bank.opd_um
    cand = np.concatenate([opd[:, None] + np.asarray(SCAN_CELLS)[None, :] * resolution,
                           _peaks(result, y, sigma, resolution), trend_opd_um[:, None]], axis=1)
    # a start must be new: off the fit's main lobe centre by the scan's spacing, positive
    far = np.abs(cand - opd[:, None]) >= 0.5 * resolution - 1e-9
    ok = np.isfinite(cand) & (cand > 0.5 * resolution) & far
    row, col = np.nonzero(ok)
    screened, phase, gain = _screen(result, y, sigma, row, cand[row, col], keep)
    table = np.full(cand.shape, np.inf)
    table[row, col] = screened
    best = np.argmin(table, axis=1)
    best_cost = table[np.arange(n), best]
    pick = np.searchsorted(np.flatnonzero(ok.ravel()), np.arange(n) * cand.shape[1] + best)
    pick = pick.clip(0, max(row.size - 1, 0))
    start = _start_bank(result, np.arange(n), cand[np.arange(n), best], phase[pick], gain[pick])
    # a fit PHASE_BASIN_RAD or more off the data's phase at its own OPD may have stopped in
    # another basin of phase and reflectivity (imspoc_uv_2 53: 0.24 rad off, 1.8 % more cost
    # than from the data's phase): it is also refitted from there, whatever the screen says
    # (the screen holds the fit's reflectivity, which such a start must change). Also: in
    # place of its best start, that refit missed wfai_1 392's minimum 1.27 cells away, 8 %
    # lower, whose start screened 5 % below the fit.
    own = _start_phase(result, y, sigma, np.arange(n), opd)
    basin = np.flatnonzero(np.abs(np.angle(np.exp(1j * (own - result.bank.phase_rad))))
                           >= PHASE_BASIN_RAD)
    _, phase_b, gain_b = _screen(result, y, sigma, basin, opd[basin], keep)
    basin_start = _start_bank(result, basin, opd[basin], phase_b, gain_b)
    # few fringes: gain and reflectivity trade against the OPD and minima lie a fraction of
    # a cell apart, where the screen's fixed reflectivity cannot follow: a fine profile
    rugged = np.flatnonzero(opd < FEW_FRINGES * resolution)
    starts = len(row)
    if rugged.size:
        fine = np.arange(-RUGGED_CELLS, RUGGED_CELLS + 1e-9, RUGGED_STEP_CELLS) * resolution
        r_rows = np.repeat(rugged, fine.size)
        prof = profile_costs(result, y, sigma, g, harmonics, degree, r_rows,
                             opd[r_rows] + np.tile(fine, rugged.size), keep, RUGGED_ITERATIONS)
        costs = prof.robust_cost.reshape(rugged.size, fine.size)
        j = np.argmin(costs, axis=1)
        lower = costs[np.arange(rugged.size), j] < best_cost[rugged]
        if lower.any():
            at = np.flatnonzero(lower) * fine.size + j[lower]
            a = start.arrays()
            for k, v in bank_rows(prof.bank, at).arrays().items():
                if k not in ("sigma_domain", "harmonics"):
                    a[k][rugged[lower]] = v
            start = InterferometerBank.from_arrays(a)
            best_cost[rugged[lower]] = costs[np.flatnonzero(lower), j[lower]]
        starts += r_rows.size
    p = 2 + result.bank.gain_cheb.shape[1] + result.bank.reflectivity_cheb.shape[1]
    margin = AMBIGUOUS_CHI2 / max(s - p, 1)
    cost = result.robust_cost
    todo = np.flatnonzero(best_cost < cost * (1.0 + SCREEN_MARGIN * margin))
    moved = np.zeros(n, dtype=bool)
    ambiguous = np.zeros(n, dtype=bool)
    alt_opd = np.full(n, np.nan)
    alt_cost = np.full(n, np.nan)
    both = np.concatenate([todo, basin])
    if both.size:
        refined = fit(y[both], sigma, g.rows(both), start=_stack(bank_rows(start, todo), basin_start),
                      max_iterations=REFINE_ITERATIONS,
                      **loss_kwargs(result.huber_scale, keep, both), **_fit_kw(harmonics, degree))
        # the refits in their own basin first: where lower, the fit the other minimum is
        # compared with
        mine = todo.size + np.flatnonzero(refined.robust_cost[todo.size:]
                                          < (1.0 - IMPROVEMENT) * cost[basin])
        if mine.size:
            result = merge_rows(result, subset_result(refined, mine), both[mine], y)
            cost, opd = result.robust_cost, result.bank.opd_um
        refined = subset_result(refined, np.arange(todo.size))
        new_cost = refined.robust_cost
        distinct = np.abs(refined.bank.opd_um - opd[todo]) >= DISTINCT_CELLS * resolution
        better = new_cost < (1.0 - IMPROVEMENT) * cost[todo]
        lo, hi = np.minimum(new_cost, cost[todo]), np.maximum(new_cost, cost[todo])
        amb = distinct & ((hi - lo) / np.maximum(lo, 1e-300) < margin)
        ambiguous[todo[amb]] = True
        alt_opd[todo[amb]] = np.where(better[amb], opd[todo[amb]], refined.bank.opd_um[amb])
        alt_cost[todo[amb]] = np.where(better[amb], cost[todo[amb]], new_cost[amb])
        moved[todo[better & distinct]] = True
        if better.any():
            part = subset_result(refined, np.flatnonzero(better))
            result = merge_rows(result, part, todo[better], y)
    return result, SearchResult(moved, ambiguous, alt_opd, alt_cost, starts, int(both.size))


def _stack(first: InterferometerBank, second: InterferometerBank) -> InterferometerBank:
    """The interferometers of ``first`` then those of ``second`` (same model and domain)."""
    b = second.arrays()
    return InterferometerBank.from_arrays(
        {k: v if k in ("sigma_domain", "harmonics") else np.concatenate([v, b[k]])
         for k, v in first.arrays().items()})
