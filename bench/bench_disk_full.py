"""Disk-full soak: the real payload (``onboard run --port``) on a small file system until it
fills, then restarted on a disk with no free byte.

The payload's output folder (archive, spool and its state) is a tmpfs of ``--fs-mb`` (5 MB,
the issue's case) with a spool quota of ``--quota-mb`` (2 MB); key and counter files live
elsewhere. The flight computer and ground (``hil.flight_computer``, real CFDP class 2 over
an emulated serial link at ``--rate`` bytes/s) commands a capture of ``--frames`` simulated
ImSPOC frames (residue map, quick-look, cube each) and receives what comes down. Then:

1. the payload is stopped (SIGTERM) while its spool still holds products;
2. the file system is filled to 0 bytes free;
3. the payload is started again and runs until its spool is empty.

It must show: the payload never died (exit 0 on each SIGTERM); every product the spool
reported queued (PRODUCT_QUEUED event) reached the ground bit-exact (CFDP CRC-32, the
product's SHA-256, the size queued, and the archive copy where one is left) unless an
eviction event names it; every product shed or evicted has an event; the restart on the
full disk delivered products. Needs root (to mount the tmpfs).

    python bench/bench_disk_full.py [--frames 200] [--json out.json]
"""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import click

from firmware_bridge.auth import load_key, provision
from firmware_bridge.linkemu import Impairments, LinkEmulator
from firmware_bridge.messages import EventCode
from firmware_bridge.storage import free_bytes
from hil.flight_computer import FlightComputer

_SPOOL_EVENT = re.compile(r"^(\w+) (\S+) \((\w+), priority (\d+), (\d+) B\)")


def start_payload(tmp: Path, fs: Path, rate: float) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "onboard", "run", "--port", str((tmp / "port").read_text()),
         "--config", str(tmp / "mission.toml"), "--out", str(fs / "out"), "--quiet"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def wait_for(fc: FlightComputer, proc: subprocess.Popen, what, timeout: float, why: str):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        fc.poll(0.05)
        if proc.poll() is not None:
            raise RuntimeError(f"the payload died (exit {proc.returncode}) waiting for {why}: "
                               f"{proc.stdout.read().decode()[-3000:] if proc.stdout else ''}")
        got = what()
        if got:
            return got
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {why}")


def stop(proc: subprocess.Popen, fc: FlightComputer) -> int:
    proc.send_signal(signal.SIGTERM)
    end = time.monotonic() + 60
    while proc.poll() is None and time.monotonic() < end:
        fc.poll(0.05)
    return proc.wait(5)


def fill(fs: Path) -> None:
    with open(fs / "filler", "ab") as fh:
        while free_bytes(fs):
            try:
                fh.write(bytes(min(65536, free_bytes(fs))))
                fh.flush()
            except OSError:
                break


def spool_events(fc: FlightComputer) -> list[tuple[str, str, str, int, int]]:
    out = []
    for _, e in fc.events:
        if e.code in (EventCode.PRODUCT_QUEUED, EventCode.SPOOL_EVICTED, EventCode.PRODUCT_DELIVERED):
            m = _SPOOL_EVENT.match(e.text)
            if m:
                out.append((m[1], m[2], m[3], int(m[4]), int(m[5])))
    return out


