"""Residue classifiers of a bundle against the classical unmixing stage on held-out scenes.

    python bench/bench_residue.py [--bundle DIR] [--cubes N] [--json out.json]

For each instrument (ImSPOC 24 bands, push-broom 81 bands): N held-out cubes
(``split="eval"``, scene seeds apart from the build's own evaluation; 4 tiles per field, so
N / 4 fields), classically denoised as in flight, then classified by every precision of the
bundle's model (ONNX Runtime, one thread) and by the pipeline's classical stage
(``classify_classical``: FCLS against the nominal library seen through the cube's response,
the sensor's brightness mode, the configured context). ImSPOC cubes are taken at the flight
illumination (``export.data.ILLUMINATION``, reflectance within 10 %) and again at 0.5-1.5 x,
to show how each method degrades when the reflectance calibration is far off. Tillage
accuracy and residue-fraction MAE (``onboard.metrics``) over valid pixels, averaged over the
cubes; CPU ms per cube.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

import onboard
from export import data, parity
from onboard.config import ResidueConfig
from onboard.engines.onnxruntime_engine import CPU_PROVIDER, OnnxRuntimeEngine
from onboard.formats import bundle as bundle_mod
from onboard.runtime.session import classical_classifier
from onboard.stages.learned import LearnedResidue

#: (label, instrument, ImSPOC illumination range or None for the instrument's default)
CASES = (("imspoc", "imspoc", None), ("imspoc 0.5-1.5x", "imspoc", (0.5, 1.5)),
         ("pushbroom", "pushbroom", None))


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
    for label, kind, illumination in CASES:
        name = f"residue_{kind}"
        spec = b.model(name)
        grid = np.asarray(spec.band_grid_nm)
        it = (data.imspoc_samples("eval", args.seed, illumination=illumination)
              if illumination else data.samples(kind, "eval", args.seed))  # type: ignore[arg-type]
        samples = data.take(it, args.cubes)
        cubes = [data.denoised(s) for s in samples]
        methods = {}
        for a in b.usable(name, "onnx"):
            engine = OnnxRuntimeEngine(b.path(a), spec.inputs, spec.outputs, a.precision,
                                       providers=[CPU_PROVIDER], intra_op_threads=1).activate()
            methods[f"learned {a.precision}"] = LearnedResidue(engine, grid, name)
        methods["classical stage"] = classical_classifier(kind, grid, ResidueConfig())
        report[label] = {}
        for m, fn in methods.items():
            t0 = time.process_time()
            acc = parity.residue_accuracy(fn, cubes, samples)
            acc["cpu_ms_per_cube"] = 1000 * (time.process_time() - t0) / len(cubes)
            report[label][m] = acc
    print(f"{'cubes':16s} {'method':16s} {'tillage acc':>11s} {'fraction MAE':>12s} {'CPU ms':>7s}")
    for kind, res in report.items():
        for m, r in res.items():
            print(f"{kind:16s} {m:16s} {100 * r['tillage_accuracy']:10.1f}% "
                  f"{r['fraction_mae']:12.4f} {r['cpu_ms_per_cube']:7.1f}")
    out = {"cubes": args.cubes, "seed": args.seed, "results": report}
    print(json.dumps(out))
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
