"""``onboard bench``: per-stage latency, throughput and memory of the pipeline on this machine.

For each engine configuration that loads here (the classical stages always; learned models
through each available engine and precision when a model bundle is present) it processes
the same simulated frames and reports median and 95th-percentile latency per stage, frames
per second, the share of frame time spent outside inference, start-up time to the first
frame, and peak resident memory. It prints a table and can write JSON. Simulating the
instrument is not part of any stage's time.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import click
import numpy as np
from rich.console import Console
from rich.table import Table

from onboard import sysinfo
from onboard.config import Config, ConfigError, override
from onboard.config import load as load_config
from onboard.runtime.sensors import SessionError
from onboard.runtime.session import build_session

INFERENCE_STAGES = ("denoise", "classify")


def bench_configuration(config: Config, frames: int, warmup: int) -> dict:
    """Time one configuration: start-up, then ``frames`` frames after ``warmup`` more."""
    t0 = time.perf_counter()
    session = build_session(config)
    source = iter(session.frames(frames + warmup))
    frame, _ = next(source)
    session.pipeline.process(frame)
    startup = time.perf_counter() - t0
    pending = [f for f, _ in source]
    for f in pending[: max(warmup - 1, 0)]:
        session.pipeline.process(f)
    per_stage: dict[str, list[float]] = {}
    totals = []
    for f in pending[max(warmup - 1, 0):]:
        r = session.pipeline.process(f)
        for s, v in r.seconds.items():
            per_stage.setdefault(s, []).append(v)
        totals.append(sum(r.seconds.values()))
    stages = {s: {"median_ms": 1000 * float(np.median(v)), "p95_ms": 1000 * float(np.percentile(v, 95))}
              for s, v in per_stage.items()}
    median_total = float(np.median(totals))
    inference = sum(float(np.median(per_stage[s])) for s in INFERENCE_STAGES if s in per_stage)
    return {
        "engine": config.engine.engine,
        "engine_description": session.engine_description,
        "sensor": session.sensor,
        "frames": len(totals),
        "stages": stages,
        "median_frame_ms": 1000 * median_total,
        "frames_per_s": 1.0 / median_total if median_total > 0 else float("inf"),
        "non_inference_share": 1.0 - inference / median_total if median_total > 0 else 0.0,
        "startup_to_first_frame_s": startup,
        "frame_shape": list(session.frame_shape),
        "cube_shape": session.cube_shape,
    }


@click.command()
@click.option("--sensor", type=click.Choice(["imspoc", "pushbroom"]), default="imspoc")
@click.option("--frames", type=click.IntRange(min=2), default=10, help="Timed frames per configuration.")
@click.option("--warmup", type=click.IntRange(min=1), default=2)
@click.option("--config", "config_path", type=click.Path(path_type=Path))
@click.option("--engines", default="classical,auto", help="Comma-separated engine settings to compare.")
@click.option("--json", "json_path", type=click.Path(path_type=Path), help="Write the results as JSON.")
def bench(sensor: str, frames: int, warmup: int, config_path: Path | None, engines: str,
          json_path: Path | None) -> None:
    """Per-stage latency, throughput and memory of the pipeline on this machine."""
    results = []
    for engine in [e.strip() for e in engines.split(",") if e.strip()]:
        try:
            config = load_config(config_path)
            override(config, "run", "sensor", sensor)
            override(config, "engine", "engine", engine)
            results.append(bench_configuration(config, frames, warmup))
        except (ConfigError, SessionError) as exc:
            results.append({"engine": engine, "error": str(exc)})
    peak = sysinfo.peak_rss_bytes()
    table = Table(title=f"onboard bench ({sensor}, {frames} frames each)")
    for col in ("engine", "stage", "median ms", "p95 ms"):
        table.add_column(col, justify="left" if col in ("engine", "stage") else "right")
    for r in results:
        if "error" in r:
            table.add_row(r["engine"], "unavailable", r["error"], "")
            continue
        for s, v in r["stages"].items():
            table.add_row(r["engine"], s, f"{v['median_ms']:.1f}", f"{v['p95_ms']:.1f}")
        table.add_row(r["engine"], "frame total", f"{r['median_frame_ms']:.1f}",
                      f"{r['frames_per_s']:.2f} frames/s")
        table.add_row(r["engine"], "non-inference share", f"{100 * r['non_inference_share']:.0f} %", "")
        table.add_row(r["engine"], "start-up to first frame", f"{1000 * r['startup_to_first_frame_s']:.0f}", "")
    Console().print(table)
    click.echo(f"peak RSS: {peak / 2**20:.0f} MiB")
    if json_path is not None:
        json_path.write_text(json.dumps({"results": results, "peak_rss_bytes": peak}, indent=2))
