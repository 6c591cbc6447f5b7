"""CPU and wall time of a frame with the libraries' default thread pools against the pools the
runtime owns (``[run] threads``, onboard/threads.py).

    python bench/bench_threads.py [--sensor imspoc] [--frames 20] [--rounds 2] [--json out.json]

Each measurement is a fresh process (this file's ``--worker`` mode) with no BLAS or OpenMP
thread variable in its environment, so only ``[run] threads`` decides: 0 leaves every pool
to its library (a thread per core, ONNX Runtime's threads spinning after each call), 1 is
the runtime's default (one thread per pool, no spinning). It builds the session as a
library caller would (``build_session``), simulates the frames first (not timed), processes
``--warmup`` frames, then times ``--frames`` frames one by one: process CPU time (every
thread of the process, spinning included) and wall time. The two settings alternate over
``--rounds`` rounds so that both see the same background load; the table gives the median
over all frames of each setting, the 95th percentile of wall time, and the load average.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import click
import numpy as np

from onboard.threads import ENVIRONMENT

SETTINGS = {"library defaults": 0, "owned": 1}


def _worker(threads: int, sensor: str, engine: str, frames: int, warmup: int) -> dict:
    """One setting in this process: per-frame CPU and wall seconds."""
    from onboard.config import Config, override
    from onboard.runtime.session import build_session

    config = Config()
    override(config, "run", "sensor", sensor)
    override(config, "run", "threads", threads)
    override(config, "engine", "engine", engine)
    session = build_session(config)
    pending = [f for f, _ in session.frames(frames + warmup)]
    for f in pending[:warmup]:
        session.pipeline.process(f)
    cpu, wall = [], []
    for f in pending[warmup:]:
        c0, t0 = time.process_time(), time.perf_counter()
        session.pipeline.process(f)
        cpu.append(time.process_time() - c0)
        wall.append(time.perf_counter() - t0)
    return {"cpu_s": cpu, "wall_s": wall, "engine_description": session.engine_description}


def _run(threads: int, sensor: str, engine: str, frames: int, warmup: int) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ENVIRONMENT}
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", str(threads), "--sensor",
           sensor, "--engine", engine, "--frames", str(frames), "--warmup", str(warmup)]
    done = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True)
    return json.loads(done.stdout.splitlines()[-1])


@click.command(help=__doc__.splitlines()[0])
@click.option("--sensor", type=click.Choice(["imspoc", "pushbroom"]), default="imspoc",
              show_default=True)
@click.option("--engine", default="auto", show_default=True, help="[engine] engine")
@click.option("--frames", type=click.IntRange(min=2), default=20, show_default=True,
              help="timed frames per process")
@click.option("--warmup", type=click.IntRange(min=1), default=3, show_default=True)
@click.option("--rounds", type=click.IntRange(min=1), default=2, show_default=True,
              help="processes per setting, the settings alternating")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--worker", type=int, hidden=True)
def main(sensor: str, engine: str, frames: int, warmup: int, rounds: int,
         json_path: Path | None, worker: int | None) -> None:
    if worker is not None:
        print(json.dumps(_worker(worker, sensor, engine, frames, warmup)))
        return
    runs: dict[str, list[dict]] = {name: [] for name in SETTINGS}
    load = []
    for _ in range(rounds):
        for name, threads in SETTINGS.items():
            load.append(os.getloadavg()[0])
            runs[name].append(_run(threads, sensor, engine, frames, warmup))
    rows = {}
    for name, rs in runs.items():
        cpu = 1000 * np.concatenate([r["cpu_s"] for r in rs])
        wall = 1000 * np.concatenate([r["wall_s"] for r in rs])
        rows[name] = {"threads": SETTINGS[name], "frames": int(cpu.size),
                      "cpu_ms_median": float(np.median(cpu)), "cpu_ms_mean": float(cpu.mean()),
                      "wall_ms_median": float(np.median(wall)),
                      "wall_ms_p95": float(np.percentile(wall, 95)),
                      "engine_description": rs[0]["engine_description"]}
    print(f"{sensor} frame, engine {engine}, {rounds} x {frames} frames per setting, "
          f"{os.cpu_count()} CPUs, load average {min(load):.1f}-{max(load):.1f}")
    print(f"{'pools':<18} {'[run] threads':>13} {'CPU ms med':>10} {'CPU ms mean':>11} "
          f"{'wall ms med':>11} {'wall ms p95':>11}")
    for name, r in rows.items():
        print(f"{name:<18} {r['threads']:>13} {r['cpu_ms_median']:>10.1f} {r['cpu_ms_mean']:>11.1f} "
              f"{r['wall_ms_median']:>11.1f} {r['wall_ms_p95']:>11.1f}")
    ratio = rows["library defaults"]["cpu_ms_median"] / rows["owned"]["cpu_ms_median"]
    print(f"CPU per frame, library defaults / owned: {ratio:.2f}x")
    report = {"sensor": sensor, "engine": engine, "rounds": rounds, "frames": frames,
              "cpus": os.cpu_count(), "load_average": load, "results": rows,
              "cpu_ratio_defaults_over_owned": ratio}
    print(json.dumps(report))
    if json_path:
        json_path.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
