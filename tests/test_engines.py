"""The engine layer against real ONNX Runtime sessions over ONNX models built on the fly,
checked against numpy; fallback when files are corrupt, checksums wrong or TensorRT absent."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime
import pytest
from test_bundle import (
    BANDS,
    CONV_INPUTS,
    CONV_OUTPUTS,
    conv_onnx,
    conv_reference,
    conv_weights,
    corrupt,
    int8_reference,
    make_bundle,
    matmul_onnx,
)

from onboard.engines import EngineError, select_engine
from onboard.engines.onnxruntime_engine import GPU_PROVIDERS, OnnxRuntimeEngine
from onboard.engines.select import CLASSICAL, EngineOptions
from onboard.engines.tensorrt_engine import PlanKey
from onboard.formats import bundle as mb
from onboard.formats.bundle import TensorSpec

onnx = pytest.importorskip("onnx", reason="builds test models with onnx (pip install 'onboard[export]')")

HAVE_TENSORRT = importlib.util.find_spec("tensorrt") is not None
ORT_HAS_GPU = any(p in onnxruntime.get_available_providers() for p in GPU_PROVIDERS)
CPU_ONLY = EngineOptions(engine="onnxruntime-cpu")


def cube(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A (1, BANDS, h, w) float32 input within the int8 input range (|x| <= 2.5)."""
    return np.random.default_rng(seed).uniform(-2, 2, size=(1, BANDS, h, w)).astype(np.float32)


@pytest.fixture
def conv_file(tmp_path: Path) -> Path:
    w, b = conv_weights()
    path = tmp_path / "conv.onnx"
    onnx.save(conv_onnx(w, b), path)
    return path


def test_onnxruntime_conv_matches_numpy_at_two_spatial_sizes(conv_file: Path) -> None:
    w, b = conv_weights()
    engine = OnnxRuntimeEngine(conv_file, CONV_INPUTS, CONV_OUTPUTS,
                               providers=["CPUExecutionProvider"], intra_op_threads=1)
    assert not engine.is_active  # construction loads nothing
    with engine:
        assert engine.providers == ["CPUExecutionProvider"] and engine.warnings == []
        for h, wd in ((7, 5), (32, 48)):  # H and W are dynamic in the model and the manifest
            x = cube(h, wd)
            out = engine.run({"cube": x})
            assert list(out) == ["out"] and out["out"].shape == (1, 3, h, wd)
            # float32 sums of 6 products of O(1) numbers: rounding well below 1e-5
            np.testing.assert_allclose(out["out"], conv_reference(x, w, b), atol=1e-5)
    assert not engine.is_active
    with pytest.raises(EngineError, match="not active"):
        engine.run({"cube": cube(2, 2)})


def test_run_physical_applies_the_manifest_normalisation(conv_file: Path) -> None:
    """CONV_INPUTS says model input = (x - 0.2) / 0.1; an output normalisation maps back."""
    w, b = conv_weights()
    out_norm = (TensorSpec("out", (1, 3, "H", "W"), "float32",
                           normalisation=mb.Normalisation((1.0, -1.0, 0.5), (2.0, 3.0, 4.0))),)
    x = cube(6, 7).astype(np.float32) * 0.1 + 0.2
    with OnnxRuntimeEngine(conv_file, CONV_INPUTS, out_norm,
                           providers=["CPUExecutionProvider"]) as engine:
        got = engine.run_physical({"cube": x})["out"]
        with pytest.raises(ValueError, match="do not match the model's"):
            engine.run_physical({"reflectance": x})
    model_out = conv_reference((x - np.float32(0.2)) / np.float32(0.1), w, b)
    want = model_out * np.array([2.0, 3.0, 4.0], np.float32)[None, :, None, None] \
        + np.array([1.0, -1.0, 0.5], np.float32)[None, :, None, None]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)


def test_onnxruntime_matmul_matches_numpy(tmp_path: Path) -> None:
    model, weights = matmul_onnx(BANDS, 4)
    onnx.save(model, tmp_path / "mm.onnx")
    spectra = np.random.default_rng(2).normal(size=(100, BANDS)).astype(np.float32)
    with OnnxRuntimeEngine(tmp_path / "mm.onnx", (TensorSpec("spectra", ("N", BANDS), "float32"),),
                           (TensorSpec("scores", ("N", 4), "float32"),),
                           providers=["CPUExecutionProvider"]) as engine:
        out = engine.run({"spectra": spectra})["scores"]
    np.testing.assert_allclose(out, spectra @ weights, rtol=1e-5, atol=1e-5)