def soak(tmp: Path, fs: Path, frames: int, quota_mb: float, floor_mb: float, rate: float) -> dict:
    secret = secrets.token_bytes(32)
    provision(tmp / "payload.key", tmp / "counter.json", secret)  # each key with its counter file
    provision(tmp / "fc.key", tmp / "fc-counter.json", secret)
    (tmp / "mission.toml").write_text(
        f"[run]\ndisk_floor_mb = {floor_mb}\ndeadline_s = 30\n[link]\n"
        f'key_file = "{tmp / "payload.key"}"\ncounter_file = "{tmp / "counter.json"}"\n'
        f"rate_bytes_per_s = {rate}\ntelemetry_period_s = 1.0\nack_timer_s = 2.0\n"
        f"spool_quota_mb = {quota_mb}\n")
    result: dict = {"frames": frames, "fs_mb": None, "quota_mb": quota_mb, "floor_mb": floor_mb,
                    "rate_bytes_per_s": rate}
    with LinkEmulator(Impairments(rate, buffer_bytes=32768)) as emu:
        (tmp / "port").write_text(emu.a_path)
        fc = FlightComputer.open(emu.b_path, rate, load_key(tmp / "fc.key"),
                                 tmp / "fc-counter.json", tmp / "staging", ack_timer_s=2.0)
        try:
            t0 = time.monotonic()
            proc = start_payload(tmp, fs, rate)
            wait_for(fc, proc, lambda: fc.events, 120, "payload up")
            for type_name, args in (("SET_MODE", {"mode": "OPERATE"}),
                                    ("START_CAPTURE", {"frame_count": frames})):
                cmd = fc.send(type_name, args, "valid")
                wait_for(fc, proc, lambda c=cmd: c.result is not None, 30, type_name)
            wait_for(fc, proc, lambda: [1 for _, e in fc.events if e.text == "capture complete"],
                     540, f"{frames} frames")
            result["capture_s"] = time.monotonic() - t0
            result["first_run_exit"] = stop(proc, fc)
            result["free_after_first_run_b"] = free_bytes(fs)
            spool_left = sorted((fs / "out" / "spool" / "queue").iterdir())
            result["spool_left_at_stop"] = len(spool_left)
            delivered_before = len(fc.arrivals)
            fill(fs)
            result["free_at_restart_b"] = free_bytes(fs)
            t1 = time.monotonic()
            proc = start_payload(tmp, fs, rate)
            wait_for(fc, proc, lambda: not any((fs / "out" / "spool" / "queue").iterdir()),
                     300, "the spool to drain after the restart on a full disk")
            wait_for(fc, proc, lambda: [h for _, h in fc.health[-1:]
                                        if h["spool_products"] == 0 and h["uptime_s"] > 1], 30,
                     "HEALTH with an empty spool")
            result["restart_drain_s"] = time.monotonic() - t1
            result["delivered_after_restart"] = len(fc.arrivals) - delivered_before
            result["second_run_exit"] = stop(proc, fc)
        finally:
            if proc.poll() is None:
                proc.kill()
            fc.close()
    events = spool_events(fc)
    queued = {(n, size) for what, n, _k, _p, size in events if what == "queued"}
    gone = {n for what, n, _k, _p, _s in events if what == "evicted"}
    arrived = {a.name: a for a in fc.arrivals if a.error is None and a.product is not None}
    missing = sorted(n for n, _ in queued if n not in arrived and n not in gone)
    wrong = []
    compared_with_archive = 0
    for n, size in queued:
        a = arrived.get(n)
        if a is None or a.product is None:
            continue
        blob = a.product.to_bytes()
        archived = fs / "out" / "products" / f"{n}.obp"
        if archived.exists():
            compared_with_archive += 1
            if archived.read_bytes() != blob:
                wrong.append(n)
        if len(blob) != size:
            wrong.append(n)
    by_kind: dict[str, dict[str, int]] = {}
    for what, _n, kind, _p, _s in events:
        by_kind.setdefault(kind, {}).setdefault(what, 0)
        by_kind[kind][what] += 1
    result.update({
        "products_queued": len(queued), "products_delivered": len(arrived),
        "evicted": sum(1 for e in events if e[0] == "evicted"),
        "refused": sum(1 for e in events if e[0] == "refused"),
        "archive_shed": sum(1 for e in events if e[0] == "shed"),
        "queued_not_delivered_without_event": missing,
        "not_bit_exact": sorted(set(wrong)), "compared_with_archive_copy": compared_with_archive,
        "ground_errors": fc.ground_errors, "events_by_kind": by_kind,
    })
    return result


@click.command(help=__doc__.split("\n\n")[0])
@click.option("--frames", type=int, default=200, show_default=True)
@click.option("--fs-mb", type=float, default=5.0, show_default=True)
@click.option("--quota-mb", type=float, default=2.0, show_default=True)
@click.option("--floor-mb", type=float, default=0.25, show_default=True)
@click.option("--rate", type=float, default=115200.0, show_default=True, help="link bytes/s")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path))
def main(frames: int, fs_mb: float, quota_mb: float, floor_mb: float, rate: float,
         json_path: Path | None) -> None:
    if os.geteuid() != 0:
        sys.exit("the soak mounts a tmpfs: run it as root")
    with tempfile.TemporaryDirectory(prefix="disk-full-") as tmp_name:
        tmp = Path(tmp_name)
        fs = tmp / "fs"
        fs.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={int(fs_mb * 2**20)}", "tmpfs",
                        str(fs)], check=True)
        try:
            res = soak(tmp, fs, frames, quota_mb, floor_mb, rate)
        finally:
            subprocess.run(["umount", "-l", str(fs)], check=True)
    res["fs_mb"] = fs_mb
    for k, v in res.items():
        print(f"{k:<40} {v}")
    if json_path:
        json_path.write_text(json.dumps(res, indent=2))
    ok = (res["first_run_exit"] == 0 and res["second_run_exit"] == 0
          and not res["queued_not_delivered_without_event"] and not res["not_bit_exact"]
          and res["delivered_after_restart"] > 0)
    print("PASS" if ok else "FAIL")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
