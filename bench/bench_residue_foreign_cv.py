"""Grouped cross-validation of the residue rule's foreign test over the train split's residues.

    python bench/bench_residue_foreign_cv.py [--folds 5] [--sensor pushbroom] [--json out.json]

The foreign direction (``onboard.stages.confidence.fit_foreign``) is a plane between the
training pixels and explicit char and built examples. The validation split holds 9 residue
spectra, too few to show whether real dry vegetation the model never saw falls on the foreign
side; this check asks it of the train split alone. The shipped library's train-split residue
spectra are grouped by site into ``--folds`` folds; for each fold the rule (principal subspace,
dark and novelty limits, foreign direction) is fitted on train-split scenes whose residues
exclude that fold, its limits on validation scenes, and it is scored on train-split scenes whose
residues are that fold's only: the share of their valid pixels at least half residue it flags
(a false alarm on the product's main use). Beside it, what it is for: the share of
validation-split char and built ground (export/foreign.py, pixels at least half ground) it
flags. Each setting (features, ridge, quantile) is scored on the same pixels, and the rule
without the foreign test is the reference row. No test-split spectrum is read.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace

import click
import numpy as np
from numpy.typing import NDArray

from export import data
from export.foreign import FOREIGN_SHARE, other_cubes
from onboard.formats.types import ENDMEMBERS, Cube
from onboard.scene.library import SpectralLibrary, load
from onboard.stages.confidence import (
    DARK_QUANTILE,
    NOVELTY_QUANTILE,
    Domain,
    discriminant,
    fit_domain,
    ground_features,
    level,
)

RIDGES = (1e-4, 1e-2, 1e-1, 1.0, 10.0, 1e2)
QUANTILES = (0.995, 0.999)
#: Feature sets: rows of ``ground_features`` (the shape bands, then the log of the level).
FEATURES = ("shape+level", "shape")
RESIDUE = ENDMEMBERS.index("residue")


@dataclass
class Pixels:
    """What the rule reads of the scored pixels of some cubes."""

    features: NDArray[np.float64]  # (F, n)
    novelty: NDArray[np.float64]  # (n,)
    level: NDArray[np.float64]  # (n,)


def pixels(domain: Domain, cubes: list[Cube], masks: list[NDArray[np.bool_]]) -> Pixels:
    """The features, novelty and level of the pixels ``masks`` keep (valid ones only)."""
    f, nov, lev = [], [], []
    for c, m in zip(cubes, masks, strict=True):
        ok = m & c.valid & np.isfinite(c.data).all(axis=0)
        f.append(ground_features(c.data[:, ok], c.wavelengths_nm))
        nov.append(domain.novelty(c)[ok])
        lev.append(level(c)[ok])
    return Pixels(np.concatenate(f, axis=1), np.concatenate(nov), np.concatenate(lev))


def without_residues(lib: SpectralLibrary, drop: NDArray[np.intp]) -> SpectralLibrary:
    """``lib`` less the spectra ``drop``."""
    keep = np.setdiff1d(np.arange(len(lib.kinds)), drop)

    def pick(values: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(values[i] for i in keep)

    return replace(lib, spectra=lib.spectra[keep], measured=lib.measured[keep], kinds=pick(lib.kinds),
                   splits=pick(lib.splits), names=pick(lib.names), sources=pick(lib.sources),
                   sites=pick(lib.sites))


def flagged(p: Pixels, nov_limit: float, dark_limit: float, extra: NDArray[np.bool_] | None = None) -> float:
    """Share of ``p`` the rule flags (``extra``: the foreign test's own flags)."""
    hit = (p.novelty > nov_limit) | (p.level < dark_limit)
    return float((hit if extra is None else hit | extra).mean())


@click.command(help=__doc__.splitlines()[0])
@click.option("--folds", type=int, default=5, show_default=True)
@click.option("--sensor", "kind", type=click.Choice(["imspoc", "pushbroom"]), default="pushbroom",
              show_default=True)
@click.option("--known-cubes", type=int, default=16, show_default=True)
@click.option("--held-cubes", type=int, default=8, show_default=True)
@click.option("--val-cubes", type=int, default=16, show_default=True)
@click.option("--other-cubes", "n_other", type=int, default=8, show_default=True,
              help="Scenes per foreign set (char, built), train and validation each.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--json", "json_path", type=click.Path(dir_okay=False))
def main(folds: int, kind: str, known_cubes: int, held_cubes: int, val_cubes: int, n_other: int,
         seed: int, json_path: str | None) -> None:
    lib = load()
    res = lib.indices("residue", "train")
    sites = sorted({lib.sites[i] for i in res})
    order = np.random.default_rng(seed).permutation(len(sites))
    fold_of = {sites[j]: n % folds for n, j in enumerate(order)}
    val = [data.denoised(s) for s in data.take(data.samples(kind, "eval", seed + 1), val_cubes)]  # type: ignore[arg-type]
    other_train = other_cubes(kind, "train", seed + 177, n_other)
    other_val = other_cubes(kind, "eval", seed + 277, n_other)
    nf = ground_features(val[0].data[:, :1, 0], val[0].wavelengths_nm).shape[0]
    rows = {"shape+level": np.arange(nf), "shape": np.arange(nf - 1)}
    table: dict[str, dict[str, list[float]]] = {}
    counts = []
    for fold in range(folds):
        held = np.array([i for i in res if fold_of[lib.sites[i]] == fold])
        known_lib = without_residues(lib, held)
        held_lib = without_residues(lib, np.setdiff1d(res, held))
        known = [data.denoised(s) for s in data.take(data.samples(kind, "train", seed + 100, known_lib), known_cubes)]  # type: ignore[arg-type]
        held_s = data.take(data.samples(kind, "train", seed + 300, held_lib), held_cubes)  # type: ignore[arg-type]
        domain = fit_domain(known)
        all_of = [np.ones(c.valid.shape, bool) for c in known]
        p_known = pixels(domain, known, all_of)
        p_other = pixels(domain, other_train, [np.ones(c.valid.shape, bool) for c in other_train])
        p_val = pixels(domain, val, [np.ones(c.valid.shape, bool) for c in val])
        p_char = pixels(domain, other_val[:n_other], [np.ones(c.valid.shape, bool) for c in other_val[:n_other]])
        p_built = pixels(domain, other_val[n_other:], [np.ones(c.valid.shape, bool) for c in other_val[n_other:]])
        p_held = pixels(domain, [data.denoised(s) for s in held_s],
                        [s.fractions[RESIDUE] >= FOREIGN_SHARE for s in held_s])
        counts.append({"fold": fold, "residues": int(held.size), "held_pixels": int(p_held.level.size)})
        nov_limit = float(np.quantile(p_val.novelty, NOVELTY_QUANTILE))
        dark_limit = float(np.quantile(p_val.level, DARK_QUANTILE))
        step = max(1, p_known.level.size // 40000)
        rows_scored = {"no foreign test": (flagged(p_held, nov_limit, dark_limit), 0.0,
                                           flagged(p_char, nov_limit, dark_limit),
                                           flagged(p_built, nov_limit, dark_limit))}
        for feat in FEATURES:
            for ridge in RIDGES:
                w = discriminant(p_known.features[rows[feat], ::step].T, p_other.features[rows[feat]].T, ridge)
                sv = w @ p_val.features[rows[feat]]
                for q in QUANTILES:
                    lim = float(np.quantile(sv, q))
                    alone = w @ p_held.features[rows[feat]] > lim
                    rows_scored[f"{feat}, ridge {ridge:g}, q {q}"] = (
                        flagged(p_held, nov_limit, dark_limit, alone), float(alone.mean()),
                        flagged(p_char, nov_limit, dark_limit, w @ p_char.features[rows[feat]] > lim),
                        flagged(p_built, nov_limit, dark_limit, w @ p_built.features[rows[feat]] > lim))
        for name, scores in rows_scored.items():
            for key, v in zip(("held", "held_foreign", "char_val", "built_val"), scores, strict=True):
                table.setdefault(name, {}).setdefault(key, []).append(v)
        print(f"fold {fold}: {held.size} residues, {p_held.level.size} held pixels", flush=True)
    print(f"\n{kind}: {folds} folds over {len(res)} train residues ({len(sites)} sites)")
    print(f"| {'setting':36s} | held-out residues: rule | worst fold | foreign test | worst fold "
          "| val char | val built |")
    print("|" + "|".join("-" * w for w in (38, 25, 12, 14, 12, 10, 11)) + "|")
    for name, t in table.items():
        print(f"| {name:36s} | {100 * np.mean(t['held']):22.1f}% | {100 * np.max(t['held']):9.1f}% | "
              f"{100 * np.mean(t['held_foreign']):11.1f}% | {100 * np.max(t['held_foreign']):9.1f}% | "
              f"{100 * np.mean(t['char_val']):7.1f}% | {100 * np.mean(t['built_val']):8.1f}% |")
    out = {"sensor": kind, "folds": counts, "seed": seed, "results": table}
    print(json.dumps(out))
    if json_path:
        with open(json_path, "w") as fh:
            fh.write(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
