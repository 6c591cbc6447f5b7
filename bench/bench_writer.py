"""Time to archive a frame durably: one sync pass per frame against a sync per file.

    python bench/bench_writer.py [--frames 12] [--rounds 5] [--out-dir .] [--json out.json]

Simulates ``--frames`` ImSPOC frames through the classical pipeline once (not timed), then
writes their products and manifests, the three ways alternating frame by frame so that all
see the same disk traffic, each into its own fresh folder on the disk of ``--out-dir``:

* ``syncfs``: :class:`onboard.runtime.writer.ProductWriter` as it runs (temporaries, one
  ``syncfs``, renames, a folder fsync each: 3 syncs a frame);
* ``fsync each``: the same writer where ``syncfs`` is not used (K + 2 syncs);
* ``per file``: ``atomic_write`` per product and manifest, as before issue 17 (2K + 2).

``syncfs`` flushes every dirty page of the file system, other writers' too: on a disk shared
with other work its time is theirs as much as the frame's. The table gives the median and
95th percentile wall time per frame and the load average; the disk is stated.
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import click
import numpy as np
from rich.console import Console
from rich.table import Table

import onboard.runtime.writer as writer_mod
from firmware_bridge.storage import atomic_write
from onboard.config import Config, override
from onboard.runtime.pipeline import FrameResult
from onboard.runtime.session import build_session


def _per_file(folder: Path, result: FrameResult) -> None:
    for p in result.products:
        atomic_write(folder / f"{p.name}.obp", p.to_bytes(), mode=0o644)
    atomic_write(folder / f"frame_{result.counter:08d}.json", b"{}", mode=0o644)


@click.command(help=__doc__.splitlines()[0])
@click.option("--frames", type=click.IntRange(min=2), default=12, show_default=True)
@click.option("--rounds", type=click.IntRange(min=1), default=5, show_default=True)
@click.option("--out-dir", type=click.Path(file_okay=False, path_type=Path), default=Path("."),
              show_default=True)
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path))
def main(frames: int, rounds: int, out_dir: Path, json_path: Path | None) -> None:
    config = Config()
    override(config, "engine", "engine", "classical")
    session = build_session(config)
    results = [session.pipeline.process(f) for f, _ in session.frames(frames)]
    syncfs = writer_mod._SYNCFS
    times: dict[str, list[float]] = {"syncfs": [], "fsync each": [], "per file": []}
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(dir=out_dir) as tmp:
        for r in range(rounds):
            writers = {name: writer_mod.ProductWriter(Path(tmp) / f"{r}{name.replace(' ', '')}")
                       for name in ("syncfs", "fsync each")}
            plain = Path(tmp) / f"{r}perfile"
            plain.mkdir()
            for result in results:
                for name in times:
                    writer_mod._SYNCFS = syncfs if name == "syncfs" else None
                    t0 = time.perf_counter()
                    if name == "per file":
                        _per_file(plain, result)
                    else:
                        writers[name].write(result)
                    times[name].append(time.perf_counter() - t0)
    writer_mod._SYNCFS = syncfs
    disk = os.statvfs(out_dir)
    table = Table(title=f"archiving a frame ({len(results[0].products)} products + manifest), "
                        f"{frames} frames x {rounds} rounds, load average {load_before:.1f} -> "
                        f"{os.getloadavg()[0]:.1f}, {disk.f_blocks * disk.f_frsize / 1e9:.0f} GB file system"
                        + ("" if syncfs is not None else " (no syncfs here: the first two are the same)"))
    for col in ("how", "syncs a frame", "median ms", "p95 ms"):
        table.add_column(col, justify="left" if col == "how" else "right")
    k = len(results[0].products) + 1
    syncs = {"syncfs": 3, "fsync each": k + 2, "per file": 2 * k}
    rows = {name: {"syncs": syncs[name], "median_ms": 1000 * statistics.median(v),
                   "p95_ms": 1000 * float(np.percentile(v, 95))} for name, v in times.items()}
    for name, row in rows.items():
        table.add_row(name, str(row["syncs"]), f"{row['median_ms']:.1f}", f"{row['p95_ms']:.1f}")
    Console(width=140).print(table)
    if json_path is not None:
        json_path.write_text(json.dumps({"frames": frames, "rounds": rounds, "results": rows}, indent=2))


if __name__ == "__main__":
    main()
