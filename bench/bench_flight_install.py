"""The flight install as a bare JetPack gets it (deploy/README.md): a fresh virtual environment,
``pip install`` of this tree with no extra, then ``onboard run`` and ``onboard doctor`` in it.

Prints a table (and ``--json``): the interpreter, the environment's size and its largest
packages, whether torch or scipy got installed, and the modules a whole ``onboard run`` imported
(none of torch, scipy, matplotlib or a ground package may appear). Needs the package index
(pip); the tree is exported with ``git archive`` so the build leaves nothing in the checkout.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import click

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "scipy", "matplotlib", "export", "calibration", "hil", "ground", "numba")
PROBE = """
import json, sys
from onboard.cli import cli
try:
    cli(["run", "--frames", "2", "--quiet", "--out", sys.argv[1]], standalone_mode=False)
except SystemExit as e:
    assert not e.code, e.code
print("MODULES=" + json.dumps(sorted(sys.modules)))
"""


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def _site_packages(venv: Path) -> Path:
    return next(venv.glob("lib/python3*/site-packages"))


@click.command()
@click.option("--python", "python", default=None,
              help="Interpreter of the venv (default: python3.10, JetPack 6's, where found).")
@click.option("--json", "json_path", type=click.Path(path_type=Path), help="Write the results as JSON.")
def main(python: str | None, json_path: Path | None) -> None:
    python = python or shutil.which("python3.10") or sys.executable
    with tempfile.TemporaryDirectory(prefix="onboard-flight-") as tmp:
        work = Path(tmp)
        src = work / "src"
        src.mkdir()
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", "HEAD"], check=True,
                                 capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(src)], input=archive, check=True)
        venv = work / "venv"
        t0 = time.perf_counter()
        subprocess.run([python, "-m", "venv", str(venv)], check=True)
        pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q"]
        subprocess.run([*pip, "--upgrade", "pip"], check=True)
        subprocess.run([*pip, str(src)], check=True)
        install_s = time.perf_counter() - t0
        site = _site_packages(venv)
        sizes = sorted(((p.name, _size(p)) for p in site.iterdir() if p.is_dir()
                        and not p.name.endswith((".dist-info", "__pycache__"))), key=lambda x: -x[1])
        version = subprocess.run([str(venv / "bin" / "python"), "--version"], capture_output=True,
                                 text=True, check=True).stdout.strip()
        installed = {name for name, _ in sizes}
        run = subprocess.run([str(venv / "bin" / "python"), "-c", PROBE, str(work / "out")],
                             capture_output=True, text=True, cwd=work, timeout=600,
                             env={"PATH": "/usr/bin:/bin", "HOME": str(work), "XDG_CACHE_HOME": str(work / "cache")})
        line = [ln for ln in run.stdout.splitlines() if ln.startswith("MODULES=")]
        modules = json.loads(line[-1][len("MODULES="):]) if line else []
        doctor = subprocess.run([str(venv / "bin" / "onboard"), "doctor", "--json", "-"], capture_output=True,
                                text=True, cwd=work, timeout=120)
        result = {
            "python": version, "install_s": round(install_s, 1),
            "venv_mb": round(_size(venv) / 1e6, 1), "site_packages_mb": round(_size(site) / 1e6, 1),
            "largest_mb": {n: round(s / 1e6, 1) for n, s in sizes[:8]},
            "onboard_mb": round(dict(sizes).get("onboard", 0) / 1e6, 2),
            "torch_or_scipy_installed": sorted(installed & {"torch", "scipy"}),
            "run_exit": run.returncode, "modules_imported": len(modules),
            "heavy_imported": sorted({m.split(".")[0] for m in modules} & set(HEAVY)),
            "doctor_exit": doctor.returncode,
        }
    click.echo(f"{'python':<28}{result['python']}")
    for key in ("install_s", "venv_mb", "site_packages_mb", "onboard_mb", "torch_or_scipy_installed",
                "run_exit", "modules_imported", "heavy_imported", "doctor_exit"):
        click.echo(f"{key:<28}{result[key]}")
    click.echo("largest packages (MB): " + ", ".join(f"{n} {s}" for n, s in result["largest_mb"].items()))
    if run.returncode:
        click.echo(run.stderr[-2000:], err=True)
    if json_path is not None:
        json_path.write_text(json.dumps(result, indent=2))
    ok = run.returncode == 0 and not result["heavy_imported"] and not result["torch_or_scipy_installed"]
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
