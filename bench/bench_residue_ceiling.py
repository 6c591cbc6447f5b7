"""How far soil and crop residue (dry vegetation) can be told apart in each sensor's bands.

    python bench/bench_residue_ceiling.py [--json out.json]

Pure spectra of the shipped library (no mixing, no noise, no instrument): the best case for
a per-pixel spectral decision. Each spectrum is band-averaged onto a band set, the water
bands left out, and divided by its mean (brightness says little: moisture and shading change
it). Two classifiers, fitted on the *train* split and scored on the *test* split (sites never
seen), by balanced accuracy (the mean of the two classes' recalls):

* nearest centroid (spectral shape), the simplest rule;
* Fisher's linear discriminant with shrinkage (covariance + 1e-3 x its mean variance), the
  best a linear rule on the shape does.

Band sets: the ImSPOC (450-1000 nm, 24 bands of the default reconstruction grid), the
push-broom (900-1700 nm at 10 nm), both together, and 2000-2250 nm (the cellulose-lignin
absorption neither sensor covers) for reference. docs/residue_ceiling.md reads the numbers.
"""

from __future__ import annotations

import json
from pathlib import Path

import click
import numpy as np

from onboard.physics.imspoc import default_instrument
from onboard.scene.library import SpectralLibrary, load
from onboard.stages.reconstruct import output_grid
from onboard.stages.residue import usable_bands

BAND_SETS = {
    "imspoc 450-1000 nm": output_grid(default_instrument(seed=0).band_nm, 24),
    "push-broom 900-1700 nm": np.arange(900.0, 1701.0, 10.0),
    "both 450-1700 nm": np.concatenate([output_grid(default_instrument(seed=0).band_nm, 24),
                                        np.arange(1010.0, 1701.0, 10.0)]),
    "swir2 2000-2250 nm": np.arange(2000.0, 2251.0, 10.0),
}


def shapes(lib: SpectralLibrary, idx: np.ndarray, grid: np.ndarray) -> np.ndarray:
    g = grid[usable_bands(grid)]
    x = lib.resample(lib.spectra[idx], g, "band")
    return x / x.mean(axis=1, keepdims=True)


def balanced(pred: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([np.mean(pred[truth == k] == k) for k in (0, 1)]))


def scores(lib: SpectralLibrary, grid: np.ndarray) -> dict[str, float]:
    split = {s: [lib.indices(k, s) for k in ("soil", "residue")] for s in ("train", "test")}
    xs = {s: np.concatenate([shapes(lib, i, grid) for i in split[s]]) for s in split}
    ys = {s: np.concatenate([np.full(len(i), k) for k, i in enumerate(split[s])]) for s in split}
    x, y = xs["train"], ys["train"]
    centres = np.stack([x[y == k].mean(0) for k in (0, 1)])
    nearest = np.argmin(np.linalg.norm(xs["test"][:, None] - centres[None], axis=2), axis=1)
    within = sum(np.cov(x[y == k].T) for k in (0, 1)) / 2
    within += 1e-3 * np.trace(within) / len(within) * np.eye(len(within))
    w = np.linalg.solve(within, centres[1] - centres[0])
    # threshold halfway between the class means of the projection (balanced classes)
    cut = 0.5 * (x[y == 0] @ w).mean() + 0.5 * (x[y == 1] @ w).mean()
    lda = (xs["test"] @ w > cut).astype(int)
    return {"nearest_centroid": balanced(nearest, ys["test"]), "linear_discriminant": balanced(lda, ys["test"]),
            "train_spectra": int(len(y)), "test_spectra": int(len(ys["test"]))}


@click.command(help=__doc__.splitlines()[0])
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path))
def main(json_path: Path | None) -> None:
    lib = load()
    sets = {"real": lib.only(("earthlib", "usgs1995")), "all sources": lib}
    report = {name: {bands: scores(sub, grid) for bands, grid in BAND_SETS.items()}
              for name, sub in sets.items()}
    print("| spectra | bands | nearest centroid | linear discriminant | train / test spectra |")
    print("|---|---|---|---|---|")
    for name, rows in report.items():
        for bands, r in rows.items():
            print(f"| {name} | {bands} | {100 * r['nearest_centroid']:.1f} % | "
                  f"{100 * r['linear_discriminant']:.1f} % | {r['train_spectra']} / {r['test_spectra']} |")
    print(json.dumps(report))
    if json_path:
        json_path.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
