"""The flight tests collect and run on a flight-only install (the runtime and the dev tools,
none of the ground or export extras): the ground libraries are made unimportable in a
subprocess (None in sys.modules, Python's own way) and the whole suite is collected there, then
flight test modules are run there."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GROUND_ONLY = ("torch", "onnx", "onnxscript", "scipy", "matplotlib", "prosail", "tifffile", "spectral")


def _pytest_without_ground(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    site = tmp_path / "flight_only"
    site.mkdir()
    (site / "sitecustomize.py").write_text(
        f"import sys\nsys.modules.update(dict.fromkeys({GROUND_ONLY!r}))\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (str(site), os.environ.get("PYTHONPATH", "")) if p)}
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args],
                          capture_output=True, text=True, cwd=ROOT, env=env, timeout=600)


def test_the_whole_suite_collects_without_the_ground_extras(tmp_path: Path) -> None:
    proc = _pytest_without_ground(tmp_path, "--collect-only", "-q")
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert "error" not in proc.stdout.splitlines()[-1]


def test_flight_tests_run_without_the_ground_extras(tmp_path: Path) -> None:
    proc = _pytest_without_ground(tmp_path, "-q", "tests/test_radiometric.py", "tests/test_bridge_framing.py",
                                  "tests/test_pipeline.py", "-m", "not slow")
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert " passed" in proc.stdout and "skipped" not in proc.stdout.splitlines()[-1]
