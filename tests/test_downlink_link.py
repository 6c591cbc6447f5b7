"""The downlink end to end over the serial link: two real processes (the payload serving its
spool with ``python -m firmware_bridge.cfdp``, the ground running ``onboard ground
receive``) joined by the pty link emulator with bit errors, frame drops and a cut."""

from __future__ import annotations

import json
import queue
import re
import secrets
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO

from test_ground import check_outputs, products

from firmware_bridge.auth import provision
from firmware_bridge.linkemu import Impairments, LinkEmulator
from firmware_bridge.spool import Spool

#: The ground's log record of a transaction it closed (firmware_bridge/cfdp/receiver.py).
CLOSED = re.compile(r"INFO firmware_bridge\.cfdp\.receiver: (\S+): CFDP transaction \d+ closed$")


def follow(stream: IO[str]) -> tuple[queue.Queue[str], list[str]]:
    """Lines of ``stream`` as they come (a queue, "" at the end) and all of them (a list),
    read on a thread so that the test can wait for a line without blocking for ever."""
    lines: queue.Queue[str] = queue.Queue()
    seen: list[str] = []

    def pump() -> None:
        for line in stream:
            seen.append(line)
            lines.put(line)
        lines.put("")

    threading.Thread(target=pump, daemon=True).start()
    return lines, seen


def wait_until_closed(lines: queue.Queue[str], names: set[str], timeout: float) -> None:
    """Until the ground has logged the close of a transaction for each of ``names``."""
    deadline = time.monotonic() + timeout
    waiting = set(names)
    while waiting:
        try:
            line = lines.get(timeout=max(deadline - time.monotonic(), 0.0))
        except queue.Empty:
            raise AssertionError(f"the ground never closed the transactions of {sorted(waiting)}") from None
        if not line:
            raise AssertionError("the ground exited before closing every transaction")
        closed = CLOSED.search(line)
        if closed:
            waiting.discard(closed.group(1))


def test_two_processes_over_an_impaired_pty_link(tmp_path: Path) -> None:
    prods = products(6)
    spool = Spool(tmp_path / "spool", 10_000_000)
    for p in prods:
        spool.put(p.name, p.to_bytes(), p.priority, p.kind.value)
    out = tmp_path / "ground"
    secret = secrets.token_bytes(32)  # the ground signs its CFDP PDUs (PROTOCOL.md section 4)
    provision(tmp_path / "payload.key", tmp_path / "payload.counter", secret)
    provision(tmp_path / "ground.key", tmp_path / "ground.counter", secret)
    imp = Impairments(bytes_per_s=11520, latency_s=0.005, bit_error_rate=1e-5, frame_drop=0.02)
    with LinkEmulator(imp, seed=3) as emu:
        ground = subprocess.Popen(
            [sys.executable, "-m", "onboard", "--log-level", "info", "ground", "receive", "--port", emu.b_path,
             "-o", str(out), "--ack-timer", "0.5", "--json", "--key-file",
             str(tmp_path / "ground.key"), "--counter-file", str(tmp_path / "ground.counter")],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        # pyserial empties the input buffer when it opens a port: start once the ground listens
        assert "listening on" in ground.stderr.readline()
        lines, seen = follow(ground.stderr)
        emu.cut(1.0, after_s=1.5)
        payload = subprocess.run(
            [sys.executable, "-m", "firmware_bridge.cfdp", str(tmp_path / "spool"),
             "--port", emu.a_path, "--rate", "11520", "--until-empty", "--ack-timer", "0.5",
             "--inactivity", "2", "--key-file", str(tmp_path / "payload.key"),
             "--counter-file", str(tmp_path / "payload.counter")],
            capture_output=True, text=True, timeout=120)
        assert payload.returncode == 0, payload.stderr
        # the payload left once every file was Finished; the ground closes each transaction
        # when it hears the ACK of its Finished PDU (or gives up after the ACK limit, 3 x 0.5 s)
        wait_until_closed(lines, {p.name for p in prods}, timeout=30)
        ground.send_signal(signal.SIGINT)  # Ctrl-C: the ground prints its summary and exits
        stdout = ground.stdout.read()
        ground.wait(timeout=60)
    stderr = "".join(seen)
    assert ground.returncode == 0, stderr
    assert emu.error is None
    summary = json.loads(stdout)
    stats = emu.stats
    print(f"\nlink a->b {stats['a_to_b']}\nlink b->a {stats['b_to_a']}\nground {summary}")
    assert summary["products"] == len(prods) and summary["rejected"] == 0
    assert stats["a_to_b"].frames_dropped > 0 and stats["a_to_b"].bytes_cut > 0
    check_outputs(out, prods)
    # delivered in priority order (everything was queued before the link came up)
    index = [json.loads(x) for x in (out / "index.jsonl").read_text().splitlines()]
    prio = {p.name: p.priority for p in prods}
    order = [prio[r["name"]] for r in index]
    assert order == sorted(order)
    assert len(Spool(tmp_path / "spool", 10_000_000)) == 0
    # the capture decodes offline to the same products
    again = subprocess.run([sys.executable, "-m", "onboard", "ground", "decode",
                            str(out / "downlink.cap"), "-o", str(tmp_path / "offline"), "--json"],
                           capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["products"] == len(prods)
