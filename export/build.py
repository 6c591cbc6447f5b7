"""``onboard export build``: train, export, quantise, compile and measure; write the bundle.

Steps (each measured, everything recorded in the bundle manifest through
:class:`onboard.formats.bundle.Manifest`):

1. Held-out evaluation cubes (``split="eval"``): ImSPOC reconstructions, push-broom cubes,
   and synthetic cubes with i.i.d., band-dependent, and band-dependent + stripes + dead-pixel
   noise.
2. Denoiser: train (``export.train``), export to ONNX (checker), parity ONNX Runtime vs
   PyTorch, INT8 Q/DQ (calibrated on training-split frames, never the evaluation ones) and
   FP16, parity of each against fp32, then PSNR / spectral angle of every precision through
   the runtime's learned stage, next to the classical stage's.
3. Residue classifiers (ImSPOC and push-broom band grids): the same chain; tillage accuracy
   and residue-fraction MAE of every precision next to the classical unmixing stage's.
4. The reconstruction graph of the simulated default ImSPOC calibration, parity against the
   numpy stage.
5. TensorRT plans for every ONNX file where TensorRT and a GPU exist (the reason otherwise).
6. Parameters, file sizes and CPU latency per 64 x 64 frame of every model.

Tolerance of a rebuild: data and training are seeded and run with deterministic algorithms
and a fixed thread count, so the same seed on the same machine and library versions should
give the same weights; on another CPU or library version float summation order differs and
so do the weights. The stated tolerance of a rebuild against the committed bundle's
manifest is 0.5 dB PSNR per evaluation set, 3 points of tillage accuracy and 0.01 of
fraction MAE (two denoiser trainings, of 1200 and 1500 steps, agreed within 0.1 dB on
every set); a second full build to measure it was not run for this bundle (it takes 5-6 minutes
of two otherwise idle cores).
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import numpy as np
import torch

from export import data, parity, quantize, reconstruction_graph, tensorrt_build
from export.foreign import other_cubes
from export.models import parameter_count
from export.onnx_export import export_onnx
from export.train import (
    ResidueModel,
    TrainConfig,
    residue_training_set,
    train_denoiser,
    train_residue,
)
from onboard.config import ResidueConfig
from onboard.engines.onnxruntime_engine import CPU_PROVIDER, OnnxRuntimeEngine
from onboard.formats import bundle as bundle_mod
from onboard.formats.bundle import (
    Artifact,
    BundleError,
    Manifest,
    ModelSpec,
    TensorSpec,
    tool_versions,
)
from onboard.formats.types import Cube
from onboard.runtime.session import classical_classifier
from onboard.stages import radiometric
from onboard.stages.confidence import Domain, fit_domain, fit_foreign, fit_limits, threshold_for
from onboard.stages.denoise import denoise_subspace
from onboard.stages.learned import LearnedDenoiser, LearnedResidue, decompose, refiner_input
from onboard.stages.reconstruct import Reconstructor

PRECISIONS = ("fp32", "int8", "fp16")
#: Evaluation sets: name -> (data kind, noise kinds for synthetic).
EVAL_SETS: dict[str, tuple[str, tuple[data.NoiseKind, ...]]] = {
    "imspoc": ("imspoc", ()),
    "pushbroom": ("pushbroom", ()),
    "iid": ("synthetic", ("iid",)),
    "band": ("synthetic", ("band",)),
    "stripes": ("synthetic", ("band+stripes+dead",)),
}
DENOISER_IN = TensorSpec("eigenimages", ("k", 2, "H", "W"), "float32",
                         "k eigen-images in whitened units (noise sd 1): z - y0 and y0 / scale "
                         "(onboard.stages.learned.refiner_input)")
DENOISER_OUT = TensorSpec("correction", ("k", 1, "H", "W"), "float32",
                          "correction to the classical estimate y0, whitened units")
#: What ``--only`` can rebuild into an existing bundle.
ONLY = ("denoiser", "residue", "residue_imspoc", "residue_pushbroom", "residue_ood")
#: Training cubes the out-of-distribution subspace is refitted on by ``--only residue_ood``.
OOD_TRAIN_CUBES = 96
#: Training-split scenes per foreign set (char, built) the out-of-distribution rule's foreign
#: direction is fitted on (``training_domain``; quick builds: 2).
FOREIGN_CUBES = 24
#: The foreign test per sensor, (ridge, whether it reads the level) of ``fit_foreign``, or None
#: (no foreign test). Chosen by bench/bench_residue_foreign_cv.py (5 folds of the train split's
#: 59 residues grouped by site, docs/residue_ceiling.md): of the settings whose foreign test
#: flags at most 5 % of the held-out residue pixels (at least half residue) in every fold, the
#: one flagging most validation char and built. ImSPOC: the shape, ridge 1 (worst fold 3.1 %;
#: built 82 % flagged against 44 % without it). Push-broom: none (the settings that hold 5 %
#: add at most 3 points of char; the one shipped before, shape and level at ridge 1e-4,
#: flagged 11.4 % of a fold's held-out residues).
FOREIGN_TEST: dict[str, tuple[float, bool] | None] = {"imspoc": (1.0, False), "pushbroom": None}
#: Validation cubes of a residue classifier, per ``eval_cubes``: 64 for the default 16 (16
#: fields; with 16 cubes, 4 fields, the push-broom's validation accuracy moved 9 points
#: between the first 16 and 64 cubes of the same seed, 64.3 against 73.2 %).
RESIDUE_EVAL_FACTOR = 4


@dataclass(frozen=True)
class BuildOptions:
    """``out``: the bundle folder. ``eval_cubes``: held-out cubes per evaluation set.
    ``only``: "denoiser" rebuilds that model alone into the existing bundle in ``out``,
    leaving every other model's files and manifest entry as they are."""

    out: Path
    seed: int = 0
    quick: bool = False
    progress: bool = True
    eval_cubes: int = 16
    tensorrt: bool = True
    #: one of ``ONLY`` ("residue": both classifiers; "residue_ood": both classifiers'
    #: out-of-distribution rule refitted, no retraining): rebuild those models only, keep the
    #: rest of ``out``'s bundle
    only: str | None = None


