"""Downlink throughput while someone floods the uplink with frames that do not authenticate.

A real payload process (``python -m firmware_bridge.cfdp SPOOL --port PTY``, class 1, no
key) sends a spool of products over the pty link emulator at a UART's rate (115200 baud 8N1,
11 520 B/s each way). On the other end this script counts what arrives and, for each flood
kind, writes frames toward the payload as fast as the emulated line takes them:

* ``none``: no flood (the baseline);
* ``unauthenticated``: an empty-bodied telecommand without AUTH (11 bytes on the wire,
  refused NOT_AUTHENTICATED: its ACK is 15 bytes);
* ``ping``: PING without AUTH (allow-listed: answered OK);
* ``forged``: a telecommand with AUTH and a random MAC (refused NO_KEY/BAD_AUTH);
* ``data``: unsigned DATA frames carrying a CFDP-looking TC space packet (refused since
  DATA is authenticated; before, handed to the CFDP entity).

The table gives DATA frames/s and bytes/s received, and ACK and EVENT frames/s, over a
measuring window after a warm-up. ``--tree DIR`` runs the payload from another checkout
(e.g. the code before a change), so before and after are measured the same way:

    python bench/bench_uplink_flood.py [--seconds 8] [--tree /path/to/checkout] [--json F]
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import click

from firmware_bridge.framing import FLAG_AUTH, Frame, encode
from firmware_bridge.link import UNPACED, Link
from firmware_bridge.linkemu import Impairments, LinkEmulator
from firmware_bridge.messages import MsgType
from firmware_bridge.spool import Spool

UART = 11520.0  # bytes/s, 115200 baud 8N1
FLOODS = ("none", "unauthenticated", "ping", "forged", "data")
#: A TC space packet on the uplink APID with a few bytes standing for a PDU.
_PACKET = bytes.fromhex("11F1C0000004") + b"\x2a\x00\x04\x13\x00"


def flood_frames(kind: str, n: int = 200) -> bytes:
    """``n`` frames of one flood kind, back to back on the wire."""
    rng = random.Random(0)
    frames = []
    for seq in range(n):
        if kind == "unauthenticated":
            frames.append(Frame(MsgType.STOP_CAPTURE, seq))
        elif kind == "ping":
            frames.append(Frame(MsgType.PING, seq))
        elif kind == "data":
            frames.append(Frame(MsgType.DATA, seq, _PACKET))
        else:
            frames.append(Frame(MsgType.STOP_CAPTURE, seq, b"", FLAG_AUTH,
                                rng.randrange(1, 2**63), rng.randbytes(16)))
    return b"".join(encode(f) for f in frames)


def measure(kind: str, seconds: float, warmup: float, tree: Path | None) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        spool = Spool(Path(tmp) / "spool", 100_000_000)
        for i in range(8):  # more than the window can carry
            spool.put(f"residue_{i:08d}", random.Random(i).randbytes(100_000), 5, "residue")
        env = dict(os.environ)
        if tree is not None:  # python -m imports from the working folder first: run there
            env["PYTHONPATH"] = str(tree)
        with LinkEmulator(Impairments(UART, buffer_bytes=4096)) as emu:
            rx = Link.open(emu.b_path, rate=UNPACED)
            payload = subprocess.Popen(
                [sys.executable, "-m", "firmware_bridge.cfdp", str(Path(tmp) / "spool"),
                 "--port", emu.a_path, "--rate", str(UART), "--no-uplink"],
                env=env, cwd=tree, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            stop = threading.Event()

            def flood() -> None:
                burst = flood_frames(kind)
                while not stop.is_set():
                    rx.port.write(burst)  # blocks while the emulated line is full

            flooder = threading.Thread(target=flood, daemon=True)
            try:
                while rx.receive(1.0) is None:  # the payload is up and sending
                    assert payload.poll() is None, "the payload exited"
                if kind != "none":
                    flooder.start()
                counts = {"DATA": 0, "ACK": 0, "EVENT": 0, "data_bytes": 0}
                start = time.monotonic() + warmup
                end = start + seconds
                flood_at_start = None
                while (now := time.monotonic()) < end:
                    frame = rx.receive(0.05)
                    if now >= start and flood_at_start is None:
                        flood_at_start = emu.stats["b_to_a"].bytes_out
                    if frame is None or now < start:
                        continue
                    name = MsgType(frame.msg_type).name
                    counts[name] = counts.get(name, 0) + 1
                    if name == "DATA":
                        counts["data_bytes"] += len(frame.body)
                flood_bytes = emu.stats["b_to_a"].bytes_out - (flood_at_start or 0)
            finally:
                stop.set()
                if flooder.is_alive():  # its last burst leaves while the payload still reads
                    flooder.join(30)
                payload.kill()
                payload.wait()
                rx.close()
    return {"flood": kind, "tree": str(tree) if tree else "current",
            "data_frames_per_s": counts["DATA"] / seconds,
            "data_bytes_per_s": counts["data_bytes"] / seconds,
            "ack_frames_per_s": counts["ACK"] / seconds,
            "event_frames_per_s": counts["EVENT"] / seconds,
            "flood_bytes_per_s": flood_bytes / seconds}


@click.command(help=__doc__.splitlines()[0])
@click.option("--seconds", type=float, default=8.0, show_default=True, help="measuring window")
@click.option("--warmup", type=float, default=2.0, show_default=True)
@click.option("--tree", type=click.Path(file_okay=False, path_type=Path),
              help="run the payload from this checkout")
@click.option("--floods", type=click.Choice(FLOODS), multiple=True, default=FLOODS,
              show_default=True, help="flood kinds to measure (repeat the option for several)")
@click.option("--json", "json_path", type=click.Path(dir_okay=False),
              help="also write the rows to this file")
def main(seconds: float, warmup: float, tree: Path | None, floods: tuple[str, ...],
         json_path: str | None) -> None:
    rows = [measure(kind, seconds, warmup, tree) for kind in floods]
    print(f"payload code: {rows[0]['tree']}; line {UART:.0f} B/s each way; "
          f"{seconds:.0f} s window after {warmup:.0f} s warm-up")
    print(f"{'flood':>16} {'flood B/s':>10} {'DATA/s':>7} {'DATA B/s':>9} {'ACK/s':>7} {'EVENT/s':>8}")
    for r in rows:
        print(f"{r['flood']:>16} {r['flood_bytes_per_s']:>10.0f} {r['data_frames_per_s']:>7.2f} "
              f"{r['data_bytes_per_s']:>9.0f} {r['ack_frames_per_s']:>7.1f} "
              f"{r['event_frames_per_s']:>8.1f}")
    if json_path:
        Path(json_path).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
