"""Denoisers on the same held-out noisy cubes: PSNR, spectral angle, CPU time.

    python bench/bench_denoise.py [--bundle DIR] [--cubes N] [--json out.json]

Compared, on every cube of every set (held-out scenes, ``split="eval"``, never seen in
training): the learned stage of the bundle (fp32 and INT8 ONNX through ONNX Runtime, one
thread), the classical subspace stage, and HyDe's FastHyDe and HyRes (PyPI ``hyde-images``;
an optional benchmark dependency needing ``pytorch_wavelets``, ``scikit-image`` and
``setuptools<81``; skipped with the reason when it does not import). Sets: ``iid`` (i.i.d.
Gaussian noise), ``band`` (band-dependent Gaussian), ``stripes`` (band-dependent Gaussian +
column stripes + dead pixels), ``pushbroom`` and ``imspoc`` (the simulated instruments through
the pipeline). FastHyDe is told ``iid=True`` on the i.i.d. set and ``iid=False`` elsewhere,
its favourable settings. Every method runs on one thread (BLAS, torch, ONNX Runtime);
CPU time is the process time per cube. HyDe takes its input as (rows, cols, bands)
float64; dead pixels are given to every method as they came (the learned and classical
stages also get the valid mask, as in flight). Metrics are ``onboard.metrics`` over the
valid pixels against the truth.
"""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

import onboard  # noqa: E402
from export.build import eval_sets  # noqa: E402
from export.data import Sample, denoise_config  # noqa: E402
from onboard import metrics  # noqa: E402
from onboard.engines.onnxruntime_engine import CPU_PROVIDER, OnnxRuntimeEngine  # noqa: E402
from onboard.formats import bundle as bundle_mod  # noqa: E402
from onboard.stages.denoise import denoise_subspace  # noqa: E402
from onboard.stages.learned import DENOISER, LearnedDenoiser  # noqa: E402

Method = Callable[[Sample], np.ndarray]


def hyde_methods() -> tuple[dict[str, Callable[[Sample, str], np.ndarray]], str | None]:
    """FastHyDe and HyRes, or ({}, why not)."""
    try:
        import hyde
        import torch
    except Exception as exc:  # ImportError, or pkg_resources missing with setuptools >= 81
        return {}, f"hyde-images does not import ({type(exc).__name__}: {exc})"
    torch.set_num_threads(1)
    fast, hyres = hyde.FastHyDe(), hyde.HyRes()

    def run_fast(s: Sample, set_name: str) -> np.ndarray:
        img = torch.from_numpy(s.cube.data.transpose(1, 2, 0).astype(np.float64))
        out = fast(img, noise_type="additive", iid=set_name == "iid",
                   k_subspace=min(10, s.cube.bands - 1))
        return out.numpy().transpose(2, 0, 1)

    def run_hyres(s: Sample, set_name: str) -> np.ndarray:
        img = torch.from_numpy(s.cube.data.transpose(1, 2, 0).astype(np.float64))
        return hyres(img).numpy().transpose(2, 0, 1)

    return {"FastHyDe": run_fast, "HyRes": run_hyres}, None


def learned_methods(root: Path) -> dict[str, Callable[[Sample, str], np.ndarray]]:
    b = bundle_mod.load(root)
    spec = b.model(DENOISER)
    out = {}
    for a in b.usable(DENOISER, "onnx"):
        if a.precision == "fp16":  # runs through casts on a CPU: not a CPU candidate
            continue
        engine = OnnxRuntimeEngine(b.path(a), spec.inputs, spec.outputs, a.precision,
                                   providers=[CPU_PROVIDER], intra_op_threads=1).activate()

        def run(s: Sample, set_name: str, engine=engine) -> np.ndarray:
            return LearnedDenoiser(engine, denoise_config(s))(s.cube).data

        out[f"learned {a.precision}"] = run
    return out


def classical(s: Sample, set_name: str) -> np.ndarray:
    return denoise_subspace(s.cube, denoise_config(s)).data


def measure(fn: Callable[[Sample, str], np.ndarray], samples: list[Sample], set_name: str
            ) -> dict[str, float]:
    psnr, sam, cpu, wall = [], [], [], []
    for s in samples:
        c0, w0 = time.process_time(), time.perf_counter()
        est = fn(s, set_name)
        cpu.append(time.process_time() - c0)
        wall.append(time.perf_counter() - w0)
        valid = s.cube.valid & np.isfinite(est).all(axis=0)
        psnr.append(metrics.psnr_db(est, s.truth, valid))
        sam.append(metrics.spectral_angle_deg(est, s.truth, valid))
    return {"psnr_db": float(np.mean(psnr)), "spectral_angle_deg": float(np.mean(sam)),
            "cpu_s_per_cube": float(np.mean(cpu)), "wall_s_per_cube": float(np.mean(wall))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", type=Path,
                    default=Path(onboard.__file__).parent / "models" / "default")
    ap.add_argument("--cubes", type=int, default=6, help="held-out cubes per set")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    sets = eval_sets(args.seed, args.cubes)
    methods: dict[str, Callable[[Sample, str], np.ndarray]] = {}
    methods.update(learned_methods(args.bundle))
    methods["classical subspace"] = classical
    hyde, why = hyde_methods()
    methods.update(hyde)
    results: dict[str, dict[str, dict[str, float]]] = {}
    for set_name, samples in sets.items():
        noisy = {"psnr_db": float(np.mean([metrics.psnr_db(s.cube.data, s.truth, s.cube.valid)
                                           for s in samples]))}
        results[set_name] = {"noisy input": noisy}
        for name, fn in methods.items():
            results[set_name][name] = measure(fn, samples, set_name)

    print(f"{'set':10s} {'method':20s} {'PSNR dB':>8s} {'SAM deg':>8s} {'CPU ms':>9s}")
    for set_name, res in results.items():
        shape = sets[set_name][0].cube.data.shape
        for name, m in res.items():
            sam = f"{m['spectral_angle_deg']:8.3f}" if "spectral_angle_deg" in m else " " * 8
            cpu = f"{1000 * m['cpu_s_per_cube']:9.1f}" if "cpu_s_per_cube" in m else " " * 9
            print(f"{set_name:10s} {name:20s} {m['psnr_db']:8.2f} {sam} {cpu}   {shape}")
    if why:
        print(f"HyDe not compared: {why}")
    report = {"cubes_per_set": args.cubes, "bundle": str(args.bundle), "results": results,
              "hyde": why or "compared",
              "shapes": {k: list(v[0].cube.data.shape) for k, v in sets.items()}}
    print(json.dumps(report))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
