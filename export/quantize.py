"""INT8 (static, Q/DQ) and FP16 variants of an fp32 ONNX model.

INT8: ONNX Runtime's static quantisation in QDQ form, per-channel symmetric weights and
symmetric activations (``ActivationSymmetric``/``WeightSymmetric``: every zero point is 0,
which TensorRT requires of an explicitly quantised network; TensorRT 10 dropped implicit
INT8 calibrators, so the Q/DQ ONNX is the portable INT8 artifact). Activation ranges come
from a :class:`FeedReader` over simulated frames (the calibration data), min-max by
default: the denoiser's corrections are largest exactly where they matter (parcel borders),
and clipping them (entropy or percentile calibration) cost more PSNR than the coarser step
in our measurements. The first and last convolutions stay in float (:func:`edge_convs`),
as is usual for INT8 networks (TensorRT runs them in FP16). The graph is pre-processed (shape inference, optimisation) first, as
ONNX Runtime recommends.

FP16: weights and activations in float16 with float32 inputs and outputs kept
(``keep_io_types``), so the manifest's interface does not change with precision.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import onnx
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_static,
)
from onnxruntime.quantization.shape_inference import quant_pre_process

#: Operators given Q/DQ: the convolutions, where the compute is. Left to its defaults the
#: quantiser also quantises element-wise arithmetic and the softmax outputs: the residue
#: classifier's input normalisation (spectrum / its mean, about 1 +- 0.3) lost the few-percent
#: shape differences that tell residue from soil in an 8-bit step, and the fractions came
#: out on a 1/127 grid; the push-broom classifier lost 3.1 points of tillage accuracy and
#: gained 0.012 of MAE that way (48 held-out tiles).
QUANTIZED_OPS = ("Conv",)


class FeedReader(CalibrationDataReader):
    """ONNX Runtime calibration reader over model inputs ``{name: array}`` (one per frame)."""

    def __init__(self, feeds: Iterable[dict[str, np.ndarray]]) -> None:
        self._feeds = list(feeds)
        if not self._feeds:
            raise ValueError("calibration needs at least one input")
        self._it: Iterator[dict[str, np.ndarray]] = iter(self._feeds)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._it, None)

    def rewind(self) -> None:
        self._it = iter(self._feeds)

    def __len__(self) -> int:
        return len(self._feeds)


def edge_convs(model: onnx.ModelProto) -> list[str]:
    """Names of the first and last convolutions: those with no convolution upstream (they
    read the model's input, whose range the quantiser would share across channels of very
    different spread) and none downstream (they write the outputs, whose precision the
    accuracy is measured in). Left in float, as usual for INT8 networks."""
    producer = {o: n for n in model.graph.node for o in n.output}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for n in model.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)

    def reaches_conv(node: onnx.NodeProto, up: bool) -> bool:
        seen, stack = set(), [node]
        while stack:
            cur = stack.pop()
            nxt = ([producer[i] for i in cur.input if i in producer] if up else
                   [c for o in cur.output for c in consumers.get(o, [])])
            for m in nxt:
                if id(m) in seen:
                    continue
                if m.op_type == "Conv":
                    return True
                seen.add(id(m))
                stack.append(m)
        return False

    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    return [n.name for n in convs if not reaches_conv(n, True) or not reaches_conv(n, False)]


def quantize_int8(fp32: str | Path, out: str | Path, feeds: Iterable[dict[str, np.ndarray]],
                  method: CalibrationMethod = CalibrationMethod.MinMax) -> Path:
    """Static INT8 Q/DQ model of ``fp32`` at ``out``, activations calibrated on ``feeds``;
    the first and last convolutions stay in float (:func:`edge_convs`)."""
    out = Path(out)
    pre = out.with_suffix(".pre.onnx")
    quant_pre_process(str(fp32), str(pre), skip_symbolic_shape=False)
    try:
        quantize_static(
            str(pre), str(out), FeedReader(feeds), quant_format=QuantFormat.QDQ,
            per_channel=True, activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
            calibrate_method=method, nodes_to_exclude=edge_convs(onnx.load(str(pre))),
            op_types_to_quantize=list(QUANTIZED_OPS),
            extra_options={"ActivationSymmetric": True, "WeightSymmetric": True,
                           "CalibTensorRangeSymmetric": True},
        )
    finally:
        pre.unlink(missing_ok=True)
    onnx.checker.check_model(onnx.load(str(out)), full_check=True)
    return out


def convert_fp16(fp32: str | Path, out: str | Path) -> Path:
    """FP16 copy of ``fp32`` at ``out`` with float32 inputs and outputs."""
    from onnxruntime.transformers.float16 import convert_float_to_float16
    from onnxruntime.transformers.onnx_model import OnnxModel

    model = convert_float_to_float16(onnx.load(str(fp32)), keep_io_types=True)
    OnnxModel(model).topological_sort()  # the converter appends its input casts last
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(out))
    return Path(out)


def qdq_summary(path: str | Path) -> dict[str, int | bool]:
    """Counts of QuantizeLinear / DequantizeLinear nodes and whether every zero point is 0
    (what TensorRT needs), read from the file."""
    model = onnx.load(str(path))
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
    q = [n for n in model.graph.node if n.op_type == "QuantizeLinear"]
    dq = [n for n in model.graph.node if n.op_type == "DequantizeLinear"]
    zeros = []
    for n in q + dq:
        if len(n.input) > 2 and n.input[2]:
            zp = inits.get(n.input[2])
            zeros.append(zp is not None and not np.any(zp))
    return {"quantize_linear": len(q), "dequantize_linear": len(dq),
            "zero_points_all_zero": bool(zeros) and all(zeros)}
