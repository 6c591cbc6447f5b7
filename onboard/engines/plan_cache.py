"""The device's plan cache: TensorRT plans built here, on the first start, from the bundle's ONNX.

A plan only runs under the TensorRT version and on the GPU it was built with, so plans are not
shipped but made on the device, once, and kept under a key (:class:`PlanKey`: model checksum,
TensorRT version, GPU name and compute capability, precision). Layout under the cache root
(``[engine] trt_cache_dir``, default ``$XDG_CACHE_HOME/onboard/engines``)::

    tensorrt/<key name>/plan          the serialised plan
    tensorrt/<key name>/key.json      the full key it was built for, and the plan's sha256
    tensorrt/<key name>/timing.cache  TensorRT's timing cache (rebuilds take seconds)
    onnxruntime-trt/<key name>/       ONNX Runtime's TensorRT provider: its engine and timing
                                      caches, and key.json (its key holds ONNX Runtime's version)

**A stale entry is refused and rebuilt, never loaded.** Before a plan is deserialised its
``key.json`` is compared field by field with this machine's key and the plan's bytes with the
recorded checksum; any difference (a TensorRT upgrade, another GPU, a file copied from another
device, a torn write) removes the entry, says why, and builds it again. ONNX Runtime does not
check its own engine cache against the TensorRT version or the GPU, so its directory is keyed
and checked the same way and emptied when stale.

**Building on a small Jetson.** The builder's workspace is bounded (:data:`WORKSPACE_BYTES`,
an Orin Nano has 8 GB shared between CPU and GPU), the build goes into a temporary directory
renamed into place when whole, and it reports progress (TensorRT's ``IProgressMonitor``) to
the log and to systemd (``STATUS=``, and ``EXTEND_TIMEOUT_USEC=`` so a first start that keeps
progressing is not timed out; :mod:`onboard.systemd`).
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from onboard import systemd
from onboard.engines.base import EngineError
from onboard.engines.tensorrt_engine import (
    PlanKey,
    TensorRTEngine,
    cuda_device,
    import_tensorrt,
    probe,
)
from onboard.formats.bundle import TensorSpec
from onboard.sysinfo import cache_root

log = logging.getLogger("onboard.engines")

Shape = tuple[int, ...]
Profile = Mapping[str, tuple[Shape, Shape, Shape]]
#: Oldest TensorRT major version that parses the bundle's ONNX files (opset 18).
MIN_TENSORRT_MAJOR = 10
#: Builder workspace limit (bytes): the models are small, and a Jetson Orin Nano has 8 GB shared.
WORKSPACE_BYTES = 1 << 28
#: How long each report of build progress extends systemd's start-up timeout.
EXTEND_TIMEOUT_S = 300
KEY_FILE = "key.json"
PLAN_FILE = "plan"
TIMING_CACHE = "timing.cache"
_FORMAT = "onboard-plan-cache"


class PlanBuildError(EngineError):
    """TensorRT could not parse or build the model; the message carries its errors."""


def check_version(version: str) -> None:
    """Raise PlanBuildError when TensorRT ``version`` is older than ``MIN_TENSORRT_MAJOR``."""
    major = version.split(".", 1)[0]
    if not major.isdigit() or int(major) < MIN_TENSORRT_MAJOR:
        raise PlanBuildError(
            f"TensorRT {version} cannot parse the bundle's ONNX files: TensorRT >= "
            f"{MIN_TENSORRT_MAJOR} is needed (JetPack >= 6.1 on a Jetson)")


def unavailable_reason(device: int = 0) -> str | None:
    """None when TensorRT and a CUDA GPU are usable here, else why not."""
    try:
        probe(device)
    except EngineError as exc:
        return str(exc)
    return None


def default_root() -> Path:
    return cache_root() / "engines"


def profile_for(inputs: Sequence[TensorSpec]) -> dict[str, tuple[Shape, Shape, Shape]]:
    """The optimisation profile (min, opt, max shape) of every input: spatial dims ("H", "W")
    16 / 64 / 512, other named dims 1 / 8 / 32, fixed dims as they are."""
    def shape(spatial: int, other: int, dims: Sequence[int | str]) -> Shape:
        return tuple(spatial if d in ("H", "W") else other if isinstance(d, str) else d for d in dims)

    return {t.name: (shape(16, 1, t.shape), shape(64, 8, t.shape), shape(512, 32, t.shape))
            for t in inputs}


# -- keys on disk --------------------------------------------------------------------------

def entry_dir(root: Path, kind: str, key: PlanKey) -> Path:
    """The entry of ``key`` under ``root`` (``kind``: "tensorrt" or "onnxruntime-trt")."""
    device = "".join(c for c in key.device_name if c.isalnum()) or "gpu"
    return Path(root) / kind / f"{key.cache_name.removesuffix('.plan')}.{device}"


def _key_record(key: PlanKey, plan_sha256: str | None) -> dict[str, Any]:
    return {"format": _FORMAT, "schema_version": 1, "model_sha256": key.model_sha256,
            "tensorrt_version": key.tensorrt_version, "compute_capability": key.compute_capability,
            "precision": key.precision, "device_name": key.device_name, "plan_sha256": plan_sha256}


def write_key(entry: Path, key: PlanKey, plan_sha256: str | None = None) -> None:
    (entry / KEY_FILE).write_text(json.dumps(_key_record(key, plan_sha256), indent=1))


def entry_problems(entry: Path, key: PlanKey, plan_file: str | None = PLAN_FILE) -> list[str]:
    """Why the entry at ``entry`` must not be used for ``key`` (empty: use it). Reads the key
    record and checksums ``plan_file`` (None: the entry holds no plan of ours); deserialises
    nothing."""
    try:
        stored = json.loads((entry / KEY_FILE).read_text())
        if stored.get("format") != _FORMAT:
            return [f"{entry / KEY_FILE} is not a plan cache key"]
        built = PlanKey(stored["model_sha256"], stored["tensorrt_version"],
                        stored["compute_capability"], stored["precision"], stored["device_name"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        return [f"its key {entry / KEY_FILE} is missing or unreadable ({exc})"]
    problems = built.mismatches(key)
    if not built.device_name and key.device_name:
        problems.append(f"it does not say which GPU it was built on (this one is {key.device_name})")
    if plan_file is not None and not problems:
        try:
            digest = hashlib.sha256((entry / plan_file).read_bytes()).hexdigest()
        except OSError as exc:
            return [f"its plan is unreadable ({exc})"]
        if digest != stored.get("plan_sha256"):
            problems.append("its plan's sha256 is not the one recorded when it was built (corrupt "
                            "or replaced)")
    return problems


def _claim(entry: Path, key: PlanKey, plan_file: str | None) -> bool:
    """True when ``entry`` holds a usable entry for ``key``; a stale one is removed (and said)."""
    if not entry.exists():
        return False
    problems = entry_problems(entry, key, plan_file)
    if not problems:
        return True
    log.warning("plan cache %s refused, not loaded: %s; building it again", entry,
                "; ".join(problems))
    shutil.rmtree(entry)
    return False


# -- building ----------------------------------------------------------------------------------

class Progress:
    """Build progress, said at most every ``every_s`` (phase starts and ends always), to the
    log and to systemd (status, and an extension of the start-up timeout)."""

    def __init__(self, what: str, every_s: float = 5.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.what, self.every_s, self.clock = what, every_s, clock
        self.t0 = self._last = clock()
        self.reports = 0

    def __call__(self, text: str, force: bool = False) -> None:
        now = self.clock()
        if not force and now - self._last < self.every_s:
            return
        self._last = now
        self.reports += 1
        line = f"building {self.what}: {text} ({now - self.t0:.0f} s)"
        log.info("%s", line)
        systemd.notify(f"STATUS={line}", f"EXTEND_TIMEOUT_USEC={EXTEND_TIMEOUT_S * 1_000_000}")


def _monitor(trt: Any, progress: Progress) -> Any:
    """A TensorRT ``IProgressMonitor`` (TensorRT >= 10) reporting to ``progress``."""
    class Monitor(trt.IProgressMonitor):  # type: ignore[misc, name-defined]
        def __init__(self) -> None:
            trt.IProgressMonitor.__init__(self)
            self.steps: dict[str, int] = {}

        def phase_start(self, phase_name: str, parent_phase: str | None, num_steps: int) -> None:
            self.steps[phase_name] = num_steps
            progress(f"{phase_name} (0/{num_steps})", force=True)

        def step_complete(self, phase_name: str, step: int) -> bool:
            progress(f"{phase_name} ({step + 1}/{self.steps.get(phase_name, '?')})")
            return True  # False would cancel the build

        def phase_finish(self, phase_name: str) -> None:
            progress(f"{phase_name} done")

    return Monitor()


def build_plan(onnx_path: str | Path, plan_path: str | Path, precision: str, profile: Profile,
               timing_cache: str | Path | None = None, device: int = 0,
               workspace_bytes: int = WORKSPACE_BYTES, progress: Progress | None = None) -> dict[str, Any]:
    """Build and write a serialised plan of ``onnx_path``; return what a manifest records
    (TensorRT version, compute capability, device name).

    ``precision``: "fp32" (TF32 off, so the plan agrees with ONNX Runtime's fp32), "fp16"
    (FP16 kernels allowed), "int8" (the Q/DQ ONNX's explicit quantisation, FP16 allowed for
    what Q/DQ leaves in float). ``profile``: input name -> (min, opt, max) shape."""
    trt = import_tensorrt()
    check_version(trt.__version__)
    dev = probe(device)
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # explicit batch, TensorRT 10's only mode
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(Path(onnx_path).read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise PlanBuildError(f"TensorRT cannot parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_bytes)
    if progress is not None and hasattr(config, "progress_monitor"):
        config.progress_monitor = _monitor(trt, progress)
    if precision == "fp32":
        config.clear_flag(trt.BuilderFlag.TF32)
    elif precision == "fp16":
        config.set_flag(trt.BuilderFlag.FP16)
    elif precision == "int8":
        config.set_flag(trt.BuilderFlag.INT8)
        config.set_flag(trt.BuilderFlag.FP16)
    else:
        raise ValueError(f"precision {precision!r}: expected fp32, fp16 or int8")
    opt_profile = builder.create_optimization_profile()
    for name, (lo, opt, hi) in profile.items():
        opt_profile.set_shape(name, lo, opt, hi)
    config.add_optimization_profile(opt_profile)
    cache_path = Path(timing_cache) if timing_cache else None
    cache = config.create_timing_cache(
        cache_path.read_bytes() if cache_path and cache_path.is_file() else b"")
    config.set_timing_cache(cache, ignore_mismatch=False)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise PlanBuildError(f"TensorRT failed to build a {precision} plan of {onnx_path} "
                             "(its log above says why)")
    Path(plan_path).write_bytes(bytes(serialized))
    if cache_path:
        cache_path.write_bytes(bytes(config.get_timing_cache().serialize()))
    return {"tensorrt_version": trt.__version__, "compute_capability": dev["compute_capability"],
            "device_name": dev["device"]}


Builder = Callable[..., dict[str, Any]]


def ensure_plan(root: Path, key: PlanKey, onnx_path: Path, profile: Profile, device: int = 0,
                build: Builder = build_plan) -> Path:
    """The cached plan for ``key``, built from ``onnx_path`` first when there is none or the one
    there is stale (refused, removed and said; never loaded). The build goes to a temporary
    directory renamed into place when whole, so a cut mid-build leaves no entry."""
    entry = entry_dir(root, "tensorrt", key)
    if _claim(entry, key, PLAN_FILE):
        return entry / PLAN_FILE
    tmp = entry.with_name(f"{entry.name}.building-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    progress = Progress(f"the {key.precision} TensorRT plan of {onnx_path.name} (first start on this "
                        f"device; cached in {entry})")
    progress("started", force=True)
    try:
        build(onnx_path, tmp / PLAN_FILE, key.precision, profile, timing_cache=tmp / TIMING_CACHE,
              device=device, progress=progress)
        write_key(tmp, key, hashlib.sha256((tmp / PLAN_FILE).read_bytes()).hexdigest())
        tmp.rename(entry)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    progress("done", force=True)
    return entry / PLAN_FILE


# -- what this machine is ----------------------------------------------------------------------

def tensorrt_version() -> str | None:
    """TensorRT's version here: the Python module's, else libnvinfer's (what ONNX Runtime's
    TensorRT provider loads; JetPack installs it without the Python module in a venv)."""
    try:
        return str(import_tensorrt().__version__)
    except EngineError:
        pass
    for name in ("libnvinfer.so.10", "libnvinfer.so"):
        try:
            v = int(ctypes.CDLL(name).getInferLibVersion())
        except (OSError, AttributeError):
            continue
        return f"{v // 10000}.{v // 100 % 100}.{v % 100}"
    return None


def ort_cache_dir(root: Path, model_sha256: str, precision: str, ort_version: str,
                  device: int = 0) -> Path:
    """The directory for ONNX Runtime's TensorRT engine and timing caches of one model: keyed
    like a plan (with ONNX Runtime's version beside TensorRT's), emptied when stale, made and
    keyed when absent."""
    try:
        dev = cuda_device(device)
        name, cc = dev.name, dev.compute_capability
    except EngineError:  # no cuda-python: ONNX Runtime finds the GPU itself
        name, cc = "", "unknown"
    key = PlanKey(model_sha256, f"{tensorrt_version() or 'unknown'}+onnxruntime{ort_version}", cc,
                  precision, name)
    entry = entry_dir(root, "onnxruntime-trt", key)
    if not _claim(entry, key, None):
        entry.mkdir(parents=True)
        write_key(entry, key)
    return entry


class CachedPlanEngine(TensorRTEngine):
    """A TensorRT engine whose plan comes from the device's cache, built on first use from the
    bundle's ONNX file (``onnx_path``). A plan shipped in the bundle for the same file and
    precision (``shipped``) is used instead when its key matches this machine; when it does
    not, the refusal is a warning and the cache is used."""

    def __init__(self, onnx_path: str | Path, inputs: Sequence[TensorSpec],
                 outputs: Sequence[TensorSpec], *, precision: str, model_sha256: str, root: Path,
                 device: int = 0, shipped: tuple[Path, PlanKey] | None = None) -> None:
        self.onnx_path, self.root, self.shipped = Path(onnx_path), Path(root), shipped
        super().__init__(onnx_path, inputs, outputs, built_for=PlanKey(model_sha256, "", "", precision),
                         model_sha256=model_sha256, device=device)

    def _activate(self) -> None:
        trt = import_tensorrt()
        check_version(trt.__version__)
        dev = cuda_device(self.device)
        here = PlanKey(self.model_sha256, trt.__version__, dev.compute_capability,
                       self.precision, dev.name)
        if self.shipped is not None:
            problems = self.shipped[1].mismatches(here)
            if not problems:
                self.path, self.built_for = self.shipped[0], self.shipped[1]
                return super()._activate()
            self.warn(f"bundle plan {self.shipped[0].name} refused ({'; '.join(problems)}): "
                      "built on this device instead")
        self.path = ensure_plan(self.root, here, self.onnx_path, profile_for(self.inputs),
                                self.device)
        self.built_for = here
        super()._activate()
