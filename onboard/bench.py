"""``onboard bench``: per-stage latency, throughput, memory and downlink cost of the pipeline
on this machine.

For each engine configuration that loads here (the classical stages always; learned models
through each available engine and precision when a model bundle is present), and each product
coding asked for, it processes the same simulated frames and reports median and
95th-percentile latency per stage and per frame, frames per second, which stages ran an
inference engine, the time spent inside the engines (the model alone: a learned denoiser's
eigen-decomposition around it is numpy work, not inference) and the share of frame time
spent outside them, start-up time to the first frame, and peak resident memory. Beside that, the link view: each product's bytes, its coding,
its bytes on the link (CFDP, Space Packet and link framing, firmware_bridge's estimate), and
the frames per hour that fit at 9.6, 115.2 and 1000 kbit/s with every product and with each
product alone. It prints tables and can write JSON. Simulating the instrument is not part of
any stage's time. ``--load N`` runs it beside N busy processes, to see the tails a shared
flight computer gives. Beside each stage's time it prints the stage's floor on this machine
(:mod:`onboard.floor`: bytes and FLOPs at the copy bandwidth and matmul rate measured when
the bench starts, before any load) beside the stage's CPU time (its thread's: on a shared
machine the wall time is mostly other processes' turns) and the ratio; per frame the CPU time
of the process against the sum of the floors.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import click
import numpy as np
from rich.console import Console
from rich.table import Table

from firmware_bridge.cfdp.sender import transfer_wire_bytes
from firmware_bridge.link import ByteRate
from onboard import sysinfo
from onboard.config import Config, ConfigError, override
from onboard.config import load as load_config
from onboard.engines.base import Engine
from onboard.floor import Network, Rates, measure_rates, stage_work
from onboard.formats.bundle import MANIFEST_NAME, Manifest
from onboard.formats.products import Product
from onboard.runtime.pipeline import Pipeline
from onboard.runtime.sensors import SessionError
from onboard.runtime.session import build_session
from onboard.stages.learned import LearnedDenoiser, LearnedResidue

#: the reference downlink rates in kbit/s: a UHF radio, a 115200 baud UART, an S-band link
RATES_KBIT = (9.6, 115.2, 1000.0)
#: ``--compare-codings``: the cube and residue codings of each side ([products] in the config)
CODINGS = ("npz", "ccsds123")


def engine_stages(pipeline: Pipeline) -> dict[str, Engine]:
    """Stage -> engine for the stages whose function runs an inference engine now (a learned
    stage that fell back to the classical one is not among them)."""
    out = {}
    for stage in ("denoise", "classify"):
        fn = getattr(pipeline, stage)
        if isinstance(fn, LearnedDenoiser | LearnedResidue):
            out[stage] = fn.engine
    return out


def link_view(products: list[Product]) -> dict:
    """One frame's products on the downlink: per kind its coding, file bytes and bytes on the
    link; the frames per hour that fit at each of RATES_KBIT with every product, and with each
    product alone."""
    kinds = {}
    for p in products:
        size = len(p.to_bytes())
        kinds[p.kind.value] = {"coding": p.meta.get("coding", p.encoding), "product_bytes": size,
                               "wire_bytes": transfer_wire_bytes(size, p.name)}
    total = sum(k["wire_bytes"] for k in kinds.values())
    for k in kinds.values():
        k["frames_per_hour"] = {f"{r:g}": ByteRate.bits(r * 1000).per_hour(k["wire_bytes"]) for r in RATES_KBIT}
    return {"products": kinds, "wire_bytes": total,
            "frames_per_hour": {f"{r:g}": ByteRate.bits(r * 1000).per_hour(total) for r in RATES_KBIT}}


def parameters(engine: Engine) -> int:
    """The parameter count the bundle's manifest states for the model ``engine`` runs."""
    manifest = Manifest.from_dict(json.loads((engine.path.parent / MANIFEST_NAME).read_text()))
    for spec in manifest.models.values():
        if any(a.file == engine.path.name for a in spec.artifacts):
            return int(spec.metadata.get("parameters", 0))
    return 0


def record_networks(engines: dict[str, Engine]) -> dict[str, list[Network]]:
    """Per stage, the networks its engine runs from now on (parameters, input shape): each
    engine's ``run`` is wrapped to note them; the caller clears the lists per frame."""
    seen: dict[str, list[Network]] = {s: [] for s in engines}
    for stage, engine in engines.items():
        count, run = parameters(engine), engine.run

        def noting(inputs: dict, _stage: str = stage, _count: int = count, _run=run) -> dict:
            seen[_stage].append(Network(_count, tuple(next(iter(inputs.values())).shape)))
            return _run(inputs)

        setattr(engine, "run", noting)  # noqa: B010  (an instance's method, for this bench only)
    return seen


