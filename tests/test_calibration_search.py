"""The OPD search ends each fit in the lowest minimum it can see, and says where two minima
are within the noise; characterise() limits BLAS threads itself.

The realdata tests take a slice of a real prototype (the dense verification of whole banks is
bench/bench_characterisation.py's):

* imspoc_uv_2 interferometers 44-63 hold number 53, which stopped in a local minimum
  (10.04-10.10 µm against 9.86 µm, 25 % more cost); 110-129 hold 121, whose fit stopped
  unconverged (5 % above its minimum at the same OPD); 185-211 hold 192 and 209, whose fits
  ended on the reflectivity's lower bound and stopped where the shift into the bounds left
  them (0.4 % and 0.2 % above the minimum at the same OPD). Each slice also holds
  interferometers with outlier lines, checked on their Huber cost at the scale they hold.
* imagaz_1 0-15 hold number 4, which has outlier lines and two minima the data do not
  separate.
* wfai_1 620-639 hold several interferometers whose two minima the data do not separate.
* imagaz_1 23-40 hold 24, 31, 33, 34 and 37, the same case as imspoc_uv_1 67 and 86 below
  (0.1-0.9 % above).
* imspoc_uv_1 60-91 hold 67 and 86, whose fits ended with the reflectivity on its lower bound
  0.2 % and 0.7 % above a minimum at the same OPD that a fit from the data's phase there
  reaches (which points of the series rest on the bound differs between the two).
* wfai_1 355-364 hold fits on the reflectivity's bound that a polish with the bound held by
  a penalty left 0.2-1 % above the minimum at their OPD; 388-395 holds 392, whose lower
  minimum 1.27 cells away was not refined (see its test).

The dense scans polish each point with the points of R on a bound held exactly, as the
search polishes the fits it reports (with the penalty's polish the scans found fewer: a
stricter check).
"""

import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from threadpoolctl import threadpool_info, threadpool_limits

from calibration.acquisitions import Acquisition, load_acquisition
from calibration.characterise import characterise
from calibration.model_selection import with_degree
from calibration.opd_search import AMBIGUOUS_CHI2, IMPROVEMENT, loss_kwargs, profile_costs
from calibration.regression import bank_rows, fit, series_range
from calibration.report import to_json
from calibration.simulate import SweepSpec, simulate_sweep

#: ../shared/data/imspoc beside the checkout, or where ONBOARD_IMSPOC_DATA says
SHARED = Path(os.environ.get("ONBOARD_IMSPOC_DATA",
                             Path(__file__).resolve().parents[2] / "shared" / "data" / "imspoc"))
needs_shared = pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/data/imspoc is not present")


def _slice(name: str, start: int, stop: int) -> Acquisition:
    acq = load_acquisition(SHARED / name)
    return replace(acq.subset(slice(start, stop)), first_index=acq.first_index + start)


def _refit(c, rows, opd_um, iterations: int = 30):
    """Fits of ``rows`` with their OPD held at ``opd_um`` (the cost's profile), on the
    characterisation's own cost (its model and degree; least squares, or Huber at the held
    scale without the outlier lines)."""
    y, sigma = c.acquisition.responses(), c.acquisition.sigma
    g = with_degree(c.guess, y, sigma, c.selection.degree)
    return profile_costs(c.result, y, sigma, g, c.selection.harmonics, c.selection.degree,
                         rows, opd_um, ~c.result.outliers, iterations, exact_bounds=True,
                         active_set=True)


def _lower_within_two_cells(c) -> np.ndarray:
    """The interferometers (beyond those reported ambiguous) where a dense scan of the cost
    over +- 2 resolution cells, a tenth of a cell apart (the OPD held, the rest fitted),
    finds a point lower than the reported fit by more than the search's ``IMPROVEMENT``."""
    n = len(c.bank)
    res = c.checks["resolution_um"]
    offsets = np.arange(-2.0, 2.0001, 0.1) * res
    rows = np.repeat(np.arange(n), offsets.size)
    scan = _refit(c, rows, c.bank.opd_um[rows] + np.tile(offsets, n))
    lowest = scan.robust_cost.reshape(n, offsets.size).min(axis=1)
    ambiguous = np.zeros(n, bool)
    ambiguous[c.checks["ambiguous_index"]] = True
    return np.flatnonzero((lowest < (1 - IMPROVEMENT) * c.result.robust_cost) & ~ambiguous)


