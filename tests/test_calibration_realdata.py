"""Characterisation of the real prototypes.

CI runs on the shipped subsets (tests/data/imspoc: 20 consecutive interferometers from the
middle of each bank, IRCA licence beside them). There is no ground truth for real data, so
the tests check what must hold whatever the truth: the physical range of R and G, OPDs on
the bank's thickness series (no wrong periodogram peak), and that a subset, characterised
alone, finds the same OPDs as the whole bank (when ../shared/data is present). Full-bank
runs are marked ``realdata`` and ``slow``; the figures themselves are in the bench script.
"""

from pathlib import Path

import numpy as np
import pytest

from calibration.acquisitions import load_acquisition
from calibration.characterise import characterise, trend_prediction
from calibration.model_selection import with_degree
from calibration.opd_search import IMPROVEMENT, profile_costs

SUBSETS = Path(__file__).parent / "data" / "imspoc"
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "imspoc"
PROTOTYPES = ["imspoc_uv_1", "imspoc_uv_2", "imagaz_1", "wfai_1"]
# the IRCA reference's median residual on each whole bank, on the recorded data (issue 3)
REFERENCE_MEDIAN = {"imspoc_uv_1": 0.193, "imspoc_uv_2": 0.126, "imagaz_1": 0.065, "wfai_1": 0.212}
# its 95th percentile there, and its median and 95th percentile on data / norm, measured by
# running its code (bench/bench_characterisation.py says how)
REFERENCE_P95 = {"imspoc_uv_1": 0.2653, "imspoc_uv_2": 0.1969, "imagaz_1": 0.1042, "wfai_1": 0.3134}
REFERENCE_NORM = {"imspoc_uv_1": (0.2176, 0.2862), "imspoc_uv_2": (0.1762, 0.2830),
                  "imagaz_1": (0.0661, 0.1043), "wfai_1": (0.2123, 0.3134)}


@pytest.fixture(scope="module", params=PROTOTYPES)
def subset(request):
    acq = load_acquisition(SUBSETS / request.param)
    return request.param, acq, characterise(acq)


def test_subset_is_physical_and_on_its_thickness_series(subset) -> None:
    name, acq, c = subset
    assert c.checks["r_outside_0_1"] == 0, c.checks["r_min"]
    assert c.checks["g_negative"] == 0
    assert c.checks["low_margin"] == 0
    # an OPD off its neighbours' trend is no wrong peak only if the data prefer it: the cost
    # with the OPD held where the neighbours put it (the rest fitted) is not lower than the
    # reported fit's (wfai_1's thickness series is not smooth around this subset)
    off = np.array(c.checks["trend_outlier_index"], dtype=int)
    if off.size:
        y = acq.responses()
        trend = trend_prediction(c.bank.opd_um, c.guess, acq.opd_step_um, acq.first_index)
        g = with_degree(c.guess, y, acq.sigma, c.selection.degree)
        there = profile_costs(c.result, y, acq.sigma, g, c.selection.harmonics,
                              c.selection.degree, off, trend[off], ~c.result.outliers, 30,
                              exact_bounds=True).robust_cost
        assert np.all(there >= (1 - IMPROVEMENT) * c.result.robust_cost[off])
    assert c.checks["opd_trend_outliers"] <= 4
    # each OPD within a few design steps of the ridge line through the bank's periodogram
    k = acq.first_index + np.arange(acq.n_interferometers)
    offset, scale = c.guess.ridge
    line = offset + scale * acq.opd_step_um * k
    assert np.all(np.abs(c.bank.opd_um - line) < max(8 * acq.opd_step_um, 2 * c.checks["resolution_um"]))
    # the fit explains the data: residual below the raw fluctuation of the responses
    y = acq.responses()
    raw = y.std(axis=1) / y.mean(axis=1)
    assert np.median(c.rms) < 0.8 * np.median(raw)


@pytest.mark.realdata
@pytest.mark.slow
@pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/data/imspoc is not present")
@pytest.mark.parametrize("name", PROTOTYPES)
def test_whole_bank_against_reference_and_subset(name: str) -> None:
    full = load_acquisition(SHARED / name)
    c = characterise(full)
    s = c.summary()
    assert s["r_outside_0_1"] == 0 and s["g_negative"] == 0
    # no worse than the reference on the recorded data (median at the 3 decimals the issue
    # gives) and on data / norm
    assert round(s["rms_recorded_median"], 3) <= REFERENCE_MEDIAN[name]
    assert s["rms_recorded_p95"] <= REFERENCE_P95[name]
    norm_median, norm_p95 = REFERENCE_NORM[name]
    assert s["rms_median"] <= norm_median and s["rms_p95"] <= norm_p95
    sub = load_acquisition(SUBSETS / name)
    cs = characterise(sub)
    rows = slice(sub.first_index, sub.first_index + sub.n_interferometers)
    # the subset alone lands on the same fringe as the whole bank: within a tenth of the
    # OPD resolution (a wrong peak would be a whole resolution away)
    assert np.all(np.abs(cs.bank.opd_um - c.bank.opd_um[rows]) < 0.2 * c.checks["resolution_um"])