def test_inputs_that_do_not_fit_the_manifest_are_refused_with_the_reason(conv_file) -> None:
    with OnnxRuntimeEngine(conv_file, CONV_INPUTS, CONV_OUTPUTS,
                           providers=["CPUExecutionProvider"]) as engine:
        with pytest.raises(ValueError, match=r"inputs \['x'\] do not match the model's \['cube'\]"):
            engine.run({"x": cube(4, 4)})
        with pytest.raises(ValueError, match="float64; the model takes float32"):
            engine.run({"cube": cube(4, 4).astype(np.float64)})
        with pytest.raises(ValueError, match="axis 1 must be 6"):
            engine.run({"cube": np.zeros((1, BANDS + 1, 4, 4), np.float32)})


def test_a_model_file_that_disagrees_with_the_manifest_is_refused(conv_file: Path) -> None:
    wrong = (TensorSpec("reflectance", (1, BANDS, "H", "W"), "float32"),)
    engine = OnnxRuntimeEngine(conv_file, wrong, CONV_OUTPUTS, providers=["CPUExecutionProvider"])
    with pytest.raises(EngineError, match="do not match the manifest's"):
        engine.activate()
    assert not engine.is_active


@pytest.mark.skipif(ORT_HAS_GPU, reason="this onnxruntime has GPU providers: no fallback to see")
def test_gpu_providers_absent_run_on_cpu_with_a_warning_saying_why(conv_file: Path) -> None:
    with OnnxRuntimeEngine(conv_file, CONV_INPUTS, CONV_OUTPUTS) as engine:  # default: TRT,CUDA,CPU
        assert engine.providers == ["CPUExecutionProvider"] and not engine.on_gpu
        assert any("CUDAExecutionProvider was asked for but is not in this onnxruntime build"
                   in w for w in engine.warnings)
        x = cube(3, 3)
        np.testing.assert_allclose(engine.run({"cube": x})["out"],
                                   conv_reference(x, *conv_weights()), atol=1e-5)


def test_auto_selection_on_a_clean_bundle_picks_fp32_on_cpu(tmp_path: Path) -> None:
    make_bundle(tmp_path)
    x = cube(9, 11)
    with select_engine(mb.load(tmp_path), "conv", EngineOptions(intra_op_threads=1)) as sel:
        assert sel.candidate == "onnxruntime-cpu" and sel.artifact.file == "conv.fp32.onnx"
        np.testing.assert_allclose(sel.engine.run({"cube": x})["out"],
                                   conv_reference(x, *conv_weights()), atol=1e-5)
        reasons = {s.engine: s.reason for s in sel.skipped}
        if not HAVE_TENSORRT:
            assert reasons["tensorrt"].startswith("tensorrt not installed")
        if not ORT_HAS_GPU:
            assert "no GPU provider" in reasons["onnxruntime-gpu"]
        assert "conv: onnxruntime[CPUExecutionProvider] fp32 (conv.fp32.onnx)" in sel.summary()
    assert not sel.engine.is_active  # closing the selection freed the session


def test_a_new_candidate_is_one_object_in_the_list(tmp_path: Path, monkeypatch) -> None:
    """Engines are candidate objects the selector loops over: a candidate put first is tried
    first, in its own precision order, and its refusal after activation is recorded."""
    from onboard.engines import select as sel_mod

    make_bundle(tmp_path)
    built: list[str] = []

    def build(path, spec, a, options):
        built.append(a.file)
        return OnnxRuntimeEngine(path, spec.inputs, spec.outputs, a.precision)

    picky = sel_mod.Candidate("picky", "onnx", ("int8", "fp32"), lambda device: "always here", build,
                              reject=lambda engine: "refuses everything after activation")
    eager = sel_mod.Candidate("eager", "onnx", ("int8",), lambda device: "always here", build)
    monkeypatch.setattr(sel_mod, "CANDIDATES", (picky, eager, *sel_mod.CANDIDATES))
    with select_engine(mb.load(tmp_path), "conv") as sel:
        assert sel.candidate == "eager" and sel.artifact.file == "conv.int8.onnx"
    assert built == ["conv.int8.onnx", "conv.int8.onnx"]  # picky's first choice, then eager's
    assert [(s.engine, s.file, s.reason) for s in sel.skipped] == [
        ("picky", "conv.int8.onnx", "refuses everything after activation"),
        ("eager", "conv.fp32.onnx", "fp32 is not used by eager unless asked for")]