@pytest.mark.realdata
@needs_shared
@pytest.mark.parametrize("start, stop", [(44, 64), (110, 130), (185, 212)])
def test_no_lower_cost_within_two_resolution_cells_on_imspoc_uv_2(start: int, stop: int) -> None:
    """(On the code before the bound polish and the polish of unconverged fits, the scan
    found 121 5 % lower, 192 and 209 0.4 % and 0.2 % lower, each at its own OPD.)"""
    c = characterise(_slice("imspoc_uv_2", start, stop))
    assert _lower_within_two_cells(c).size == 0, start + _lower_within_two_cells(c)
    # interferometers with outlier lines (46, 60, 110, 115) are checked too, on their Huber
    # cost at the scale they hold
    robust = c.result.outliers.any(axis=1)
    assert robust.any() or start == 185
    assert np.array_equal(np.isfinite(c.result.huber_scale), robust)
    if start == 44:  # interferometer 53 (row 9) sits in the lower minimum near 9.86 µm
        assert abs(c.bank.opd_um[9] - 9.86) < 0.05


@pytest.mark.realdata
@needs_shared
def test_no_lower_cost_at_the_same_opd_for_fits_on_the_reflectivity_bound_on_imspoc_uv_1() -> None:
    """(On the code before the restarts at the fits' own OPDs, the scan found 67 and 86
    lower at their own OPD.)"""
    c = characterise(_slice("imspoc_uv_1", 60, 92))
    assert _lower_within_two_cells(c).size == 0, 60 + _lower_within_two_cells(c)
    # both rest on the reflectivity's lower bound (the restart's case)
    lo, _ = series_range(c.bank.reflectivity_cheb[[7, 26]])
    assert np.all(lo < 1e-4)


@pytest.mark.realdata
@needs_shared
def test_no_lower_cost_at_the_same_opd_for_fits_on_the_reflectivity_bound_on_imagaz_1() -> None:
    """(On the code before the restarts at the fits' own OPDs, the scan found 24, 31, 33, 34
    and 37 lower, each at its own OPD.)"""
    c = characterise(_slice("imagaz_1", 23, 41))
    assert _lower_within_two_cells(c).size == 0, 23 + _lower_within_two_cells(c)


@pytest.mark.realdata
@needs_shared
def test_fits_on_the_reflectivity_bound_reach_the_minimum_at_their_opd_on_wfai_1() -> None:
    """The bound on R held exactly (an active set): each fit is the lowest cost at its own
    OPD that a refit from the data's phase there finds. (With the bound held by a penalty,
    the points found on it kept, the refits found 355, 356, 359 and 362 0.2-1 % lower
    at their own OPD: other points of the series on the bound.)"""
    c = characterise(_slice("wfai_1", 355, 365))
    rows = np.arange(len(c.bank))
    refit = _refit(c, rows, c.bank.opd_um).robust_cost
    assert np.all(refit >= (1 - IMPROVEMENT) * c.result.robust_cost), \
        355 + np.flatnonzero(refit < (1 - IMPROVEMENT) * c.result.robust_cost)
    lo, _ = series_range(c.bank.reflectivity_cheb)
    assert (lo < 1e-4).sum() >= 5  # the case: most of them rest on the bound


