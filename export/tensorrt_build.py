"""TensorRT plans for a bundle built on a workstation with a GPU (``export build``).

The builder itself lives on the flight side (:mod:`onboard.engines.plan_cache`), because a plan
only runs under the TensorRT version and on the GPU it was built with: the Jetson builds its own
on its first start, with the same code, and caches them. A plan built here goes into the bundle
with its key, and the device uses it only where that key is its own. TensorRT >= 10 is required
(JetPack 6.1 / 6.2 on a Jetson Orin: TensorRT 10.3): the bundle's ONNX files are opset 18.
"""

from __future__ import annotations

from onboard.engines.plan_cache import (
    MIN_TENSORRT_MAJOR,
    WORKSPACE_BYTES,
    PlanBuildError,
    build_plan,
    check_version,
    profile_for,
    unavailable_reason,
)

__all__ = ["MIN_TENSORRT_MAJOR", "WORKSPACE_BYTES", "PlanBuildError", "build_plan", "check_version",
           "profile_for", "unavailable_reason"]
