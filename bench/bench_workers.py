"""Throughput of the frame loop against ``[run] workers`` (frames in flight), products written.

    python bench/bench_workers.py [--sensor imspoc] [--frames 40] [--workers 1,2] [--rounds 3]
                                  [--load 0] [--json out.json]

One process builds the session as ``onboard run`` does and simulates the frames first (not
timed); then for each setting, alternating over ``--rounds`` rounds so that all see the same
background load, it runs the frame loop (onboard/runtime/loop.py) over the frames and writes
every product durably with the archive writer (onboard/runtime/writer.py) into a fresh
temporary folder on the same disk as ``--out-dir``: frames/s is frames over the wall time of
the whole run, acquisition excluded, writing included. Each round starts with a fresh
reconstruction state (the regularisation re-chosen), as a run does. CPU ms is the process's
CPU time per frame; cores used is CPU time over wall time (with frames in flight above 1 when
the threads ran at once; on a loaded machine, what share of it the run got). ``--load N`` adds
N busy processes (one core each) for the duration.
The table also gives the load average and the machine's core count.
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from onboard.bench import background_load
from onboard.config import Config, override
from onboard.runtime.loop import FrameLoop
from onboard.runtime.session import build_session
from onboard.runtime.writer import ProductWriter
from onboard.stages.reconstruct import Reconstructor


def _one_run(session, frames: list, workers: int, out: Path) -> dict:
    """The frames through the loop with ``workers``, written into ``out``."""
    pipeline = session.pipeline
    if pipeline.reconstructor is not None:
        pipeline.reconstructor = Reconstructor(pipeline.calibration)
    writer = ProductWriter(out)
    loop = FrameLoop(pipeline, deadline_s=1e3, workers=workers)
    c0, t0 = time.process_time(), time.perf_counter()
    for result, _ in loop.run((f, None) for f in frames):
        writer.write(result)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {"frames_per_s": len(frames) / wall, "cpu_ms_per_frame": 1000 * cpu / len(frames),
            "cores_used": cpu / wall, "wall_s": wall}


@click.command(help=__doc__.splitlines()[0])
@click.option("--sensor", type=click.Choice(["imspoc", "pushbroom"]), default="imspoc", show_default=True)
@click.option("--engine", default="auto", show_default=True, help="[engine] engine")
@click.option("--frames", type=click.IntRange(min=2), default=40, show_default=True)
@click.option("--workers", "workers_list", default="1,2", show_default=True)
@click.option("--rounds", type=click.IntRange(min=1), default=3, show_default=True)
@click.option("--load", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--out-dir", type=click.Path(file_okay=False, path_type=Path), default=Path("."),
              show_default=True, help="where the temporary output folders go (the disk written)")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path))
def main(sensor: str, engine: str, frames: int, workers_list: str, rounds: int, load: int,
         out_dir: Path, json_path: Path | None) -> None:
    config = Config()
    override(config, "run", "sensor", sensor)
    override(config, "engine", "engine", engine)
    session = build_session(config)
    pending = [f for f, _ in session.frames(frames + 2)]
    settings = [int(w) for w in workers_list.split(",")]
    runs: dict[int, list[dict]] = {w: [] for w in settings}
    load_before = os.getloadavg()[0]
    with background_load(load), tempfile.TemporaryDirectory(dir=out_dir) as tmp:
        for w in settings:  # warm-up: libraries loaded, caches filled
            _one_run(session, pending[:2], w, Path(tmp) / f"warm{w}")
        for r in range(rounds):
            for w in settings:
                runs[w].append(_one_run(session, pending[2:], w, Path(tmp) / f"r{r}w{w}"))
    rows = {w: {"frames_per_s": statistics.median(x["frames_per_s"] for x in v),
                "cpu_ms_per_frame": statistics.median(x["cpu_ms_per_frame"] for x in v),
                "cores_used": statistics.median(x["cores_used"] for x in v),
                "rounds": v} for w, v in runs.items()}
    base = rows[settings[0]]["frames_per_s"]
    load_after = os.getloadavg()[0]
    table = Table(title=f"frame loop throughput, {sensor}, {frames} frames x {rounds} rounds, "
                        f"{os.cpu_count()} cores, load average {load_before:.1f} -> {load_after:.1f}"
                        + (f", beside {load} busy processes" if load else ""))
    for col in ("workers", "frames/s (median of rounds)", f"vs workers={settings[0]}", "CPU ms / frame",
                "cores used (CPU / wall)"):
        table.add_column(col, justify="right")
    for w, row in rows.items():
        table.add_row(str(w), f"{row['frames_per_s']:.1f}", f"{row['frames_per_s'] / base:.2f}x",
                      f"{row['cpu_ms_per_frame']:.1f}", f"{row['cores_used']:.2f}")
    Console(width=120).print(table)
    if json_path is not None:
        json_path.write_text(json.dumps({"sensor": sensor, "engine": session.engine_description,
                                         "frames": frames, "cores": os.cpu_count(), "background_load": load,
                                         "load_average": [load_before, load_after],
                                         "results": {str(w): v for w, v in rows.items()}}, indent=2))


if __name__ == "__main__":
    main()
