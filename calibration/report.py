"""The fit report: JSON for machines, PNG plots for people.

``report.json``: the summary (model, degree, BIC of every candidate, median / 95th
percentile residuals, timings, the OPD and reflectivity checks, the OPD search's counts) and
one record per interferometer (residual, OPD with its one-sigma uncertainty, phase, mean
reflectivity and gain, outlier lines, convergence, least-squares cost, and for an
interferometer ambiguous in OPD the other minimum's OPD and cost).

Plots: measured against fitted response for four interferometers (the 10th, 50th and 90th
percentile of the residual, and the worst), OPD against the nominal ridge line (ambiguous
interferometers with their other minimum), and the residual per interferometer.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from calibration.characterise import Characterisation


def to_json(c: Characterisation) -> dict:
    """The report as a JSON-able dict."""
    sigma = c.acquisition.sigma
    r_mean = c.bank.reflectivity(sigma).mean(axis=1)
    g_mean = c.bank.gain(sigma).mean(axis=1)
    sp = c.result.sigma_params
    found = c.search
    amb = np.zeros(len(c.bank), bool) if found is None else found.ambiguous

    def alternative(i: int) -> dict:
        """The other minimum of an ambiguous interferometer (None elsewhere)."""
        if not amb[i]:
            return {"opd_alternative_um": None, "cost_alternative": None}
        assert found is not None
        return {"opd_alternative_um": float(found.alternative_opd_um[i]),
                "cost_alternative": float(found.alternative_cost[i])}

    rows = [
        {
            "index": i,
            "rms": float(c.rms[i]),
            "rms_recorded": float(c.rms_recorded[i]),
            "opd_um": float(c.bank.opd_um[i]),
            "opd_sigma_um": float(sp[i, 0]),
            "phase_rad": float(c.bank.phase_rad[i]),
            "phase_sigma_rad": float(sp[i, 1]),
            "reflectivity_mean": float(r_mean[i]),
            "gain_mean": float(g_mean[i]),
            "outlier_lines": np.flatnonzero(c.result.outliers[i]).tolist(),
            "converged": bool(c.result.converged[i]),
            "periodogram_margin": float(min(c.guess.peak_margin[i], 1e6)),
            "cost": float(c.result.robust_cost[i]),
            "ambiguous": bool(amb[i]),
            **alternative(i),
        }
        for i in range(len(c.bank))
    ]
    return {
        "summary": c.summary(),
        "bic": c.selection.bic,
        "bic_subset": c.selection.subset.tolist(),
        "timings_s": c.timings_s,
        "checks": c.checks,
        "sigma_domain": list(c.bank.sigma_domain),
        "interferometers": rows,
    }


def write_json(c: Characterisation, path: str | Path) -> dict:
    doc = to_json(c)
    Path(path).write_text(json.dumps(doc, indent=1))
    return doc


def write_plots(c: Characterisation, folder: str | Path) -> list[Path]:
    """Write the three PNG plots into ``folder``; returns their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    acq = c.acquisition
    y = acq.responses()
    fit = y + c.result.residuals
    order = np.argsort(c.rms)
    n = len(order)
    picks = [order[n // 10], order[n // 2], order[int(0.9 * (n - 1))], order[-1]]
    out = []

    fig, axes = plt.subplots(len(picks), 1, figsize=(12, 2.6 * len(picks)), sharex=True)
    for ax, k in zip(axes, picks, strict=True):
        ax.plot(acq.sigma, y[k], ".", ms=2.5, color="k", label="measured")
        ax.plot(acq.sigma, fit[k], "-", lw=0.8, color="tab:red", label="fitted")
        ax.set_title(f"interferometer {k}: OPD {c.bank.opd_um[k]:.3f} µm, "
                     f"residual {c.rms[k]:.3f}", fontsize=9)
        ax.set_ylabel("response")
    axes[0].legend(fontsize=8, loc="upper right")
    axes[-1].set_xlabel("wavenumber (1/µm)")
    fig.suptitle(f"{acq.name}: {c.selection.model}, degree {c.selection.degree}")
    fig.tight_layout()
    out.append(folder / "fits.png")
    fig.savefig(out[-1], dpi=90)
    plt.close(fig)

    k = acq.first_index + np.arange(n)
    offset, scale = c.guess.ridge
    line = offset + scale * acq.opd_step_um * k
    fig, axes = plt.subplots(2, 1, figsize=(12, 6), sharex=True)
    axes[0].plot(k, c.bank.opd_um, ".", ms=3, label="fitted")
    axes[0].plot(k, k * acq.opd_step_um, "-", lw=0.8, label="index x design step")
    axes[0].plot(k, line, "--", lw=0.8, label="ridge line (offset + scale x index x step)")
    axes[0].set_ylabel("OPD (µm)")
    axes[1].plot(k, c.bank.opd_um - line, ".", ms=3)
    bad = c.checks.get("trend_outlier_index", [])
    axes[1].plot(k[bad], (c.bank.opd_um - line)[bad], "x", color="tab:red", label="trend outliers")
    if c.search is not None and c.search.ambiguous.any():
        a = np.flatnonzero(c.search.ambiguous)
        for ax, ref in ((axes[0], 0.0), (axes[1], line[a])):
            ax.vlines(k[a], c.bank.opd_um[a] - ref, c.search.alternative_opd_um[a] - ref,
                      color="tab:orange", lw=0.8)
            ax.plot(k[a], c.search.alternative_opd_um[a] - ref, "o", mfc="none", ms=4,
                    color="tab:orange", label="ambiguous: the other minimum")
    axes[0].legend(fontsize=8)
    axes[1].set_ylabel("OPD - ridge line (µm)")
    axes[1].set_xlabel("interferometer index")
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    out.append(folder / "opd.png")
    fig.savefig(out[-1], dpi=90)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(12, 3.5))
    ax.plot(k, c.rms, ".-", ms=3, lw=0.5, label="RMS(fit - y) / mean(y)")
    ax.plot(k, c.rms_recorded, ".", ms=2, label="on the recorded data")
    ax.axhline(np.median(c.rms), color="k", lw=0.6, ls="--", label="median")
    ax.set_xlabel("interferometer index")
    ax.set_ylabel("mean-normalised RMS residual")
    ax.legend(fontsize=8)
    fig.tight_layout()
    out.append(folder / "residuals.png")
    fig.savefig(out[-1], dpi=90)
    plt.close(fig)
    return out
