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
``unsettled``: trend outliers whose cost with the OPD held at the trend's is lower than the
fit's (not shown to be the data's choice; see calibration.characterise).

The reference figures are the IRCA code's: the issue's median and time (2 cores), and its 95th percentile on both measures, from
running its published code (commit ec038ee, its own options files, the design's OPD step as
the starting OPD) on this machine. That code fits the *recorded* data (``data / mean(data)``,
the gain series absorbing the source's spectrum); the issue's medians are its residuals
there (0.126, 0.193, 0.065, 0.212 reproduced to 3 decimals), so ``rec.med`` and ``rec.p95``
are the like-for-like columns; on ``data / norm`` its residuals are higher (columns ``ref
n.med`` / ``ref n.p95``).

``--only NAME`` runs one prototype (and skips the simulated cases).

``--baseline DIR`` (a checkout of other code, e.g. ``git worktree add /tmp/base e0eb24a``)
characterises every prototype with that code too, in the same run: each characterisation is
a fresh subprocess (this file's ``--worker`` mode, importing ``calibration`` from the code it
is given), old and new alternating, ``--repeats`` times each; the table gives the fastest
wall and CPU time of each (the machine is shared: the fastest is the least disturbed), the
new / old ratios, the old residuals, and how many OPDs moved by a tenth of a resolution
cell or more.

``--verify`` checks every reported fit against a dense scan of its cost over +- 2
resolution cells around its OPD, a tenth of a cell apart: at each point the OPD is held and
everything else fitted (30 iterations, from the reported fit, the phase from the data), on
the fit's own cost (least squares; for an interferometer with outlier lines, Huber at the
scale its fit held, those lines left out), the series shifted into their bounds and polished
there with the points of R on a bound held exactly, as the search polishes the fits it
reports. ``lower`` counts interferometers where a point costs less than the reported fit by
more than the search's ``IMPROVEMENT`` (0.1 %), among those not reported ambiguous; with
``--baseline`` the old fits are scanned the same way (older code holds no Huber scale: its
interferometers with outlier lines are not checked, their count is printed).

BLAS runs single-threaded: the work is many small products, where OpenBLAS threads cost
more than they give (10x slower on a loaded 2-core machine).
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import json  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import click  # noqa: E402
import numpy as np  # noqa: E402

from calibration.acquisitions import Acquisition, load_acquisition  # noqa: E402
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


def _characterise_here(name: str, data: Path, out: Path, mono: bool) -> None:
    """Worker: characterise one prototype with whatever ``calibration`` is importable and
    write the summary, times and fitted bank to ``out`` (npz; API common to old and new)."""
    acq = load_acquisition(data / name)
    t0, c0 = time.perf_counter(), time.process_time()
    c = characterise(acq)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    s = {**c.summary(), "wall_s": wall, "cpu_s": cpu, "bic": c.selection.bic,
         "timings_s": c.timings_s}
    if mono:
        y, bands = acq.responses(), default_bands(c)
        s["monochromatic"] = [vars(check_lines(c.bank, acq.sigma, y, bands, prior))
                              for prior in ("ridge", "smooth")]
    # (older code holds no Huber scale: its robust fits are not verified)
    scale = getattr(c.result, "huber_scale", np.full(len(c.bank), np.nan))
    np.savez(out, summary=json.dumps(s, default=int), outliers=c.result.outliers,
             huber_scale=scale,
             ambiguous=np.asarray(c.checks.get("ambiguous_index", []), dtype=int),
             harmonics_model=np.asarray(-1 if c.selection.harmonics is None
                                        else c.selection.harmonics),
             degree=np.asarray(c.selection.degree),
             **{f"bank_{k}": v for k, v in c.bank.arrays().items()})


