"""TensorRT plans from the bundle's ONNX files, through the TensorRT Python API.

A plan is built per device (it is only valid for the TensorRT version and GPU generation it
was built with): the ONNX parser reads the file, the builder config sets the precision
(``fp16``: FP16 kernels allowed; ``int8``: the Q/DQ ONNX's explicit quantisation, FP16
allowed for the layers Q/DQ leaves in float; ``fp32``: TF32 off, so the plan agrees with
ONNX Runtime's fp32 to float32 rounding), an optimisation profile covers the dynamic
dimensions (min / opt / max shapes per input), and a timing cache file makes rebuilds fast.
Where TensorRT or a GPU is absent, :func:`unavailable_reason` says why and nothing is built;
``export build`` records that reason in its summary. ``tensorrt`` is imported lazily.

TensorRT >= 10 (JetPack 6.1 / 6.2 on a Jetson Orin: TensorRT 10.3) is required: the bundle's
ONNX files are opset 18 (:mod:`export.onnx_export`), which TensorRT 8.6 (JetPack 6.0) does not
parse; an older TensorRT is refused by name before anything is parsed.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from export.onnx_export import OPSET
from onboard.engines.base import EngineError
from onboard.engines.tensorrt_engine import import_tensorrt, probe
from onboard.errors import OnboardError

Shape = tuple[int, ...]
#: Oldest TensorRT major version that parses the bundle's ONNX opset (18).
MIN_TENSORRT_MAJOR = 10
#: Builder workspace limit (bytes): small models, and a Jetson Orin Nano has 8 GB shared.
WORKSPACE_BYTES = 1 << 28


class PlanBuildError(OnboardError, RuntimeError):
    """TensorRT could not parse or build the model; the message carries its errors."""


def unavailable_reason(device: int = 0) -> str | None:
    """None when TensorRT and a CUDA GPU are usable here, else why not."""
    try:
        probe(device)
    except EngineError as exc:
        return str(exc)
    return None


def check_version(version: str) -> None:
    """Raise PlanBuildError when TensorRT ``version`` is older than ``MIN_TENSORRT_MAJOR``."""
    major = version.split(".", 1)[0]
    if not major.isdigit() or int(major) < MIN_TENSORRT_MAJOR:
        raise PlanBuildError(
            f"TensorRT {version} cannot parse the bundle's ONNX opset {OPSET}: TensorRT >= "
            f"{MIN_TENSORRT_MAJOR} is needed (JetPack >= 6.1 on a Jetson)")


def build_plan(onnx_path: str | Path, plan_path: str | Path, precision: str,
               profile: Mapping[str, tuple[Shape, Shape, Shape]],
               timing_cache: str | Path | None = None, device: int = 0) -> dict[str, Any]:
    """Build and write a serialised plan of ``onnx_path``; return what the manifest records
    (TensorRT version, compute capability, device name).

    ``profile``: input name -> (min, opt, max) shape for every input with dynamic dims."""
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
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, WORKSPACE_BYTES)
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