@pytest.mark.realdata
@needs_shared
def test_a_fit_off_the_datas_phase_is_also_refined_from_its_best_start_on_wfai_1() -> None:
    """wfai_1 392's fit (68.50 µm) is 0.2 rad or more off the data's phase at its OPD, so the
    search refits it from there; its best start, 1.25 cells away, screened 5 % below the fit
    but was not refined (the refit from the data's phase took its place), and the minimum
    there, 69.26 µm, is 9 % lower. (Before, 392 stayed at 68.50 µm.)"""
    c = characterise(_slice("wfai_1", 388, 396))
    i = 392 - 388
    res = c.checks["resolution_um"]
    assert abs(c.bank.opd_um[i] - 69.26) < 0.1 * res
    # the cost there is the lower by far: at the old OPD (the rest fitted) it is 9 % higher
    old = _refit(c, np.array([i]), np.array([68.50])).robust_cost[0]
    assert c.result.robust_cost[i] < 0.95 * old


@pytest.mark.realdata
@needs_shared
def test_outlier_line_interferometer_searched_on_its_huber_cost_on_imagaz_1() -> None:
    """Interferometer 4 of imagaz_1 has outlier lines: its fit is robust (Huber), at a scale
    held from the least-squares fit that named the outliers, so fits from other OPDs compare
    with it; the search finds its second minimum, within the noise, and reports both OPDs.
    (Before, interferometers with outlier lines were not searched at all.)"""
    c = characterise(_slice("imagaz_1", 0, 16))
    assert c.result.outliers[4].any() and np.isfinite(c.result.huber_scale[4])
    assert 4 in c.checks["ambiguous_index"]
    doc = to_json(c)
    alt = doc["interferometers"][4]["opd_alternative_um"]
    assert abs(alt - c.bank.opd_um[4]) >= 0.1 * c.checks["resolution_um"]
    # the reported cost is the Huber cost at the held scale: re-evaluated there, the same
    y, sigma = c.acquisition.responses(), c.acquisition.sigma
    g = with_degree(c.guess, y, sigma, c.selection.degree)
    rows = np.array([4])
    again = fit(y[rows], sigma, g.rows(rows), harmonics=c.selection.harmonics,
                reflectivity_degree=c.selection.degree, start=bank_rows(c.bank, rows),
                max_iterations=0, uncertainty=False,
                **loss_kwargs(c.result.huber_scale, ~c.result.outliers, rows))
    assert again.robust_cost[0] == pytest.approx(c.result.robust_cost[4], rel=1e-9)
    # the other minimum's cost (Huber at the same scale) is within the noise and not below;
    # profiled on the same cost, it is not below either
    lines = c.acquisition.n_lines - c.result.outliers[4].sum()
    p = 2 + c.bank.gain_cheb.shape[1] + c.bank.reflectivity_cheb.shape[1]
    cost = c.result.robust_cost[4]
    alt_cost = doc["interferometers"][4]["cost_alternative"]
    assert (1 - IMPROVEMENT) * cost <= alt_cost < cost * (1 + AMBIGUOUS_CHI2 / (lines - p))
    assert _refit(c, rows, np.array([alt])).robust_cost[0] >= (1 - IMPROVEMENT) * cost


@pytest.mark.realdata
@needs_shared
def test_ambiguous_minima_reported_with_both_opds_on_wfai_1() -> None:
    c = characterise(_slice("wfai_1", 620, 640))
    doc = to_json(c)
    amb = [r for r in doc["interferometers"] if r["ambiguous"]]
    assert amb and len(amb) == len(c.checks["ambiguous_index"])
    assert doc["summary"]["ambiguous"] == len(amb)
    rows = np.array([r["index"] for r in amb])
    alt = np.array([r["opd_alternative_um"] for r in amb])
    # the other minimum is distinct, its cost within the noise of the reported fit's and
    # not below it; the cost's profile there (OPD held, the rest fitted from the reported
    # fit) is not below it either
    assert np.all(np.abs(alt - c.bank.opd_um[rows]) >= 0.1 * c.checks["resolution_um"])
    lines = c.acquisition.n_lines - c.result.outliers[rows].sum(1)
    p = 2 + c.bank.gain_cheb.shape[1] + c.bank.reflectivity_cheb.shape[1]
    cost = c.result.robust_cost[rows]
    alt_cost = np.array([r["cost_alternative"] for r in amb])
    assert np.all(alt_cost >= (1 - IMPROVEMENT) * cost)
    assert np.all((alt_cost - cost) / cost < AMBIGUOUS_CHI2 / (lines - p))
    assert np.all(_refit(c, rows, alt).robust_cost >= (1 - IMPROVEMENT) * cost)
    # unambiguous ones carry no alternative
    assert all(r["opd_alternative_um"] is None for r in doc["interferometers"] if not r["ambiguous"])


