"""What packaging a frame costs: each product's bytes and one-core CPU time per encoding.

    python bench/bench_package.py [--frames 6] [--rounds 5] [--json out.json]

Simulates ``--frames`` frames of each sensor through the default pipeline once (not timed),
then encodes each frame's residue map and cube the ways below, alternating encoding by
encoding within each round so that all see the same machine, and reports per product and
encoding the median CPU time of the thread and the bytes:

* ``numpy, zlib 6 (before)``: ``numpy.savez_compressed`` (zlib's default level), the payload
  before issue 17; ``zlib 1``: the same at zlib's level 1;
* ``stored``, ``libdeflate 1 / 6 / 9``: :func:`onboard.formats.products.npz_bytes` at that
  level; ``(now)`` marks ``NPZ_LEVEL``, what products use;
* each for the npz payloads and for the compact codings' (``[products] cube_coding /
  residue_coding = "ccsds123"``: the CCSDS 123 stream and masks in the npz, the encoder's time
  included);
* the quick-look PNG as ``quicklook_png`` writes it, and its pixels re-encoded at PNG
  levels 1 and 9 (PIL's ``optimize``).

Every encoding is lossless over the same arrays: they differ in bytes and time only.
"""

from __future__ import annotations

import io
import json
import statistics
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

import click
import numpy as np
from PIL import Image
from rich.console import Console
from rich.table import Table

from onboard.compress.cube_coding import CubeCoding, encode_cube
from onboard.compress.residue_coding import encode_residue
from onboard.config import Config, override
from onboard.formats.products import NPZ_LEVEL, npz_bytes
from onboard.runtime.session import build_session
from onboard.stages.package import cube_arrays, quicklook_png, residue_arrays


def _numpy_level6(arrays: dict) -> bytes:
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return buf.getvalue()


def _zlib_npz(arrays: dict, level: int) -> bytes:
    """The npz numpy writes, at another zlib level."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED, compresslevel=level) as z:
        for name, array in arrays.items():
            with z.open(f"{name}.npy", "w") as member:
                np.lib.format.write_array(member, np.asanyarray(array), allow_pickle=False)
    return buf.getvalue()


def _png(rgb: np.ndarray, **options: object) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb, mode="RGB").save(buf, format="PNG", **options)
    return buf.getvalue()


def _encodings(result) -> dict[tuple[str, str], Callable[[], bytes]]:
    """(product, encoding) -> a function making that product's payload for this frame."""
    res = {**residue_arrays(result.residue), "screen": result.screening.mask}
    cube = cube_arrays(result.denoised, float16=True)
    valid = result.denoised.valid
    compact = CubeCoding("ccsds123")
    rgb = np.asarray(Image.open(io.BytesIO(quicklook_png(result.denoised))))

    def compact_cube() -> dict:
        return {**encode_cube(result.denoised.data, valid, compact), "wavelengths_nm": cube["wavelengths_nm"],
                "valid": valid}

    def compact_residue() -> dict:
        return {**encode_residue(residue_arrays(result.residue)), "screen": res["screen"]}

    out: dict[tuple[str, str], Callable[[], bytes]] = {}
    for product, family, make in (("residue", "npz", lambda: res), ("cube", "npz", lambda: cube),
                                  ("residue", "ccsds123", compact_residue), ("cube", "ccsds123", compact_cube)):
        out[(product, f"{family}: numpy, zlib 6 (before)")] = lambda m=make: _numpy_level6(m())
        out[(product, f"{family}: zlib 1")] = lambda m=make: _zlib_npz(m(), 1)
        for level in (0, 1, 6, 9):
            name = "stored" if level == 0 else f"libdeflate {level}" + (" (now)" if level == NPZ_LEVEL else "")
            out[(product, f"{family}: {name}")] = lambda m=make, lv=level: npz_bytes(m(), lv)
    out[("quicklook", "png as written")] = lambda: quicklook_png(result.denoised)
    out[("quicklook", "png level 1 (pixels only)")] = lambda: _png(rgb, compress_level=1)
    out[("quicklook", "png optimize (pixels only; before)")] = lambda: _png(rgb, optimize=True)
    return out


def bench_sensor(sensor: str, frames: int, rounds: int) -> list[dict]:
    config = Config()
    override(config, "run", "sensor", sensor)
    session = build_session(config)
    results = [session.pipeline.process(f) for f, _ in session.frames(frames + 1)][1:]
    encodings = [_encodings(r) for r in results]
    cpu: dict[tuple[str, str], list[float]] = {k: [] for k in encodings[0]}
    size: dict[tuple[str, str], list[int]] = {k: [] for k in encodings[0]}
    for _ in range(rounds):
        for per_frame in encodings:
            for key, make in per_frame.items():
                c0 = time.thread_time()
                payload = make()
                cpu[key].append(time.thread_time() - c0)
                size[key].append(len(payload))
    return [{"sensor": sensor, "product": p, "encoding": e, "cpu_median_ms": 1000 * statistics.median(cpu[(p, e)]),
             "bytes_median": int(statistics.median(size[(p, e)]))} for p, e in cpu]


def _family(encoding: str) -> str:
    """What a row's bytes compare with: the first row of the same payload (npz, CCSDS, PNG)."""
    return encoding.split(":")[0].split(" ")[0]


@click.command(help=__doc__.splitlines()[0])
@click.option("--frames", type=click.IntRange(min=1), default=6, show_default=True)
@click.option("--rounds", type=click.IntRange(min=1), default=5, show_default=True)
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path))
def main(frames: int, rounds: int, json_path: Path | None) -> None:
    rows = [row for sensor in ("imspoc", "pushbroom") for row in bench_sensor(sensor, frames, rounds)]
    table = Table(title=f"packaging one frame: CPU of one thread and bytes, median of {frames} frames x {rounds} rounds")
    for col in ("sensor", "product", "encoding", "CPU ms", "bytes", "bytes vs before"):
        table.add_column(col, justify="left" if col in ("sensor", "product", "encoding") else "right")
    for row in rows:
        before = next(r for r in rows if r["sensor"] == row["sensor"] and r["product"] == row["product"]
                      and _family(r["encoding"]) == _family(row["encoding"]))
        table.add_row(row["sensor"], row["product"], row["encoding"], f"{row['cpu_median_ms']:.2f}",
                      str(row["bytes_median"]), f"{100 * (row['bytes_median'] / before['bytes_median'] - 1):+.1f} %")
    Console(width=140).print(table)
    if json_path is not None:
        json_path.write_text(json.dumps({"frames": frames, "rounds": rounds, "results": rows}, indent=2))


if __name__ == "__main__":
    main()
