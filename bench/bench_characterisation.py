"""Characterisation benchmark on the four real prototypes, simulated truth, and the
monochromatic line check on ImSPOC-UV-2.

    python bench/bench_characterisation.py [--data ../shared/data/imspoc] [--json out.json]

Per prototype: median and 95th-percentile mean-normalised RMS residual, ``RMS(fit - y) /
mean(y)`` per interferometer with ``y = data / norm`` (and the same on the recorded data,
``RMS(norm fit - data) / mean(data)``), wall and CPU time, the model and degree chosen, the
reflectivity range over the whole domain (exact extrema of the series) and the count of
interferometers with R outside [0, 1), and the OPD checks (see calibration.characterise): trend outliers (an OPD more than
one resolution off the running median of its neighbours), periodogram peaks with margin <= 1
in their window, OPDs that left their starting lobe, how many the unwindowed periodogram
maximum would have got wrong (for comparison), and the wrong-peak guard: suspects refitted
from their neighbours' OPD, and how many of those fitted better (wrong peaks corrected);
``unsettled``: trend outliers whose last refit from the trend fitted better (not shown to be
the data's choice; every other trend outlier was refitted from the trend and fitted worse).

The reference figures are the IRCA code's: the issue's median and time (2 cores), and its 95th percentile on both measures, from
running its published code (commit ec038ee, its own options files, the design's OPD step as
the starting OPD) on this machine. That code fits the *recorded* data (``data / mean(data)``,
the gain series absorbing the source's spectrum); the issue's medians are its residuals
there (0.126, 0.193, 0.065, 0.212 reproduced to 3 decimals), so ``rec.med`` and ``rec.p95``
are the like-for-like columns; on ``data / norm`` its residuals are higher (columns ``ref
n.med`` / ``ref n.p95``).

``--only NAME`` runs one prototype (and skips the simulated cases).

BLAS runs single-threaded: the work is many small products, where OpenBLAS threads cost
more than they give (10x slower on a loaded 2-core machine).
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from calibration.acquisitions import load_acquisition  # noqa: E402
from calibration.calfile_writer import default_bands  # noqa: E402
from calibration.characterise import characterise  # noqa: E402
from calibration.monochromatic import check_lines  # noqa: E402
from calibration.simulate import SweepSpec, simulate_sweep, truth_errors  # noqa: E402

#: The IRCA reference code: median residual on the recorded data and time (s, 2 cores) from
#: the issue; 95th percentile on the recorded data, median and 95th percentile on data / norm,
#: measured by running it here (see the module docstring).
REFERENCE = {
    "imspoc_uv_2": {"median": 0.126, "time_s": 11.0, "p95": 0.1969, "norm_median": 0.1762,
                    "norm_p95": 0.2830},
    "imspoc_uv_1": {"median": 0.193, "time_s": 29.0, "p95": 0.2653, "norm_median": 0.2176,
                    "norm_p95": 0.2862},
    "imagaz_1": {"median": 0.065, "time_s": 13.0, "p95": 0.1042, "norm_median": 0.0661,
                 "norm_p95": 0.1043},
    "wfai_1": {"median": 0.212, "time_s": 99.0, "p95": 0.3134, "norm_median": 0.2123,
               "norm_p95": 0.3134},
}
DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "imspoc"


def real(data: Path, only: str | None = None) -> list[dict]:
    rows = []
    for name, ref in REFERENCE.items():
        if only is not None and name != only:
            continue
        acq = load_acquisition(data / name)
        t0, c0 = time.perf_counter(), time.process_time()
        c = characterise(acq)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        s = c.summary()
        rows.append({**s, "wall_s": wall, "cpu_s": cpu, "reference": ref,
                     "speedup": ref["time_s"] / wall,
                     "bic": c.selection.bic, "timings_s": c.timings_s})
        if name == "imspoc_uv_2":
            y = acq.responses()
            bands = default_bands(c)
            rows[-1]["monochromatic"] = [
                vars(check_lines(c.bank, acq.sigma, y, bands, prior))
                for prior in ("ridge", "smooth")
            ]
    return rows


def simulated() -> list[dict]:
    out = []
    cases = {
        "low finesse": {"reflectivity": (0.05, 0.2)},
        "high finesse": {"reflectivity": (0.5, 0.7)},
        "low + 2% dead + saturated line": {"reflectivity": (0.05, 0.2), "dead_fraction": 0.02,
                                           "saturated_line": True},
        "high + 2% dead + saturated line": {"reflectivity": (0.5, 0.7), "dead_fraction": 0.02,
                                            "saturated_line": True},
        "low, irregular lines": {"reflectivity": (0.05, 0.2), "irregular": True},
    }
    for label, kw in cases.items():
        acq, truth = simulate_sweep(SweepSpec(seed=11, **kw))
        c = characterise(acq)
        e = truth_errors(c.bank, truth, acq.sigma)
        k = e["fringes"] >= 6
        ok = (((e["opd_rel"] < 0.005) | (e["opd_abs_um"] < 0.005)) & (e["reflectivity_abs"] < 0.02)
              & (e["gain_rel"] < 0.02))
        out.append({
            "case": label, "model": c.selection.model, "interferometers": int(k.sum()),
            "within_tolerance": int(ok[k].sum()),
            "opd_err_p95_nm": float(np.percentile(e["opd_abs_um"][k], 95) * 1000),
            "r_err_p95": float(np.percentile(e["reflectivity_abs"][k], 95)),
            "gain_err_p95_pct": float(np.percentile(e["gain_rel"][k], 95) * 100),
            "opd_err_max_nm": float(e["opd_abs_um"][k].max() * 1000),
            "r_err_max": float(e["reflectivity_abs"][k].max()),
            "gain_err_max_pct": float(e["gain_rel"][k].max() * 100),
        })
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--skip-simulated", action="store_true")
    ap.add_argument("--only", choices=list(REFERENCE), default=None)
    args = ap.parse_args()
    rows = real(args.data, args.only)
    print("residuals: rec = on the recorded data (the reference's measure), n = on data / norm")
    print("prototype     N    S  model        deg  rec.med rec.p95 ref.med ref.p95  n.med   n.p95 "
          "  ref n.med ref n.p95  wall s  cpu s  ref s  speedup  R range          R out  trend"
          " unsettled  margin<=1  moved  unguarded  alt.tried  alt.better  restarts")
    for r in rows:
        ref = r["reference"]
        print(f"{r['acquisition']:<12} {r['interferometers']:>4} {r['lines']:>4}  {r['model']:<11} "
              f"{r['degree']:>3}  {r['rms_recorded_median']:.4f}  {r['rms_recorded_p95']:.4f}  "
              f"{ref['median']:.3f}   {ref['p95']:.4f}  {r['rms_median']:.4f}  {r['rms_p95']:.4f}  "
              f"{ref['norm_median']:.4f}    {ref['norm_p95']:.4f}  {r['wall_s']:6.2f} "
              f"{r['cpu_s']:6.2f}  {ref['time_s']:5.0f}  "
              f"{r['speedup']:6.1f}x  [{r['r_min']:.4f}, {r['r_max']:.4f}]  {r['r_outside_0_1']:>5}"
              f"  {r['opd_trend_outliers']:>5}  {r['trend_unsettled']:>9}  {r['low_margin']:>9}  {r['moved']:>5}  "
              f"{r['unguarded_wrong']:>9}  {r['alternative_tried']:>9}  {r['alternative_better']:>10}"
              f"  {r['restarts_better']:>3}/{r['restarts_tried']:<3}")
    for r in rows:
        for m in r.get("monochromatic", []):
            print(f"monochromatic check {r['acquisition']}: {m['found']}/{m['lines']} line peaks on "
                  f"the true band ({m['within_one_band']} within one band), {m['bands']} bands, "
                  f"{m['prior']} prior, GCV weight per line (reference: 423/451)")
    sims = [] if args.skip_simulated or args.only else simulated()
    if sims:
        print("\nsimulated truth (SNR 100, interferometers with >= 6 fringes)")
        print("case                               model       ok/N    OPD p95 nm  R p95   G p95 %"
              "  OPD max nm  R max   G max %")
        for s in sims:
            print(f"{s['case']:<34} {s['model']:<10} {s['within_tolerance']:>3}/{s['interferometers']:<3}"
                  f"  {s['opd_err_p95_nm']:9.2f}  {s['r_err_p95']:.4f}  {s['gain_err_p95_pct']:6.2f}"
                  f"  {s['opd_err_max_nm']:10.2f}  {s['r_err_max']:.4f}  {s['gain_err_max_pct']:6.2f}")
    if args.json:
        args.json.write_text(json.dumps({"real": rows, "simulated": sims}, indent=1))


if __name__ == "__main__":
    main()
