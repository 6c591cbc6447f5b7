"""The out-of-distribution rule of the residue classifiers on real materials they were not trained on.

    python bench/bench_residue_ood.py [--bundle DIR] [--cubes N] [--json out.json]

The learned stage marks a pixel uncertain when its class probability is below the threshold
chosen on validation, or when its spectrum's shape lies outside the training spectra's
principal subspace, it is darker than the validation split's ground
or (the ImSPOC's) lies on the foreign side of the direction fitted against explicit "other" examples
(``Domain.out_of_distribution``, onboard/stages/confidence.py). This measures the rule on scenes
whose ground is a real material of a class the shipped library leaves out, the *test* part of
each class only (export/foreign.py splits them by site; the ImSPOC rule's foreign direction saw
the train part of char and built, its limit the validation soils, the models none of them):

* ``sand, gravel``: bare mineral ground (earthlib pervious/bare sand and gravel), never an
  example;
* ``char``: burned vegetation (stubble burning);
* ``built``: asphalt, roads, parking lots, concrete, sidewalks, roof shingles, paint, metal.

Each such set replaces the test split's soils of the shipped library's real spectra (residue
and green stay the test split's), so a parcel's ground is that material, under the same
residue covers, canopies, moisture, light, instrument and reconstruction as the real test
scenes of ``bench_residue.py``, which are the reference row (unseen soils of a known class:
what is flagged there is a false alarm). Per set and instrument, over the valid pixels whose
ground (the "soil" fraction) is at least ``FOREIGN_SHARE``: the share flagged out of
distribution, the share uncertain (flagged or below the threshold), and the share left
confident with its tillage accuracy (the pixels the rule lets through as if known).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import click
import numpy as np

import onboard
from export import data
from export.foreign import FOREIGN, FOREIGN_SHARE, with_ground
from onboard.engines.onnxruntime_engine import CPU_PROVIDER, OnnxRuntimeEngine
from onboard.formats import bundle as bundle_mod
from onboard.scene.library import load
from onboard.stages.confidence import Domain
from onboard.stages.learned import LearnedResidue


def score(stage: LearnedResidue, domain: Domain, samples: list[data.Sample]) -> dict[str, float]:
    """Shares flagged, uncertain and confident (with its accuracy) of the ground pixels."""
    counts = {"pixels": 0, "ood": 0, "uncertain": 0, "confident": 0, "right": 0}
    ms = []
    for s in samples:
        cube = data.denoised(s)
        r = stage(cube)
        assert r.uncertain is not None
        ok = cube.valid & np.isfinite(r.fractions).all(axis=0) & (s.fractions[1] >= FOREIGN_SHARE)
        t0 = time.perf_counter()
        ood = domain.out_of_distribution(cube)
        ms.append(1e3 * (time.perf_counter() - t0))
        sure = ok & ~r.uncertain
        counts["pixels"] += int(ok.sum())
        counts["ood"] += int((ok & ood).sum())
        counts["uncertain"] += int((ok & r.uncertain).sum())
        counts["confident"] += int(sure.sum())
        counts["right"] += int((r.tillage[sure] == s.tillage[sure]).sum())
    n = max(counts["pixels"], 1)
    return {"pixels": counts["pixels"], "ood_share": counts["ood"] / n,
            "uncertain_share": counts["uncertain"] / n, "confident_share": counts["confident"] / n,
            "confident_accuracy": counts["right"] / max(counts["confident"], 1),
            "ood_rule_ms_frame": float(np.median(ms))}


@click.command(help=__doc__.splitlines()[0])
@click.option("--bundle", type=click.Path(file_okay=False, path_type=Path),
              default=Path(onboard.__file__).parent / "models" / "default", show_default=True)
@click.option("--cubes", "n_cubes", type=int, default=32, show_default=True)
@click.option("--seed", type=int, default=900, show_default=True)
@click.option("--sensor", "sensors", type=click.Choice(["imspoc", "pushbroom"]), multiple=True,
              help="Only these sensors (default: both).")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path))
def main(bundle: Path, n_cubes: int, seed: int, sensors: tuple[str, ...], json_path: Path | None) -> None:
    b = bundle_mod.load(bundle)
    real = load().only(("earthlib", "usgs1995"))
    sets = {"real test soils (reference)": real} | {
        name: with_ground(real, classes) for name, classes in FOREIGN.items()}
    report: dict[str, dict[str, dict[str, float]]] = {}
    for kind in sensors or ("imspoc", "pushbroom"):
        name = f"residue_{kind}"
        spec = b.model(name)
        fp32 = next(a for a in b.usable(name, "onnx") if a.precision == "fp32")
        engine = OnnxRuntimeEngine(b.path(fp32), spec.inputs, spec.outputs, "fp32",
                                   providers=[CPU_PROVIDER], intra_op_threads=1).activate()
        domain = Domain.from_dict(spec.metadata["domain"])
        stage = LearnedResidue(engine, np.asarray(spec.band_grid_nm), name, domain)
        for label, lib in sets.items():
            samples = data.take(data.samples(kind, "test", seed, library=lib), n_cubes)  # type: ignore[arg-type]
            report.setdefault(label, {})[kind] = score(stage, domain, samples)
    print(f"| {'ground (test scenes)':28s} | sensor    | ood flagged | uncertain | confident | "
          "confident acc | rule ms/frame |")
    print("|" + "|".join("-" * w for w in (30, 11, 13, 11, 11, 15, 15)) + "|")
    for label, res in report.items():
        for kind, r in res.items():
            right = f"{100 * r['confident_accuracy']:12.1f}%" if r["confident_share"] else f"{'-':>13s}"
            print(f"| {label:28s} | {kind:9s} | {100 * r['ood_share']:10.1f}% | "
                  f"{100 * r['uncertain_share']:8.1f}% | {100 * r['confident_share']:8.1f}% | {right} | "
                  f"{r['ood_rule_ms_frame']:13.2f} |")
    out = {"cubes": n_cubes, "seed": seed, "foreign_share": FOREIGN_SHARE, "results": report}
    print(json.dumps(out))
    if json_path:
        json_path.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
