"""Residue classifiers of a bundle against the classical unmixing stage on held-out scenes.

    python bench/bench_residue.py [--bundle DIR] [--cubes N] [--json out.json]

For each instrument (ImSPOC 24 bands, push-broom 81 bands): N held-out cubes
(``split="eval"``, scene seeds apart from the build's own evaluation), classically denoised
as in flight, then classified by every precision of the bundle's model (ONNX Runtime, one
thread) and by FCLS unmixing with the nominal library. Tillage accuracy and residue-fraction
MAE (``onboard.metrics``) over valid pixels, pooled over the cubes; CPU ms per cube.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

import onboard
from export import data, parity
from onboard import bundle as bundle_mod
from onboard.engines.onnxruntime_engine import CPU_PROVIDER, OnnxRuntimeEngine
from onboard.scene.farmland import nominal_endmembers
from onboard.stages.denoise import denoise_subspace
from onboard.stages.learned import LearnedResidue
from onboard.stages.residue import unmix_fcls


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", type=Path,
                    default=Path(onboard.__file__).parent / "models" / "default")
    ap.add_argument("--cubes", type=int, default=16)
    ap.add_argument("--seed", type=int, default=900)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    b = bundle_mod.load(args.bundle)
    report: dict[str, dict[str, dict[str, float]]] = {}
    for kind in ("imspoc", "pushbroom"):
        name = f"residue_{kind}"
        spec = b.model(name)
        grid = np.asarray(spec.band_grid_nm)
        samples = data.take(data.samples(kind, "eval", args.seed), args.cubes)  # type: ignore[arg-type]
        cubes = [denoise_subspace(s.cube, data.denoise_config(s)) for s in samples]
        methods = {}
        for a in b.usable(name, "onnx"):
            engine = OnnxRuntimeEngine(b.path(a), spec.inputs, spec.outputs, a.precision,
                                       providers=[CPU_PROVIDER], intra_op_threads=1).activate()
            methods[f"learned {a.precision}"] = LearnedResidue(engine, grid, name)
        endmembers = nominal_endmembers(grid)
        methods["classical FCLS"] = lambda c, e=endmembers: unmix_fcls(c, e)
        report[kind] = {}
        for m, fn in methods.items():
            t0 = time.process_time()
            acc = parity.residue_accuracy(fn, cubes, samples)
            acc["cpu_ms_per_cube"] = 1000 * (time.process_time() - t0) / len(cubes)
            report[kind][m] = acc
    print(f"{'instrument':10s} {'method':16s} {'tillage acc':>11s} {'fraction MAE':>12s} {'CPU ms':>7s}")
    for kind, res in report.items():
        for m, r in res.items():
            print(f"{kind:10s} {m:16s} {100 * r['tillage_accuracy']:10.1f}% "
                  f"{r['fraction_mae']:12.4f} {r['cpu_ms_per_cube']:7.1f}")
    out = {"cubes": args.cubes, "seed": args.seed, "results": report}
    print(json.dumps(out))
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
