"""The model bundle manifest: writing, reading, refusing, verifying checksums.

The ONNX models here are built on the fly with onnx.helper (the learned models come later
from export/); the helpers are reused by the engine and info tests."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from onboard.formats import bundle as mb
from onboard.formats.bundle import (
    Artifact,
    BundleError,
    Manifest,
    ModelSpec,
    Normalisation,
    TensorSpec,
)

# these tests build their ONNX models with onnx.helper, from the export extra; on a flight-only
# install they (and the engine and info tests that reuse the helpers) are skipped, saying so
onnx = pytest.importorskip("onnx", reason="builds test models with onnx (pip install 'onboard[export]')")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

BANDS, OUT = 6, 3
QSCALE_X = 0.02  # input quantisation step of the int8 conv: inputs in [-2.5, 2.5] fit int8


def conv_weights(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(OUT, BANDS)).astype(np.float32),
            rng.normal(size=OUT).astype(np.float32))


def conv_reference(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    """What a 1x1 convolution of (1, BANDS, H, W) computes: per pixel, w @ spectrum + b."""
    return (np.einsum("ob,nbhw->nohw", w, x) + b[None, :, None, None]).astype(np.float32)


def quantised(values: np.ndarray, scale: np.ndarray | float) -> np.ndarray:
    """Symmetric int8 quantise-dequantise (zero point 0, round half to even, as ONNX)."""
    return (np.clip(np.round(values / scale), -128, 127) * scale).astype(np.float32)


def weight_scales(w: np.ndarray) -> np.ndarray:
    """Per-output-channel symmetric weight scales."""
    return (np.abs(w).max(axis=1) / 127).astype(np.float32)


def _io(bands: int = BANDS) -> tuple[list, list]:
    x = helper.make_tensor_value_info("cube", TensorProto.FLOAT, [1, bands, "H", "W"])
    y = helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, OUT, "H", "W"])
    return [x], [y]


def conv_onnx(w: np.ndarray, b: np.ndarray) -> onnx.ModelProto:
    """fp32 1x1 conv over (1, BANDS, H, W), H and W dynamic."""
    inits = [numpy_helper.from_array(w[:, :, None, None], "w"), numpy_helper.from_array(b, "b")]
    node = helper.make_node("Conv", ["cube", "w", "b"], ["out"])
    model = helper.make_model(helper.make_graph([node], "conv1x1", *_io(), inits),
                              opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    return model


def conv_qdq_onnx(w: np.ndarray, b: np.ndarray) -> onnx.ModelProto:
    """The same conv in explicit Q/DQ int8 form as TensorRT wants it: symmetric (zero points
    0), per-tensor activation scale, per-channel weight scales."""
    ws = weight_scales(w)
    wq = np.round(w / ws[:, None]).astype(np.int8)[:, :, None, None]
    inits = [
        numpy_helper.from_array(np.array(QSCALE_X, np.float32), "x_scale"),
        numpy_helper.from_array(np.array(0, np.int8), "x_zero"),
        numpy_helper.from_array(wq, "w_q"),
        numpy_helper.from_array(ws, "w_scale"),
        numpy_helper.from_array(np.zeros(OUT, np.int8), "w_zero"),
        numpy_helper.from_array(b, "b"),
    ]
    nodes = [
        helper.make_node("QuantizeLinear", ["cube", "x_scale", "x_zero"], ["cube_q"]),
        helper.make_node("DequantizeLinear", ["cube_q", "x_scale", "x_zero"], ["cube_dq"]),
        helper.make_node("DequantizeLinear", ["w_q", "w_scale", "w_zero"], ["w_dq"], axis=0),
        helper.make_node("Conv", ["cube_dq", "w_dq", "b"], ["out"]),
    ]
    model = helper.make_model(helper.make_graph(nodes, "conv1x1_qdq", *_io(), inits),
                              opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    return model


def int8_reference(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    return conv_reference(quantised(x, QSCALE_X), quantised(w, weight_scales(w)[:, None]), b)


def matmul_onnx(k: int, m: int, seed: int = 1) -> tuple[onnx.ModelProto, np.ndarray]:
    """(N, k) @ (k, m), N dynamic: a per-pixel spectral projection."""
    weights = np.random.default_rng(seed).normal(size=(k, m)).astype(np.float32)
    x = helper.make_tensor_value_info("spectra", TensorProto.FLOAT, ["N", k])
    y = helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["N", m])
    node = helper.make_node("MatMul", ["spectra", "proj"], ["scores"])
    model = helper.make_model(
        helper.make_graph([node], "matmul", [x], [y], [numpy_helper.from_array(weights, "proj")]),
        opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    return model, weights


CONV_INPUTS = (TensorSpec("cube", (1, BANDS, "H", "W"), "float32",
                          "reflectance, bands ascending", Normalisation((0.2,), (0.1,))),)
CONV_OUTPUTS = (TensorSpec("out", (1, OUT, "H", "W"), "float32"),)


def make_bundle(root: Path, *, plan: bool = False, matmul: bool = True) -> Manifest:
    """A bundle with model 'conv' (fp32 and int8 ONNX, optionally a TensorRT plan built for a
    made-up Orin) and model 'proj' (an fp32 matmul)."""
    root.mkdir(parents=True, exist_ok=True)
    w, b = conv_weights()
    onnx.save(conv_onnx(w, b), root / "conv.fp32.onnx")
    onnx.save(conv_qdq_onnx(w, b), root / "conv.int8.onnx")
    arts = [Artifact.from_file(root, "conv.fp32.onnx", format="onnx", precision="fp32",
                               parity={"reference": "numpy", "max_abs_error": 0.0}),
            Artifact.from_file(root, "conv.int8.onnx", format="onnx", precision="int8",
                               accuracy={"psnr_db_vs_fp32": 45.0})]
    if plan:
        (root / "conv.int8.sm87.plan").write_bytes(b"not a real plan: no TensorRT here")
        arts.append(Artifact.from_file(root, "conv.int8.sm87.plan", format="tensorrt-plan",
                                       precision="int8", source="conv.int8.onnx",
                                       tensorrt_version="10.3.0", compute_capability="8.7",
                                       device_name="Orin"))
    models = {"conv": ModelSpec("conv", "denoise", CONV_INPUTS, CONV_OUTPUTS, tuple(arts),
                                band_grid_nm=tuple(900.0 + 10 * i for i in range(BANDS)),
                                metadata={"parameters": int(w.size + b.size)})}
    if matmul:
        model, _ = matmul_onnx(BANDS, 4)
        onnx.save(model, root / "proj.onnx")
        models["proj"] = ModelSpec(
            "proj", "residue",
            (TensorSpec("spectra", ("N", BANDS), "float32"),),
            (TensorSpec("scores", ("N", 4), "float32"),),
            (Artifact.from_file(root, "proj.onnx", format="onnx", precision="fp32"),))
    manifest = Manifest(models, tools=mb.tool_versions("onnx", "onnxruntime", "torch"),
                        producer="tests/test_bundle.py")
    manifest.write(root)
    return manifest


def corrupt(path: Path) -> None:
    """Flip bytes in the middle of a file (size unchanged)."""
    data = bytearray(path.read_bytes())
    mid = len(data) // 2
    data[mid:mid + 8] = bytes(x ^ 0xFF for x in data[mid:mid + 8])
    path.write_bytes(bytes(data))


def _rewrite(root: Path, edit) -> None:
    data = json.loads((root / mb.MANIFEST_NAME).read_text())
    edit(data)
    (root / mb.MANIFEST_NAME).write_text(json.dumps(data))


# ------------------------------------------------------------------------------------------


def test_write_then_load_is_exact_and_clean(tmp_path: Path) -> None:
    written = make_bundle(tmp_path, plan=True)
    b = mb.load(tmp_path)
    assert b.manifest == written
    assert b.problems == {}
    assert b.unavailable_reason("conv") is None
    assert [a.file for a in b.usable("conv", "onnx")] == ["conv.fp32.onnx", "conv.int8.onnx"]
    plan = b.model("conv").artifact("conv.int8.sm87.plan")
    assert plan.source_sha256 == b.model("conv").artifact("conv.int8.onnx").sha256
    # the JSON carries dynamic dims as names and the recorded sizes are the files' sizes
    raw = json.loads((tmp_path / "manifest.json").read_text())
    assert raw["models"]["conv"]["inputs"][0]["shape"] == [1, BANDS, "H", "W"]
    assert raw["models"]["conv"]["artifacts"][0]["bytes"] == (tmp_path / "conv.fp32.onnx").stat().st_size
    assert raw["tools"]["onnx"] == onnx.__version__


def test_sha256_mismatch_makes_the_file_unusable_with_reason(tmp_path: Path) -> None:
    make_bundle(tmp_path)
    corrupt(tmp_path / "proj.onnx")
    b = mb.load(tmp_path)
    assert set(b.problems) == {"proj.onnx"}
    assert "sha256 mismatch" in b.problems["proj.onnx"]
    assert "sha256 mismatch" in b.unavailable_reason("proj")
    assert b.unavailable_reason("conv") is None  # the other model is untouched
    info = b.as_dict()["models"]["proj"]["files"][0]
    assert info["ok"] is False and "corrupt or was replaced" in info["problem"]


def test_missing_file_and_stale_plan_are_reported(tmp_path: Path) -> None:
    make_bundle(tmp_path, plan=True)
    (tmp_path / "conv.fp32.onnx").unlink()

    def stale(d):  # the plan says it came from another ONNX than the one the bundle holds
        d["models"]["conv"]["artifacts"][2]["source_sha256"] = "0" * 64
    _rewrite(tmp_path, stale)
    b = mb.load(tmp_path)
    assert "missing" in b.problems["conv.fp32.onnx"]
    assert b.problems["conv.int8.sm87.plan"].startswith("stale plan")
    assert [a.file for a in b.usable("conv")] == ["conv.int8.onnx"]


def test_writer_refuses_a_manifest_that_does_not_match_the_files(tmp_path: Path) -> None:
    manifest = make_bundle(tmp_path)
    corrupt(tmp_path / "conv.fp32.onnx")
    with pytest.raises(BundleError, match="conv.fp32.onnx: sha256 mismatch"):
        manifest.write(tmp_path)


@pytest.mark.parametrize("edit, message", [
    (lambda d: d.update(schema_version=2), "schema version 2; this runtime reads versions 1"),
    (lambda d: d.update(format="something-else"), "not an onboard model bundle manifest"),
    (lambda d: d.pop("models"), "missing field 'models'"),
    (lambda d: d.update(models={}), "holds no model"),
    (lambda d: d.update(colour="blue"), "unknown field"),
    (lambda d: d["models"]["conv"]["inputs"][0].update(shape=[1, -1, "H", "W"]),
     r"models.conv.inputs\[0\].*dimension -1"),
    (lambda d: d["models"]["conv"]["inputs"][0].update(dtype="complex64"), "dtype 'complex64'"),
    (lambda d: d["models"]["conv"]["inputs"][0].pop("name"), "missing field 'name'"),
    (lambda d: d["models"]["conv"]["artifacts"][0].update(file="../etc/passwd"),
     "relative path inside"),
    (lambda d: d["models"]["conv"]["artifacts"][0].update(precision="int4"), "precision 'int4'"),
    (lambda d: d["models"]["conv"]["artifacts"][0].update(sha256="abc"), "64 lowercase hex"),
    (lambda d: d["models"]["conv"]["artifacts"][0].update(bytes="many"), "expected int"),
    (lambda d: d["models"]["conv"]["inputs"][0]["normalisation"].update(std=[0.0]), "std"),
    (lambda d: d["models"]["conv"].update(band_grid_nm=[900, 890]), "ascending"),
])
def test_a_manifest_this_runtime_does_not_understand_is_refused(tmp_path: Path, edit, message):
    make_bundle(tmp_path)
    _rewrite(tmp_path, edit)
    with pytest.raises(BundleError, match=message) as err:
        mb.load(tmp_path)
    assert "onboard export build" in str(err.value)  # says what to do


def test_load_refuses_a_folder_without_manifest_or_with_broken_json(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="no manifest.json"):
        mb.load(tmp_path)
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(BundleError, match="not valid JSON"):
        mb.load(tmp_path)
    with pytest.raises(BundleError, match="not a folder"):
        mb.load(tmp_path / "nowhere")


def test_normalisation_per_band_round_trips_and_checks_band_count() -> None:
    rng = np.random.default_rng(3)
    x = rng.uniform(0, 1, size=(1, 4, 5, 6)).astype(np.float32)
    n = Normalisation(mean=(0.1, 0.2, 0.3, 0.4), std=(0.5, 1.0, 2.0, 4.0), axis=1)
    z = n.apply(x)
    assert z.dtype == np.float32
    np.testing.assert_allclose(z[0, 2], (x[0, 2] - 0.3) / 2.0, rtol=1e-6)
    np.testing.assert_allclose(n.invert(z), x, rtol=1e-6, atol=1e-7)
    with pytest.raises(ValueError, match="4 values for axis 1, the array has 3"):
        n.apply(x[:, :3])


def test_tensor_spec_binds_dynamic_dims_across_tensors() -> None:
    spec = TensorSpec("cube", (1, 4, "H", "W"), "float32")
    sizes: dict[str, int] = {}
    spec.check(np.zeros((1, 4, 8, 9), np.float32), sizes)
    assert sizes == {"H": 8, "W": 9}
    with pytest.raises(ValueError, match="axis 0 must be 8"):
        TensorSpec("mask", ("H", "W"), "bool").check(np.zeros((7, 9), bool), sizes)
    with pytest.raises(ValueError, match=r"float64; the model takes float32"):
        spec.check(np.zeros((1, 4, 8, 9)), {})
    with pytest.raises(ValueError, match="axis 1 must be 4"):
        spec.check(np.zeros((1, 5, 8, 9), np.float32), {})


def test_find_bundle_returns_the_bundle_or_the_reason(tmp_path: Path) -> None:
    make_bundle(tmp_path / "ok", matmul=False)
    found, reason = mb.find_bundle(tmp_path / "ok")
    assert reason is None and list(found.manifest.models) == ["conv"]
    found, reason = mb.find_bundle(tmp_path / "missing")
    assert found is None and "is not a folder" in reason
    if mb.default_bundle_dir() is None:  # until export/ ships onboard/models
        found, reason = mb.find_bundle(None)
        assert found is None and "classical stages run" in reason
