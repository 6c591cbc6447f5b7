"""Inference engines behind one interface: TensorRT plans, ONNX Runtime, and ``auto``
selection that says which one loaded and why the others did not (docs/design.md, "Inference
engines"). Importing this package imports neither onnxruntime nor tensorrt."""

from onboard.engines.base import Engine, EngineError
from onboard.engines.select import Selection, Skip, probe_engines, select_engine

__all__ = ["Engine", "EngineError", "Selection", "Skip", "probe_engines", "select_engine"]
