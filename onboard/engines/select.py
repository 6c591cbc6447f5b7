"""``auto`` engine selection: the best engine that loads here, and why the others did not.

For one model of a bundle, candidates are tried best first: ``tensorrt`` (a plan of the
bundle built for this TensorRT and GPU), ``onnxruntime-gpu`` (ONNX Runtime with its TensorRT
and CUDA providers), ``onnxruntime-cpu``. Within a candidate the model's files are tried in
that candidate's precision order. Every file or candidate passed over is recorded as a
:class:`Skip` with the reason (not installed, no GPU, checksum mismatch, corrupt file, plan
built for another TensorRT or GPU...). When nothing loads the selection's engine is None and
the caller runs the classical (non-learned) stages; selection never raises for a model that
cannot run.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from onboard.engines import onnxruntime_engine as ortx
from onboard.engines import plan_cache
from onboard.engines import tensorrt_engine as trtx
from onboard.engines.base import Engine, EngineError
from onboard.formats.bundle import PRECISIONS, Artifact, Bundle, ModelSpec

#: What runs when no candidate loads.
CLASSICAL = "classical"


@dataclass(frozen=True)
class Candidate:
    """One kind of engine the selector can try: what files it runs, in which precision order
    (fastest that keeps accuracy first), how to tell whether it can run here at all, and how to
    make an engine for one file. Adding an engine is adding one of these to :data:`CANDIDATES`.

    ``probe(device)`` returns what makes the candidate possible (versions, device) or raises
    :class:`EngineError` with the reason it is not; ``build`` makes an inactive engine;
    ``reject`` looks at an activated engine and returns why it must not be used (None: use it).
    """

    name: str
    file_format: str
    precisions: tuple[str, ...]
    probe: Callable[[int], str]
    build: Callable[[Path, ModelSpec, Artifact, EngineOptions], Engine]
    reject: Callable[[Engine], str | None] = lambda engine: None


def _probe_tensorrt(device: int) -> str:
    p = trtx.probe(device)
    return f"TensorRT {p['tensorrt']} on {p['device']} (compute capability {p['compute_capability']})"


def _probe_ort_gpu(device: int) -> str:
    ort = ortx.import_onnxruntime()
    gpu = [p for p in ortx.available_providers() if p in ortx.GPU_PROVIDERS]
    if not gpu:
        raise EngineError(f"this onnxruntime {ort.__version__} has no GPU provider (it has "
                          f"{', '.join(ort.get_available_providers())}): install "
                          "onnxruntime-gpu (JetPack's wheel on a Jetson)")
    return f"onnxruntime {ort.__version__} with {', '.join(gpu)}"


def _probe_ort_cpu(device: int) -> str:
    return f"onnxruntime {ortx.import_onnxruntime().__version__} with {ortx.CPU_PROVIDER}"


def _cache_root(options: EngineOptions) -> Path:
    return Path(options.trt_cache_dir) if options.trt_cache_dir else plan_cache.default_root()


def _build_tensorrt(path: Path, spec: ModelSpec, a: Artifact, options: EngineOptions) -> Engine:
    """The plan of ONNX file ``a`` from the device's cache (built on first use), or the bundle's
    own plan of that file and precision where it was built for this machine."""
    shipped = next(((path.parent / p.file, trtx.PlanKey.of_artifact(p)) for p in spec.artifacts
                    if p.format == "tensorrt-plan" and p.source == a.file
                    and p.precision == a.precision), None)
    return plan_cache.CachedPlanEngine(path, spec.inputs, spec.outputs, precision=a.precision,
                                       model_sha256=a.sha256, root=_cache_root(options),
                                       device=options.device, shipped=shipped)


def _build_ort(providers: tuple[str, ...]) -> Callable[[Path, ModelSpec, Artifact, EngineOptions], Engine]:
    def build(path: Path, spec: ModelSpec, a: Artifact, options: EngineOptions) -> Engine:
        return ortx.OnnxRuntimeEngine(path, spec.inputs, spec.outputs, a.precision,
                                      providers=providers, intra_op_threads=options.intra_op_threads,
                                      inter_op_threads=options.inter_op_threads,
                                      trt_cache_dir=_cache_root(options), model_sha256=a.sha256)
    return build


def _fell_back_to_cpu(engine: Engine) -> str | None:
    """ONNX Runtime falls back to the CPU with only a warning: that is not the GPU candidate."""
    return None if getattr(engine, "on_gpu", False) else "; ".join(engine.warnings)


#: Best first. fp16 is left out on the CPU, where ONNX Runtime runs it through casts (slower
#: than fp32); ask for it explicitly.
CANDIDATES: tuple[Candidate, ...] = (
    Candidate("tensorrt", "onnx", ("int8", "fp16", "fp32"), _probe_tensorrt, _build_tensorrt),
    Candidate("onnxruntime-gpu", "onnx", ("fp16", "int8", "fp32"), _probe_ort_gpu,
              _build_ort((*ortx.GPU_PROVIDERS, ortx.CPU_PROVIDER)), _fell_back_to_cpu),
    Candidate("onnxruntime-cpu", "onnx", ("fp32", "int8"), _probe_ort_cpu,
              _build_ort((ortx.CPU_PROVIDER,))),
)
CANDIDATE_NAMES = tuple(c.name for c in CANDIDATES)


@dataclass(frozen=True)
class EngineOptions:
    """How to choose and configure engines (the mission config's engine settings).

    ``engine``: "auto", one of :data:`CANDIDATE_NAMES`, or "classical" (no learned model).
    ``precision``: None for each candidate's default order, else only that precision.
    ``intra_op_threads``/``inter_op_threads``: ONNX Runtime thread pools (0: ``[run] threads``,
    :mod:`onboard.threads`).
    ``device``: CUDA device index. ``trt_cache_dir``: the device's plan cache, TensorRT plans
    and ONNX Runtime's TensorRT engine and timing caches (:mod:`onboard.engines.plan_cache`;
    None: ``$XDG_CACHE_HOME/onboard/engines``)."""

    engine: str = "auto"
    precision: str | None = None
    intra_op_threads: int = 0
    inter_op_threads: int = 0
    device: int = 0
    trt_cache_dir: str | None = None

    def __post_init__(self) -> None:
        if self.engine not in ("auto", *CANDIDATE_NAMES, CLASSICAL):
            raise ValueError(f"engine {self.engine!r}: expected auto, {', '.join(CANDIDATE_NAMES)} "
                             f"or {CLASSICAL}")
        if self.precision is not None and self.precision not in PRECISIONS:
            raise ValueError(f"precision {self.precision!r}: expected one of {PRECISIONS}")
        if self.intra_op_threads < 0 or self.inter_op_threads < 0:
            raise ValueError("thread counts must be >= 0 (0: [run] threads)")


@dataclass(frozen=True)
class Skip:
    """A candidate engine (and file, when one was involved) passed over, and why."""

    engine: str
    reason: str
    file: str | None = None

    def __str__(self) -> str:
        return f"{self.engine}{f' ({self.file})' if self.file else ''}: {self.reason}"


@dataclass
class Selection:
    """The outcome for one model: the active engine (None: use the classical stages), the
    candidate and file it came from, and every skip with its reason. Close it (or use it as a
    context manager) to free the engine."""

    model: str
    engine: Engine | None
    candidate: str
    artifact: Artifact | None = None
    skipped: list[Skip] = field(default_factory=list)

    def close(self) -> None:
        if self.engine is not None:
            self.engine.deactivate()

    def __enter__(self) -> Selection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def summary(self) -> str:
        """One line for logs and telemetry."""
        chosen = (f"{self.engine.label} ({self.artifact.file})" if self.engine and self.artifact
                  else f"{CLASSICAL} stages")
        skipped = "; ".join(str(s) for s in self.skipped)
        return f"{self.model}: {chosen}" + (f"; skipped {skipped}" if skipped else "")

    def as_dict(self) -> dict[str, Any]:
        return {"model": self.model, "candidate": self.candidate,
                "engine": self.engine.describe() if self.engine else None,
                "file": self.artifact.file if self.artifact else None,
                "skipped": [{"engine": s.engine, "file": s.file, "reason": s.reason}
                            for s in self.skipped]}


@dataclass(frozen=True)
class EngineProbe:
    """Whether an engine kind can run on this machine at all (independent of any bundle)."""

    name: str
    available: bool
    detail: str  # versions and device when available, the reason when not


def probe_engines(device: int = 0) -> list[EngineProbe]:
    """Every candidate plus the classical fallback, available or not and why."""
    out = []
    for c in CANDIDATES:
        try:
            out.append(EngineProbe(c.name, True, c.probe(device)))
        except EngineError as exc:
            out.append(EngineProbe(c.name, False, str(exc)))
    out.append(EngineProbe(CLASSICAL, True, "non-learned stages, always available"))
    return out


def _ordered(artifacts: list[Artifact], order: tuple[str, ...]) -> Iterator[Artifact]:
    yield from sorted((a for a in artifacts if a.precision in order),
                      key=lambda a: order.index(a.precision))


def _try_candidate(bundle: Bundle, model: str, candidate: Candidate, options: EngineOptions,
                   skipped: list[Skip]) -> Selection | None:
    name, spec = candidate.name, bundle.model(model)
    mine = [a for a in spec.artifacts if a.format == candidate.file_format]
    try:
        candidate.probe(options.device)
    except EngineError as exc:  # nothing of this kind runs here: one skip for all its files
        skipped.append(Skip(name, str(exc), ", ".join(a.file for a in mine) or None))
        return None
    if not mine:
        skipped.append(Skip(name, f"the bundle has no {candidate.file_format} file for {model}"))
        return None
    order = (options.precision,) if options.precision else candidate.precisions
    for a in mine:
        if a.precision not in order:
            why = ("not the precision asked for" if options.precision else
                   f"{a.precision} is not used by {name} unless asked for")
            skipped.append(Skip(name, why, a.file))
    for a in _ordered(mine, order):
        if a.file in bundle.problems:
            skipped.append(Skip(name, bundle.problems[a.file], a.file))
            continue
        engine = candidate.build(bundle.path(a), spec, a, options)
        try:
            engine.activate()
        except EngineError as exc:
            skipped.append(Skip(name, str(exc), a.file))
            continue
        rejected = candidate.reject(engine)
        if rejected is not None:
            engine.deactivate()
            skipped.append(Skip(name, rejected, a.file))
            return None
        return Selection(model, engine, name, a, skipped)
    return None


def select_engine(bundle: Bundle | None, model: str,
                  options: EngineOptions | None = None) -> Selection:
    """Activate the best engine for ``model`` of ``bundle`` that loads on this machine.

    Returns a :class:`Selection` whose ``engine`` is active (close the selection to free it),
    or None with ``candidate == "classical"`` when nothing loads; ``skipped`` says why for
    every candidate and file passed over."""
    options = options or EngineOptions()
    skipped: list[Skip] = []
    if bundle is None:
        skipped.append(Skip("bundle", "no model bundle configured or shipped"))
        return Selection(model, None, CLASSICAL, None, skipped)
    if model not in bundle.manifest.models:
        skipped.append(Skip("bundle", f"bundle {bundle.root} has no model {model!r} (it has "
                                      f"{', '.join(sorted(bundle.manifest.models))})"))
        return Selection(model, None, CLASSICAL, None, skipped)
    for candidate in CANDIDATES:
        if options.engine not in ("auto", candidate.name):
            skipped.append(Skip(candidate.name, f"not asked for (engine = {options.engine})"))
            continue
        chosen = _try_candidate(bundle, model, candidate, options, skipped)
        if chosen is not None:
            return chosen
    return Selection(model, None, CLASSICAL, None, skipped)
