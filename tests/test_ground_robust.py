"""The ground never stops on one bad product and never acknowledges what it has not kept:
bad products go to quarantine and the next ones decode, the Finished PDU follows the
durable write, declared sizes, checksum types and transaction counts are bounded, and a torn
``index.jsonl`` does not stop a restart."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest
from spacepackets.ccsds.spacepacket import PacketType
from spacepackets.cfdp import ChecksumType
from spacepackets.cfdp.pdu import FinishedPdu, MetadataPdu
from test_downlink import FAST, exchange
from test_ground import ground_cli, make_product, onboard

from firmware_bridge.cfdp.common import DownlinkConfig, parse_pdu, unwrap
from firmware_bridge.cfdp.receiver import DownlinkReceiver, FailedTransfer, ReceivedFile
from firmware_bridge.cfdp.sender import DownlinkSender
from firmware_bridge.spool import Spool
from ground.capture import CaptureWriter
from ground.decode import decode_capture
from onboard.formats.products import Product, ProductKind

BENCH = Path(__file__).parents[1] / "bench"
sys.path.insert(0, str(BENCH))
from bench_ground_fuzz import class1_downlink, header_edit, restamp  # noqa: E402

CLASS1 = DownlinkConfig(acknowledged=False)


def class1_packets(tmp: Path, items: list[tuple[str, str, int, bytes]]) -> list[bytes]:
    """The space packets of a class 1 downlink of ``items`` (name, kind, priority, bytes),
    sent in the order given."""
    per = class1_downlink(tmp / "spool", [(name, kind, data) for name, kind, _p, data in items])
    return [packet for product in per for packet in product]


def write_capture(path: Path, packets: list[bytes]) -> Path:
    w = CaptureWriter(path)
    for p in packets:
        w.write(0, p)
    w.close()
    return path


def item(p: Product, data: bytes | None = None) -> tuple[str, str, int, bytes]:
    return (p.name, p.kind.value, p.priority or 0, p.to_bytes() if data is None else data)


MALFORMED = {
    "payload_bytes missing": lambda h: h.pop("payload_bytes") and None,
    "header is a list": lambda h: [h],
    "unknown kind": lambda h: h.update(kind="bogus"),
    "encoding missing": lambda h: h.pop("encoding") and None,
    "payload_sha256 missing": lambda h: h.pop("payload_sha256") and None,
}


def test_malformed_product_headers_are_quarantined_and_the_next_products_decode(
        tmp_path: Path) -> None:
    good = [make_product(i, ProductKind.HEALTH) for i in range(len(MALFORMED) + 1)]
    items = []
    for (_why, edit), p, bad in zip(MALFORMED.items(), good, range(100, 200), strict=False):
        items.append(item(p))
        q = make_product(bad, ProductKind.HEALTH)
        items.append(item(q, header_edit(q.to_bytes(), edit)))
    items.append(item(good[-1]))
    capture = write_capture(tmp_path / "c.cap", class1_packets(tmp_path, items))
    result = onboard("ground", "decode", str(capture), "-o", str(tmp_path / "out"), "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["products"] == len(good) and summary["quarantined"] == len(MALFORMED)
    index = [json.loads(x) for x in (tmp_path / "out" / "index.jsonl").read_text().splitlines()]
    assert sorted(r["name"] for r in index) == sorted(p.name for p in good)
    rejected = [json.loads(x) for x in (tmp_path / "out" / "rejected.jsonl").read_text().splitlines()]
    assert len(rejected) == len(MALFORMED)
    by_name = {name: data for name, _k, _p, data in items}
    for r in rejected:
        assert "not a valid product" in r["reason"]
        assert (tmp_path / "out" / r["file"]).read_bytes() == by_name[r["what"]]  # kept whole


def test_a_payload_no_format_can_read_is_quarantined_not_fatal(tmp_path: Path) -> None:
    bad = Product(kind=ProductKind.RESIDUE, frame_counter=7, created_utc=1.0,
                  payload=b"not an npz", encoding="npz")
    after = make_product(8, ProductKind.RESIDUE)
    capture = write_capture(tmp_path / "c.cap",
                            class1_packets(tmp_path, [item(bad), item(after)]))
    sink, _, error = decode_capture(capture, tmp_path / "out")
    assert error is None and sink.stats.products == 1 and sink.stats.quarantined == 1
    assert not (tmp_path / "out" / "raw" / f"{bad.name}.obp").exists()
    assert (tmp_path / "out" / "raw" / f"{after.name}.obp").read_bytes() == after.to_bytes()


def one_residue_spool(tmp_path: Path) -> Spool:
    spool = Spool(tmp_path / "spool", 10_000_000)
    p = make_product(1, ProductKind.RESIDUE)
    spool.put(p.name, p.to_bytes(), 1, "residue")
    return spool


def test_the_finished_pdu_is_sent_only_after_the_file_is_kept(tmp_path: Path) -> None:
    spool = one_residue_spool(tmp_path)
    down: list[bytes] = []
    up: list[bytes] = []
    seen_at_delivery: list[tuple[int, bool]] = []

    def finished_sent() -> int:
        return sum(isinstance(parse_pdu(unwrap(x, PacketType.TC)[1]), FinishedPdu) for x in up)

    def keep(f: ReceivedFile) -> None:
        staged = tmp_path / "staging" / f"{f.transaction[0]}-{f.transaction[1]}" / f"{f.name}.obp"
        seen_at_delivery.append((finished_sent(), staged.is_file()))

    rx = DownlinkReceiver(tmp_path / "staging", keep, up.append, FAST)
    exchange(DownlinkSender(spool, down.append, FAST), rx, down, up, random.Random(0))
    # no Finished PDU had gone up when the file was handed over, and it was still staged
    assert seen_at_delivery[0] == (0, True)


def test_a_file_the_ground_cannot_keep_is_not_acknowledged(tmp_path: Path) -> None:
    spool = one_residue_spool(tmp_path)
    down: list[bytes] = []
    up: list[bytes] = []
    failures: list[FailedTransfer] = []

    def disk_full(f: ReceivedFile) -> None:
        raise OSError(28, "No space left on device")

    rx = DownlinkReceiver(tmp_path / "staging", disk_full, up.append, FAST, failures.append)
    tx = DownlinkSender(spool, down.append, FAST)
    for _ in range(200):
        tx.step()
        for x in down:
            rx.on_packet(x)
        down.clear()
        for x in up:
            tx.on_packet(x)
        up.clear()
        if failures:
            break
    assert failures and "cannot keep the file" in failures[0].reason
    assert tx.stats.delivered == 0 and len(spool) == 1  # the payload still has it


def offline_receiver(tmp_path: Path, config: DownlinkConfig = CLASS1):
    got: list[ReceivedFile] = []
    failed: list[FailedTransfer] = []
    return DownlinkReceiver(tmp_path / "staging", got.append, None, config, failed.append), got, failed


@pytest.mark.parametrize("params,why", [
    ({"file_size": 3 * 2**30, "checksum_type": ChecksumType.NULL_CHECKSUM}, "checksum type"),
    ({"file_size": 2**32 - 1}, "declared file size"),
])
def test_declared_sizes_and_checksum_types_are_checked_first(tmp_path: Path, params: dict,
                                                             why: str) -> None:
    p = make_product(1, ProductKind.HEALTH)
    packets = class1_packets(tmp_path, [item(p)])
    rx, got, failed = offline_receiver(tmp_path)
    rx.on_packet(restamp(packets[0], **params))
    for x in packets[1:]:
        rx.on_packet(x)  # the rest of the refused transaction is dropped, not reopened
    assert not got and len(failed) == 1 and why in failed[0].reason
    assert rx.open_transactions == 0 and not any((tmp_path / "staging").iterdir())


def test_file_data_beyond_the_declared_size_is_refused_before_it_is_written(
        tmp_path: Path) -> None:
    p = make_product(1, ProductKind.RESIDUE)
    packets = class1_packets(tmp_path, [item(p)])
    rx, got, failed = offline_receiver(tmp_path)
    rx.on_packet(restamp(packets[0], file_size=100))  # then data up to the real size
    for x in packets[1:]:
        rx.on_packet(x)
    assert not got and "beyond the declared size" in failed[0].reason
    assert rx.open_transactions == 0


def test_open_transactions_are_bounded_and_the_oldest_fails_first(tmp_path: Path) -> None:
    p = make_product(1, ProductKind.HEALTH)
    metadata = class1_packets(tmp_path, [item(p)])[0]
    assert isinstance(parse_pdu(unwrap(metadata, PacketType.TM)[1]), MetadataPdu)
    config = DownlinkConfig(acknowledged=False, max_open_transactions=8)
    rx, got, failed = offline_receiver(tmp_path, config)
    for number in range(2000, 0, -1):  # decreasing numbers: none supersedes another
        rx.on_packet(restamp(metadata, number))
        assert rx.open_transactions <= 8
    assert [f.transaction[1] for f in failed] == list(range(2000, 8, -1))
    assert all("too many open transactions" in f.reason for f in failed)
    assert len(list((tmp_path / "staging").iterdir())) == 8


def test_a_torn_last_index_line_does_not_stop_decode(tmp_path: Path) -> None:
    first, second = make_product(1, ProductKind.HEALTH), make_product(2, ProductKind.HEALTH)
    capture = write_capture(tmp_path / "a.cap", class1_packets(tmp_path / "a", [item(first)]))
    assert ground_cli("decode", str(capture), "-o", str(tmp_path / "out")).exit_code == 0
    index = tmp_path / "out" / "index.jsonl"
    whole = index.read_bytes()
    index.write_bytes(whole + whole[: len(whole) // 2])  # power cut inside the next line
    capture = write_capture(tmp_path / "b.cap",
                            class1_packets(tmp_path / "b", [item(first), item(second)]))
    result = ground_cli("decode", str(capture), "-o", str(tmp_path / "out"), "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["products"] == 1 and summary["duplicates"] == 1
    names = [json.loads(x)["name"] for x in index.read_text().splitlines()]
    assert names == [first.name, second.name]
    assert (tmp_path / "out" / "index.jsonl.torn").read_bytes() == whole[: len(whole) // 2] + b"\n"


def test_the_ground_survives_mutated_captures_and_decodes_every_untouched_product(
        tmp_path: Path) -> None:
    """A few hundred captures of bench/bench_ground_fuzz.py (the benchmark runs 10 000)."""
    out = tmp_path / "fuzz.json"
    bench = BENCH / "bench_ground_fuzz.py"
    done = subprocess.run([sys.executable, str(bench), "--captures", "300", "--seed", "1",
                           "--json", str(out)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    res = json.loads(out.read_text())
    assert res["crashes"] == 0, res["crash_samples"]
    assert res["untouched_lost"] == 0
    by = res["by_mutation"]
    assert all(by[m]["captures"] == 60 for m in by)
    assert by["product"]["quarantined"] >= 50 and by["pdu"]["refused"] > 0
    assert res["rss_end_mb"] - res["rss_start_mb"] < 64  # no growth with the captures
