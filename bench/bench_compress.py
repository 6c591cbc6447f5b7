"""Compression of the products and raw frames for the downlink: CCSDS 123.0-B-2 against the
references, and the frames per hour that fit the link; prints a table and can write JSON.

    python bench/bench_compress.py [--frames 3] [--repeats 5] [--json out.json]

Data: ``--frames`` frames per sensor from the simulated pipeline (``onboard run``'s default
configuration: the ImSPOC cube 24 x 64 x 64 and the push-broom cube 81 x 64 x 128, the
denoised float16 product cubes), and the raw ImSPOC frames as the 96 x 64 x 64 stack of
interferogram thumbnails (uint16 DN); and, where ``--real-cubes`` holds them, two real AVIRIS
cubes (Jasper Ridge 198 x 100 x 100 uint16, ABU urban-2 198 x 100 x 100 int16), lossless.
Codings:

* ``lossless``: the float16 bits as ordered uint16 codes (onboard/compress/cube_coding.py);
  raw frames as they are;
* ``q1e-3``: reflectance quantised to a step of 1e-3 (error <= 5e-4), then coded losslessly;
* ``q1e-4 a4``: reflectance quantised to 1e-4, CCSDS 123 near-lossless with an absolute limit
  of 4 steps (error <= 4.5e-4).

Coders: npz deflate (today's cube product), CCSDS 121 (libaec through imagecodecs, with its
preprocessor), JPEG-LS (CharLS through imagecodecs, the cube as one tall image), CCSDS 123
(this package, numba kernels; the plain-Python kernels timed once on the first ImSPOC cube).
Every round trip is checked (bit-exact, or within the stated error on every valid sample).
Ratio is raw bytes (2 per sample) over coded bytes. Speeds are one core, median of
``--repeats``, in Msamples/s. Frames per hour: the frame's cube product (the coded payload in
an onboard product file) or all of a frame's products (today's residue map and quick-look plus
the cube; with the CCSDS 123 rows the compact residue map, onboard/compress/residue_coding.py),
with CFDP, Space Packet and link framing overhead (firmware_bridge's estimate), at 9.6, 115.2
and 1000 kbit/s.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import click  # noqa: E402
import numpy as np  # noqa: E402

RATES_KBIT = (9.6, 115.2, 1000.0)
Q_STEP = 1e-3
NEAR_STEP, NEAR_LIMIT = 1e-4, 4


def _products(sensor: str, frames: int) -> tuple[list[dict], list[np.ndarray]]:
    """The product cubes and other products' sizes of ``frames`` simulated frames; the raw
    thumbnail stacks (ImSPOC only)."""
    from dataclasses import replace

    from onboard.compress.residue_coding import encode_residue
    from onboard.compress.residue_coding import meta as residue_meta
    from onboard.config import load, override
    from onboard.formats.products import encode_arrays
    from onboard.physics.imspoc import default_instrument
    from onboard.runtime.session import build_session
    from onboard.stages.package import residue_arrays

    cfg = load(None)
    override(cfg, "run", "sensor", sensor)
    session = build_session(cfg)
    layout = default_instrument(seed=0).layout if sensor == "imspoc" else None
    cubes, raws = [], []
    for frame, _ in session.frames(frames):
        r = session.pipeline.process(frame)
        other = {p.kind.value: len(p.to_bytes()) for p in r.products if p.kind.value != "cube"}
        [res] = [p for p in r.products if p.kind.value == "residue"]
        compact = replace(res, payload=encode_arrays(**encode_residue(residue_arrays(r.residue))),
                          meta={**res.meta, **residue_meta()})
        cubes.append({"data": r.denoised.data.astype(np.float16), "valid": r.denoised.valid,
                      "wavelengths_nm": r.denoised.wavelengths_nm, "other_products": other,
                      "other_products_compact": {**other, "residue": len(compact.to_bytes())}})
        if layout is not None:
            raws.append(np.asarray(layout.extract(frame.pixels), dtype=np.uint16))
    return cubes, raws


def _real_cubes(folder: Path) -> dict[str, np.ndarray]:
    """The integer AVIRIS cubes of ../shared/data/real_cubes (README there), (bands, rows, cols):
    real sensor data, the kind CCSDS 123 was designed and is usually judged on."""
    from scipy.io import loadmat

    out = {}
    if (folder / "jasperRidge2_R198.mat").is_file():
        y = loadmat(folder / "jasperRidge2_R198.mat")["Y"]
        out["AVIRIS Jasper Ridge"] = np.ascontiguousarray(y.T.reshape(100, 100, 198, order="F").transpose(2, 0, 1), np.uint16)
    if (folder / "abu-urban-2.mat").is_file():
        out["AVIRIS ABU urban-2"] = np.ascontiguousarray(loadmat(folder / "abu-urban-2.mat")["data"].transpose(2, 0, 1), np.int16)
    return out


def _coders(raw: bool) -> dict[str, tuple[Callable, Callable]]:
    """name -> (encode(ints) -> bytes, decode(bytes, like) -> ints); CCSDS 123 with the
    settings the products use (onboard/compress/cube_coding.py), those of raw frames if ``raw``."""
    import dataclasses

    import imagecodecs

    from onboard.compress import ccsds123
    from onboard.compress.cube_coding import CUBE_PARAMS, RAW_FRAME_PARAMS
    from onboard.formats.products import decode_arrays, encode_arrays

    params = RAW_FRAME_PARAMS if raw else CUBE_PARAMS
    near = dataclasses.replace(params, absolute_error=NEAR_LIMIT)

    def unsigned(a: np.ndarray) -> tuple[np.ndarray, int]:
        lo = int(a.min())
        return (a - lo).astype(np.uint16), lo

    def jpegls_enc(a: np.ndarray) -> bytes:
        u, lo = unsigned(a)
        return lo.to_bytes(4, "big", signed=True) + imagecodecs.jpegls_encode(u.reshape(-1, a.shape[-1]))

    def jpegls_dec(b: bytes, like: np.ndarray) -> np.ndarray:
        lo = int.from_bytes(b[:4], "big", signed=True)
        return imagecodecs.jpegls_decode(b[4:]).reshape(like.shape).astype(np.int64) + lo

    def aec_enc(a: np.ndarray) -> bytes:
        u, lo = unsigned(a)
        return lo.to_bytes(4, "big", signed=True) + imagecodecs.aec_encode(
            u, bitspersample=16, flags=imagecodecs.AEC.FLAG.DATA_PREPROCESS)

    def aec_dec(b: bytes, like: np.ndarray) -> np.ndarray:
        lo = int.from_bytes(b[:4], "big", signed=True)
        out = imagecodecs.aec_decode(b[4:], bitspersample=16, flags=imagecodecs.AEC.FLAG.DATA_PREPROCESS,
                                     out=np.empty(like.shape, np.uint16))
        return out.astype(np.int64) + lo

    return {
        "npz deflate": (lambda a: encode_arrays(data=a), lambda b, like: decode_arrays(b)["data"]),
        "CCSDS 121": (aec_enc, aec_dec),
        "JPEG-LS": (jpegls_enc, jpegls_dec),
        "CCSDS 123": (lambda a: ccsds123.encode(a, params), lambda b, like: ccsds123.decode(b).cube),
        "CCSDS 123 a4": (lambda a: ccsds123.encode(a, near), lambda b, like: ccsds123.decode(b).cube),
    }


def _timed(fn: Callable[[], object], repeats: int) -> tuple[object, float]:
    out, times = None, []
    for _ in range(repeats):
        t0 = time.process_time()
        out = fn()
        times.append(time.process_time() - t0)
    return out, float(np.median(times))


def _wire_bytes(product_bytes: int) -> int:
    """Bytes on the link for one product file: CFDP PDUs in Space Packets in link frames."""
    from firmware_bridge.cfdp.sender import transfer_packet_sizes
    from firmware_bridge.link import ByteRate
    from firmware_bridge.spool import SpoolEntry

    entry = SpoolEntry(3, 0, "cube", "cube_00000001", Path("cube_00000001.obpr"), product_bytes)
    return round(ByteRate(1.0).drain_time_s(transfer_packet_sizes(entry)))


def _product_bytes(payload: bytes) -> int:
    from onboard.formats.products import Product, ProductKind

    return len(Product(ProductKind.CUBE, 1, 0.0, payload, "npz", {"coding": "x" * 40}).to_bytes())


def _measure(name: str, inputs: list[np.ndarray], checks: list[Callable[[np.ndarray, str], None]],
             coders: tuple[str, ...], repeats: int, others: list[dict] | None, raw: bool = False) -> list[dict]:
    rows = []
    for coder, (enc, dec) in _coders(raw).items():
        if coder not in coders:
            continue
        sizes, enc_s, dec_s, wire, wire_all = [], [], [], [], []
        for a, check in zip(inputs, checks, strict=True):
            blob, te = _timed(partial(enc, a), repeats)
            back, td = _timed(partial(dec, blob, a), repeats)
            check(np.asarray(back), coder)
            sizes.append(len(blob))  # type: ignore[arg-type]
            enc_s.append(te)
            dec_s.append(td)
            wire.append(_wire_bytes(_product_bytes(blob)))  # type: ignore[arg-type]
        if others:  # the compact residue map goes with CCSDS 123 cubes, today's npz with the rest
            key = "other_products_compact" if coder.startswith("CCSDS 123") else "other_products"
            wire_all = [w + sum(_wire_bytes(v) for v in o[key].values()) for w, o in zip(wire, others, strict=True)]
            row_others = {k: float(np.mean([o[key][k] for o in others])) for k in others[0][key]}
        n = inputs[0].size
        row = {"data": name, "coder": coder, "samples": n, "bytes": float(np.mean(sizes)),
               "ratio": 2 * n / float(np.mean(sizes)),
               "encode_msamples_s": n / float(np.median(enc_s)) / 1e6,
               "decode_msamples_s": n / float(np.median(dec_s)) / 1e6,
               "wire_bytes": float(np.mean(wire))}
        if others:
            row["other_product_bytes"] = row_others
        for rate in RATES_KBIT:
            row[f"frames_per_hour_{rate:g}k"] = 3600 * rate * 1000 / 8 / row["wire_bytes"]
            if wire_all:
                row[f"all_products_frames_per_hour_{rate:g}k"] = 3600 * rate * 1000 / 8 / float(np.mean(wire_all))
        rows.append(row)
    return rows


def _within(expected: np.ndarray, limit: int) -> Callable[[np.ndarray, str], None]:
    """A check that every sample came back within ``limit`` (0: bit-exact)."""
    def check(got: np.ndarray, coder: str) -> None:
        err = np.abs(np.asarray(got, dtype=np.int64) - expected.astype(np.int64)).max()
        if err > limit:
            raise SystemExit(f"{coder}: error {err} over the limit {limit}")
    return check


def _plain_python_speed() -> dict:
    """The ImSPOC-size cube through the kernels with numba off (a subprocess)."""
    code = ("import time, numpy as np; from onboard.compress import ccsds123 as c; assert not c.COMPILED;"
            "rng = np.random.default_rng(0);"
            "a = (rng.normal(0, 40, (24, 64, 64)).cumsum(2) % 4096).astype(np.uint16);"
            "t = time.process_time(); s = c.encode(a); te = time.process_time() - t;"
            "t = time.process_time(); c.decode(s); td = time.process_time() - t;"
            "print(a.size / te / 1e6, a.size / td / 1e6)")
    env = dict(os.environ, ONBOARD_NUMBA="0")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout.split()
    return {"encode_msamples_s": float(out[0]), "decode_msamples_s": float(out[1])}


def _jit_cost() -> dict:
    """numba's import time, and the first call's compile (empty cache) and load (warm cache)."""
    import tempfile

    code = ("import time; t = time.perf_counter(); import numba; ti = time.perf_counter() - t;"
            "import numpy as np; from onboard.compress import ccsds123 as c;"
            "a = np.arange(2 * 3 * 4, dtype=np.uint16).reshape(2, 3, 4);"
            "t = time.perf_counter(); c.decode(c.encode(a)); tf = time.perf_counter() - t; print(ti, tf)")
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache)
        cold = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout.split()
        warm = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout.split()
    import llvmlite
    import numba

    def size(mod: object) -> int:
        root = Path(mod.__file__).parent  # type: ignore[attr-defined]
        return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())

    return {"numba_import_s": float(warm[0]), "first_call_cold_cache_s": float(cold[1]),
            "first_call_warm_cache_s": float(warm[1]), "numba_version": numba.__version__,
            "installed_mib": {"numba": size(numba) / 2**20, "llvmlite": size(llvmlite) / 2**20}}


def _table(rows: list[dict]) -> str:
    head = (f"{'data':28s} {'coder':14s} {'bytes':>9s} {'ratio':>6s} {'enc Ms/s':>9s} {'dec Ms/s':>9s} "
            + " ".join(f"{f'f/h {r:g}k':>10s}" for r in RATES_KBIT) + " " + " ".join(f"{f'all {r:g}k':>9s}" for r in RATES_KBIT))
    lines = [head, "-" * len(head)]
    for r in rows:
        all_cols = " ".join(f"{r.get(f'all_products_frames_per_hour_{k:g}k', float('nan')):9.0f}" for k in RATES_KBIT)
        lines.append(f"{r['data']:28s} {r['coder']:14s} {r['bytes']:9.0f} {r['ratio']:6.2f} {r['encode_msamples_s']:9.2f} "
                     f"{r['decode_msamples_s']:9.2f} " + " ".join(f"{r[f'frames_per_hour_{k:g}k']:10.0f}" for k in RATES_KBIT)
                     + " " + all_cols)
    return "\n".join(lines)


@click.command()
@click.option("--frames", default=3, show_default=True, help="simulated frames per sensor")
@click.option("--repeats", default=5, show_default=True, help="timings per measurement (median)")
@click.option("--json", "json_path", type=click.Path(path_type=Path), help="also write the results here")
@click.option("--real-cubes", type=click.Path(path_type=Path),
              default=Path(__file__).resolve().parents[2] / "shared" / "data" / "real_cubes", show_default=True,
              help="folder of the real AVIRIS cubes (skipped where absent)")
def main(frames: int, repeats: int, json_path: Path | None, real_cubes: Path) -> None:
    """Ratio, speed and frames per hour of CCSDS 123 and the references."""
    from onboard.compress import ccsds123
    from onboard.compress.cube_coding import float16_codes, quantise

    warm = np.arange(24, dtype=np.uint16).reshape(2, 3, 4)
    ccsds123.decode(ccsds123.encode(warm))  # compile (or load the cached kernels) before timing
    rows: list[dict] = []
    for sensor in ("imspoc", "pushbroom"):
        cubes, raws = _products(sensor, frames)
        shape = "x".join(map(str, cubes[0]["data"].shape))
        lossless = [float16_codes(c["data"]) for c in cubes]
        exact = ("npz deflate", "CCSDS 121", "JPEG-LS", "CCSDS 123")
        lossless = [float16_codes(c["data"]) for c in cubes]
        rows += _measure(f"{sensor} {shape} lossless", lossless, [_within(a, 0) for a in lossless], exact, repeats, cubes)
        q = [quantise(c["data"].astype(np.float32), c["valid"], Q_STEP) for c in cubes]
        rows += _measure(f"{sensor} {shape} q1e-3", q, [_within(a, 0) for a in q], exact, repeats, cubes)
        qn = [quantise(c["data"].astype(np.float32), c["valid"], NEAR_STEP) for c in cubes]
        rows += _measure(f"{sensor} {shape} q1e-4 a4", qn, [_within(a, NEAR_LIMIT) for a in qn], ("CCSDS 123 a4",), repeats, cubes)
        if raws:
            rshape = "x".join(map(str, raws[0].shape))
            rows += _measure(f"imspoc raw {rshape}", raws, [_within(a, 0) for a in raws], exact, repeats, None, raw=True)
    for name, cube in _real_cubes(real_cubes).items():
        label = f"{name} {'x'.join(map(str, cube.shape))}"
        rows += _measure(label, [cube], [_within(cube, 0)], ("npz deflate", "CCSDS 121", "JPEG-LS", "CCSDS 123"),
                         repeats, None)
    result = {"rows": rows, "plain_python_imspoc_size": _plain_python_speed(), "jit": _jit_cost(),
              "compiled": ccsds123.COMPILED, "frames": frames, "repeats": repeats}
    click.echo(_table(rows))
    click.echo(f"CCSDS 123 kernels without numba (24x64x64): {result['plain_python_imspoc_size']}")
    click.echo(f"numba: {result['jit']}")
    if json_path is not None:
        json_path.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