def eval_sets(seed: int, n: int, names: Sequence[str] = tuple(EVAL_SETS)
              ) -> dict[str, list[data.Sample]]:
    """Held-out samples per evaluation set (``split="eval"``, seeds apart from training)."""
    out = {}
    for name in names:
        kind, noise = EVAL_SETS[name]
        it = (data.synthetic_samples("eval", seed + 500, kinds=noise) if kind == "synthetic"
              else data.samples(kind, "eval", seed + 500))  # type: ignore[arg-type]
        out[name] = data.take(it, n)
    return out


def _engine(path: Path, inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec],
            precision: str) -> OnnxRuntimeEngine:
    engine = OnnxRuntimeEngine(path, inputs, outputs, precision, providers=[CPU_PROVIDER],
                               intra_op_threads=1)
    return engine.activate()  # type: ignore[return-value]


def _median_ms(fn: Callable[[], Any], repeats: int = 7) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1000.0 * float(np.median(times))


def _flat(prefix: str, d: dict[str, float]) -> dict[str, float]:
    return {f"{k}_{prefix}": round(v, 5) for k, v in d.items()}


def build_denoiser(opts: BuildOptions, cfg: TrainConfig, evals: dict[str, list[data.Sample]],
                   summary: dict[str, Any]) -> ModelSpec:
    model, info = train_denoiser(cfg)
    out = opts.out
    feeds = [{"eigenimages": refiner_input(decompose(s.cube, data.denoise_config(s)))}
             for samples in evals.values() for s in samples[:2]]
    fp32 = export_onnx(model, torch.from_numpy(feeds[0]["eigenimages"]),
                       out / "denoiser.fp32.onnx", "eigenimages", ["correction"],
                       {0: "k", 2: "H", 3: "W"})

    def torch_ref(feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        with torch.no_grad():
            return [model(torch.from_numpy(feed["eigenimages"])).numpy()]

    # Entropy calibration stacks every batch's histograms: batches of one shape (8 images).
    images = np.concatenate([refiner_input(decompose(s.cube, data.denoise_config(s)))
                             for kind in data.KINDS
                             for s in data.take(data.samples(kind, "train", opts.seed + 300),  # type: ignore[arg-type]
                                                2 if cfg.quick else 4)])
    calib = [{"eigenimages": images[i:i + 8]} for i in range(0, len(images) - 7, 8)]
    files = {"fp32": fp32,
             "int8": quantize.quantize_int8(fp32, out / "denoiser.int8.onnx", calib),
             "fp16": quantize.convert_fp16(fp32, out / "denoiser.fp16.onnx")}
    parities = {"fp32": {"reference": "torch", **parity.output_parity(torch_ref, fp32, feeds)}}
    for p in ("int8", "fp16"):
        parities[p] = {"reference": "onnxruntime fp32",
                       **parity.output_parity(lambda f: parity.ort_run(fp32, f), files[p], feeds)}
    classical = {name: parity.denoise_accuracy(
        lambda c, s=samples[0]: denoise_subspace(c, data.denoise_config(s)), samples)
        for name, samples in evals.items()}
    accuracy: dict[str, dict[str, float]] = {}
    frame = evals["imspoc"][0]
    for p, path in files.items():
        engine = _engine(path, [DENOISER_IN], [DENOISER_OUT], p)
        acc: dict[str, float] = {}
        for name, samples in evals.items():
            stage = LearnedDenoiser(engine, data.denoise_config(samples[0]))
            acc.update(_flat(name, parity.denoise_accuracy(stage, samples)))
        stage = LearnedDenoiser(engine, data.denoise_config(frame))
        dec = decompose(frame.cube, stage.config)
        acc["cpu_ms_model_imspoc_frame"] = round(
            _median_ms(lambda st=stage, d=dec: st.correction(d)), 3)
        acc["cpu_ms_stage_imspoc_frame"] = round(
            _median_ms(lambda st=stage: st(frame.cube)), 3)
        accuracy[p] = acc
        engine.deactivate()
    cfg0 = data.denoise_config(frame)
    classical_ms = _median_ms(lambda: denoise_subspace(frame.cube, cfg0))
    artifacts = [Artifact.from_file(out, f.name, format="onnx", precision=p,
                                    parity=parities[p], accuracy=accuracy[p])
                 for p, f in files.items()]
    meta = {"architecture": f"EigenRefiner width {model.width} depth {model.depth}: signal "
                            "subspace (classical stage) + learned eigen-image refinement",
            "parameters": parameter_count(model), "training": info,
            "classical": {f"{k}_{n}": round(v, 5) for n, d in classical.items()
                          for k, v in d.items()} | {"cpu_ms_stage_imspoc_frame": round(classical_ms, 3)},
            "eval_cubes_per_set": len(evals["imspoc"]),
            "runtime": "onboard.stages.learned.LearnedDenoiser"}
    summary["denoiser"] = {"parameters": meta["parameters"], "training": info,
                           "parity": parities, "accuracy": accuracy, "classical": meta["classical"],
                           "bytes": {p: f.stat().st_size for p, f in files.items()}}
    return ModelSpec("denoiser", "denoise", (DENOISER_IN,), (DENOISER_OUT,), tuple(artifacts),
                     None, meta)


def training_domain(kind: str, cfg: TrainConfig, rset: data.ResidueSet) -> Domain:
    """The principal subspace of the training cubes ``rset`` and, where ``FOREIGN_TEST``
    gives ``kind`` one, the foreign direction against ``FOREIGN_CUBES`` training-split scenes
    per ``export.foreign.OTHER`` set (2 quick); limits not yet set (``fit_limits``)."""
    train = [Cube(c, rset.grid_nm, t >= 0) for c, t in zip(rset.cubes, rset.tillage, strict=True)]
    domain = fit_domain(train)
    if (setting := FOREIGN_TEST[kind]) is None:
        return domain
    other = other_cubes(kind, "train", cfg.seed + 177, 2 if cfg.quick else FOREIGN_CUBES)
    return fit_foreign(domain, train, other, *setting)


def residue_domain(kind: str, cfg: TrainConfig, stage: LearnedResidue, rset: data.ResidueSet,
                   cubes: list, evals: list[data.Sample]) -> Domain:
    """The classifier's training domain (``training_domain``), its out-of-distribution limits
    and confidence threshold, both chosen on the validation cubes (``split="eval"``): the
    limits by ``fit_limits``, the threshold the lowest that keeps the confident
    in-distribution pixels right ``TARGET_ACCURACY`` of the time."""
    domain = fit_limits(training_domain(kind, cfg, rset), cubes)
    stage.domain = domain
    conf, right = [], []
    for cube, s in zip(cubes, evals, strict=True):
        r = stage(cube)
        assert r.confidence is not None and r.uncertain is not None
        ok = np.isfinite(r.confidence) & ~domain.out_of_distribution(cube)
        conf.append(r.confidence[ok])
        right.append(r.tillage[ok] == s.tillage[ok])
    threshold = threshold_for(np.concatenate(conf), np.concatenate(right))
    return dataclasses.replace(domain, confidence_threshold=threshold)


def refit_residue_domain(kind: str, spec: ModelSpec, cfg: TrainConfig, evals: list[data.Sample],
                         summary: dict[str, Any]) -> ModelSpec:
    """``spec`` (a residue model of the existing bundle) with its out-of-distribution rule
    refitted, its network and confidence threshold kept (``--only residue_ood``: no
    retraining): the subspace on ``OOD_TRAIN_CUBES`` training cubes drawn as the model's were
    (same library, seed and order: the first of its training cubes), the limits on the
    validation cubes ``evals``."""
    rset = residue_training_set(kind, cfg, n=OOD_TRAIN_CUBES)
    old = Domain.from_dict(spec.metadata["domain"])
    domain = dataclasses.replace(fit_limits(training_domain(kind, cfg, rset),
                                            [data.denoised(s) for s in evals]),
                                 confidence_threshold=old.confidence_threshold)
    summary[f"{spec.name}_domain"] = {"train_cubes": len(rset.cubes), "validation_cubes": len(evals),
                                      "foreign_test": FOREIGN_TEST[kind], "novelty_limit": domain.novelty_limit,
                                      "dark_limit": domain.dark_limit,
                                      "foreign_limit": domain.foreign_limit if domain.foreign is not None else None}
    return dataclasses.replace(spec, metadata={**spec.metadata, "domain": domain.to_dict()})


def build_residue(kind: str, opts: BuildOptions, cfg: TrainConfig,
                  evals: list[data.Sample], summary: dict[str, Any]) -> ModelSpec:
    rset = residue_training_set(kind, cfg)
    rm: ResidueModel = train_residue(kind, cfg, rset)
    name = f"residue_{kind}"
    out = opts.out
    b = len(rm.grid_nm)
    inputs = (TensorSpec("cube", (1, b, "H", "W"), "float32",
                         "reflectance (bands ascending, the grid band_grid_nm), invalid pixels 0"),)
    outputs = (TensorSpec("probabilities", (1, 3, "H", "W"), "float32",
                          "tillage class probabilities (intensive, reduced, conservation)"),
               TensorSpec("fractions", (1, 3, "H", "W"), "float32",
                          "residue, soil, green fractions (softmax: >= 0, sum 1)"))
    cubes = [data.denoised(s) for s in evals]
    feeds = [{"cube": np.where(c.valid, c.data, 0.0)[None].astype(np.float32)}
             for c in cubes]
    fp32 = export_onnx(rm.net, torch.from_numpy(feeds[0]["cube"]), out / f"{name}.fp32.onnx",
                       "cube", ["probabilities", "fractions"], {2: "H", 3: "W"})

    def torch_ref(feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        with torch.no_grad():
            return [t.numpy() for t in rm.net(torch.from_numpy(feed["cube"]))]

    train_cubes = data.residue_set(data.take(data.samples(kind, "train", opts.seed + 301),  # type: ignore[arg-type]
                                             2 if cfg.quick else 16))
    calib = [{"cube": c[None]} for c in train_cubes.cubes]
    files = {"fp32": fp32,
             "int8": quantize.quantize_int8(fp32, out / f"{name}.int8.onnx", calib),
             "fp16": quantize.convert_fp16(fp32, out / f"{name}.fp16.onnx")}
    parities = {"fp32": {"reference": "torch", **parity.output_parity(torch_ref, fp32, feeds)}}
    for p in ("int8", "fp16"):
        parities[p] = {"reference": "onnxruntime fp32",
                       **parity.output_parity(lambda f: parity.ort_run(fp32, f), files[p], feeds)}
    classify = classical_classifier(kind, rm.grid_nm, ResidueConfig())
    classical = parity.residue_accuracy(classify, cubes, evals)
    classical["cpu_ms_stage_frame"] = round(_median_ms(lambda: classify(cubes[0])), 3)
    engine = _engine(fp32, inputs, outputs, "fp32")
    domain = residue_domain(kind, cfg, LearnedResidue(engine, rm.grid_nm, name), rset, cubes, evals)
    engine.deactivate()
    accuracy = {}
    for p, path in files.items():
        engine = _engine(path, inputs, outputs, p)
        stage = LearnedResidue(engine, rm.grid_nm, name, domain)
        acc = parity.residue_accuracy(stage, cubes, evals)
        acc["cpu_ms_stage_frame"] = round(_median_ms(lambda st=stage: st(cubes[0])), 3)
        accuracy[p] = acc
        engine.deactivate()
    artifacts = [Artifact.from_file(out, f.name, format="onnx", precision=p,
                                    parity=parities[p], accuracy=accuracy[p])
                 for p, f in files.items()]
    meta = {"architecture": f"ResidueNet width {rm.net.width}: 1x1 spectral convs, 3x3 context "
                            f"convs dilated {rm.net.dilations} ({rm.net.context_px}x"
                            f"{rm.net.context_px} context), softmax class and fraction heads",
            "parameters": parameter_count(rm.net), "training": rm.info,
            "classical": {k: round(v, 5) for k, v in classical.items()},
            "input_cubes": "classically denoised", "frame": f"{cubes[0].data.shape}",
            "domain": domain.to_dict()}
    summary[name] = {"parameters": meta["parameters"], "training": rm.info, "parity": parities,
                     "accuracy": accuracy, "classical": meta["classical"],
                     "bytes": {p: f.stat().st_size for p, f in files.items()}}
    return ModelSpec(name, "residue", inputs, outputs, tuple(artifacts),
                     tuple(float(v) for v in rm.grid_nm), meta)


def build_reconstruction(opts: BuildOptions, summary: dict[str, Any]) -> ModelSpec:
    """The simulated default ImSPOC calibration's reconstruction graph; ``lam`` by GCV on a
    held-out frame."""
    inst, cal, _ = data._imspoc(0)
    rng = np.random.default_rng([opts.seed, 20])
    tile = next(data.scene_tiles("eval", opts.seed + 600, inst.scene_grid(), inst.thumb_shape))
    frame = radiometric.correct(inst.frame(tile.reflectance, inst.scene_grid(), rng),
                                cal.radiometric, inst.detector_spec.max_dn - 1)
    assert cal.layout is not None and frame.valid is not None
    rec = Reconstructor(cal)
    thumbs = cal.layout.extract(frame.pixels)
    lam = rec.choose_lambda(thumbs, cal.layout.extract(frame.valid).all(axis=0), frame.exposure_s)
    path = reconstruction_graph.build_graph(cal, lam, frame.exposure_s,
                                            opts.out / "reconstruction.fp32.onnx")
    par = {"reference": "onboard.stages.reconstruct",
           **reconstruction_graph.parity(cal, path, frame, lam)}
    feed = {reconstruction_graph.INPUT: thumbs.astype(np.float32)}
    ms = _median_ms(lambda: parity.ort_run(path, feed))
    n, (h, w), bands = len(cal.layout), cal.layout.thumb_shape, len(cal.wavelengths_nm)
    art = Artifact.from_file(opts.out, path.name, format="onnx", precision="fp32", parity=par,
                             accuracy={"cpu_ms_frame_with_session": round(ms, 3)})
    meta = {"lambda": lam, "exposure_s": frame.exposure_s, "instrument": cal.instrument,
            "calibration": "simulated ground calibration of default_instrument(seed=0), "
                           f"{bands} bands", "block": rec.block}
    summary["reconstruction"] = {"parity": par, "bytes": path.stat().st_size, "lambda": lam}
    return ModelSpec(
        "reconstruction", "reconstruct",
        (TensorSpec(reconstruction_graph.INPUT, (n, h, w), "float32",
                    "radiometrically corrected thumbnails (DN), layout.extract order"),),
        (TensorSpec(reconstruction_graph.OUTPUT, (bands, h, w), "float32",
                    "reflectance cube on band_grid_nm"),),
        (art,), tuple(float(v) for v in cal.wavelengths_nm), meta)


def add_plans(spec: ModelSpec, opts: BuildOptions, summary: dict[str, Any]) -> ModelSpec:
    """``spec`` with a TensorRT plan for each ONNX file, where TensorRT and a GPU exist."""
    reason = tensorrt_build.unavailable_reason() if opts.tensorrt else "not asked for"
    if reason is not None:
        summary.setdefault("tensorrt", {})[spec.name] = f"skipped: {reason}"
        return spec
    plans = []
    profile = tensorrt_build.profile_for(spec.inputs)
    for a in spec.artifacts:
        plan = Path(a.file).with_suffix("").name + ".plan"
        info = tensorrt_build.build_plan(opts.out / a.file, opts.out / plan, a.precision, profile,
                                         timing_cache=opts.out.parent / ".trt-timing.cache")
        plans.append(Artifact.from_file(opts.out, plan, format="tensorrt-plan",
                                        precision=a.precision, source=a.file, **info))
    summary.setdefault("tensorrt", {})[spec.name] = [p.file for p in plans]
    return ModelSpec(spec.name, spec.task, spec.inputs, spec.outputs,
                     (*spec.artifacts, *plans), spec.band_grid_nm, spec.metadata)


def build(opts: BuildOptions) -> dict[str, Any]:
    """Build the bundle in ``opts.out``; returns the summary (also in ``summary.json``)."""
    t0 = time.perf_counter()
    opts.out.mkdir(parents=True, exist_ok=True)
    cfg = TrainConfig(seed=opts.seed, quick=opts.quick, progress=opts.progress)
    summary: dict[str, Any] = {"seed": opts.seed, "quick": opts.quick}
    producer = f"onboard export build --seed {opts.seed}" + (" --quick" if opts.quick else "")
    kept: dict[str, ModelSpec] = {}
    top: dict[str, Any] = {"tools": tool_versions("torch", "onnx", "onnxruntime", "tensorrt"),
                           "producer": producer}
    if opts.only is not None:
        if opts.only not in ONLY:
            raise ValueError(f"--only takes {' or '.join(ONLY)}, got {opts.only!r}")
        try:
            previous = bundle_mod.load(opts.out).manifest
        except BundleError as exc:
            raise ValueError(f"--only {opts.only} rebuilds part of an existing bundle: {exc}") from exc
        kept = dict(previous.models)
        old_summary = opts.out / "summary.json"
        summary = {**(json.loads(old_summary.read_text()) if old_summary.is_file() else {}),
                   f"{opts.only}_seed": opts.seed}
        # only the rebuilt models' entries change (another build may own the rest): the top
        # level stays, and each rebuilt entry records the command and tools that made it
        top = {"tools": previous.tools, "producer": previous.producer, "created_utc": previous.created_utc}
    residue_only = (opts.only or "").startswith("residue")
    evals = eval_sets(opts.seed, opts.eval_cubes, tuple(EVAL_SETS)) if not residue_only else {}
    models: list[ModelSpec] = []
    if opts.only in (None, "denoiser"):
        models.append(build_denoiser(opts, cfg, evals, summary))
    kinds = [k for k in ("imspoc", "pushbroom") if opts.only in (None, "residue", f"residue_{k}")]
    if opts.only == "residue_ood":
        val = eval_sets(opts.seed, RESIDUE_EVAL_FACTOR * opts.eval_cubes, ("imspoc", "pushbroom"))
        models += [refit_residue_domain(k, kept[f"residue_{k}"], cfg, val[k], summary)
                   for k in ("imspoc", "pushbroom")]
    elif kinds:
        # the validation split holds 9 residue spectra: RESIDUE_EVAL_FACTOR x the cubes (4 x
        # more fields) so that the threshold and the model choice see them on many soils
        val = eval_sets(opts.seed, RESIDUE_EVAL_FACTOR * opts.eval_cubes, tuple(kinds))
        models += [build_residue(k, opts, cfg, val[k], summary) for k in kinds]
    if opts.only is None:
        models.append(build_reconstruction(opts, summary))
    if opts.only != "residue_ood":  # a refitted rule leaves the model files and plans as they are
        models = [add_plans(m, opts, summary) for m in models]
    if opts.only is not None:
        built = {"producer": f"{producer} --only {opts.only}",
                 "tools": tool_versions("torch", "onnx", "onnxruntime", "tensorrt")}
        # a refitted rule keeps the record of the build that made the network
        key = "ood_built" if opts.only == "residue_ood" else "built"
        models = [dataclasses.replace(m, metadata={**m.metadata, key: built}) for m in models]
    manifest = Manifest(kept | {m.name: m for m in models}, **top)
    manifest.write(opts.out)
    summary["seconds"] = round(time.perf_counter() - t0, 1)
    (opts.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def summary_rows(summary: dict[str, Any]) -> list[tuple[str, ...]]:
    """(model, precision, bytes, parity max error, accuracy) rows for the printed table."""
    rows = []
    for name in ("denoiser", "residue_imspoc", "residue_pushbroom"):
        m = summary.get(name)
        if not m:
            continue
        for p in PRECISIONS:
            acc = m["accuracy"][p]
            if name == "denoiser":
                text = " ".join(f"{k.split('_')[-1]} {acc[f'psnr_db_{k}']:.2f}"
                                for k in EVAL_SETS) + " dB"
            else:
                text = (f"acc {100 * acc['tillage_accuracy']:.1f} % MAE "
                        f"{acc['fraction_mae']:.4f}")
            rows.append((name, p, str(m["bytes"][p]), f"{m['parity'][p]['max_abs_error']:.2e}",
                         text))
        c = m["classical"]
        text = (" ".join(f"{k.split('_')[-1]} {c[f'psnr_db_{k}']:.2f}" for k in EVAL_SETS) + " dB"
                if name == "denoiser" else
                f"acc {100 * c['tillage_accuracy']:.1f} % MAE {c['fraction_mae']:.4f}")
        rows.append((name, "classical", "-", "-", text))
    r = summary.get("reconstruction")
    if r:
        rows.append(("reconstruction", "fp32", str(r["bytes"]),
                     f"{r['parity']['max_abs_error']:.2e}", f"lambda {r['lambda']:.3g}"))
    return rows


@click.command("build")
@click.option("--out", "out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Bundle folder to write (created).")
@click.option("--seed", default=0, show_default=True, help="Seed of data and training.")
@click.option("--quick", is_flag=True, help="Seconds-long training (tests); not for flight.")
@click.option("--eval-cubes", default=16, show_default=True,
              help="Held-out cubes per evaluation set.")
@click.option("--no-tensorrt", is_flag=True, help="Do not build TensorRT plans.")
@click.option("--only", type=click.Choice(ONLY),
              help="Rebuild only these models in OUT's existing bundle (the others, their "
                   "manifest entries and summary are kept).")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write the summary as JSON here.")
def build_command(out: Path, seed: int, quick: bool, eval_cubes: int, no_tensorrt: bool,
                  only: str | None, json_path: Path | None) -> None:
    """Train, export ONNX, quantise (INT8 Q/DQ, FP16), build TensorRT plans where possible,
    measure parity and accuracy, and write the model bundle to OUT."""
    from rich.console import Console
    from rich.table import Table

    summary = build(BuildOptions(out=out, seed=seed, quick=quick, eval_cubes=eval_cubes,
                                 tensorrt=not no_tensorrt, only=only))
    table = Table(title=f"model bundle {out} ({summary['seconds']} s)")
    for col in ("model", "precision", "bytes", "parity max |err|", "held-out accuracy"):
        table.add_column(col)
    for row in summary_rows(summary):
        table.add_row(*row)
    console = Console()
    console.print(table)
    for name, what in summary.get("tensorrt", {}).items():
        console.print(f"TensorRT {name}: {what}")
    if json_path:
        json_path.write_text(json.dumps(summary, indent=2) + "\n")
