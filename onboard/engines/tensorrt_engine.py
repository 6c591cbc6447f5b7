"""TensorRT engine: a serialized plan run on a CUDA stream.

A plan only loads under the TensorRT version and on the GPU generation it was built for, and
it is only right for the model it was built from, so a plan is a per-device cache keyed by
:class:`PlanKey` (model checksum, TensorRT version, compute capability, precision). Before
deserialising anything, :meth:`TensorRTEngine.activate` compares the plan's key with this
machine and refuses a mismatch with a message saying what differs; the selector then goes
on with ONNX Runtime.

Device memory and the stream come from cuda-python's ``cuda.bindings`` (``cudart``), which has
aarch64 wheels (pycuda has none). Inputs are copied host -> device, tensor addresses are set
with ``set_tensor_address``, the plan runs with ``execute_async_v3`` and outputs are copied
back, all on one stream. ``tensorrt`` and ``cuda`` are imported only when an engine is
activated or the machine is probed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from onboard.engines.base import Engine, EngineError
from onboard.formats.bundle import Artifact, TensorSpec

_JETSON_HINT = "pip install 'onboard[jetson]'"


def import_tensorrt() -> Any:
    try:
        import tensorrt
    except ImportError as exc:
        raise EngineError("tensorrt not installed (it comes with JetPack on a Jetson, or "
                          "'pip install tensorrt' on a workstation with an NVIDIA GPU)") from exc
    return tensorrt


def import_cudart() -> Any:
    """cuda-python's runtime API: ``cuda.bindings.runtime`` (>= 12.6) or ``cuda.cudart``."""
    try:
        from cuda.bindings import runtime
    except ImportError:
        try:
            from cuda import cudart as runtime
        except ImportError as exc:
            raise EngineError(f"cuda-python not installed: {_JETSON_HINT}") from exc
    return runtime


def _call(cudart: Any, what: str, result: Any) -> Any:
    """Unwrap a cuda-python result tuple ``(err, *values)``, raising EngineError on error."""
    err, *values = result if isinstance(result, tuple) else (result,)
    if err != cudart.cudaError_t.cudaSuccess:
        _, name = cudart.cudaGetErrorName(err)
        raise EngineError(f"CUDA {what} failed: {name.decode() if isinstance(name, bytes) else name}")
    return values[0] if len(values) == 1 else values


@dataclass(frozen=True)
class Device:
    index: int
    name: str
    compute_capability: str  # "major.minor", e.g. "8.7" for Jetson Orin


def cuda_device(index: int = 0) -> Device:
    """The CUDA device ``index``; EngineError when cuda-python or a GPU is absent."""
    cudart = import_cudart()
    count = _call(cudart, "cudaGetDeviceCount", cudart.cudaGetDeviceCount())
    if count <= index:
        raise EngineError(f"no CUDA device {index} (this machine has {count})")
    props = _call(cudart, "cudaGetDeviceProperties", cudart.cudaGetDeviceProperties(index))
    name = props.name.decode(errors="replace").rstrip("\x00") if isinstance(
        props.name, bytes) else str(props.name)
    return Device(index, name, f"{props.major}.{props.minor}")


@dataclass(frozen=True)
class PlanKey:
    """What a plan is valid for. Two keys must be equal for a plan to be used.

    ``device_name`` (the GPU's name, e.g. "Orin"): TensorRT plans are only guaranteed on the
    GPU model they were built on; a bundle plan that does not record it is checked by compute
    capability alone."""

    model_sha256: str        # sha256 of the ONNX file the plan was built from
    tensorrt_version: str    # tensorrt.__version__ at build time, e.g. "10.3.0"
    compute_capability: str  # "8.7"
    precision: str           # "fp32" | "fp16" | "int8"
    device_name: str = ""    # "Orin"; "" where not recorded

    @classmethod
    def of_artifact(cls, plan: Artifact) -> PlanKey:
        """The key a bundle's plan records in the manifest."""
        return cls(str(plan.source_sha256), str(plan.tensorrt_version),
                   str(plan.compute_capability), plan.precision, plan.device_name or "")

    def mismatches(self, here: PlanKey) -> list[str]:
        """Human descriptions of how ``here`` (this machine) differs from this key."""
        out = []
        if self.model_sha256 != here.model_sha256:
            out.append(f"it was built from model {self.model_sha256[:12]}…, the bundle's model "
                       f"is {here.model_sha256[:12]}…")
        if self.tensorrt_version != here.tensorrt_version:
            out.append(f"it was built with TensorRT {self.tensorrt_version}, this machine has "
                       f"{here.tensorrt_version}")
        if self.compute_capability != here.compute_capability:
            out.append(f"it was built for compute capability {self.compute_capability}, this "
                       f"GPU is {here.compute_capability}")
        if self.device_name and here.device_name and self.device_name != here.device_name:
            out.append(f"it was built on a {self.device_name}, this GPU is a {here.device_name}")
        if self.precision != here.precision:
            out.append(f"it is {self.precision}, {here.precision} was asked for")
        return out

    @property
    def cache_name(self) -> str:
        """File name for a plan cache entry: one plan per key."""
        return (f"{self.model_sha256[:16]}.trt{self.tensorrt_version}"
                f".sm{self.compute_capability.replace('.', '')}.{self.precision}.plan")


