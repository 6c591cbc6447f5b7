"""What a REQUEST_AREA costs the payload's link thread: the archive search against the archive's size.

An archive of ``--frames`` georeferenced frames (a drone survey's lawnmower lines, 100 m above
the terrain, 40 x 30 degree camera; per frame an event without georef, a residue map, a cube
and a raw frame, and its manifest, all by the real ProductWriter) is searched for cubes and
raw frames over a box holding about one frame in a hundred (:func:`onboard.runtime.area.find_area`:
manifests and product headers only, never a payload; the payloads here are small, which the
search does not read). Warm page cache (the archive was just written): on a cold SD card the
first search reads one 4 KiB block per manifest and per header more. The search runs on the
link thread, so its time is how long telecommands wait for their ACK.

    python bench/bench_request_area.py [--frames 100 1000 3000] [--rounds 3] [--json out.json]
"""

from __future__ import annotations

import json
import math
import statistics
import tempfile
import time
from pathlib import Path

import click
import numpy as np
from rich.console import Console
from rich.table import Table

from firmware_bridge.messages import RequestArea
from onboard.formats.products import Product, ProductKind, encode_arrays
from onboard.geo.georef import CameraGeometry, Pose, georeference
from onboard.runtime.area import find_area
from onboard.runtime.pipeline import FrameResult
from onboard.runtime.writer import ProductWriter

CAMERA = CameraGeometry(40.0, 30.0)
LINE_FRAMES = 100  # frames per survey line; lines 100 m apart, frames 50 m apart


def _archive(out: Path, frames: int) -> None:
    writer = ProductWriter(out)
    payload = encode_arrays(data=np.zeros((4, 16, 16), np.float32))
    for n in range(frames):
        line, along = divmod(n, LINE_FRAMES)
        lat = 43.6 + along * 50 / 111_000
        lon = 1.4 + line * 100 / (111_000 * math.cos(math.radians(43.6)))
        geo = {"georeferenced": True,
               **georeference(Pose(lat, lon, 100.0, 100.0, 0.0, 0.0, 90.0 * (line % 2)), CAMERA, 32, 32)}
        products = [Product(ProductKind(k), n, 1.8e9 + n, payload, "npz",
                            meta={} if k == "event" else {"georef": geo})
                    for k in ("event", "residue", "cube", "raw")]
        writer.write(FrameResult(counter=n, products=products))


@click.command(help=__doc__.splitlines()[0])
@click.option("--frames", type=click.IntRange(min=10), multiple=True, default=(100, 1000, 3000), show_default=True)
@click.option("--rounds", type=click.IntRange(min=1), default=3, show_default=True)
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path))
def main(frames: tuple[int, ...], rounds: int, json_path: Path | None) -> None:
    # a box around the first line's first tenth: about 10 frames of 100
    request = RequestArea.from_degrees(43.6, 1.3995, 43.6 + 500 / 111_000, 1.4005, ("cube", "raw"))
    rows = []
    for n in frames:
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp)
            _archive(out, n)
            times = []
            for _ in range(rounds):
                t = time.perf_counter()
                answer = find_area(out / "products", out / "frames", request)
                times.append(time.perf_counter() - t)
            rows.append({"frames": n, "files": 5 * n, "matched": answer.matched,
                         "median_ms": round(statistics.median(times) * 1e3, 1),
                         "per_frame_us": round(statistics.median(times) / n * 1e6, 1)})
    table = Table(title="REQUEST_AREA archive search (warm cache, median of rounds)")
    for col in rows[0]:
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(*(str(v) for v in r.values()))
    Console(width=120).print(table)
    if json_path is not None:
        json_path.write_text(json.dumps({"rounds": rounds, "results": rows}, indent=2))


if __name__ == "__main__":
    main()
