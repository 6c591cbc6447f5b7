"""The device's plan cache (onboard/engines/plan_cache.py): an entry is used only under its
own key (model checksum, TensorRT version, GPU, precision) and with the plan's recorded
checksum; a stale one (a doctored key: "another TensorRT version") is refused, removed and
rebuilt, never loaded. The key logic runs here on the CPU with a stand-in builder; the real
build with TensorRT runs where a GPU is lent (marked gpu / tensorrt)."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import socket
from pathlib import Path

import numpy as np
import pytest

from onboard.engines import plan_cache as pc
from onboard.engines.base import EngineError
from onboard.engines.onnxruntime_engine import OnnxRuntimeEngine
from onboard.engines.tensorrt_engine import PlanKey
from onboard.formats import bundle as mb

HAVE_TENSORRT = importlib.util.find_spec("tensorrt") is not None
SHIPPED = Path(__file__).parents[1] / "onboard" / "models" / "default"
KEY = PlanKey("a" * 64, "10.3.0", "8.7", "int8", "Orin")


class FakeBuilder:
    """Stands in for TensorRT: writes distinct plan bytes per build and reports progress."""

    def __init__(self) -> None:
        self.builds = 0

    def __call__(self, onnx_path, plan_path, precision, profile, timing_cache=None, device=0,
                 progress=None) -> dict:
        self.builds += 1
        progress("phase (1/1)", force=True)
        Path(plan_path).write_bytes(f"plan {self.builds} of {Path(onnx_path).name}".encode())
        Path(timing_cache).write_bytes(b"timing")
        return {}


def test_a_plan_is_built_once_and_then_taken_from_the_cache(tmp_path: Path) -> None:
    build = FakeBuilder()
    plan = pc.ensure_plan(tmp_path, KEY, tmp_path / "m.onnx", {}, build=build)
    assert plan.read_bytes() == b"plan 1 of m.onnx" and build.builds == 1
    assert pc.ensure_plan(tmp_path, KEY, tmp_path / "m.onnx", {}, build=build) == plan
    assert build.builds == 1
    record = json.loads((plan.parent / pc.KEY_FILE).read_text())
    assert record["tensorrt_version"] == "10.3.0" and record["device_name"] == "Orin"
    assert record["plan_sha256"] == hashlib.sha256(plan.read_bytes()).hexdigest()
    assert (plan.parent / pc.TIMING_CACHE).is_file()  # the timing cache lives beside its plan
    assert [p.name for p in (tmp_path / "tensorrt").iterdir()] == [plan.parent.name]  # no leftovers


@pytest.mark.parametrize("doctor, why", [
    (lambda e: _edit_key(e, tensorrt_version="10.16.0"), "built with TensorRT 10.16.0, this machine has 10.3.0"),
    (lambda e: _edit_key(e, compute_capability="8.9"), "compute capability 8.9, this GPU is 8.7"),
    (lambda e: _edit_key(e, device_name="Thor"), "built on a Thor, this GPU is a Orin"),
    (lambda e: _edit_key(e, model_sha256="b" * 64), "built from model bbbbbbbbbbbb"),
    (lambda e: _edit_key(e, device_name=""), "does not say which GPU"),
    (lambda e: (e / pc.PLAN_FILE).write_bytes(b"another plan"), "sha256 is not the one recorded"),
    (lambda e: (e / pc.KEY_FILE).unlink(), "missing or unreadable"),
    (lambda e: (e / pc.KEY_FILE).write_text("{"), "missing or unreadable"),
], ids=["tensorrt-version", "compute-capability", "gpu", "model", "no-gpu-recorded", "plan-replaced",
        "no-key", "torn-key"])
def test_a_stale_entry_is_refused_removed_and_rebuilt_never_loaded(tmp_path: Path, caplog, doctor,
                                                                   why) -> None:
    build = FakeBuilder()
    plan = pc.ensure_plan(tmp_path, KEY, tmp_path / "m.onnx", {}, build=build)
    doctor(plan.parent)
    assert any(why in p for p in pc.entry_problems(plan.parent, KEY)), pc.entry_problems(plan.parent, KEY)
    with caplog.at_level(logging.WARNING, logger="onboard.engines"):
        again = pc.ensure_plan(tmp_path, KEY, tmp_path / "m.onnx", {}, build=build)
    assert build.builds == 2 and again.read_bytes() == b"plan 2 of m.onnx"  # the rebuilt one
    assert pc.entry_problems(again.parent, KEY) == []
    assert any("refused, not loaded" in r.message and why in r.message for r in caplog.records)


def _edit_key(entry: Path, **fields: str) -> None:
    path = entry / pc.KEY_FILE
    path.write_text(json.dumps({**json.loads(path.read_text()), **fields}))


def test_a_failed_build_leaves_no_entry(tmp_path: Path) -> None:
    def failing(*args, **kwargs):
        raise pc.PlanBuildError("TensorRT cannot parse m.onnx")

    with pytest.raises(pc.PlanBuildError):
        pc.ensure_plan(tmp_path, KEY, tmp_path / "m.onnx", {}, build=failing)
    assert list((tmp_path / "tensorrt").iterdir()) == []


def test_build_progress_reaches_systemd_and_extends_the_start_timeout(tmp_path: Path, monkeypatch) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(tmp_path / "notify"))
        sock.settimeout(5)
        monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "notify"))
        pc.ensure_plan(tmp_path / "cache", KEY, tmp_path / "m.onnx", {}, build=FakeBuilder())
        got = [sock.recv(4096).decode().split("\n") for _ in range(3)]  # started, phase, done
    assert all(f[1] == f"EXTEND_TIMEOUT_USEC={pc.EXTEND_TIMEOUT_S * 1_000_000}" for f in got)
    assert "building the int8 TensorRT plan of m.onnx" in got[0][0] and got[1][0].count("phase (1/1)")
    assert got[2][0].startswith("STATUS=") and "done" in got[2][0]


def test_the_version_floor_is_refused_by_name() -> None:
    with pytest.raises(pc.PlanBuildError, match=r"8\.6\.2.*TensorRT >= 10"):
        pc.check_version("8.6.2")
    pc.check_version("10.3.0")


def test_the_profile_covers_the_dynamic_dims_of_the_shipped_models() -> None:
    spec = mb.load(SHIPPED).model("denoiser")
    (name, (lo, opt, hi)), = pc.profile_for(spec.inputs).items()
    assert name == "eigenimages" and lo == (1, 2, 16, 16) and opt == (8, 2, 64, 64) and hi == (32, 2, 512, 512)


def test_onnx_runtime_tensorrt_caches_are_keyed_and_a_stale_one_is_emptied(tmp_path: Path) -> None:
    engine = OnnxRuntimeEngine(tmp_path / "m.onnx", (), (), "int8",
                               trt_cache_dir=tmp_path / "cache", model_sha256="c" * 64)
    opts = engine.tensorrt_options("1.23.2")
    entry = Path(opts["trt_engine_cache_path"])
    assert opts["trt_timing_cache_path"] == str(entry) and entry.parent == tmp_path / "cache" / "onnxruntime-trt"
    assert opts["trt_engine_cache_enable"] and opts["trt_timing_cache_enable"]
    assert opts["trt_max_workspace_size"] == pc.WORKSPACE_BYTES and opts["trt_int8_enable"]
    assert "+onnxruntime1.23.2" in json.loads((entry / pc.KEY_FILE).read_text())["tensorrt_version"]
    (entry / "TensorrtExecutionProvider_cache_sm87.engine").write_bytes(b"engine")
    assert engine.tensorrt_options("1.23.2") == opts  # same key: the engine is kept
    assert (entry / "TensorrtExecutionProvider_cache_sm87.engine").is_file()
    _edit_key(entry, tensorrt_version="8.6.2+onnxruntime1.23.2")  # as if built under another one
    assert engine.tensorrt_options("1.23.2") == opts
    assert not (entry / "TensorrtExecutionProvider_cache_sm87.engine").exists()  # emptied, not loaded
    other = engine.tensorrt_options("1.24.0")  # an ONNX Runtime upgrade: another directory
    assert other["trt_engine_cache_path"] != str(entry)


# -- on a GPU with TensorRT ----------------------------------------------------------------------

@pytest.mark.gpu
@pytest.mark.tensorrt
@pytest.mark.skipif(not HAVE_TENSORRT, reason="needs TensorRT and an NVIDIA GPU (JetPack)")
def test_the_shipped_models_build_on_the_device_once_and_a_stale_plan_is_rebuilt(tmp_path: Path,
                                                                                 monkeypatch) -> None:
    """The shipped denoiser through ``select_engine(engine="tensorrt")``: the first selection
    builds the plan into the cache, the second loads it (no build), a doctored key is refused
    and rebuilt; the plan's output agrees with ONNX Runtime's on the CPU."""
    from onboard.engines.select import EngineOptions, select_engine
    from onboard.stages.learned import DENOISER

    bundle = mb.load(SHIPPED)
    options = EngineOptions(engine="tensorrt", precision="fp32", trt_cache_dir=str(tmp_path))
    x = np.random.default_rng(0).normal(size=(4, 2, 64, 64)).astype(np.float32)
    with select_engine(bundle, DENOISER, options) as sel:
        assert sel.candidate == "tensorrt", sel.summary()
        plan = sel.engine.path
        y = sel.engine.run({"eigenimages": x})["correction"]
    with select_engine(bundle, DENOISER, EngineOptions(engine="onnxruntime-cpu", precision="fp32")) as ref:
        np.testing.assert_allclose(y, ref.engine.run({"eigenimages": x})["correction"], atol=1e-3)

    def no_build(*args, **kwargs):
        raise AssertionError("built again")

    monkeypatch.setattr(pc, "build_plan", no_build)
    monkeypatch.setattr(pc.ensure_plan, "__defaults__", (0, no_build))
    with select_engine(bundle, DENOISER, options) as sel:
        assert sel.candidate == "tensorrt" and sel.engine.path == plan
    monkeypatch.undo()
    _edit_key(plan.parent, tensorrt_version="0.0.1")
    with select_engine(bundle, DENOISER, options) as sel:
        assert sel.candidate == "tensorrt" and pc.entry_problems(plan.parent, sel.engine.built_for) == []


def test_without_tensorrt_the_candidate_is_skipped_with_the_reason(tmp_path: Path) -> None:
    if HAVE_TENSORRT:
        pytest.skip("TensorRT is installed here")
    from onboard.engines.select import EngineOptions, select_engine
    from onboard.stages.learned import DENOISER

    bundle = mb.load(SHIPPED)
    with select_engine(bundle, DENOISER, EngineOptions(trt_cache_dir=str(tmp_path))) as sel:
        assert sel.candidate != "tensorrt"
        assert "tensorrt not installed" in next(s.reason for s in sel.skipped if s.engine == "tensorrt")
    assert not (tmp_path / "tensorrt").exists()  # nothing built, nothing cached
    with pytest.raises(EngineError):
        pc.CachedPlanEngine(tmp_path / "m.onnx", (), (), precision="fp32", model_sha256="a" * 64,
                            root=tmp_path).activate()
