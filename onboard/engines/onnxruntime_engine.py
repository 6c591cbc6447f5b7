"""ONNX Runtime engine: one ``InferenceSession`` over an ONNX file of the bundle.

Execution providers are tried in the order TensorRT -> CUDA -> CPU, keeping those this
onnxruntime build has. ONNX Runtime silently drops a provider that fails to initialise
(missing CUDA libraries, no GPU) and runs on the CPU: after creating the session we compare
``session.get_providers()`` with what was asked and report any fallback as a warning with the
reason. ``onnxruntime`` is imported when the engine is activated, not before.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from onboard import threads
from onboard.engines.base import Engine, EngineError, log
from onboard.formats.bundle import TensorSpec

#: Best first. The CPU provider is always last and always present.
PROVIDER_ORDER = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")
GPU_PROVIDERS = PROVIDER_ORDER[:2]
CPU_PROVIDER = PROVIDER_ORDER[2]

# ONNX tensor type strings as ONNX Runtime reports them -> manifest dtype names.
_ORT_TYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(int8)": "int8",
              "tensor(uint8)": "uint8", "tensor(int32)": "int32", "tensor(int64)": "int64",
              "tensor(bool)": "bool", "tensor(double)": "float64"}


def import_onnxruntime() -> Any:
    try:
        import onnxruntime
    except ImportError as exc:
        raise EngineError(f"onnxruntime not installed ({exc}): pip install onnxruntime "
                          "(or onnxruntime-gpu; on a Jetson the wheel from JetPack)") from exc
    return onnxruntime


def available_providers() -> list[str]:
    """Providers this onnxruntime build has, in :data:`PROVIDER_ORDER` (empty without it)."""
    try:
        ort = import_onnxruntime()
    except EngineError:
        return []
    have = set(ort.get_available_providers())
    return [p for p in PROVIDER_ORDER if p in have]


class OnnxRuntimeEngine(Engine):
    """Runs an ONNX file with ONNX Runtime.

    ``providers``: wanted execution providers, best first (default: every one of
    :data:`PROVIDER_ORDER` this build has). ``intra_op_threads``/``inter_op_threads``: thread
    pools of the session (0: the process's owned pools, :mod:`onboard.threads`). ``trt_cache_dir``: the
    device's plan cache, where the TensorRT provider keeps its engines and timing cache under a
    key that holds ``model_sha256`` (default: the file's), so only the first start builds them
    and a stale cache is never loaded (:func:`onboard.engines.plan_cache.ort_cache_dir`)."""

    kind = "onnxruntime"

    def __init__(self, path: str | Path, inputs: Sequence[TensorSpec],
                 outputs: Sequence[TensorSpec], precision: str = "fp32", *,
                 providers: Sequence[str] | None = None, intra_op_threads: int = 0,
                 inter_op_threads: int = 0, trt_cache_dir: str | Path | None = None,
                 model_sha256: str | None = None) -> None:
        super().__init__(path, inputs, outputs, precision)
        unknown = [p for p in providers or () if p not in PROVIDER_ORDER]
        if unknown:
            raise ValueError(f"unknown execution provider(s) {unknown}; use {PROVIDER_ORDER}")
        if intra_op_threads < 0 or inter_op_threads < 0:
            raise ValueError("thread counts must be >= 0 (0: [run] threads)")
        self.requested = tuple(providers) if providers else PROVIDER_ORDER
        self.intra_op_threads = intra_op_threads
        self.inter_op_threads = inter_op_threads
        self.trt_cache_dir = Path(trt_cache_dir) if trt_cache_dir else None
        self.model_sha256 = model_sha256
        self.providers: list[str] = []  # what the session really uses, once active
        self._session: Any = None

    @property
    def label(self) -> str:
        used = ",".join(self.providers) if self.providers else ",".join(self.requested)
        return f"onnxruntime[{used}] {self.precision}"

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "providers": list(self.providers),
                "requested_providers": list(self.requested),
                "intra_op_threads": self.intra_op_threads,
                "inter_op_threads": self.inter_op_threads}

    def _provider_list(self, have: set[str], ort_version: str) -> list[Any]:
        out: list[Any] = []
        for p in self.requested:
            if p not in have:
                continue
            if p == "TensorrtExecutionProvider" and self.trt_cache_dir is not None:
                out.append((p, self.tensorrt_options(ort_version)))
            else:
                out.append(p)
        return out

    def tensorrt_options(self, ort_version: str) -> dict[str, Any]:
        """The TensorRT provider's options: engine and timing caches in this model's keyed
        directory of the plan cache, the builder's workspace bounded, the precision's flags."""
        from onboard.engines import plan_cache

        assert self.trt_cache_dir is not None
        sha = self.model_sha256 or hashlib.sha256(self.path.read_bytes()).hexdigest()
        entry = plan_cache.ort_cache_dir(self.trt_cache_dir, sha, self.precision, ort_version)
        if not any(entry.glob("*.engine")):
            log.info("ONNX Runtime's TensorRT provider builds its engine for %s on the first "
                     "inference (minutes on a Jetson, with no progress shown); cached in %s",
                     self.path.name, entry)
        return {"trt_engine_cache_enable": True, "trt_engine_cache_path": str(entry),
                "trt_timing_cache_enable": True, "trt_timing_cache_path": str(entry),
                "trt_max_workspace_size": plan_cache.WORKSPACE_BYTES,
                "trt_fp16_enable": self.precision in ("fp16", "int8"),
                "trt_int8_enable": self.precision == "int8"}

    def _activate(self) -> None:
        ort = import_onnxruntime()
        if not self.path.is_file():
            raise EngineError(f"{self.path} does not exist")
        have = set(ort.get_available_providers())
        missing = [p for p in self.requested if p not in have]
        providers = self._provider_list(have, ort.__version__)
        if not providers:
            raise EngineError(f"none of {list(self.requested)} is in this onnxruntime build "
                              f"(it has {sorted(have)}); install onnxruntime-gpu for the GPU "
                              "providers")
        options = threads.session_options(ort, self.intra_op_threads, self.inter_op_threads)
        try:
            session = ort.InferenceSession(str(self.path), sess_options=options,
                                           providers=providers)
        except Exception as exc:  # onnxruntime raises its own types (InvalidProtobuf, Fail...)
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise EngineError(f"ONNX Runtime cannot load {self.path.name}: {first}; the file "
                              "is corrupt or not an ONNX model: rebuild the bundle") from exc
        self.check_io({i.name: _ORT_TYPES.get(i.type, i.type) for i in session.get_inputs()},
                      {o.name: _ORT_TYPES.get(o.type, o.type) for o in session.get_outputs()})
        self.providers = list(session.get_providers())
        for p in missing:
            self.warn(f"{p} was asked for but is not in this onnxruntime build (installed: "
                      f"{sorted(have)}); install onnxruntime-gpu (JetPack's wheel on a Jetson)")
        dropped = [p for p in self.requested if p in have and p not in self.providers]
        for p in dropped:
            self.warn(f"{p} failed to initialise and ONNX Runtime fell back to "
                      f"{self.providers}: usually missing CUDA/cuDNN/TensorRT libraries or no "
                      "GPU visible (ONNX Runtime's log says which)")
        self._session = session

    def _deactivate(self) -> None:
        self._session = None
        self.providers = []

    def _infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        try:
            values = self._session.run([t.name for t in self.outputs], feed)
        except Exception as exc:  # onnxruntime's own error types
            raise EngineError(f"{self.label} failed on {self.path.name}: {exc}") from exc
        return dict(zip((t.name for t in self.outputs), values, strict=True))

    @property
    def on_gpu(self) -> bool:
        return any(p in GPU_PROVIDERS for p in self.providers)
