"""`onboard info` in a subprocess: engines and why not, the bundle's checksums and the
reasons files or engines were passed over, the calibration file, and the JSON form."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
from test_bundle import corrupt, make_bundle

from onboard.formats.calfile import file_sha256

HAVE_TENSORRT = importlib.util.find_spec("tensorrt") is not None


def onboard(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "onboard", "info", *args], capture_output=True,
                          text=True, timeout=120)


@pytest.fixture(scope="module")
def broken_bundle(tmp_path_factory) -> Path:
    """conv: fp32 file corrupted after export, int8 fine, a plan for a made-up Orin."""
    root = tmp_path_factory.mktemp("bundle")
    make_bundle(root, plan=True)
    corrupt(root / "conv.fp32.onnx")
    return root


@pytest.fixture(scope="module")
def calibration_file(tmp_path_factory, imspoc_calibration) -> Path:
    path = tmp_path_factory.mktemp("cal") / "instrument.cal"
    imspoc_calibration.write(path)
    return path


def test_info_json_says_what_runs_and_why_the_rest_does_not(broken_bundle, calibration_file):
    out = onboard("--bundle", str(broken_bundle), "--calibration", str(calibration_file),
                  "--json")
    assert out.returncode == 0, out.stderr
    info = json.loads(out.stdout)
    assert info["versions"]["python"] == ".".join(map(str, sys.version_info[:3]))
    import numpy
    import onnxruntime
    assert info["versions"]["numpy"] == numpy.__version__
    assert info["versions"]["onnxruntime"] == onnxruntime.__version__
    engines = {e["name"]: e for e in info["engines"]}
    assert engines["onnxruntime-cpu"]["available"] and engines["classical"]["available"]
    if not HAVE_TENSORRT:
        assert not engines["tensorrt"]["available"]
        assert engines["tensorrt"]["detail"].startswith("tensorrt not installed")

    conv = info["bundle"]["models"]["conv"]
    files = {f["file"]: f for f in conv["files"]}
    assert files["conv.fp32.onnx"]["ok"] is False
    assert files["conv.fp32.onnx"]["problem"].startswith("sha256 mismatch")
    assert files["conv.int8.onnx"]["sha256"] == file_sha256(broken_bundle / "conv.int8.onnx")
    assert info["bundle"]["manifest_sha256"] == file_sha256(broken_bundle / "manifest.json")
    sel = conv["selection"]
    assert sel["candidate"] == "onnxruntime-cpu" and sel["file"] == "conv.int8.onnx"
    assert sel["engine"]["providers"] == ["CPUExecutionProvider"]
    reasons = {(s["engine"], s["file"]): s["reason"] for s in sel["skipped"]}
    assert reasons[("onnxruntime-cpu", "conv.fp32.onnx")].startswith("sha256 mismatch")
    if not HAVE_TENSORRT:
        # plans are built on the device from the ONNX files: those are what TensorRT skipped
        (trt_files, trt_reason), = [(f, r) for (e, f), r in reasons.items() if e == "tensorrt"]
        assert "conv.int8.onnx" in trt_files and trt_reason.startswith("tensorrt not installed")
    assert info["bundle"]["models"]["proj"]["would_use"].endswith("(proj.onnx)")

    cal = info["calibration"]
    assert cal["sha256"] == file_sha256(calibration_file)
    assert cal["kind"] == "imspoc" and cal["bands"] == 24
    assert info["system"]["peak_rss_bytes"] > 0


def test_info_text_shows_the_reasons(broken_bundle, calibration_file) -> None:
    out = onboard("--bundle", str(broken_bundle), "--calibration", str(calibration_file))
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert "conv (denoise): would run on onnxruntime[CPUExecutionProvider] int8 (conv.int8.onnx)" \
        in text
    assert "UNUSABLE: sha256 mismatch: conv.fp32.onnx" in text
    assert "skipped onnxruntime-cpu (conv.fp32.onnx): sha256 mismatch" in text
    if not HAVE_TENSORRT:
        assert "conv.int8.onnx): not available on this machine (above)" in text
        assert text.count("tensorrt not installed") == 1
    assert f"sha256 {file_sha256(calibration_file)[:16]}" in text


def test_a_refused_bundle_or_calibration_exits_1_with_the_reason(tmp_path: Path) -> None:
    (tmp_path / "manifest.json").write_text(json.dumps(
        {"format": "onboard-model-bundle", "schema_version": 99, "models": {}}))
    bad_cal = tmp_path / "x.cal"
    bad_cal.write_bytes(b"not a calibration")
    out = onboard("--bundle", str(tmp_path), "--calibration", str(bad_cal))
    assert out.returncode == 1
    assert "schema version 99; this runtime reads versions 1" in out.stdout
    assert "is not a readable calibration file" in out.stdout
    out = onboard("--bundle", str(tmp_path), "--json")
    assert out.returncode == 1
    assert "schema version 99" in json.loads(out.stdout)["bundle_error"]


def test_info_without_a_bundle_says_the_classical_stages_run() -> None:
    out = onboard("--json")
    assert out.returncode == 0, out.stderr
    info = json.loads(out.stdout)
    if info["bundle"] is None:  # until export/ ships a default bundle in onboard/models
        assert "the classical stages run" in info["bundle_error"]