def bench_configuration(config: Config, frames: int, warmup: int, rates: Rates) -> dict:
    """Time one configuration: start-up, then ``frames`` frames after ``warmup`` more; each
    stage's floor at ``rates``."""
    t0 = time.perf_counter()
    session = build_session(config)
    source = iter(session.frames(frames + warmup))
    frame, _ = next(source)
    session.pipeline.process(frame)
    startup = time.perf_counter() - t0
    pending = [f for f, _ in source]
    for f in pending[: max(warmup - 1, 0)]:
        session.pipeline.process(f)
    engines = engine_stages(session.pipeline)
    networks = record_networks(engines)
    layout = session.pipeline.calibration.layout
    thumbnails = len(layout) if layout is not None and session.sensor == "imspoc" else None
    per_stage: dict[str, list[float]] = {}
    per_stage_cpu: dict[str, list[float]] = {}
    floors: dict[str, list[float]] = {}
    in_engine: dict[str, list[float]] = {s: [] for s in engines}
    totals, inference, cpu = [], [], []
    for f in pending[max(warmup - 1, 0):]:
        before = {s: e.infer_seconds for s, e in engines.items()}
        for seen in networks.values():
            seen.clear()
        c0 = time.process_time()
        r = session.pipeline.process(f)
        cpu.append(time.process_time() - c0)
        for s, v in r.seconds.items():
            per_stage.setdefault(s, []).append(v)
            per_stage_cpu.setdefault(s, []).append(r.cpu_seconds[s])
        detector = sum(x.pixels.size for x in f) if isinstance(f, list) else f.pixels.size
        for s, w in stage_work(r, detector, thumbnails, networks).items():
            floors.setdefault(s, []).append(w.floor_s(rates))
        for s, e in engines.items():
            in_engine[s].append(e.infer_seconds - before[s])
        totals.append(sum(r.seconds.values()))
        inference.append(sum(in_engine[s][-1] for s in engines))
    stages = {s: {"median_ms": 1000 * float(np.median(v)), "p95_ms": 1000 * float(np.percentile(v, 95)),
                  "cpu_median_ms": 1000 * float(np.median(per_stage_cpu[s])),
                  "floor_ms": 1000 * float(np.median(floors[s])) if s in floors else None,
                  "engine": engines[s].label if s in engines else None,
                  "in_engine_median_ms": 1000 * float(np.median(in_engine[s])) if s in engines else 0.0}
              for s, v in per_stage.items()}
    median_total = float(np.median(totals))
    floor_frame = 1000 * sum(float(np.median(v)) for v in floors.values())
    share = float(np.median([1 - i / t for i, t in zip(inference, totals, strict=True)]))
    return {
        "engine": config.engine.engine,
        "engine_description": session.engine_description,
        "coding": {"cube": config.products.cube_coding, "residue": config.products.residue_coding},
        "sensor": session.sensor,
        "frames": len(totals),
        "stages": stages,
        "median_frame_ms": 1000 * median_total,
        "p95_frame_ms": 1000 * float(np.percentile(totals, 95)),
        "floor_frame_ms": floor_frame,
        "median_frame_cpu_ms": 1000 * float(np.median(cpu)),
        "cpu_over_floor": 1000 * float(np.median(cpu)) / floor_frame if floor_frame else None,
        "frames_per_s": 1.0 / median_total if median_total > 0 else float("inf"),
        "inference_ms": 1000 * float(np.median(inference)),
        "non_inference_share": share,
        "startup_to_first_frame_s": startup,
        "frame_shape": list(session.frame_shape),
        "cube_shape": session.cube_shape,
        "link": link_view(r.products),
    }


@contextlib.contextmanager
def background_load(n: int) -> Iterator[None]:
    """``n`` processes spinning on a core each for the duration (ended however the block ends)."""
    procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]
    try:
        yield
    finally:
        for p in procs:
            p.kill()
        for p in procs:
            p.wait()


def _ratio(ms: float, floor_ms: float | None) -> tuple[str, str]:
    return ("", "") if not floor_ms else (f"{floor_ms:.2f}", f"{ms / floor_ms:.1f}x")