def test_int8_qdq_model_runs_and_matches_its_quantised_reference(tmp_path: Path) -> None:
    make_bundle(tmp_path)
    x = cube(16, 16, seed=4)
    w, b = conv_weights()
    with select_engine(mb.load(tmp_path), "conv", EngineOptions(precision="int8")) as sel:
        assert sel.artifact.file == "conv.int8.onnx"
        got = sel.engine.run({"cube": x})["out"]
    # Exactly the quantise-dequantise arithmetic (round half to even, symmetric int8):
    np.testing.assert_allclose(got, int8_reference(x, w, b), atol=1e-4)
    # and close to fp32: input step 0.02 and weight step max|w|/127 bound the error by
    # sum_b |w| * 0.01 + |x| * step_w / 2 per output, well under 0.2 here
    err = np.abs(got - conv_reference(x, w, b)).max()
    assert 1e-4 < err < 0.2


def test_corrupt_onnx_file_makes_that_engine_unavailable_and_selection_goes_on(tmp_path):
    """A corrupt fp32 file whose manifest checksum matches (it was corrupt when exported):
    ONNX Runtime refuses it, the selector says why and loads the int8 file."""
    make_bundle(tmp_path)
    fp32 = tmp_path / "conv.fp32.onnx"
    fp32.write_bytes(fp32.read_bytes()[: fp32.stat().st_size // 2])  # a cut-short transfer
    manifest = mb.load(tmp_path).manifest
    spec = manifest.models["conv"]
    fixed = [mb.Artifact.from_file(tmp_path, a.file, format=a.format, precision=a.precision)
             for a in spec.artifacts]
    rewritten = mb.Manifest({**manifest.models, "conv": mb.ModelSpec(
        "conv", spec.task, spec.inputs, spec.outputs, tuple(fixed))}, tools=manifest.tools)
    rewritten.write(tmp_path)
    b = mb.load(tmp_path)
    assert b.problems == {}  # checksums agree: only loading can tell
    x = cube(5, 5)
    with select_engine(b, "conv", CPU_ONLY) as sel:
        assert sel.artifact.file == "conv.int8.onnx"
        skip = next(s for s in sel.skipped if s.file == "conv.fp32.onnx")
        assert skip.engine == "onnxruntime-cpu"
        assert "ONNX Runtime cannot load conv.fp32.onnx" in skip.reason
        assert "rebuild the bundle" in skip.reason
        np.testing.assert_allclose(sel.engine.run({"cube": x})["out"],
                                   int8_reference(x, *conv_weights()), atol=1e-4)


def test_sha256_mismatch_is_refused_with_reason_and_selection_goes_on(tmp_path: Path) -> None:
    make_bundle(tmp_path)
    corrupt(tmp_path / "conv.fp32.onnx")
    with select_engine(mb.load(tmp_path), "conv", CPU_ONLY) as sel:
        assert sel.artifact.file == "conv.int8.onnx"
        skip = next(s for s in sel.skipped if s.file == "conv.fp32.onnx")
        assert skip.reason.startswith("sha256 mismatch: conv.fp32.onnx")


def test_when_nothing_loads_the_caller_gets_the_classical_stages_and_every_reason(tmp_path):
    make_bundle(tmp_path)
    corrupt(tmp_path / "conv.fp32.onnx")
    (tmp_path / "conv.int8.onnx").write_bytes(b"")
    sel = select_engine(mb.load(tmp_path), "conv")
    assert sel.engine is None and sel.candidate == CLASSICAL
    by_file = {s.file: s.reason for s in sel.skipped if s.engine == "onnxruntime-cpu"}
    assert "sha256 mismatch" in by_file["conv.fp32.onnx"]
    assert "sha256 mismatch" in by_file["conv.int8.onnx"]
    assert "classical stages" in sel.summary()
    assert json.loads(json.dumps(sel.as_dict()))["engine"] is None
    # and with no bundle at all
    assert select_engine(None, "conv").skipped[0].reason.startswith("no model bundle")
    assert "has no model 'nope'" in select_engine(mb.load(tmp_path), "nope").skipped[0].reason


@pytest.mark.skipif(HAVE_TENSORRT, reason="TensorRT is installed here: nothing to skip")
def test_a_tensorrt_plan_without_tensorrt_is_skipped_with_reason(tmp_path: Path) -> None:
    make_bundle(tmp_path, plan=True)
    with select_engine(mb.load(tmp_path), "conv") as sel:
        # plans are built on the device from the ONNX files: those are what TensorRT skipped
        plan_skip = next(s for s in sel.skipped if s.engine == "tensorrt")
        assert plan_skip.file is not None and "conv.fp32.onnx" in plan_skip.file
        assert plan_skip.reason.startswith("tensorrt not installed")
        assert sel.candidate == "onnxruntime-cpu" and sel.engine.is_active


def test_a_forced_engine_records_the_others_as_not_asked_for(tmp_path: Path) -> None:
    make_bundle(tmp_path, plan=True)
    with select_engine(mb.load(tmp_path), "conv", CPU_ONLY) as sel:
        assert {s.engine: s.reason for s in sel.skipped}["tensorrt"] == \
            "not asked for (engine = onnxruntime-cpu)"
    sel = select_engine(mb.load(tmp_path), "conv", EngineOptions(engine="classical"))
    assert sel.engine is None and len(sel.skipped) == 3
    with pytest.raises(ValueError, match="engine 'cuda'"):
        EngineOptions(engine="cuda")


def test_plan_key_refusal_names_what_differs() -> None:
    built = PlanKey("a" * 64, "10.3.0", "8.7", "int8")
    assert built.mismatches(built) == []
    here = PlanKey("b" * 64, "10.16.0", "8.9", "int8")
    problems = built.mismatches(here)
    assert len(problems) == 3
    assert "built with TensorRT 10.3.0, this machine has 10.16.0" in problems[1]
    assert "compute capability 8.7, this GPU is 8.9" in problems[2]
    assert built.cache_name == "aaaaaaaaaaaaaaaa.trt10.3.0.sm87.int8.plan"


def test_importing_the_engine_layer_imports_no_heavy_library() -> None:
    code = ("import sys, onboard.engines, onboard.formats.bundle, onboard.engines.select\n"
            "from onboard.formats.bundle import tool_versions; tool_versions('torch', 'onnx')\n"
            "print([m for m in ('torch', 'onnxruntime', 'tensorrt', 'cuda', 'scipy', 'onnx')"
            " if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=60)
    assert out.stdout.strip() == "[]"


@pytest.mark.tensorrt
@pytest.mark.gpu
@pytest.mark.skipif(not HAVE_TENSORRT, reason="needs TensorRT and an NVIDIA GPU (JetPack)")
def test_tensorrt_plan_runs_and_a_foreign_plan_is_refused(tmp_path: Path) -> None:
    """Build a plan for the conv with TensorRT's builder, run it through the bundle, compare
    with numpy; then claim another TensorRT version: the shipped plan is refused (said in the
    engine's warnings) and the device builds its own into its cache instead."""
    import tensorrt as trt

    from onboard.engines.tensorrt_engine import cuda_device

    make_bundle(tmp_path)
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    assert parser.parse((tmp_path / "conv.fp32.onnx").read_bytes()), parser.get_error(0)
    config = builder.create_builder_config()
    config.clear_flag(trt.BuilderFlag.TF32)  # plain fp32 arithmetic, so numpy's tolerance holds
    profile = builder.create_optimization_profile()
    profile.set_shape("cube", (1, BANDS, 1, 1), (1, BANDS, 32, 32), (1, BANDS, 64, 64))
    config.add_optimization_profile(profile)
    plan = builder.build_serialized_network(network, config)
    assert plan is not None
    (tmp_path / "conv.fp32.plan").write_bytes(bytes(plan))
    cc = cuda_device(0).compute_capability

    def bundle_with_plan(version: str) -> mb.Bundle:
        m = mb.load(tmp_path).manifest
        spec = m.models["conv"]
        art = mb.Artifact.from_file(tmp_path, "conv.fp32.plan", format="tensorrt-plan",
                                    precision="fp32", source="conv.fp32.onnx",
                                    tensorrt_version=version, compute_capability=cc)
        arts = tuple(a for a in spec.artifacts if a.format == "onnx") + (art,)
        mb.Manifest({**m.models, "conv": mb.ModelSpec("conv", spec.task, spec.inputs,
                                                       spec.outputs, arts)}).write(tmp_path)
        return mb.load(tmp_path)

    x = cube(20, 24)
    options = EngineOptions(precision="fp32", trt_cache_dir=str(tmp_path / "cache"))
    with select_engine(bundle_with_plan(trt.__version__), "conv", options) as sel:
        assert sel.candidate == "tensorrt", sel.summary()
        assert sel.engine.path == tmp_path / "conv.fp32.plan"  # the shipped plan
        np.testing.assert_allclose(sel.engine.run({"cube": x})["out"],
                                   conv_reference(x, *conv_weights()), atol=1e-4)  # GPU summation order differs
    with select_engine(bundle_with_plan("0.0.1"), "conv", options) as sel:
        assert sel.candidate == "tensorrt", sel.summary()
        assert any("built with TensorRT 0.0.1" in w for w in sel.engine.warnings)
        assert sel.engine.path.parent.parent == tmp_path / "cache" / "tensorrt"
        np.testing.assert_allclose(sel.engine.run({"cube": x})["out"],
                                   conv_reference(x, *conv_weights()), atol=1e-4)
