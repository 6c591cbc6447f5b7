"""Characterisation of an interferometer bank from a monochromatic sweep, end to end.

initialise (gain, windowed periodogram OPD, first-coefficient phase and R) -> choose the model
and degree by BIC on a subset -> batched bounded least-squares regression of all
interferometers on ``y = data / norm`` -> wrong-peak guard and restarts -> a robust (Huber)
refit, with outlier lines dropped, of the interferometers that have outlier lines (at a
Huber scale held from then on) -> the search for each fit's global minimum in OPD, with the
interferometers whose best two minima are within the noise reported ambiguous
(:mod:`calibration.opd_search`) -> checks. The result is an :class:`~onboard.physics.interferometers.InterferometerBank` plus the
diagnostics the report shows.

Least squares wherever there are no outliers because the fit must minimise the figure of
merit (below): a Huber loss from the start would also down-weight the sweep ends, where
``data / norm`` is noisy, and on imspoc_uv_2 that cost 2 % of the median residual.

Figures of merit, per interferometer:

* ``rms``: the mean-normalised RMS residual ``RMS(fit - y) / mean(y)`` on the responses
  ``y = data / norm`` that are fitted (the source's spectrum removed).
* ``rms_recorded``: the same on the recorded data: ``RMS(norm fit - data) / mean(data)``.
  Where the source is weak (sweep ends) ``data / norm`` magnifies the detector's noise; on
  the recorded data each line counts with the signal it had. Equal to ``rms`` when the
  acquisition is already normalised. This is the IRCA reference's measure: its code fits
  ``data / mean(data)`` with the gain series absorbing the source's spectrum, and the
  issue's reference medians are its residuals there (bench/bench_characterisation.py).

Wrong-peak checks on the OPDs (a wrong peak is a periodogram lobe other than the
interferometer's own fringe frequency, hence at least one resolution ``1 / span(sigma)``
away from it):

* ``opd_trend_outliers``: OPDs further than one resolution from the running median (over
  +- 4 neighbours) of ``opd - ridge line``: a thickness series is smooth in the index.
* ``low_margin``: periodogram peaks not above every other local maximum in the search
  window (margin <= 1).
* ``moved``: fitted OPDs that left the main lobe of their starting peak.
* ``unguarded_wrong``: for comparison, how many interferometers the periodogram's global
  maximum (no window) would put more than a resolution away from the fitted OPD.
* ``alternative_tried`` / ``alternative_better``: every interferometer off its neighbours'
  trend or with a low margin is refitted from the OPD its neighbours predict; where that
  fits better the first peak was wrong and is replaced (the count is reported), in rounds
  until the trend settles. An OPD still off the trend whose refit from the trend fitted
  worse (``alternative_kept_index``) is one the data prefer: the thickness series is not
  smooth there (wfai_1 has some all along its bank), not a wrong peak.
  ``trend_unsettled`` counts the trend outliers for which the data's preference is not
  shown: the cost with the OPD held at the trend's (the rest fitted) is lower than the
  fit's (for an interferometer with outlier lines: the guard's refit from the trend fitted
  better). The OPD search (:mod:`calibration.opd_search`) moves OPDs off the trend where
  that lowers the cost.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace

import numpy as np
from numpy.polynomial import chebyshev
from numpy.typing import NDArray
from threadpoolctl import threadpool_limits

from calibration.acquisitions import Acquisition
from calibration.initialise import (
    InitialGuess,
    fourier_coefficients,
    fringes,
    initialise,
    mapped,
    running_median,
)
from calibration.model_selection import DEFAULT_MODELS, Selection, select, with_degree
from calibration.opd_search import (
    FEW_FRINGES,
    IMPROVEMENT,
    SearchResult,
    loss_kwargs,
    profile_costs,
    search,
)
from calibration.regression import (
    FitResult,
    bank_rows,
    fit,
    merge_rows,
    rms_normalised,
    robust_scale,
    series_range,
    subset_result,
)
from onboard.physics.interferometers import InterferometerBank

TREND_HALF_WINDOW = 4
#: Lines whose residual exceeds this many robust standard deviations are dropped (gross
#: faults only: on the real prototypes model misfit reaches 5 sigma on good lines).
REJECT = 8.0
LOCAL_WINDOW = 31
#: A fit whose residual is this many times its neighbours' median is restarted (on
#: imspoc_uv_2 the fits stuck in a local minimum are 2-3 times their neighbours).
RESTART_RATIO = 2.0
GUARD_ROUNDS = 8
#: Iterations allowed to a restart (measured on imspoc_uv_2: with 30 instead of 60, 8
#: restarts win instead of 11 and the median and 95th-percentile residuals do not move).
RESTART_ITERATIONS = 30
MAX_ITERATIONS = 60


def trend_prediction(opd: NDArray, guess: InitialGuess, step: float, first_index: int
                      ) -> NDArray[np.float64]:
    """Each OPD as its neighbours predict it: ridge line + running median of the offsets."""
    k = first_index + np.arange(opd.size)
    offset, scale = guess.ridge
    line = offset + scale * step * k
    return line + running_median(opd - line, TREND_HALF_WINDOW)


def _try_alternative_peaks(result: FitResult, y: NDArray, acq: Acquisition, g: InitialGuess,
                           guess: InitialGuess, selection: Selection
                           ) -> tuple[FitResult, dict]:
    """The wrong-peak guard and a restart for fits stuck in a local minimum.

    Suspects: every interferometer whose OPD is off its neighbours' trend by more than a
    resolution, or whose periodogram peak had a rival in its window (a wrong peak?), and
    every one whose residual is over ``RESTART_RATIO`` times its neighbours' median (a local
    minimum: on the real prototypes these sit at R near its bound, spiky Airy fringes
    fitted half a fringe off) or that has under ``FEW_FRINGES`` fringes across the sweep.
    Each is refitted by least squares (the first fit's loss, so the costs compare) from a
    few starts: the OPD its neighbours predict, and its own OPD and +- half a resolution
    with a flat R of 0.2. The best start replaces the fit where it lowers the cost by
    0.1 %. Further rounds (``GUARD_ROUNDS`` in all) refit, from the trend as it now stands,
    the OPDs still (or now) off it that no round settled; an OPD off the trend whose last
    refit from the trend was worse is one the data prefer (``alternative_kept_index``)."""
    resolution = 1.0 / float(np.ptp(acq.sigma))
    opd = result.bank.opd_um
    pred = trend_prediction(opd, guess, acq.opd_step_um, acq.first_index)
    peak = (np.abs(opd - pred) > resolution) | (guess.peak_margin <= 1.0)
    misfit = result.rms_normalised > RESTART_RATIO * running_median(result.rms_normalised,
                                                                     TREND_HALF_WINDOW)
    # under FEW_FRINGES fringes across the sweep, gain and R curvature trade against the
    # OPD and such fits have several minima a fraction of a resolution apart
    misfit |= opd < FEW_FRINGES * resolution
    result, better = _restart(result, y, acq.sigma, g, selection, np.flatnonzero(peak | misfit),
                              pred)
    tried, moved = set(np.flatnonzero(peak).tolist()), set((better & peak).nonzero()[0].tolist())
    info: dict[str, object] = {"restarts_tried": int((misfit & ~peak).sum()),
            "restarts_better": int((better & ~peak).sum())}
    kept = tried - moved
    for _ in range(GUARD_ROUNDS - 1):
        pred = trend_prediction(result.bank.opd_um, guess, acq.opd_step_um, acq.first_index)
        off = np.abs(result.bank.opd_um - pred) > resolution
        off[list(kept)] = False
        if not off.any():
            break
        result, better = _restart(result, y, acq.sigma, g, selection, np.flatnonzero(off), pred)
        tried |= set(np.flatnonzero(off).tolist())
        moved |= set(np.flatnonzero(better).tolist())
        kept = ((kept - set(np.flatnonzero(better).tolist()))
                | set(np.flatnonzero(off & ~better).tolist()))
    info.update({"alternative_tried": len(tried), "alternative_better": len(moved),
                 "alternative_tried_index": sorted(tried), "alternative_better_index": sorted(moved),
                 "alternative_kept_index": sorted(kept)})
    return result, info


def _restart(result: FitResult, y: NDArray, sigma: NDArray, g: InitialGuess,
             selection: Selection, rows: NDArray, pred: NDArray
             ) -> tuple[FitResult, NDArray[np.bool_]]:
    """Refit ``rows`` from the starts of :func:`_try_alternative_peaks`; the best replaces
    the fit where it lowers the cost by 0.1 %. Returns the result and which interferometers
    (N,) were replaced."""
    replaced = np.zeros(len(result.bank), dtype=bool)
    if rows.size == 0:
        return result, replaced
    resolution = 1.0 / float(np.ptp(sigma))
    opd = result.bank.opd_um
    # from the trend's OPD only where it is a resolution away (elsewhere the own-OPD start
    # covers it)
    far = np.abs(pred[rows] - opd[rows]) > resolution
    starts = [opd[rows], opd[rows] - 0.5 * resolution, opd[rows] + 0.5 * resolution]
    cand = np.concatenate([rows[far], np.tile(rows, len(starts))])
    start_opd = np.concatenate([pred[rows][far], *starts])
    sub = g.rows(cand)
    gain = chebyshev.chebval(mapped(sigma, g.sigma_domain), sub.gain_cheb.T)
    z = fringes(y[cand], gain, sigma)
    c1 = fourier_coefficients(z, sigma, start_opd[:, None])[:, 0]
    r0 = np.where(np.arange(cand.size) < far.sum(), np.clip(np.abs(c1), 0.02, 0.9), 0.2)
    sub = replace(sub, opd_um=start_opd, phase_rad=np.angle(np.conj(c1)), reflectivity=r0,
                  reflectivity_cheb=None)
    refit = fit(y[cand], sigma, sub, harmonics=selection.harmonics,
                reflectivity_degree=selection.degree, robust=False,
                max_iterations=RESTART_ITERATIONS, uncertainty=False)
    # (start, row) table of costs, inf where a row had no trend start
    cost = np.full((1 + len(starts), rows.size), np.inf)
    cost[0, far] = refit.robust_cost[: far.sum()]
    cost[1:] = refit.robust_cost[far.sum():].reshape(len(starts), rows.size)
    index = np.full(cost.shape, -1)
    index[0, far] = np.arange(far.sum())
    index[1:] = far.sum() + np.arange(len(starts) * rows.size).reshape(len(starts), rows.size)
    best = np.argmin(cost, axis=0)
    better = cost[best, np.arange(rows.size)] < 0.999 * result.robust_cost[rows]
    if better.any():
        pick = index[best[better], np.flatnonzero(better)]
        result = merge_rows(result, subset_result(refit, pick), rows[better], y)
    replaced[rows[better]] = True
    return result, replaced


def _robust_where_outliers(result: FitResult, y: NDArray, sigma: NDArray, g: InitialGuess,
                           selection: Selection) -> tuple[FitResult, NDArray]:
    """Lines beyond ``REJECT`` local robust sigma of the least-squares fit (dead pixels, a
    saturated or mis-tuned line) are outliers. An interferometer with any is refitted with
    the robust (Huber) loss from its starting gain and R, so the outliers cannot bias the fit
    that names them (a dead pixel at a fringe minimum is only a few sigma off a biased
    fit), then polished without the lines the robust fit puts beyond ``REJECT``; one where
    the robust fit finds none is refitted by least squares.

    The others keep their least-squares fit, which minimises the figure of merit: Huber
    also down-weights the sweep ends, where ``data / norm`` is noisy (2 % of median RMS on
    imspoc_uv_2, where 25 of 319 interferometers have an outlier)."""
    keep = np.ones(y.shape, dtype=bool)
    rows = np.flatnonzero((np.abs(result.residuals) > REJECT * _local_sigma(result.residuals)
                           ).any(axis=1))
    if rows.size == 0:
        return result, keep
    # one Huber scale per interferometer, held by every fit of it from here on (the polishes,
    # the OPD search, the verification), so that their costs compare: the robust noise level
    # of the least-squares fit that named the outliers
    scale = np.full(len(y), np.nan)
    scale[rows] = robust_scale(result.residuals[rows], y[rows])
    fit_kw: dict = {"harmonics": selection.harmonics, "reflectivity_degree": selection.degree,
                    "max_iterations": MAX_ITERATIONS, "robust": True, "uncertainty": False}
    # from the starting gain and R, at the OPD and phase found (a corrected peak stays)
    start = replace(g.rows(rows), opd_um=result.bank.opd_um[rows],
                    phase_rad=result.bank.phase_rad[rows])
    result = merge_rows(result, fit(y[rows], sigma, start, huber_scale=scale[rows], **fit_kw),
                        rows, y)
    # lines beyond REJECT still pull a Huber fit linearly: drop them and polish; repeated,
    # since a line dropped against a fit biased by an outlier comes back once the polish
    # explains it
    for _ in range(3):
        r = result.residuals[rows]
        new_keep = np.abs(r) <= REJECT * _local_sigma(r)
        changed = np.flatnonzero((new_keep != keep[rows]).any(axis=1))
        if changed.size == 0:
            break
        keep[rows] = new_keep
        sub = rows[changed]
        polished = fit(y[sub], sigma, g.rows(sub), line_weights=keep[sub].astype(float),
                       start=bank_rows(result.bank, sub), huber_scale=scale[sub], **fit_kw)
        result = merge_rows(result, polished, sub, y)
    # a row whose robust fit dropped no line had no outlier after all: least squares, the
    # figure of merit, from the robust solution (a Huber fit there was 2-3 % worse by it on
    # imspoc_uv_2). Rows with dropped lines keep their Huber fit, robust to the moderate
    # outliers the threshold leaves in (a least-squares polish put 2 of 90 simulated
    # interferometers out of tolerance with 2 % dead entries and a saturated line).
    clean = rows[keep[rows].all(axis=1)]
    if clean.size:
        final = fit(y[clean], sigma, g.rows(clean), start=bank_rows(result.bank, clean),
                    **{**fit_kw, "robust": False})
        result = merge_rows(result, final, clean, y)
    return result, keep


def with_uncertainty(result: FitResult, y: NDArray, sigma: NDArray, g: InitialGuess,
                     selection: Selection, keep: NDArray[np.bool_]) -> FitResult:
    """``result`` with the one-sigma uncertainties of its parameters, from each fit's own
    cost (least squares, or Huber at its held scale without its outlier lines), computed
    once at the fits reported: the fits before it only rank starts or replace one another
    (each with its own uncertainties, the pseudo-inverse of its normal matrices, was 3-5 %
    of the time for nothing)."""
    every = np.arange(len(y))
    at = fit(y, sigma, g, harmonics=selection.harmonics, reflectivity_degree=selection.degree,
             start=result.bank, max_iterations=0,
             **loss_kwargs(result.huber_scale, keep, every))
    return replace(result, sigma_params=at.sigma_params)


def _local_sigma(r: NDArray, width: int = LOCAL_WINDOW) -> NDArray[np.float64]:
    """Robust noise level (N, S) of each residual from its neighbours along the sweep:
    1.4826 x the running median of |r| over ``width`` lines (the median ignores the few
    outliers among them). The noise of ``data / norm`` grows where the source is weak, so
    one level per interferometer would call a noisy sweep end an outlier. The level varies
    slowly, so the median is taken every quarter window and interpolated between."""
    s = r.shape[1]
    half = width // 2
    centres = np.unique(np.append(np.arange(0, s, max(1, half // 2)), s - 1))
    padded = np.pad(np.abs(r), ((0, 0), (half, half)), mode="edge")
    windows = np.lib.stride_tricks.sliding_window_view(padded, width, axis=1)[:, centres]
    level = np.median(windows, axis=2)  # (N, C)
    pos = np.arange(s)
    right = np.searchsorted(centres, pos).clip(1, centres.size - 1)
    left = right - 1
    frac = (pos - centres[left]) / (centres[right] - centres[left])
    return 1.4826 * (level[:, left] * (1.0 - frac) + level[:, right] * frac)


@dataclass
class Characterisation:
    """A characterised bank and everything said about it."""

    acquisition: Acquisition
    bank: InterferometerBank
    result: FitResult
    guess: InitialGuess
    selection: Selection
    rms: NDArray[np.float64]
    rms_recorded: NDArray[np.float64]
    checks: dict
    timings_s: dict = field(default_factory=dict)
    search: SearchResult | None = None

    def summary(self) -> dict:
        """Small JSON-able summary (the calibration file's provenance carries it)."""
        return {
            "acquisition": self.acquisition.name,
            "interferometers": len(self.bank),
            "lines": self.acquisition.n_lines,
            "model": self.selection.model,
            "degree": self.selection.degree,
            "rms_definition": "RMS(fit - y) / mean(y) per interferometer, y = data / norm",
            "rms_median": float(np.median(self.rms)),
            "rms_p95": float(np.percentile(self.rms, 95)),
            "rms_recorded_median": float(np.median(self.rms_recorded)),
            "rms_recorded_p95": float(np.percentile(self.rms_recorded, 95)),
            "time_s": float(self.timings_s.get("total", 0.0)),
            **{k: v for k, v in self.checks.items() if not isinstance(v, list)},
        }


def _trend_unsettled(result: FitResult, y: NDArray, acq: Acquisition, g: InitialGuess,
                     guess: InitialGuess, selection: Selection, off: list[int],
                     kept: list[int]) -> int:
    """Trend outliers not shown to be the data's choice: the cost with the OPD held where
    the neighbours put it (the rest fitted) is lower than the fit's, or, for an
    interferometer with outlier lines (a Huber fit, no least-squares cost), the guard's last
    refit from the trend fitted better."""
    rows = np.asarray(off, dtype=int)
    if rows.size == 0:
        return 0
    robust = result.outliers[rows].any(axis=1)
    pred = trend_prediction(result.bank.opd_um, guess, acq.opd_step_um, acq.first_index)
    ls = rows[~robust]
    there = profile_costs(result, y, acq.sigma, g, selection.harmonics, selection.degree, ls,
                          pred[ls], None, RESTART_ITERATIONS, exact_bounds=True).robust_cost
    lower = there < (1.0 - IMPROVEMENT) * result.robust_cost[ls]
    return int(lower.sum()) + len(set(rows[robust].tolist()) - set(kept))


def opd_checks(bank: InterferometerBank, guess: InitialGuess, y: NDArray, sigma: NDArray,
               opd_step_um: float, first_index: int = 0) -> dict:
    """The wrong-peak checks of the module docstring, and the reflectivity range."""
    n = len(bank)
    resolution = 1.0 / (sigma.max() - sigma.min())
    k = first_index + np.arange(n)
    offset, scale = guess.ridge
    detrended = bank.opd_um - (offset + scale * opd_step_um * k)
    trend = running_median(detrended, TREND_HALF_WINDOW)
    trend_out = np.abs(detrended - trend) > resolution
    moved = np.abs(bank.opd_um - guess.opd_um) > resolution
    # the unguarded alternative: global maximum of the periodogram of y / gain - 1
    gain = bank.gain(sigma)
    z = y / np.where(np.abs(gain) > 1e-9, gain, 1e-9) - 1.0
    # a quarter-resolution grid: only whether the maximum is a resolution away matters
    grid = np.arange(resolution, max(1.6 * k[-1] * opd_step_um, bank.opd_um.max() + 5 * resolution),
                     resolution / 4)
    power = np.abs(fourier_coefficients(z, sigma, grid)) ** 2
    unguarded = np.abs(grid[np.argmax(power, axis=1)] - bank.opd_um) > resolution
    r_lo, r_hi = series_range(bank.reflectivity_cheb)
    g_lo, _ = series_range(bank.gain_cheb)
    return {
        "resolution_um": float(resolution),
        "ridge_offset_um": float(offset),
        "ridge_scale": float(scale),
        "opd_trend_outliers": int(trend_out.sum()),
        "low_margin": int((guess.peak_margin <= 1.0).sum()),
        "moved": int(moved.sum()),
        "unguarded_wrong": int(unguarded.sum()),
        "r_min": float(r_lo.min()),
        "r_max": float(r_hi.max()),
        "r_outside_0_1": int(((r_lo < 0) | (r_hi >= 1)).sum()),
        "g_negative": int((g_lo < 0).sum()),
        "trend_outlier_index": np.flatnonzero(trend_out).tolist(),
        "low_margin_index": np.flatnonzero(guess.peak_margin <= 1.0).tolist(),
    }


def characterise(
    acq: Acquisition,
    models: tuple[str, ...] = DEFAULT_MODELS,
    degrees: tuple[int, ...] = (5, 8),
    robust: bool = True,
    progress=None,
) -> Characterisation:
    """Characterise every interferometer of ``acq``; ``progress(message)`` is told each step.

    BLAS runs on one thread here whatever the process's setting: the work is many small
    batched products, where OpenBLAS threads cost more than they give (an in-process call
    took 5.4-6.5 s with the default threads against 0.46-0.50 s with one, same data)."""
    with threadpool_limits(limits=1, user_api="blas"):
        return _characterise(acq, models, degrees, robust, progress)


def _characterise(acq: Acquisition, models: tuple[str, ...], degrees: tuple[int, ...],
                  robust: bool, progress) -> Characterisation:
    say = progress or (lambda _m: None)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    y = acq.responses()
    say(f"{acq.name}: {acq.n_interferometers} interferometers x {acq.n_lines} lines; initialising")
    guess = initialise(y, acq.sigma, acq.opd_step_um, gain_degree=degrees[0],
                       first_index=acq.first_index)
    timings["initialise"] = time.perf_counter() - t0
    t1 = time.perf_counter()
    if len(models) == 1 and len(degrees) == 1:
        selection = Selection(models[0], degrees[0], {}, np.arange(0))
    else:
        say("choosing the model and degree (BIC on a subset)")
        selection = select(y, acq.sigma, guess, models, degrees)
    timings["model_selection"] = time.perf_counter() - t1
    say(f"model {selection.model}, degree {selection.degree}; fitting all interferometers")
    t2 = time.perf_counter()
    g = with_degree(guess, y, acq.sigma, selection.degree) if selection.degree != degrees[0] else guess
    result = fit(y, acq.sigma, g, harmonics=selection.harmonics,
                 reflectivity_degree=selection.degree, robust=False, max_iterations=MAX_ITERATIONS,
                 uncertainty=False)
    result, alt = _try_alternative_peaks(result, y, acq, g, guess, selection)
    keep = np.ones(y.shape, dtype=bool)
    if robust:
        result, keep = _robust_where_outliers(result, y, acq.sigma, g, selection)
    trend = trend_prediction(result.bank.opd_um, guess, acq.opd_step_um, acq.first_index)
    result, found = search(result, y, acq.sigma, g, selection.harmonics, selection.degree, trend,
                           keep)
    result = with_uncertainty(result, y, acq.sigma, g, selection, keep)
    result.outliers = ~keep
    timings["regression"] = time.perf_counter() - t2
    t3 = time.perf_counter()
    checks = opd_checks(result.bank, guess, y, acq.sigma, acq.opd_step_um, acq.first_index)
    checks.update(alt)
    checks.update(found.summary())
    checks["trend_unsettled"] = _trend_unsettled(result, y, acq, g, guess, selection,
                                                 checks["trend_outlier_index"],
                                                 alt["alternative_kept_index"])
    timings["checks"] = time.perf_counter() - t3
    timings["total"] = time.perf_counter() - t0 - timings["checks"]
    if acq.norm is not None and not acq.is_normalized:
        rec = rms_normalised(result.residuals * acq.norm, acq.data)
    else:
        rec = result.rms_normalised
    return Characterisation(acq, result.bank, result, guess, selection, result.rms_normalised,
                            rec, checks, timings, found)
