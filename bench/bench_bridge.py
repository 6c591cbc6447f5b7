"""Bridge throughput over a real pseudo-terminal pair through the link emulator.

For each configured rate and body size, one thread sends DATA frames through a pty (paced
by ``Link`` at the configured rate, throttled again by the emulator as the wire would), the
main thread receives them through the other pty; the table gives body bytes delivered per
second against the configured byte rate, and the framing overhead.

    python bench/bench_bridge.py [--seconds 3] [--json out.json]
"""

from __future__ import annotations

import json
import threading
import time

import click

from firmware_bridge.framing import Frame, encode, wire_size
from firmware_bridge.link import RADIO_9600, UART_115200, UNPACED, ByteRate, Link
from firmware_bridge.linkemu import Impairments, LinkEmulator


def measure(rate: ByteRate, body: int, seconds: float) -> dict:
    emu_rate = rate.bytes_per_s if rate is not UNPACED else 1e9
    count = max(4, int(seconds * min(emu_rate, 2e6) / wire_size(body)))
    payload = bytes((i % 255) + 1 for i in range(body))
    with LinkEmulator(Impairments(bytes_per_s=emu_rate, buffer_bytes=16384)) as emu:
        with Link.open(emu.a_path, rate=rate) as tx, Link.open(emu.b_path, rate=UNPACED) as rx:
            sender = threading.Thread(target=lambda: [tx.send_data(payload) for _ in range(count)])
            t0 = time.perf_counter()
            sender.start()
            got = 0
            while got < count:
                f = rx.receive(2.0)
                if f is None:
                    break
                got += f.body == payload
            elapsed = time.perf_counter() - t0
            sender.join()
    return {
        "configured_Bps": None if rate is UNPACED else rate.bytes_per_s,
        "body_bytes": body,
        "frames": count,
        "intact": got,
        "wire_bytes_per_frame": len(encode(Frame(0x80, 0, payload))),
        "overhead_bytes": len(encode(Frame(0x80, 0, payload))) - body,
        "body_Bps": got * body / elapsed,
        "efficiency": None if rate is UNPACED else got * body / elapsed / rate.bytes_per_s,
    }


@click.command(help=__doc__.splitlines()[0])
@click.option("--seconds", type=float, default=3.0, show_default=True)
@click.option("--json", "json_path", type=click.Path(dir_okay=False),
              help="also write the rows to this file")
def main(seconds: float, json_path: str | None) -> None:
    rows = [
        measure(rate, body, seconds)
        for rate in (UART_115200, RADIO_9600, UNPACED)
        for body in (200, 1024)
    ]
    print(
        f"{'rate B/s':>10} {'body':>5} {'frames':>6} {'intact':>6} {'overhead':>8} "
        f"{'body B/s':>10} {'of rate':>7}"
    )
    for r in rows:
        rate = "unpaced" if r["configured_Bps"] is None else f"{r['configured_Bps']:.0f}"
        eff = "" if r["efficiency"] is None else f"{100 * r['efficiency']:.1f}%"
        print(
            f"{rate:>10} {r['body_bytes']:>5} {r['frames']:>6} {r['intact']:>6} "
            f"{r['overhead_bytes']:>8} {r['body_Bps']:>10.0f} {eff:>7}"
        )
    if json_path:
        with open(json_path, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
