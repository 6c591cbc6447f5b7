"""The ImSPOC reconstruction operator of a calibration file as an ONNX graph.

The reconstruction stage (:mod:`onboard.stages.reconstruct`) is, once its regularisation
weight is fixed, one matrix product per block of pixels: ``cube[:, block] = W_ij @
thumbnails[:, block]`` with ``W_ij`` (B, N) built from the calibration at the block's centre
(the OPD wedge). Written as a graph, calibration -> reconstruction runs on the accelerator
too (TensorRT or ONNX Runtime's GPU providers), batched over blocks:

    thumbnails (N, h, w) -Pad-> (N, nby*s, nbx*s) -Reshape/Transpose-> (nby, nbx, N, s*s)
      -MatMul W (nby, nbx, B, N)-> (nby, nbx, B, s*s) -Reshape/Transpose-> (B, nby*s, nbx*s)
      -Slice-> cube (B, h, w)

The operators are the reconstruction stage's own (``Reconstructor``), so the graph and the
numpy stage agree to float32 rounding (:func:`parity`). The weight ``lam`` and the exposure
are fixed when the graph is built (GCV chooses ``lam`` per frame in the numpy stage; on a
steady scene it moves little, and the manifest records the value): a frame's thumbnails are
radiometrically corrected DN as ``layout.extract`` gives them.
"""

from __future__ import annotations

from itertools import pairwise
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from export.onnx_export import IR_VERSION, OPSET
from onboard.formats.calfile import Calibration
from onboard.formats.types import RawFrame
from onboard.stages.reconstruct import Reconstructor

INPUT = "thumbnails"
OUTPUT = "cube"


def operators(rec: Reconstructor, lam: float, exposure_s: float) -> np.ndarray:
    """The stage's per-block operators stacked (nby, nbx, B, N) float32."""
    ops = rec._operators(lam, exposure_s)
    return np.stack([np.stack(row) for row in ops]).astype(np.float32)


def build_graph(calibration: Calibration, lam: float, exposure_s: float,
                path: str | Path) -> Path:
    """Write the reconstruction graph of ``calibration`` at weight ``lam`` and exposure
    ``exposure_s`` to ``path`` and check it; input ``thumbnails`` (N, h, w) float32 corrected
    DN, output ``cube`` (B, h, w) float32 reflectance on ``calibration.wavelengths_nm``."""
    rec = Reconstructor(calibration)
    assert calibration.layout is not None
    h, w = calibration.layout.thumb_shape
    n = len(calibration.layout)
    s = rec.block
    nby, nbx = len(rec.row_edges) - 1, len(rec.col_edges) - 1
    if any(b - a != s for a, b in pairwise(rec.row_edges[:-1])) or any(
            b - a != s for a, b in pairwise(rec.col_edges[:-1])):
        raise ValueError("the reconstruction blocks are not uniform; cannot batch them")
    w_ops = operators(rec, lam, exposure_s)
    bands = w_ops.shape[2]
    hp, wp = nby * s, nbx * s

    def const(name: str, values: list[int]) -> onnx.TensorProto:
        return numpy_helper.from_array(np.asarray(values, dtype=np.int64), name)

    inits = [numpy_helper.from_array(w_ops, "W"),
             const("pads", [0, 0, 0, 0, hp - h, wp - w]),
             const("blocks", [n, nby, s, nbx, s]),
             const("flat", [nby, nbx, n, s * s]),
             const("unflat", [nby, nbx, bands, s, s]),
             const("full", [bands, hp, wp]),
             const("starts", [0, 0]), const("ends", [h, w]), const("axes", [1, 2])]
    nodes = [
        helper.make_node("Pad", [INPUT, "pads"], ["padded"], mode="edge"),
        helper.make_node("Reshape", ["padded", "blocks"], ["b5"]),
        helper.make_node("Transpose", ["b5"], ["bt"], perm=[1, 3, 0, 2, 4]),
        helper.make_node("Reshape", ["bt", "flat"], ["y"]),
        helper.make_node("MatMul", ["W", "y"], ["x"]),
        helper.make_node("Reshape", ["x", "unflat"], ["x5"]),
        helper.make_node("Transpose", ["x5"], ["xt"], perm=[2, 0, 3, 1, 4]),
        helper.make_node("Reshape", ["xt", "full"], ["xfull"]),
        helper.make_node("Slice", ["xfull", "starts", "ends", "axes"], [OUTPUT]),
    ]
    graph = helper.make_graph(
        nodes, "imspoc_reconstruction",
        [helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, [n, h, w])],
        [helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, [bands, h, w])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="onboard-export")
    model.ir_version = IR_VERSION  # the same opset and IR version as the exported models
    onnx.checker.check_model(model, full_check=True)
    path = Path(path)
    onnx.save(model, str(path))
    return path


def parity(calibration: Calibration, path: str | Path, frame: RawFrame, lam: float
           ) -> dict[str, float]:
    """Largest absolute and relative difference between the graph under ONNX Runtime (CPU)
    and the reconstruction stage (``Reconstructor.reconstruct`` at the same ``lam``) on a
    radiometrically corrected ``frame``."""
    import onnxruntime as ort

    assert calibration.layout is not None
    ref = Reconstructor(calibration).reconstruct(frame, lam=lam)[0].data
    thumbs = calibration.layout.extract(frame.pixels).astype(np.float32)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run([OUTPUT], {INPUT: thumbs})[0]
    err = float(np.abs(got - ref).max())
    return {"max_abs_error": err, "max_rel_error": err / max(float(np.abs(ref).max()), 1e-30)}
