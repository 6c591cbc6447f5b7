"""Writing on the payload's disk: short writes completed, a full disk refused cleanly, the
free-space floor kept by shedding archive copies then low-priority products (an event each),
and a spool that still delivers on a disk with no free byte. The full-disk tests run on a
real small file system (a tmpfs the test mounts; that needs root)."""

from __future__ import annotations

import contextlib
import errno
import os
import random
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_downlink import FAST, exchange
from test_ground import make_product  # noqa: I001  (a sibling test module, after ours)

from firmware_bridge.cfdp.receiver import DownlinkReceiver, ReceivedFile
from firmware_bridge.cfdp.sender import DownlinkSender
from firmware_bridge.spool import Spool, SpoolEvent
from firmware_bridge.storage import SlotRecord, StorageBudget, atomic_write, free_bytes
from onboard.formats.products import ProductKind
from onboard.runtime.pipeline import FrameResult
from onboard.runtime.writer import ProductWriter


@contextlib.contextmanager
def small_fs(where: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` mounted at ``where`` for the test's duration."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs to fill needs root")
    where.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=True)


def fill_disk(path: Path, leave: int = 0) -> Path:
    """Fill the file system of ``path`` until ``leave`` bytes or fewer are free."""
    filler = path / "filler"
    with open(filler, "wb") as fh:
        chunk = bytes(65536)
        while (free := free_bytes(path)) > leave:
            try:
                fh.write(chunk[: max(1, min(len(chunk), free - leave))])
                fh.flush()
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
                break
    return filler


def short_writes(monkeypatch: pytest.MonkeyPatch, at_most: int = 4096) -> None:
    """os.write writes at most ``at_most`` bytes per call, as it may near a full disk."""
    real = os.write
    monkeypatch.setattr(os, "write", lambda fd, data: real(fd, bytes(data)[:at_most]))


def test_a_product_is_stored_whole_when_os_write_is_short(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    data = random.Random(0).randbytes(500_280)
    short_writes(monkeypatch)
    Spool(tmp_path, 10_000_000).put("residue_1", data, 1, "residue")
    (entry,) = Spool(tmp_path, 10_000_000).entries()
    assert entry.path.read_bytes() == data


def test_a_full_disk_keeps_the_old_file_and_leaves_no_partial(tmp_path: Path) -> None:
    with small_fs(tmp_path / "fs", "256k") as fs:
        target = fs / "state.json"
        atomic_write(target, b"old")
        fill_disk(fs, leave=8192)
        with pytest.raises(OSError) as err:
            atomic_write(target, bytes(100_000))
        assert err.value.errno == errno.ENOSPC
        assert target.read_bytes() == b"old"
        assert sorted(p.name for p in fs.iterdir()) == ["filler", "state.json"]


def test_a_torn_slot_leaves_the_previous_record(tmp_path: Path) -> None:
    record = SlotRecord(tmp_path / "r.bin")
    for i in range(5):
        record.write(f"record {i}".encode())
    assert SlotRecord(tmp_path / "r.bin").read() == b"record 4"
    raw = bytearray((tmp_path / "r.bin").read_bytes())
    newest = 0 if raw[SlotRecord.SLOT + 4:SlotRecord.SLOT + 12] < raw[4:12] else 1
    raw[newest * SlotRecord.SLOT + 20] ^= 0xFF  # power cut in the middle of the last write
    (tmp_path / "r.bin").write_bytes(bytes(raw))
    again = SlotRecord(tmp_path / "r.bin")
    assert again.read() == b"record 3"
    again.write(b"record 5")  # overwrites the torn slot, keeps record 3 as the fallback
    assert SlotRecord(tmp_path / "r.bin").read() == b"record 5"
    (tmp_path / "r.bin").write_bytes(bytes(2 * SlotRecord.SLOT))
    with pytest.raises(ValueError, match="neither slot"):
        SlotRecord(tmp_path / "r.bin").read()


def frame(i: int, *kinds: ProductKind) -> FrameResult:
    return FrameResult(counter=i, products=[make_product(i, k) for k in kinds])


def test_the_floor_sheds_archive_copies_then_low_priority_products(tmp_path: Path) -> None:
    with small_fs(tmp_path / "fs", "2m") as fs:
        floor = 256 * 1024
        writer = ProductWriter(fs / "out", StorageBudget(floor))
        spool = Spool(fs / "out" / "spool", 100_000_000, budget=writer.budget)
        events: list[SpoolEvent] = []
        queued: set[str] = set()
        products: dict[str, bytes] = {}
        for i in range(400):
            result = frame(i, ProductKind.RESIDUE, ProductKind.CUBE)
            products.update({p.name: p.to_bytes() for p in result.products})
            for p in result.products:
                got = spool.put(p.name, p.to_bytes(), p.priority, p.kind.value)
                events += got
                if any(e.what == "evicted" and e.kind == "residue" for e in got):
                    # a residue map goes only once no cube is left to make room
                    assert not [e for e in spool.entries() if e.kind == "cube"]
                queued |= {e.name for e in got if e.what == "queued"}
            events += writer.write(result)
            assert free_bytes(fs) >= floor - 64 * 1024  # page rounding of the last write
        whats = [e.what for e in events]
        # the archive went first: every eviction from the spool came after archive copies ran out
        first_evicted = whats.index("evicted")
        assert "shed" in whats[:first_evicted]
        assert {e.kind for e in events if e.what == "evicted"} == {"cube", "residue"}
        assert all(e.reason for e in events if e.what in ("evicted", "shed", "refused"))
        # everything reported queued and not evicted is in the spool, whole
        evicted = {e.name for e in events if e.what == "evicted"}
        in_spool = {e.name: e for e in spool.entries()}
        assert set(in_spool) == queued - evicted
        assert all(e.path.read_bytes() == products[e.name] for e in spool.entries())
        # a cube never pushes out a residue map: cubes are refused once no cube can make room
        assert any(e.what == "refused" and e.kind == "cube" for e in events)


def test_a_payload_restarted_on_a_disk_with_no_free_byte_drains_its_spool(tmp_path: Path) -> None:
    with small_fs(tmp_path / "fs", "1m") as fs:
        products = [make_product(i, ProductKind.RESIDUE) for i in range(5)]
        spool = Spool(fs / "spool", 10_000_000)
        for p in products:
            spool.put(p.name, p.to_bytes(), p.priority, p.kind.value)
        fill_disk(fs)
        assert free_bytes(fs) == 0
        # the restart: the spool is opened again and the downlink starts from its state; the
        # ground's disk is another one
        spool = Spool(fs / "spool", 10_000_000)
        down: list[bytes] = []
        up: list[bytes] = []
        got: list[ReceivedFile] = []
        rx = DownlinkReceiver(tmp_path / "ground", got.append, up.append, FAST)
        exchange(DownlinkSender(spool, down.append, FAST), rx, down, up, random.Random(0))
        assert {f.name: f.data for f in got} == {p.name: p.to_bytes() for p in products}
        assert len(spool) == 0
