"""``onboard info``: what this machine would run, and why.

Versions of Python and the inference libraries, each engine kind and why it is or is not
available here, the model bundle in use (manifest and file checksums, files that fail
verification and why) with the engine each model would run on and every engine skipped on
the way, the calibration file with its checksum, the thread pools (:mod:`onboard.threads`),
and memory and temperatures. ``--json``
prints the same as one JSON object (:func:`collect`).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import platform
import sys
from pathlib import Path
from typing import Any

import click

from onboard import __version__, sysinfo, threads
from onboard.engines.select import EngineOptions, probe_engines, select_engine
from onboard.formats import bundle as model_bundle

# what `onboard info` reports a version of: name -> (importable module, distributions)
_PACKAGES = {
    "numpy": ("numpy", ("numpy",)),
    "onnxruntime": ("onnxruntime", ("onnxruntime", "onnxruntime-gpu")),
    "tensorrt": ("tensorrt", ("tensorrt", "tensorrt-cu12", "tensorrt-cu13")),
    "cuda-python": ("cuda", ("cuda-python", "cuda-bindings")),
    "jetson-stats": ("jtop", ("jetson-stats",)),
}


def _version(module: str, distributions: tuple[str, ...]) -> str | None:
    """Installed version, from package metadata, else the module's ``__version__`` (JetPack
    installs tensorrt as a system package without pip metadata); None when absent."""
    for dist in distributions:
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    if importlib.util.find_spec(module) is None:
        return None
    try:
        return str(getattr(importlib.import_module(module), "__version__", "unknown"))
    except ImportError as exc:
        return f"present but fails to import: {exc}"


def versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"onboard": __version__, "python": platform.python_version()}
    out.update({name: _version(*spec) for name, spec in _PACKAGES.items()})
    return out


def _bundle_report(b: model_bundle.Bundle, options: EngineOptions) -> dict[str, Any]:
    report = b.as_dict()
    for name in b.manifest.models:
        with select_engine(b, name, options) as sel:
            report["models"][name]["selection"] = sel.as_dict()
            report["models"][name]["would_use"] = (
                f"{sel.engine.label} ({sel.artifact.file})" if sel.engine and sel.artifact
                else "classical stages")
    return report


def _calibration_report(path: Path) -> dict[str, Any]:
    from onboard.formats import calfile  # numpy-only, but only needed when a file is given

    report: dict[str, Any] = {"path": str(path)}
    if path.is_file():
        report.update(sha256=calfile.file_sha256(path), bytes=path.stat().st_size)
    cal = calfile.read(path)
    wl = cal.wavelengths_nm
    report.update(kind=cal.kind, instrument=cal.instrument, bands=int(wl.size),
                  wavelengths_nm=[float(wl.min()), float(wl.max())],
                  created_utc=cal.created_utc, software_version=cal.software_version,
                  flight_problem=cal.flight_problem(), version=cal.format_version,
                  radiance_gain_uncertainty_max=(None if cal.radiance_gain_uncertainty is None
                                                 else float(cal.radiance_gain_uncertainty.max())))
    return report


def collect(bundle_dir: Path | None = None, calibration: Path | None = None,
            options: EngineOptions | None = None) -> dict[str, Any]:
    """Everything ``onboard info`` shows, as a JSON-ready dict. With no ``bundle_dir`` the
    bundle shipped in ``onboard/models`` is used when there is one. A bundle or calibration
    file that cannot be used is reported under ``bundle_error``/``calibration_error``."""
    options = options or EngineOptions()
    info: dict[str, Any] = {
        "platform": {"system": platform.system(), "machine": platform.machine(),
                     "python": sys.version.split()[0]},
        "versions": versions(),
        "engines": [{"name": p.name, "available": p.available, "detail": p.detail}
                    for p in probe_engines(options.device)],
        "bundle": None, "bundle_error": None, "calibration": None, "calibration_error": None,
    }
    found, info["bundle_error"] = model_bundle.find_bundle(bundle_dir)
    if found is not None:
        info["bundle"] = _bundle_report(found, options)
    if calibration is not None:
        from onboard.formats.calfile import CalibrationFileError

        try:
            info["calibration"] = _calibration_report(Path(calibration))
        except CalibrationFileError as exc:
            info["calibration_error"] = str(exc)
    info["threads"] = threads.report()
    info["system"] = sysinfo.snapshot()
    return info


def _short(sha: str | None) -> str:
    return f"{sha[:16]}…" if sha else "-"


def render(info: dict[str, Any]) -> str:
    """The human form of :func:`collect`'s dict."""
    v, p = info["versions"], info["platform"]
    lines = [f"onboard {v['onboard']} on {p['system']} {p['machine']}, Python {v['python']}",
             "versions: " + ", ".join(f"{k} {v[k] or '-'}" for k in _PACKAGES)]
    lines.append("engines on this machine:")
    for e in info["engines"]:
        lines.append(f"  {e['name']:<16} {'yes' if e['available'] else 'no ':<4} {e['detail']}")
    b = info["bundle"]
    if b is None:
        lines += ["model bundle:", f"  {info['bundle_error']}"]
    else:
        lines.append(f"model bundle: {b['root']} (schema {b['schema_version']}, made "
                     f"{b['created_utc']} by {b['producer']}; manifest sha256 "
                     f"{_short(b['manifest_sha256'])})")
        # why an engine is missing from this machine is said once, above, not once per model
        absent = {e["detail"] for e in info["engines"] if not e["available"]}
        for name, m in b["models"].items():
            lines.append(f"  {name} ({m['task']}): would run on {m['would_use']}")
            for f in m["files"]:
                state = "ok" if f["ok"] else f"UNUSABLE: {f['problem']}"
                lines.append(f"    {f['file']:<28} {f['format']:<13} {f['precision']:<5} "
                             f"sha256 {_short(f['sha256'])} {state}")
            for s in m["selection"]["skipped"]:
                where = f" ({s['file']})" if s["file"] else ""
                reason = "not available on this machine (above)" if s["reason"] in absent else s["reason"]
                lines.append(f"    skipped {s['engine']}{where}: {reason}")
    c = info["calibration"]
    if c is not None:
        lines.append(f"calibration: {c['path']} sha256 {_short(c['sha256'])} ({c['kind']}, "
                     f"{c['instrument']}, {c['bands']} bands {c['wavelengths_nm'][0]:.0f}-"
                     f"{c['wavelengths_nm'][1]:.0f} nm, software {c['software_version']})")
        u = c["radiance_gain_uncertainty_max"]
        lines.append(f"  version {c['version']}: " + ("no absolute radiance gain (products: lab reflectance only)"
                     if u is None else f"absolute radiance gain, uncertainty up to {100 * u:.1f} % (k = 1)"))
        if c["flight_problem"]:
            lines.append(f"  CANNOT FLY: {c['flight_problem']}")
    elif info["calibration_error"]:
        lines += ["calibration:", f"  {info['calibration_error']}"]
    else:
        lines.append("calibration: none given (--calibration FILE); the simulated instrument's "
                     "is used when no camera is configured")
    th = info["threads"]
    pools = ", ".join(f"{p['library']} {p['version'] or ''} ({p['api']}) {p['threads']}"
                      for p in th["pools"]) or "none loaded"
    ort = th["onnxruntime"]
    lines.append(f"thread pools ([run] threads = {th['threads']}): {pools}; ONNX Runtime sessions "
                 f"intra-op {ort['intra_op_threads'] or 'per core'}, inter-op "
                 f"{ort['inter_op_threads'] or 'per core'}, spinning {'on' if ort['spinning'] else 'off'}")
    s = info["system"]
    t = s["temperatures"]
    temps = ", ".join(f"{k} {t[k + '_c']:.1f} C" for k in ("cpu", "gpu") if t[k + "_c"] is not None)
    lines.append(f"system: peak RSS {s['peak_rss_bytes'] / 2**20:.0f} MiB; temperatures: "
                 f"{temps or 'none'}" + (f" ({'; '.join(t['reasons'])})" if t["reasons"] else ""))
    return "\n".join(lines)


@click.command("info")
@click.option("--bundle", "bundle_dir", type=click.Path(path_type=Path),
              help="Model bundle folder (default: the one shipped in onboard/models).")
@click.option("--calibration", type=click.Path(path_type=Path),
              help="Calibration file to check and describe.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead.")
@click.pass_context
def info(ctx: click.Context, bundle_dir: Path | None, calibration: Path | None,
         as_json: bool) -> None:
    """Engines, versions, calibration and models in use, and why others are not.

    Exits with status 1 when a bundle or calibration file given on the command line cannot
    be used at all, or the calibration cannot fly (the report still says why)."""
    report = collect(bundle_dir, calibration)
    click.echo(json.dumps(report, indent=2) if as_json else render(report))
    refused = (bundle_dir is not None and report["bundle"] is None) or \
        (calibration is not None and (report["calibration"] is None
                                      or report["calibration"]["flight_problem"] is not None))
    if refused:
        ctx.exit(1)
