"""Residue classifiers of a bundle against the classical unmixing stage on held-out scenes.

    python bench/bench_residue.py [--bundle DIR] [--cubes N] [--json out.json]

For each instrument (ImSPOC 24 bands, push-broom 81 bands) and each spectral set, N cubes of
scenes built from the library's *test* split only (``split="test"``: spectra no model, bundle
or threshold was fitted or chosen on; 4 tiles per field, so N / 4 fields; default 64, 16
fields: with 4 fields one field's soils weigh a quarter of the number, and the first 16 and
all 64 validation cubes of one seed gave 64.3 and 73.2 % for the same model), classically
denoised as in flight, then classified by every precision of the bundle's model (ONNX
Runtime, one thread) and by the pipeline's classical stage (``classify_classical``: FCLS with
the MESMA-style bundles of the train split seen through the cube's response, the sensor's
brightness mode, the configured context). Spectral sets:

* ``real``: measured spectra only (earthlib soils and dry vegetation, USGS 1995; green from
  earthlib's canopies and USGS leaves);
* ``simulated``: the project's own PROSPECT-D residue, PROSAIL canopies and prosail soil, the
  set the numbers published before this library were measured on.

ImSPOC cubes are taken at the flight illumination (``export.data.ILLUMINATION``, reflectance
within 10 %) and, for the real set, again at 0.5-1.5 x. Tillage accuracy and residue-fraction
MAE (``onboard.metrics``) over valid pixels, averaged over the cubes; accuracy on the pixels
not marked uncertain (onboard/stages/confidence.py) and their share; CPU ms per cube.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import click
import numpy as np

import onboard
from export import data, parity
from onboard.config import ResidueConfig
from onboard.engines.onnxruntime_engine import CPU_PROVIDER, OnnxRuntimeEngine
from onboard.formats import bundle as bundle_mod
from onboard.runtime.session import classical_classifier
from onboard.scene.library import load
from onboard.stages.confidence import Domain
from onboard.stages.learned import LearnedResidue

#: Spectral sets: name -> the library sources they draw from.
SETS = {"real": ("earthlib", "usgs1995"), "simulated": ("prosail",)}
#: (label, instrument, set, ImSPOC illumination range or None for the instrument's default)
CASES = (("imspoc real", "imspoc", "real", None), ("imspoc simulated", "imspoc", "simulated", None),
         ("imspoc real 0.5-1.5x", "imspoc", "real", (0.5, 1.5)),
         ("pushbroom real", "pushbroom", "real", None),
         ("pushbroom simulated", "pushbroom", "simulated", None))


@click.command(help=__doc__.splitlines()[0])
@click.option("--bundle", type=click.Path(file_okay=False, path_type=Path),
              default=Path(onboard.__file__).parent / "models" / "default", show_default=True)
@click.option("--cubes", "n_cubes", type=int, default=64, show_default=True)
@click.option("--seed", type=int, default=900, show_default=True)
@click.option("--sensor", "sensors", type=click.Choice(["imspoc", "pushbroom"]), multiple=True,
              help="Only these sensors' rows (default: both).")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path))
def main(bundle: Path, n_cubes: int, seed: int, sensors: tuple[str, ...], json_path: Path | None) -> None:
    b = bundle_mod.load(bundle)
    library = load()
    report: dict[str, dict[str, dict[str, float]]] = {}
    for label, kind, spectra, illumination in CASES:
        if sensors and kind not in sensors:
            continue
        name = f"residue_{kind}"
        spec = b.model(name)
        grid = np.asarray(spec.band_grid_nm)
        lib = library.only(SETS[spectra])
        it = (data.imspoc_samples("test", seed, illumination=illumination, library=lib)
              if illumination else data.samples(kind, "test", seed, library=lib))  # type: ignore[arg-type]
        samples = data.take(it, n_cubes)
        cubes = [data.denoised(s) for s in samples]
        domain = Domain.from_dict(spec.metadata["domain"]) if "domain" in spec.metadata else None
        methods = {}
        for a in b.usable(name, "onnx"):
            engine = OnnxRuntimeEngine(b.path(a), spec.inputs, spec.outputs, a.precision,
                                       providers=[CPU_PROVIDER], intra_op_threads=1).activate()
            methods[f"learned {a.precision}"] = LearnedResidue(engine, grid, name, domain)
        methods["classical stage"] = classical_classifier(kind, grid, ResidueConfig())
        report[label] = {}
        for m, fn in methods.items():
            t0 = time.process_time()
            acc = parity.residue_accuracy(fn, cubes, samples)
            acc["cpu_ms_per_cube"] = 1000 * (time.process_time() - t0) / len(cubes)
            report[label][m] = acc
    print(f"| {'test-split cubes':22s} | {'method':16s} | tillage acc | fraction MAE | confident acc "
          f"| confident share | CPU ms |")
    print("|" + "|".join("-" * w for w in (24, 18, 13, 14, 15, 17, 8)) + "|")
    for case, res in report.items():
        for m, r in res.items():
            print(f"| {case:22s} | {m:16s} | {100 * r['tillage_accuracy']:10.1f}% | "
                  f"{r['fraction_mae']:12.4f} | {100 * r['confident_accuracy']:12.1f}% | "
                  f"{100 * r['confident_share']:14.1f}% | {r['cpu_ms_per_cube']:6.1f} |")
    out = {"cubes": n_cubes, "seed": seed, "split": "test", "results": report}
    print(json.dumps(out))
    if json_path:
        json_path.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
