"""PyTorch -> ONNX, with dynamic spatial sizes and the ONNX checker.

Both models are fully convolutional, so H and W (and the eigen-image count k of the
denoiser) are dynamic axes: one file serves every frame size. The TorchScript-based
exporter is used (``dynamo=False``): for plain convolutional graphs it gives the smallest
graph of standard operators, which ONNX Runtime's quantiser and TensorRT's parser both take.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import onnx
import torch

#: ONNX opset: 17 is read by ONNX Runtime >= 1.13 and TensorRT >= 8.6 (JetPack 6 has 8.6/10).
OPSET = 17


def export_onnx(model: torch.nn.Module, example: torch.Tensor, path: str | Path,
                input_name: str, output_names: Sequence[str],
                dynamic: dict[int, str]) -> Path:
    """Write ``model`` (one input) to ``path`` and check it with ``onnx.checker``.

    ``dynamic``: axis -> dimension name of the input, given to every output as well (the
    models keep batch and spatial size)."""
    path = Path(path)
    model.eval()
    axes = {input_name: dynamic, **{name: dynamic for name in output_names}}
    with torch.no_grad():
        torch.onnx.export(model, (example,), str(path), input_names=[input_name],
                          output_names=list(output_names), dynamic_axes=axes,
                          opset_version=OPSET, do_constant_folding=True, dynamo=False)
    check(path)
    return path


def check(path: str | Path) -> onnx.ModelProto:
    """Load ``path`` and run the full ONNX checker (with shape inference); raises on error."""
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    return model
