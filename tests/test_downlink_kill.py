"""kill -9 of the payload process while it spools and sends: after every restart nothing that
was spooled is lost and nothing corrupt reaches the ground.

The payload process owns the spool directory and its end of the pty link (the link
emulator, with 1 % frame drops); the ground (this process) runs the CFDP receiver over the
other end. Each life spools a few new products and sends; it is SIGKILLed at a random moment
(during a spool write, mid-transfer, waiting for the ground's Finished PDU, ...). Every life
is forked from a "zygote" process that has already imported everything, so a life costs its
run time rather than 1-2 s of Python imports; the killed process is the one that opened the
spool and the serial port, exactly as the flight process does.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from firmware_bridge.cfdp.common import DownlinkConfig
from firmware_bridge.cfdp.receiver import DownlinkReceiver, ReceivedFile
from firmware_bridge.link import UNPACED, Link
from firmware_bridge.linkemu import Impairments, LinkEmulator
from firmware_bridge.messages import MsgType
from firmware_bridge.spool import Spool

# One definition of the products, executed here and in the payload process.
PRODUCT_SRC = textwrap.dedent(
    """
    import random
    from onboard.formats.products import Product, ProductKind

    KINDS = [ProductKind.HEALTH, ProductKind.RESIDUE, ProductKind.QUICKLOOK, ProductKind.CUBE,
             ProductKind.EVENT]

    def product(i: int) -> Product:
        rng = random.Random(i)
        return Product(kind=KINDS[i % len(KINDS)], frame_counter=i, created_utc=1.7e9 + i,
                       payload=rng.randbytes(rng.randrange(0, 20_000)), encoding="npz")
    """
)
_ns: dict = {}
exec(PRODUCT_SRC, _ns)
product = _ns["product"]

RATE = 60_000.0  # bytes/s: a life sends for a fraction of a second, so kills land mid-transfer
CONFIG = dict(ack_timer_s=0.2, nak_timer_s=0.2, check_timer_s=0.2, inactivity_s=1.0,
              ack_limit=5, nak_limit=5)

ZYGOTE = PRODUCT_SRC + textwrap.dedent(
    f"""
    import os, sys
    from firmware_bridge.dispatch import CommandDispatcher
    from firmware_bridge.cfdp.common import DownlinkConfig
    from firmware_bridge.cfdp.sender import DownlinkSender
    from firmware_bridge.link import ByteRate, Link, PayloadEndpoint
    from firmware_bridge.messages import MsgType
    from firmware_bridge.spool import Spool

    spool_dir, port = sys.argv[1], sys.argv[2]

    def life(start, count, log_path, final):
        log = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        spool = Spool(spool_dir, 50_000_000)
        link = Link.open(port, rate=ByteRate({RATE}))
        sender = DownlinkSender(spool, link.send_data, DownlinkConfig(**{CONFIG!r}))
        bench = CommandDispatcher({{}}, allow_unauthenticated=(MsgType.PING, MsgType.DATA))
        endpoint = PayloadEndpoint(link, bench, sender.on_packet)  # a bench link, no key
        for i in range(start, start + count):
            p = product(i)
            spool.put(p.name, p.to_bytes(), p.priority, p.kind.value)
            os.write(log, f"SPOOLED {{i}}\\n".encode())
            for _ in range(3):
                endpoint.poll(0.0)
                sender.step()
        while True:
            endpoint.poll(0.0)
            if not sender.step():
                if final:
                    os.write(log, b"EMPTY\\n")
                    os._exit(0)
                endpoint.poll(0.02)

    for line in sys.stdin:
        start, count, log_path, final = line.split()
        pid = os.fork()
        if pid == 0:
            try:
                life(int(start), int(count), log_path, final == "1")
            finally:
                os._exit(1)
        print(pid, flush=True)
        _, status = os.waitpid(pid, 0)
        print(status, flush=True)
    """
)


class Ground:
    """The CFDP receiver on the far end of the link, pumped from the test's thread."""

    def __init__(self, path: str, staging: Path) -> None:
        self.link = Link.open(path, rate=UNPACED)
        self.files: list[ReceivedFile] = []
        self.rx = DownlinkReceiver(staging, self.files.append, self.link.send_data,
                                   DownlinkConfig(**CONFIG))

    def pump(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while True:
            frame = self.link.receive(0.01)
            while frame is not None:
                if frame.msg_type == MsgType.DATA:
                    self.rx.on_packet(frame.body)
                frame = self.link.receive(0.0)
            self.rx.poll()
            if time.monotonic() >= end:
                return


def check_after_kill(spool_dir: Path, confirmed: set[int], attempted: set[int],
                     ground: Ground) -> None:
    """What a restart finds: every queued file is a whole product that was spooled, and
    every product whose put() returned is still queued or already on the ground."""
    expected = {product(i).name: product(i).to_bytes() for i in attempted}
    queued = set()
    for path in (spool_dir / "queue").iterdir() if (spool_dir / "queue").exists() else []:
        if path.name.endswith(".tmp"):
            continue  # a put cut short: never confirmed, discarded at the next start
        name = path.name.split(".")[-1]
        assert path.read_bytes() == expected[name], f"{path.name} is not what was spooled"
        queued.add(name)
    on_ground = {f.name for f in ground.files}
    lost = [i for i in confirmed if product(i).name not in queued | on_ground]
    assert not lost, f"confirmed products neither queued nor delivered: {lost}"


def run_kills(tmp_path: Path, lives: int, seed: int) -> None:
    rng = random.Random(seed)
    spool_dir = tmp_path / "spool"
    imp = Impairments(bytes_per_s=RATE, frame_drop=0.01, buffer_bytes=8192)
    confirmed: set[int] = set()
    attempted: set[int] = set()
    next_index = 0
    with LinkEmulator(imp, seed=seed) as emu:
        ground = Ground(emu.b_path, tmp_path / "staging")
        zygote = subprocess.Popen([sys.executable, "-c", ZYGOTE, str(spool_dir), emu.a_path],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        try:
            for n in range(lives + 1):
                final = n == lives
                count = 0 if final else rng.randint(1, 4)
                log = tmp_path / f"life{n}.log"
                zygote.stdin.write(f"{next_index} {count} {log} {int(final)}\n")
                zygote.stdin.flush()
                pid = int(zygote.stdout.readline())
                attempted.update(range(next_index, next_index + count))
                next_index += count
                if final:
                    deadline = time.monotonic() + 60
                    while zygote.poll() is None and time.monotonic() < deadline:
                        ground.pump(0.05)
                        if log.exists() and "EMPTY" in log.read_text():
                            break
                    assert "EMPTY" in log.read_text(), "the spool did not drain after the kills"
                    ground.pump(0.5)  # the last Finished PDU's ACK
                    assert int(zygote.stdout.readline()) == 0  # exit status of the last life
                else:
                    ground.pump(rng.uniform(0.0, 0.4))
                    os.kill(pid, signal.SIGKILL)
                    status = int(zygote.stdout.readline())
                    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, (
                        f"life {n} ended by itself (status {status}): see {log}")
                if log.exists():
                    confirmed.update(int(x.split()[1]) for x in log.read_text().splitlines()
                                     if x.startswith("SPOOLED"))
                check_after_kill(spool_dir, confirmed, attempted, ground)
        finally:
            zygote.stdin.close()
            zygote.kill()
            zygote.wait(10)
            ground.link.close()
    assert emu.error is None
    delivered: dict[str, set[bytes]] = {}
    for f in ground.files:
        delivered.setdefault(f.name, set()).add(f.data)
    expected = {product(i).name: product(i).to_bytes() for i in attempted}
    # nothing corrupt: every delivered file is, byte for byte, a product that was spooled
    for name, copies in delivered.items():
        assert copies == {expected[name]}, f"{name}: corrupt or foreign delivery"
    # nothing lost: every product whose put() returned reached the ground
    missing = sorted(i for i in confirmed if product(i).name not in delivered)
    assert not missing, f"spooled but never delivered: {missing}"
    spool = Spool(spool_dir, 50_000_000)
    assert len(spool) == 0 and not list(spool.queue_dir.glob("*.tmp"))
    print(f"\n{lives} kill -9: {len(confirmed)} products confirmed spooled, "
          f"{len(delivered)} delivered ({len(ground.files) - len(delivered)} duplicate copies "
          f"dropped by name + SHA-256), {ground.rx.stats.superseded} transfers superseded (cut "
          f"by a kill, or preempted) and restarted, {ground.rx.stats.bad_packets} bad packets "
          "refused")


def test_kill_9_while_spooling_and_sending(tmp_path: Path) -> None:
    run_kills(tmp_path, lives=int(os.environ.get("ONBOARD_KILLS", "15")), seed=1)


@pytest.mark.slow
def test_kill_9_fifty_times(tmp_path: Path) -> None:
    run_kills(tmp_path, lives=50, seed=2)
