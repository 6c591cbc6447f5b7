"""The flight runtime stays lean: no torch, scipy, matplotlib or ground package is imported,
by `import onboard` or by a whole `onboard run` (checked in a fresh interpreter)."""

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "scipy", "matplotlib", "export", "calibration", "hil", "ground", "prosail", "numba")


def _modules_after(code: str, tmp_path: Path) -> set[str]:
    probe = code + "\nimport sys, json\nprint('MODULES=' + json.dumps(sorted(sys.modules)))\n"
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=tmp_path,
                          env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("MODULES=")][-1]
    return set(json.loads(line[len("MODULES="):]))


def _heavy(mods: set[str]) -> list[str]:
    return sorted(m for m in mods if m.split(".")[0] in HEAVY)


def test_import_onboard_is_lean(tmp_path) -> None:
    mods = _modules_after("import onboard, onboard.cli, onboard.runtime.pipeline, onboard.runtime.session", tmp_path)
    assert _heavy(mods) == []


@pytest.mark.slow
@pytest.mark.parametrize("scene", [False, True], ids=["farmland", "real-scene"])
def test_a_whole_run_never_imports_torch(tmp_path, scene) -> None:
    args = ["run", "--frames", "2", "--quiet", "--out", str(tmp_path / "o")]
    if scene:  # a scene file: numpy alone reads it
        import numpy as np

        from onboard.sources.scene import write_scene
        wl = np.arange(400.0, 1101.0, 10.0)
        rng = np.random.default_rng(0)
        args += ["--scene", str(write_scene(tmp_path / "s.npz", rng.uniform(0.1, 0.5, (64, 64, wl.size)), wl))]
    code = (
        "from onboard.cli import cli\n"
        "try:\n"
        f"    cli({args!r}, standalone_mode=False)\n"
        "except SystemExit as e:\n"
        "    assert not e.code, e.code\n"
    )
    mods = _modules_after(code, tmp_path)
    assert "onboard.runtime.run" in mods  # the run really happened in this interpreter
    assert _heavy(mods) == []


def _top_level_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in tree.body:  # top level only: ground subcommands import lazily inside functions
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_no_heavy_top_level_import_in_the_flight_packages() -> None:
    for pkg, forbidden in (("onboard", HEAVY), ("firmware_bridge", (*HEAVY, "numpy", "onboard"))):
        for path in (ROOT / pkg).rglob("*.py"):
            bad = _top_level_imports(path) & set(forbidden)
            assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)} at top level"