def _run_worker(code: Path, name: str, data: Path, mono: bool) -> dict:
    """One characterisation in a fresh process importing ``calibration`` from ``code``."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "fit.npz"
        env = {**os.environ, "PYTHONPATH": str(code)}
        cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", name, "--data",
               str(data), "--out", str(out)] + (["--mono"] if mono else [])
        subprocess.run(cmd, env=env, check=True, cwd=code)
        z = np.load(out)
        fit_ = {k: z[k] for k in z.files}
    doc = json.loads(str(fit_.pop("summary")))
    doc["fit"] = fit_
    return doc


def real(data: Path, only: str | None = None, baseline: Path | None = None,
         repeats: int = 1) -> list[dict]:
    """Per prototype: new (and old) code, ``repeats`` alternating fresh runs, fastest times."""
    here = Path(__file__).resolve().parents[1]
    rows = []
    for name, ref in REFERENCE.items():
        if only is not None and name != only:
            continue
        runs: dict[str, list[dict]] = {"new": [], "old": []}
        for r in range(repeats):
            if baseline is not None:
                runs["old"].append(_run_worker(baseline, name, data, False))
            runs["new"].append(_run_worker(here, name, data, r == 0 and name == "imspoc_uv_2"))
        new = runs["new"][0]
        row = {**new, "wall_s": min(x["wall_s"] for x in runs["new"]),
               "cpu_s": min(x["cpu_s"] for x in runs["new"]), "reference": ref}
        row["speedup"] = ref["time_s"] / row["wall_s"]
        if baseline is not None:
            old = runs["old"][0]
            row["old"] = {**{k: old[k] for k in ("rms_median", "rms_p95", "rms_recorded_median",
                                                 "rms_recorded_p95", "model", "degree")},
                          "wall_s": min(x["wall_s"] for x in runs["old"]),
                          "cpu_s": min(x["cpu_s"] for x in runs["old"]), "fit": old["fit"]}
            res = row["resolution_um"]
            moved = np.abs(new["fit"]["bank_opd_um"] - old["fit"]["bank_opd_um"]) >= 0.1 * res
            row["moved_vs_old"] = int(moved.sum())
            row["moved_vs_old_index"] = np.flatnonzero(moved).tolist()
        rows.append(row)
    return rows


def _bank(fit_: dict):
    from onboard.physics.interferometers import InterferometerBank

    return InterferometerBank.from_arrays({k[5:]: v for k, v in fit_.items() if k.startswith("bank_")})


def dense_scan(acq: Acquisition, fit_: dict, cells: float = 2.0, step: float = 0.1,
               chunk: int = 4096) -> dict:
    """The ``--verify`` scan of one fitted bank (see the module docstring)."""
    # imported here: a --worker of older code has none of these
    from calibration.initialise import initialise
    from calibration.model_selection import with_degree
    from calibration.opd_search import IMPROVEMENT, loss_kwargs, profile_costs
    from calibration.regression import fit

    y, sigma = acq.responses(), acq.sigma
    bank = _bank(fit_)
    keep = ~fit_["outliers"]
    h = int(fit_["harmonics_model"])
    harmonics, degree = (None if h < 0 else h), int(fit_["degree"])
    g = with_degree(initialise(y, sigma, acq.opd_step_um, first_index=acq.first_index), y,
                    sigma, bank.gain_cheb.shape[1] - 1)
    n = len(bank)
    # the reported fit's cost, on the same definition (0 iterations from the fit itself)
    scale = fit_["huber_scale"]
    reported = fit(y, sigma, g, harmonics=harmonics, reflectivity_degree=degree, start=bank,
                   max_iterations=0, uncertainty=False,
                   **loss_kwargs(scale, keep, np.arange(n))).robust_cost
    res = 1.0 / float(np.ptp(sigma))
    offsets = np.arange(-cells, cells + step / 2, step) * res
    rows = np.repeat(np.arange(n), offsets.size)
    opd = bank.opd_um[rows] + np.tile(offsets, n)
    cost = np.empty(rows.size)
    current = _as_result(bank, n, y.shape[1], scale)
    for i in range(0, rows.size, chunk):
        sl = slice(i, i + chunk)
        cost[sl] = profile_costs(current, y, sigma, g, harmonics, degree, rows[sl], opd[sl],
                                 keep, 30, exact_bounds=True, active_set=True).robust_cost
    cost = cost.reshape(n, offsets.size)
    lowest = cost.min(axis=1)
    ambiguous = np.zeros(n, bool)
    ambiguous[fit_["ambiguous"]] = True
    # interferometers with outlier lines are checked on their Huber cost at the scale their
    # fit held; a fit that holds none (older code) is not checked
    robust = ~keep.all(axis=1) & ~np.isfinite(scale)
    lower = (lowest < (1.0 - IMPROVEMENT) * reported) & ~robust
    where = offsets[np.argmin(cost, axis=1)] / res
    return {"lower": int((lower & ~ambiguous).sum()), "lower_ambiguous": int((lower & ambiguous).sum()),
            "robust_checked": int((~keep.all(axis=1) & np.isfinite(scale)).sum()),
            "ambiguous": int(ambiguous.sum()), "robust_not_checked": int(robust.sum()),
            "lower_index": np.flatnonzero(lower & ~ambiguous).tolist(),
            "lower_at_cells": where[lower & ~ambiguous].round(2).tolist(),
            "lower_by": (1 - lowest / reported)[lower & ~ambiguous].round(4).tolist(),
            "points": int(rows.size)}


def _as_result(bank, n: int, s: int, huber_scale: np.ndarray):
    """A FitResult holding only a bank and its Huber scales (what the scan starts from)."""
    from calibration.regression import FitResult

    nan = np.full(n, np.nan)
    return FitResult(bank, np.zeros((n, s)), nan, np.zeros((n, s), bool), nan[:, None], 0,
                     np.ones(n, bool), nan, huber_scale)


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


@click.command(help=__doc__.split("\n")[0])
@click.option("--data", type=click.Path(file_okay=False, path_type=Path), default=DEFAULT_DATA,
              show_default=True)
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--skip-simulated", is_flag=True)
@click.option("--only", type=click.Choice(list(REFERENCE)))
@click.option("--baseline", type=click.Path(file_okay=False, path_type=Path),
              help="a checkout of the code to compare with, run in the same session")
@click.option("--repeats", type=int, default=1, show_default=True)
@click.option("--verify", is_flag=True,
              help="dense cost scan over +- 2 resolution cells around every fit")
@click.option("--worker", hidden=True)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), hidden=True)
@click.option("--mono", is_flag=True, hidden=True)
def main(data: Path, json_path: Path | None, skip_simulated: bool, only: str | None,
         baseline: Path | None, repeats: int, verify: bool, worker: str | None,
         out: Path | None, mono: bool) -> None:
    if worker:
        _characterise_here(worker, data, out, mono)
        return
    rows = real(data, only, baseline, repeats)
    print(f"residuals: rec = on the recorded data (the reference's measure), n = on data / norm; "
          f"times: fastest of {repeats} fresh runs")
    print("prototype     N    S  model        deg  rec.med rec.p95 ref.med ref.p95  n.med   n.p95 "
          "  ref n.med ref n.p95  wall s  cpu s  ref s  speedup  R range          R out  trend"
          " unsettled  margin<=1  moved  unguarded  alt.tried  alt.better  restarts  search"
          " moved  ambiguous")
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
              f"  {r['restarts_better']:>3}/{r['restarts_tried']:<3}  {r['search_moved']:>4}/"
              f"{r['search_refined']:<4} {r['ambiguous']:>9}")
    for r in rows:
        for m in r.get("monochromatic", []):
            print(f"monochromatic check {r['acquisition']}: {m['found']}/{m['lines']} line peaks on "
                  f"the true band ({m['within_one_band']} within one band), {m['bands']} bands, "
                  f"{m['prior']} prior, GCV weight per line (reference: 423/451)")
    if baseline is not None:
        print(f"\nnew against {baseline} (same session, fresh processes, alternating)")
        print("prototype     n.med          n.p95          rec.med        rec.p95        "
              "wall s (old, new, x)   cpu s (old, new, x)   OPDs moved >= 0.1 cell")
        for r in rows:
            o = r["old"]
            cols = "".join(f"{o[k]:.4f}->{r[k]:.4f}  " for k in ("rms_median", "rms_p95",
                                                                  "rms_recorded_median",
                                                                  "rms_recorded_p95"))
            print(f"{r['acquisition']:<12}  {cols}{o['wall_s']:5.2f} {r['wall_s']:5.2f} "
                  f"{r['wall_s'] / o['wall_s']:4.2f}x     {o['cpu_s']:5.2f} {r['cpu_s']:5.2f} "
                  f"{r['cpu_s'] / o['cpu_s']:4.2f}x     {r['moved_vs_old']}")
    if verify:
        print("\ndense scan +- 2 resolution cells, 0.1 cell apart: interferometers with a lower "
              "cost than the reported fit (by > 0.1 %), beyond those reported ambiguous")
        print("prototype       N  lower (new)  ambiguous  lower among ambiguous  outlier-line rows"
              " checked/not" + ("  lower (old)  old not checked" if baseline is not None else ""))
        for r in rows:
            acq = load_acquisition(data / r["acquisition"])
            r["verify"] = dense_scan(acq, r["fit"])
            line = (f"{r['acquisition']:<12} {r['interferometers']:>4}  {r['verify']['lower']:>11}  "
                    f"{r['verify']['ambiguous']:>9}  {r['verify']['lower_ambiguous']:>21}  "
                    f"{r['verify']['robust_checked']:>17}/{r['verify']['robust_not_checked']:<3}")
            if baseline is not None:
                r["old"]["verify"] = dense_scan(acq, r["old"]["fit"])
                line += (f"         {r['old']['verify']['lower']:>11}"
                         f"  {r['old']['verify']['robust_not_checked']:>15}")
            print(line, flush=True)
    sims = [] if skip_simulated or only else simulated()
    if sims:
        print("\nsimulated truth (SNR 100, interferometers with >= 6 fringes)")
        print("case                               model       ok/N    OPD p95 nm  R p95   G p95 %"
              "  OPD max nm  R max   G max %")
        for s in sims:
            print(f"{s['case']:<34} {s['model']:<10} {s['within_tolerance']:>3}/{s['interferometers']:<3}"
                  f"  {s['opd_err_p95_nm']:9.2f}  {s['r_err_p95']:.4f}  {s['gain_err_p95_pct']:6.2f}"
                  f"  {s['opd_err_max_nm']:10.2f}  {s['r_err_max']:.4f}  {s['gain_err_max_pct']:6.2f}")
    if json_path:
        for r in rows:
            r.pop("fit", None)
            r.get("old", {}).pop("fit", None)
        json_path.write_text(json.dumps({"real": rows, "simulated": sims}, indent=1))


if __name__ == "__main__":
    main()