def test_characterise_limits_blas_threads_itself() -> None:
    """In-process calls ran with the process's BLAS threads (5.4-6.5 s against 0.46-0.50 s
    with one, measured on imspoc_uv_2); the library must set one thread whatever the caller
    has."""
    acq, _ = simulate_sweep(SweepSpec(n_interferometers=12, n_lines=120, seed=3))
    seen: list[int] = []

    def progress(_message: str) -> None:
        seen.extend(i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas")

    with threadpool_limits(limits=2, user_api="blas"):
        before = [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]
        if not before or max(before) < 2:
            pytest.skip("this BLAS cannot run two threads here")
        characterise(acq, progress=progress)
        after = [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]
    assert seen and set(seen) == {1}
    assert after == before  # the caller's setting is given back


def test_series_range_near_bounds_is_exact_and_the_lift_unchanged() -> None:
    """The fit asks series_range only about extrema near its bounds (the others keep the
    513-point grid's value): near a bound the extremum is the exact one, elsewhere within
    a thousandth of the series' scale, and every series ends inside its bounds."""
    from numpy.polynomial import chebyshev

    from calibration.regression import _lift_into_bounds

    rng = np.random.default_rng(5)
    coef = rng.normal(0.0, 0.1, (400, 9))
    coef[:, 0] = rng.uniform(0.0, 0.6, 400)  # many near R = 0, some across it
    lo_all, hi_all = series_range(coef)
    lo, hi = series_range(coef, 0.0, 0.99)
    scale = np.abs(coef).sum(axis=1)
    near_lo = lo_all < 0.0 + 0.01 * scale * 0.5
    assert np.array_equal(lo[near_lo], lo_all[near_lo])
    assert np.all(np.abs(lo - lo_all) <= 1e-3 * scale) and np.all(np.abs(hi - hi_all) <= 1e-3 * scale)
    assert np.all(lo >= lo_all) and np.all(hi <= hi_all)  # a grid never overshoots
    lifted = _lift_into_bounds(coef, 0.0, 0.99)
    for part in np.array_split(lifted, 4):
        dense = part @ chebyshev.chebvander(np.linspace(-1.0, 1.0, 200_001), 8).T
        assert dense.min() >= 0.0 and dense.max() <= 0.99


def test_uncertainties_computed_once_at_the_reported_fits() -> None:
    """The search's fits skip their uncertainties; characterise() computes them once at the
    fits it reports: the same as a fit's own at its solution (to rounding), finite, and by
    LU where the normal matrix inverts, by the pseudo-inverse where it does not."""
    from calibration.regression import _inverse

    acq, _ = simulate_sweep(SweepSpec(n_interferometers=12, n_lines=120, seed=3))
    c = characterise(acq)
    y, sigma = acq.responses(), acq.sigma
    g = with_degree(c.guess, y, sigma, c.selection.degree)
    rows = np.arange(len(c.bank))
    own = fit(y, sigma, g, harmonics=c.selection.harmonics, reflectivity_degree=c.selection.degree,
              start=c.bank, max_iterations=0, **loss_kwargs(c.result.huber_scale, ~c.result.outliers,
                                                            rows)).sigma_params
    assert np.all(np.isfinite(c.result.sigma_params))
    np.testing.assert_allclose(c.result.sigma_params, own, rtol=1e-9)
    rng = np.random.default_rng(2)
    a = rng.normal(size=(4, 5, 5))
    a = a @ a.transpose(0, 2, 1)
    a[1] = np.outer(a[1, 0], a[1, 0])  # rank one: no inverse
    out = _inverse(a)
    np.testing.assert_allclose(out, np.linalg.pinv(a), rtol=1e-8, atol=1e-12)
