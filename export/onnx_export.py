"""PyTorch -> ONNX with the current exporter (``torch.export``), dynamic spatial sizes and
the ONNX checker; the same weights always give the same bytes.

Both models are fully convolutional, so H and W (and the eigen-image count k of the
denoiser) are dynamic dimensions: one file serves every frame size. The exporter traces the
model with ``torch.export`` (``dynamo=True``; the TorchScript exporter is deprecated) and
its optimiser folds constants, so the graph holds standard operators only (Conv, Relu, Pad,
Softmax and a few element-wise ones), which ONNX Runtime's quantiser and TensorRT's parser
both take.

Target: ONNX opset 18, IR version 8. Opset 18 is what the exporter writes natively (its
ResidueNet graph cannot be converted down to 17: ONNX's version converter has no Pad adapter
from 18 to 17), and it is read by ONNX Runtime >= 1.14 and TensorRT >= 10, i.e. JetPack 6.1 /
6.2 on a Jetson Orin (TensorRT 10.3). JetPack 6.0 (TensorRT 8.6, opset <= 17) is no longer a
target. IR version 8 is the oldest that holds opset 18, so older ONNX Runtime wheels (the
Jetson builds lag PyPI) still load the files.

Bit-for-bit rebuilds: the exporter annotates every node and value with where it came from
(source file paths with the checkout's location, stack traces, FX node text). That metadata
is dropped, so the file depends only on the weights, the model's code and the tool versions.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import onnx
import torch
from torch.export import Dim

#: ONNX opset of every exported model (and of the reconstruction graph).
OPSET = 18
#: ONNX IR version written: 8 (ONNX 1.13) is the first that holds opset 18.
IR_VERSION = 8
#: The exporter's graph libraries, which log each optimisation pass at INFO (two dozen lines
#: per model under ``onboard --log-level info``); their warnings still show.
_PASS_LOGGERS = ("onnx_ir", "onnxscript")


@contextmanager
def _passes_quiet() -> Iterator[None]:
    loggers = [logging.getLogger(name) for name in _PASS_LOGGERS]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(max(lg.getEffectiveLevel(), logging.WARNING))
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def export_onnx(model: torch.nn.Module, example: torch.Tensor, path: str | Path,
                input_name: str, output_names: Sequence[str],
                dynamic: dict[int, str]) -> Path:
    """Write ``model`` (one input) to ``path`` and check it with ``onnx.checker``.

    ``dynamic``: axis -> dimension name of the input; the outputs carry the same names (the
    models keep batch and spatial size); they stay dynamic whatever ``example``'s sizes
    along them, 1 included (one eigen-image)."""
    path = Path(path)
    model.eval()
    shapes = ({axis: Dim(name) for axis, name in dynamic.items()},)
    with torch.no_grad(), warnings.catch_warnings(), _passes_quiet():
        # torch.export deep-copies its own pytree specs and so calls the LeafSpec test it
        # deprecated (torch 2.13); nothing a caller can change, so not shown
        warnings.filterwarnings("ignore", category=FutureWarning,
                                message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")
        program = torch.onnx.export(model, (example,), input_names=[input_name],
                                    output_names=list(output_names), dynamic_shapes=shapes,
                                    opset_version=OPSET, dynamo=True, optimize=True,
                                    verbose=False)
    assert program is not None  # no file given: the program is returned
    proto = program.model_proto
    strip_metadata(proto)
    proto.ir_version = IR_VERSION
    onnx.checker.check_model(proto, full_check=True)
    onnx.save(proto, str(path))
    check(path)
    return path


def strip_metadata(model: onnx.ModelProto) -> None:
    """Drop the exporter's per-node and per-value annotations (file paths, stack traces) and
    doc strings, in place: they vary with the checkout's location, and no runtime reads them."""
    model.ClearField("metadata_props")
    model.doc_string = ""
    graph = model.graph
    graph.ClearField("metadata_props")
    graph.doc_string = ""
    for item in (*graph.node, *graph.input, *graph.output, *graph.value_info,
                 *graph.initializer):
        item.ClearField("metadata_props")
        item.doc_string = ""
    if model.functions:
        raise ValueError("the exported graph holds ONNX functions; expected plain operators")


def check(path: str | Path) -> onnx.ModelProto:
    """Load ``path`` and run the full ONNX checker (with shape inference); raises on error."""
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    return model
