"""The contact plan's forecast against a real pass: what the ground receives in a pass at
9.6 kbit/s (compressed time) versus what ``firmware_bridge.plan`` said it would.

A spool of real products (health and event JSON, quick-look PNGs of noise, which do not
compress) is planned for one pass of ``--seconds`` at ``--rate`` bit/s starting now. Then a
real payload process (``python -m firmware_bridge.cfdp SPOOL --port PTY``, class 2, signed
uplink) serves it over the pty link emulator at that rate each way (50 ms latency), to a real
ground (``onboard ground receive``); the link is cut for good when the pass ends. The table
compares the products and the bytes on the link (each product's transfer, the plan's one
definition) that the plan put in the pass with those the ground wrote to its index before the
cut. The payload starting its process is part of the pass, as on a real pass.

    python bench/bench_plan.py [--seconds 60] [--rate 9600] [--json F]

Measured (2026-12-07, 2 shared CPU cores): 60 s pass at 9600 bit/s, 16 products queued:
forecast 12 products / 66 584 B, received the same 12 in the same order (+0.0 %); 120 s
pass, 32 products (seed 1): forecast 24 / 133 575 B, received the same (+0.0 %).
"""

from __future__ import annotations

import datetime as dt
import io
import json
import random
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import click
import numpy as np
from PIL import Image

from firmware_bridge.auth import provision
from firmware_bridge.linkemu import Impairments, LinkEmulator
from firmware_bridge.passes import Pass
from firmware_bridge.plan import LinkModel, plan
from firmware_bridge.spool import Spool, queued
from onboard.formats.products import Product, ProductKind


def _products(n: int, seed: int) -> list[Product]:
    """Health and event records (JSON, 0.3-2 KB) and 64 x 64 noise quick-looks (~12 KB)."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        kind = (ProductKind.HEALTH, ProductKind.QUICKLOOK, ProductKind.EVENT, ProductKind.QUICKLOOK)[i % 4]
        if kind == ProductKind.QUICKLOOK:
            buf = io.BytesIO()
            pixels = np.random.default_rng(seed + i).integers(0, 255, (64, 64, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(buf, "PNG")
            payload, encoding = buf.getvalue(), "png"
        else:
            payload = json.dumps({"i": i, "text": rng.randbytes(rng.randrange(150, 1000)).hex()}).encode()
            encoding = "json"
        out.append(Product(kind=kind, frame_counter=i, created_utc=1.7e9 + i, payload=payload,
                           encoding=encoding, meta={}))
    return out


def measure(seconds: float, rate_bit_s: float, n: int, seed: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        spool = Spool(tmp / "spool", 100_000_000)
        for p in _products(n, seed):
            spool.put(p.name, p.to_bytes(), p.priority, p.kind.value)
        secret = secrets.token_bytes(32)
        provision(tmp / "payload.key", tmp / "payload.counter", secret)
        provision(tmp / "ground.key", tmp / "ground.counter", secret)
        imp = Impairments(bytes_per_s=rate_bit_s / 8, latency_s=0.05)
        with LinkEmulator(imp, seed=seed) as emu:
            ground = subprocess.Popen(
                [sys.executable, "-m", "onboard", "ground", "receive", "--port", emu.b_path,
                 "-o", str(tmp / "ground"), "--rate", str(rate_bit_s / 8), "--ack-timer", "5",
                 "--key-file", str(tmp / "ground.key"), "--counter-file", str(tmp / "ground.counter")],
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            assert ground.stderr is not None
            if "listening on" not in ground.stderr.readline():
                raise RuntimeError("the ground did not start")
            start = dt.datetime.now(dt.timezone.utc)
            window = Pass(start, start + dt.timedelta(seconds=seconds), rate_bit_s)
            # the CFDP server reports no PRODUCT_DELIVERED events on the link
            forecast = plan(queued(tmp / "spool"), [window], start, model=LinkModel(events=False))
            emu.cut(1e6, after_s=seconds)
            payload = subprocess.Popen(
                [sys.executable, "-m", "firmware_bridge.cfdp", str(tmp / "spool"), "--port",
                 emu.a_path, "--rate", str(rate_bit_s / 8), "--ack-timer", "5",
                 "--key-file", str(tmp / "payload.key"), "--counter-file", str(tmp / "payload.counter")],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(seconds + 2.0)  # the pass, and the last bytes in the emulator's buffer
            # the pass is over: the payload stops as its operator would stop it, leaving the
            # product cut by the pass queued (tests/test_downlink_stop.py)
            payload.send_signal(signal.SIGINT)
            if payload.wait(timeout=60) != 128 + signal.SIGINT:
                raise RuntimeError(f"the payload exited with {payload.returncode} on SIGINT")
            ground.send_signal(signal.SIGINT)
            ground.wait(timeout=60)
        index = tmp / "ground" / "index.jsonl"
        got = [json.loads(line)["name"] for line in index.read_text().splitlines()] if index.exists() else []
    planned = forecast.passes[0]
    cost = {p.name: p.wire_bytes for p in [*planned.products, *forecast.not_sent]}
    forecast_bytes = planned.used_bytes
    received_bytes = sum(cost[name] for name in got)
    return {
        "seconds": seconds, "rate_bit_s": rate_bit_s, "capacity_bytes": int(planned.capacity_bytes),
        "queued": len(cost), "forecast_products": len(planned.products), "received_products": len(got),
        "forecast_bytes": forecast_bytes, "received_bytes": received_bytes,
        "error": (received_bytes - forecast_bytes) / forecast_bytes if forecast_bytes else 0.0,
        "same_products": [p.name for p in planned.products] == got,
    }


@click.command()
@click.option("--seconds", type=float, default=60.0, show_default=True, help="Pass length.")
@click.option("--rate", "rate_bit_s", type=float, default=9600.0, show_default=True, help="bit/s")
@click.option("--products", "n", type=int, default=16, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path))
def main(seconds: float, rate_bit_s: float, n: int, seed: int, json_path: Path | None) -> None:
    """Forecast versus a real pass through the link emulator."""
    r = measure(seconds, rate_bit_s, n, seed)
    click.echo(f"pass {r['seconds']:.0f} s at {r['rate_bit_s']:.0f} bit/s "
               f"({r['capacity_bytes']} B), {r['queued']} products queued")
    click.echo(f"{'':10s} {'products':>9s} {'bytes on link':>14s}")
    click.echo(f"{'forecast':10s} {r['forecast_products']:9d} {r['forecast_bytes']:14d}")
    click.echo(f"{'received':10s} {r['received_products']:9d} {r['received_bytes']:14d}")
    click.echo(f"received vs forecast: {100 * r['error']:+.1f} %, same products in the same "
               f"order: {r['same_products']}")
    click.echo(json.dumps(r))
    if json_path:
        json_path.write_text(json.dumps(r, indent=2))


if __name__ == "__main__":
    main()
