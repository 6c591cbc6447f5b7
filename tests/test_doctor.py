"""``onboard doctor`` as a user runs it (the real command line in a subprocess): on a sound
configuration it says the payload can fly; each fault injected into it adds exactly one problem
line, naming the check and what to do, and the exit status says whether the payload could fly
(1) or flies with a warning (0)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from firmware_bridge.auth import provision
from onboard.doctor import l4t_release

#: A file no user may open for writing, root included (a read-only sysfs attribute): root
#: opens any serial device whatever its mode, so as root this stands for one it may not open.
READ_ONLY_ATTRIBUTE = Path("/sys/devices/system/cpu/online")


def _doctor(tmp: Path, config: str, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    (tmp / "mission.toml").write_text(config)
    return subprocess.run([sys.executable, "-m", "onboard", "doctor", "--config", str(tmp / "mission.toml"),
                           "--out", str(tmp / "out"), *args], capture_output=True, text=True,
                          timeout=120, env={**os.environ, **(env or {})})


def _problems(stdout: str) -> set[str]:
    return {ln for ln in stdout.splitlines() if ln.startswith(("warn", "FAIL"))}


@pytest.fixture
def sound(tmp_path: Path) -> tuple[Path, str]:
    """A configuration that can fly: keys provisioned, a port this user opens, a cache root."""
    provision(tmp_path / "k.key", tmp_path / "c.json", os.urandom(32))
    port = tmp_path / "ttyFAKE"
    port.write_bytes(b"")
    return tmp_path, (f'[engine]\ntrt_cache_dir = "{tmp_path / "cache"}"\n[link]\nport = "{port}"\n'
                      f'key_file = "{tmp_path / "k.key"}"\ncounter_file = "{tmp_path / "c.json"}"\n')


def test_a_sound_configuration_can_fly(sound) -> None:
    tmp, config = sound
    done = _doctor(tmp, config)
    assert done.returncode == 0, done.stdout + done.stderr
    assert not [ln for ln in done.stdout.splitlines() if ln.startswith("FAIL")]
    assert done.stdout.splitlines()[-1].startswith("ready to fly")
    for name in ("platform", "gpu", "tensorrt", "will run", "models", "plan cache", "memory",
                 "storage", "clock", "serial", "keys"):
        assert any(ln[6:].startswith(name) for ln in done.stdout.splitlines()), name
    report = json.loads(_doctor(tmp, config, "--json", "-").stdout)
    assert report["can_fly"] and {c["name"] for c in report["checks"]} >= {"storage", "serial", "keys"}


def _stale_cache(tmp: Path) -> None:
    entry = tmp / "cache" / "tensorrt" / "aaaaaaaaaaaaaaaa.trt8.6.2.sm87.fp32.Orin"
    entry.mkdir(parents=True)
    (entry / "key.json").write_text(json.dumps({
        "format": "onboard-plan-cache", "schema_version": 1, "model_sha256": "a" * 64,
        "tensorrt_version": "8.6.2", "compute_capability": "8.7", "precision": "fp32",
        "device_name": "Orin", "plan_sha256": None}))


def _no_onnxruntime(tmp: Path) -> dict:
    site = tmp / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text("import sys\nsys.modules['onnxruntime'] = None\n")
    return {"PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}


FAULTS: dict[str, tuple[Callable[[Path, str], str], Callable[[Path], dict] | None, str, str, int]] = {
    # name: (config edit, environment, check named, words in the line, exit status)
    "missing key file": (lambda t, c: c.replace(str(t / "k.key"), str(t / "gone.key")), None,
                         "keys", "No such file", 1),
    "unreadable serial device": (lambda t, c: c.replace(str(t / "ttyFAKE"), str(READ_ONLY_ATTRIBUTE)
                                                        if os.geteuid() == 0 else str(t / "ttyFAKE")),
                                 None, "serial", "cannot be opened", 1),
    "storage over budget": (lambda t, c: "[run]\ndisk_floor_mb = 1e8\n" + c, None, "storage",
                            "below the floor", 1),
    "stale plan cache": (lambda t, c: (_stale_cache(t), c)[1], None, "plan cache",
                         "built with TensorRT 8.6.2", 0),
    "engine asked for cannot run": (lambda t, c: c.replace("[engine]\n", '[engine]\nengine = "tensorrt"\n'),
                                    None, "will run", "cannot run here", 1),
    "no engine at all": (lambda t, c: c, _no_onnxruntime, "will run", "the classical stages run", 0),
}


@pytest.mark.parametrize("fault", list(FAULTS))
def test_each_fault_is_one_line_with_what_to_do_and_the_exit_status(sound, fault: str) -> None:
    tmp, config = sound
    baseline = _problems(_doctor(tmp, config).stdout)
    edit, environment, check, words, status = FAULTS[fault]
    if fault == "unreadable serial device":
        if os.geteuid() == 0 and not READ_ONLY_ATTRIBUTE.exists():
            pytest.skip(f"as root this needs {READ_ONLY_ATTRIBUTE}")
        if os.geteuid() != 0:
            (tmp / "ttyFAKE").chmod(0)
    done = _doctor(tmp, edit(tmp, config), env=environment(tmp) if environment else None)
    new = _problems(done.stdout) - baseline
    assert len(new) == 1, (fault, new, done.stdout, done.stderr)
    (line,) = new
    assert line[6:].startswith(check) and words in line and " -> " in line, line
    assert done.returncode == status, done.stdout + done.stderr
    assert ("cannot fly" in done.stdout.splitlines()[-1]) == (status == 1)


def test_the_jetpack_release_is_read_from_l4t() -> None:
    assert l4t_release("# R36 (release), REVISION: 4.3, GCID: 38968081, BOARD: generic, EABI: aarch64") == "36.4.3"
    assert l4t_release("# R36 (release), REVISION: 4.0, GCID: 1, BOARD: generic") == "36.4.0"
    assert l4t_release("garbage") is None
