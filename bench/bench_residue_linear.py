"""The bar a residue classifier must beat, and the ceiling of a linear rule, in scenes.

    python bench/bench_residue_linear.py [--cubes N] [--train-cubes M] [--json out.json]

N defaults to 64 test cubes (16 fields), as ``bench_residue.py``.

A ridge regression of the residue fraction on each pixel's spectrum (its shape, the usable
bands divided by their mean, and the log of that mean: what ``export.models.ResidueNet``
reads), averaged over a ``CONTEXT`` x ``CONTEXT`` window (the learned classifier's context),
tillage from the thresholds. Cubes as ``bench/bench_residue.py`` makes them (classically
denoised, as in flight). Two fits per instrument, both scored on the *test* split's real
scenes (``bench_residue.py``'s cubes, same seed):

* **train split**: fitted on M training cubes drawn from the training library (every
  train-split spectrum, as the classifiers train: ``export.spectral_library.training_library``),
  and on M drawn from the shipped subset's train split: the bar, what a plain linear rule
  reaches on soils and residues it never saw;
* **test scenes (oracle)**: fitted on the very test cubes it is scored on: an upper bound for
  any rule linear in the spectrum's shape, *not* a result (it has seen the answers); where
  even this stays below a target, the target is out of reach of the sensor's bands and noise
  for a linear rule, and a network reading unseen soils will not do much better.
"""

from __future__ import annotations

import json
from pathlib import Path

import click
import numpy as np
from numpy.typing import NDArray

from export import data
from export.spectral_library import training_library
from onboard.formats.types import TILLAGE_THRESHOLDS, tillage_class
from onboard.scene.library import load
from onboard.stages.filters import box_mean
from onboard.stages.residue import usable_bands

#: Side of the window the per-pixel estimates are averaged over (the classifier's context).
CONTEXT = 17
#: Ridge penalty, relative to the features' standardised scale.
RIDGE = 1e-6
REAL = ("earthlib", "usgs1995")


def features(cubes: NDArray, grid: NDArray) -> NDArray[np.float64]:
    """(n * H * W, bands' + 1): per pixel the usable bands over their mean, and log mean."""
    x = cubes[:, usable_bands(grid)].astype(np.float64)
    level = np.abs(x.mean(axis=1, keepdims=True)) + 1e-3
    f = np.concatenate([x / level, np.log(level)], axis=1)
    return f.transpose(0, 2, 3, 1).reshape(-1, f.shape[1])


def fit(rset: data.ResidueSet) -> tuple[NDArray, NDArray, NDArray, float]:
    """Ridge weights on standardised features: (mean, sd, weights, intercept)."""
    x, y = features(rset.cubes, rset.grid_nm), rset.fractions[:, 0].reshape(-1).astype(np.float64)
    ok = rset.tillage.reshape(-1) >= 0
    x, y = x[ok], y[ok]
    mu, sd = x.mean(0), x.std(0) + 1e-9
    xs = (x - mu) / sd
    w = np.linalg.solve(xs.T @ xs + RIDGE * len(xs) * np.eye(xs.shape[1]), xs.T @ (y - y.mean()))
    return mu, sd, w, float(y.mean())


def noise_free(samples: list[data.Sample], attr: str, flight: data.ResidueSet) -> data.ResidueSet:
    """``flight`` with its cubes replaced by the samples' noise-free ``attr`` ("clean" or
    "truth"), on the same valid pixels."""
    cubes = np.stack([np.where(t[None] >= 0, getattr(s, attr), 0.0) for s, t in
                      zip(samples, flight.tillage, strict=True)]).astype(np.float32)
    return data.ResidueSet(flight.grid_nm, cubes, flight.fractions, flight.tillage)


def score(model: tuple[NDArray, NDArray, NDArray, float], rset: data.ResidueSet) -> dict[str, float]:
    """Tillage accuracy and residue MAE (means over cubes, valid pixels), with the context."""
    mu, sd, w, b = model
    n, _, h, wd = rset.cubes.shape
    est = np.clip((features(rset.cubes, rset.grid_nm) - mu) / sd @ w + b, 0, 1).reshape(n, h, wd)
    acc, mae = [], []
    for e, f, t in zip(est, rset.fractions, rset.tillage, strict=True):
        ok = t >= 0
        e = box_mean(np.where(ok, e, 0.0), ok.astype(float), CONTEXT // 2)
        acc.append(np.mean(tillage_class(e)[ok] == t[ok]))
        mae.append(np.mean(np.abs(e - f[0])[ok]))
    return {"tillage_accuracy": float(np.mean(acc)), "fraction_mae": float(np.mean(mae))}


@click.command(help=__doc__.splitlines()[0])
@click.option("--cubes", "n_cubes", type=int, default=64, show_default=True)
@click.option("--train-cubes", type=int, default=160, show_default=True)
@click.option("--seed", type=int, default=900, show_default=True)
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path))
def main(n_cubes: int, train_cubes: int, seed: int, json_path: Path | None) -> None:
    real = load().only(REAL)
    report = {}
    for kind in ("imspoc", "pushbroom"):
        fits = {"train split": fit(data.residue_set(data.take(  # type: ignore[arg-type]
                    data.samples(kind, "train", 100, training_library()), train_cubes))),  # type: ignore[arg-type]
                "train split, shipped subset": fit(data.residue_set(data.take(
                    data.samples(kind, "train", 100), train_cubes)))}  # type: ignore[arg-type]
        samples = data.take(data.samples(kind, "test", seed, library=real), n_cubes)  # type: ignore[arg-type]
        test = data.residue_set(samples)
        report[kind] = {how: score(model, test) for how, model in fits.items()}
        report[kind]["test scenes (oracle)"] = score(fit(test), test)
        for attr in ("clean", "truth"):
            free = noise_free(samples, attr, test)
            report[kind][f"test scenes (oracle), noise-free {attr}"] = score(fit(free), free)
    print(f"| test-split real cubes | linear rule fitted on | tillage acc | residue MAE |  (thresholds "
          f"{TILLAGE_THRESHOLDS}, {CONTEXT}x{CONTEXT} context)")
    print("|---|---|---|---|")
    for kind, rows in report.items():
        for how, r in rows.items():
            print(f"| {kind} | {how} | {100 * r['tillage_accuracy']:.1f} % | {r['fraction_mae']:.3f} |")
    out = {"cubes": n_cubes, "train_cubes": train_cubes, "seed": seed, "split": "test",
           "context_px": CONTEXT, "results": report}
    print(json.dumps(out))
    if json_path:
        json_path.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