def probe(device: int = 0) -> dict[str, str]:
    """TensorRT version and GPU of this machine; EngineError with the reason otherwise."""
    trt = import_tensorrt()
    dev = cuda_device(device)
    return {"tensorrt": trt.__version__, "device": dev.name,
            "compute_capability": dev.compute_capability}


class TensorRTEngine(Engine):
    """Runs a serialized TensorRT plan.

    ``built_for``: the plan's key from the manifest; ``model_sha256``: the checksum of the
    ONNX model the bundle holds now. Activation refuses the plan unless the key matches this
    machine's TensorRT, GPU and that model."""

    kind = "tensorrt"
    concurrent = False  # one execution context, stream and set of buffers

    def __init__(self, path: str | Path, inputs: Sequence[TensorSpec],
                 outputs: Sequence[TensorSpec], *, built_for: PlanKey, model_sha256: str,
                 device: int = 0) -> None:
        super().__init__(path, inputs, outputs, built_for.precision)
        self.built_for = built_for
        self.model_sha256 = model_sha256
        self.device = device
        self.device_name = ""
        self._trt: Any = None
        self._cudart: Any = None
        self._runtime: Any = None
        self._engine: Any = None
        self._context: Any = None
        self._stream: Any = None
        self._buffers: dict[str, tuple[int, int]] = {}  # name -> (device pointer, bytes)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "device": self.device_name,
                "tensorrt_version": self.built_for.tensorrt_version,
                "compute_capability": self.built_for.compute_capability}

    def _activate(self) -> None:
        trt = import_tensorrt()
        cudart = import_cudart()
        dev = cuda_device(self.device)
        here = PlanKey(self.model_sha256, trt.__version__, dev.compute_capability,
                       self.built_for.precision, dev.name)
        problems = self.built_for.mismatches(here)
        if problems:
            raise EngineError(f"plan {self.path.name} refused: {'; '.join(problems)}")
        if not self.path.is_file():
            raise EngineError(f"{self.path} does not exist")
        self._trt, self._cudart = trt, cudart
        _call(cudart, "cudaSetDevice", cudart.cudaSetDevice(self.device))
        self.device_name = dev.name
        self._runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self._engine = self._runtime.deserialize_cuda_engine(self.path.read_bytes())
        if self._engine is None:
            self._release()
            raise EngineError(f"TensorRT could not deserialise {self.path.name} (corrupt plan, "
                              "or built by another TensorRT); rebuild it")
        found: dict[str, dict[str, str]] = {"inputs": {}, "outputs": {}}
        for i in range(self._engine.num_io_tensors):
            name = self._engine.get_tensor_name(i)
            role = ("inputs" if self._engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
                    else "outputs")
            found[role][name] = np.dtype(trt.nptype(self._engine.get_tensor_dtype(name))).name
        try:
            self.check_io(found["inputs"], found["outputs"])
        except EngineError:
            self._release()
            raise
        self._context = self._engine.create_execution_context()
        self._stream = _call(cudart, "cudaStreamCreate", cudart.cudaStreamCreate())

    def _device_buffer(self, name: str, nbytes: int) -> int:
        """A device buffer of at least ``nbytes`` for tensor ``name``, grown when needed."""
        ptr, size = self._buffers.get(name, (0, 0))
        if size < nbytes:
            if ptr:
                _call(self._cudart, "cudaFree", self._cudart.cudaFree(ptr))
            ptr = _call(self._cudart, "cudaMalloc", self._cudart.cudaMalloc(max(nbytes, 1)))
            self._buffers[name] = (ptr, max(nbytes, 1))
        return int(ptr)

    def _infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        cudart, ctx, stream = self._cudart, self._context, self._stream
        h2d = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        d2h = cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        for spec in self.inputs:
            host = feed[spec.name]
            if not ctx.set_input_shape(spec.name, host.shape):
                raise EngineError(f"shape {host.shape} of '{spec.name}' is outside the plan's "
                                  "optimisation profile; rebuild the plan with a wider profile")
            ptr = self._device_buffer(spec.name, host.nbytes)
            _call(cudart, "cudaMemcpyAsync", cudart.cudaMemcpyAsync(
                ptr, host.ctypes.data, host.nbytes, h2d, stream))
            ctx.set_tensor_address(spec.name, ptr)
        outputs = {}
        for spec in self.outputs:
            shape = tuple(ctx.get_tensor_shape(spec.name))
            host = np.empty(shape, dtype=spec.np_dtype)
            outputs[spec.name] = host
            ctx.set_tensor_address(spec.name, self._device_buffer(spec.name, host.nbytes))
        if not ctx.execute_async_v3(stream):
            raise EngineError(f"TensorRT failed to enqueue {self.path.name}")
        for spec in self.outputs:
            host = outputs[spec.name]
            _call(cudart, "cudaMemcpyAsync", cudart.cudaMemcpyAsync(
                host.ctypes.data, self._buffers[spec.name][0], host.nbytes, d2h, stream))
        _call(cudart, "cudaStreamSynchronize", cudart.cudaStreamSynchronize(stream))
        return outputs

    def _release(self) -> None:
        cudart = self._cudart
        for ptr, _ in self._buffers.values():
            cudart.cudaFree(ptr)
        self._buffers.clear()
        if self._stream is not None:
            cudart.cudaStreamDestroy(self._stream)
        self._stream = self._context = self._engine = self._runtime = None

    def _deactivate(self) -> None:
        self._release()