def _print(results: list[dict], sensor: str, frames: int, load: int, rates: Rates) -> None:
    console = Console(width=max(Console().width, 132))  # a pipe gets 80 columns: too few for the link table
    under = f", beside {load} busy process{'es' if load > 1 else ''}" if load else ""
    stages = Table(title=f"onboard bench ({sensor}, {frames} frames each{under})")
    stages.caption = f"floor: bytes and FLOPs at {rates.describe()} (onboard/floor.py)"
    for col in ("engine / coding", "stage", "ran on", "median ms", "p95 ms", "in the engine ms",
                "CPU ms", "floor ms", "CPU / floor"):
        stages.add_column(col, justify="left" if col in ("engine / coding", "stage", "ran on") else "right")
    summary = Table(title="per frame")
    for col in ("engine / coding", "frames/s", "inference ms", "non-inference share", "start-up ms",
                "CPU ms", "floor ms", "CPU / floor"):
        summary.add_column(col, justify="left" if col == "engine / coding" else "right")
    link = Table(title="link: one frame's products, CFDP + Space Packet + link framing, frames/h at kbit/s")
    for col in ("engine / coding", "product", "coding", "bytes", "on the link",
                *(f"frames/h {r:g}k" for r in RATES_KBIT)):
        link.add_column(col, justify="left" if col in ("engine / coding", "product", "coding") else "right")
    for r in results:
        if "error" in r:
            stages.add_row(r["engine"], "unavailable", r["error"], "", "", "", "", "", "")
            continue
        name = f"{r['engine']} / {r['coding']['cube']}"
        for s, v in r["stages"].items():
            stages.add_row(name, s, v["engine"] or "numpy (no engine)", f"{v['median_ms']:.1f}", f"{v['p95_ms']:.1f}",
                           f"{v['in_engine_median_ms']:.1f}" if v["engine"] else "", f"{v['cpu_median_ms']:.1f}",
                           *_ratio(v["cpu_median_ms"], v["floor_ms"]))
        stages.add_row(name, "frame total", "", f"{r['median_frame_ms']:.1f}", f"{r['p95_frame_ms']:.1f}",
                       f"{r['inference_ms']:.1f}", f"{r['median_frame_cpu_ms']:.1f}",
                       *_ratio(r["median_frame_cpu_ms"], r["floor_frame_ms"]))
        summary.add_row(name, f"{r['frames_per_s']:.2f}", f"{r['inference_ms']:.1f}",
                        f"{100 * r['non_inference_share']:.0f} %", f"{1000 * r['startup_to_first_frame_s']:.0f}",
                        f"{r['median_frame_cpu_ms']:.1f}", *_ratio(r["median_frame_cpu_ms"], r["floor_frame_ms"]))
        for kind, p in r["link"]["products"].items():
            link.add_row(name, f"{kind} alone", p["coding"], str(p["product_bytes"]), str(p["wire_bytes"]),
                         *(f"{p['frames_per_hour'][f'{k:g}']:.0f}" for k in RATES_KBIT))
        link.add_row(name, "all products", "", str(sum(p["product_bytes"] for p in r["link"]["products"].values())),
                     str(r["link"]["wire_bytes"]), *(f"{r['link']['frames_per_hour'][f'{k:g}']:.0f}" for k in RATES_KBIT))
    console.print(stages)
    console.print(summary)
    console.print(link)


@click.command()
@click.option("--sensor", type=click.Choice(["imspoc", "pushbroom"]), default="imspoc")
@click.option("--frames", type=click.IntRange(min=2), default=10, help="Timed frames per configuration.")
@click.option("--warmup", type=click.IntRange(min=1), default=2)
@click.option("--config", "config_path", type=click.Path(path_type=Path))
@click.option("--engines", default="classical,auto", help="Comma-separated engine settings to compare.")
@click.option("--compare-codings", is_flag=True,
              help=f"Run each engine once per cube and residue coding ({', '.join(CODINGS)}) "
                   "instead of the config's.")
@click.option("--load", type=click.IntRange(min=0), default=0,
              help="Run beside this many busy processes (one core each).")
@click.option("--json", "json_path", type=click.Path(path_type=Path), help="Write the results as JSON.")
def bench(sensor: str, frames: int, warmup: int, config_path: Path | None, engines: str,
          compare_codings: bool, load: int, json_path: Path | None) -> None:
    """Per-stage latency, throughput, memory and downlink cost of the pipeline on this machine."""
    results = []
    rates = measure_rates()  # before the load: the machine's rates, not what is left of them
    with background_load(load):
        for engine in [e.strip() for e in engines.split(",") if e.strip()]:
            for coding in CODINGS if compare_codings else (None,):
                try:
                    config = load_config(config_path)
                    override(config, "run", "sensor", sensor)
                    override(config, "engine", "engine", engine)
                    if coding is not None:
                        override(config, "products", "cube_coding", coding)
                        override(config, "products", "residue_coding", coding)
                    results.append(bench_configuration(config, frames, warmup, rates))
                except (ConfigError, SessionError) as exc:
                    results.append({"engine": engine, "error": str(exc)})
    peak = sysinfo.peak_rss_bytes()
    _print(results, sensor, frames, load, rates)
    click.echo(f"peak RSS: {peak / 2**20:.0f} MiB")
    if json_path is not None:
        json_path.write_text(json.dumps({"sensor": sensor, "background_load": load, "rates_kbit": list(RATES_KBIT),
                                         "machine_rates": {"copy_bytes_per_s": rates.copy_bytes_per_s,
                                                           "matmul_flops_per_s": rates.matmul_flops_per_s},
                                         "results": results, "peak_rss_bytes": peak}, indent=2))
