"""CFDP over CCSDS space packets: class 2 recovers losses, class 1 without an uplink, restarts,
hostile packets, an independent decoder (ccsdspy) and the link budget."""

from __future__ import annotations

import dataclasses
import random
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from spacepackets.ccsds.spacepacket import PacketType
from spacepackets.cfdp.pdu import AckPdu, FinishedPdu

from firmware_bridge.cfdp.common import (
    APID_BY_KIND,
    APID_CONTROL,
    APID_UPLINK,
    DownlinkConfig,
    PacketSequencer,
    parse_pdu,
)
from firmware_bridge.cfdp.receiver import DownlinkReceiver, FailedTransfer, ReceivedFile
from firmware_bridge.cfdp.sender import DownlinkSender, drain_estimate, transfer_packet_sizes
from firmware_bridge.link import RADIO_9600, UART_115200
from firmware_bridge.messages import EventCode
from firmware_bridge.spool import Spool

#: Timers short enough for tests on an in-process channel (no real latency).
FAST = DownlinkConfig(ack_timer_s=0.05, nak_timer_s=0.05, check_timer_s=0.05, inactivity_s=1.0,
                      ack_limit=5, nak_limit=5)

KINDS = [("health", 0), ("event", 0), ("residue", 1), ("quicklook", 2), ("cube", 3)]


def exchange(
    sender: DownlinkSender,
    receiver: DownlinkReceiver,
    down: list[bytes],
    up: list[bytes],
    rng: random.Random,
    drop: float = 0.0,
    tap: Callable[[int, bytes], None] | None = None,
    timeout_s: float = 30.0,
) -> None:
    """Run both ends over an in-process channel that drops a fraction of packets each way,
    until the spool is empty. ``tap(direction, packet)`` sees every packet sent."""
    deadline = time.monotonic() + timeout_s
    while sender.busy and time.monotonic() < deadline:
        sender.step()
        for packet in down:
            if tap:
                tap(0, packet)
            if rng.random() >= drop:
                receiver.on_packet(packet)
        down.clear()
        receiver.poll()
        for packet in up:
            if tap:
                tap(1, packet)
            if rng.random() >= drop:
                sender.on_packet(packet)
        up.clear()
        time.sleep(0.0002)
    assert not sender.busy, f"spool not drained in {timeout_s} s: {sender.stats}"


def fill(spool: Spool, rng: random.Random, n: int, max_size: int = 30_000) -> dict[str, bytes]:
    blobs = {}
    for i in range(n):
        kind, prio = KINDS[i % len(KINDS)]
        data = rng.randbytes(rng.choice([0, 1, 100, rng.randrange(max_size)]))
        name = f"{kind}_{i:08d}"
        spool.put(name, data, prio, kind)
        blobs[name] = data
    return blobs


def ends(tmp_path: Path, config: DownlinkConfig, uplink: bool = True):
    spool = Spool(tmp_path / "spool", 50_000_000)
    down: list[bytes] = []
    up: list[bytes] = []
    got: list[ReceivedFile] = []
    failed: list[FailedTransfer] = []
    rx = DownlinkReceiver(tmp_path / "staging", got.append, up.append if uplink else None,
                          config, failed.append)
    tx = DownlinkSender(spool, down.append, config)
    return spool, tx, rx, down, up, got, failed


@pytest.mark.parametrize("seed,drop", [(0, 0.0), (1, 0.1), (2, 0.25), (3, 0.25)])
def test_class2_delivers_bit_exact_despite_losses(tmp_path: Path, seed: int, drop: float) -> None:
    rng = random.Random(seed)
    spool, tx, rx, down, up, got, failed = ends(tmp_path, FAST)
    blobs = fill(spool, rng, 10)
    exchange(tx, rx, down, up, rng, drop)
    by_name: dict[str, list[bytes]] = {}
    for f in got:
        by_name.setdefault(f.name, []).append(f.data)
        assert f.kind == f.name.split("_")[0] and f.apid == APID_BY_KIND[f.kind]
    assert set(by_name) == set(blobs)
    for name, copies in by_name.items():
        assert all(c == blobs[name] for c in copies), f"{name} corrupted"
    assert len(spool) == 0 and tx.stats.delivered == len(blobs)
    if drop:
        # losses happened and were repaired by retransmission, not by luck
        assert rx.stats.uplink_packets > 2 * len(blobs)
    # a copy delivered twice is possible only when a transfer was restarted
    assert len(got) - len(blobs) <= tx.stats.failed + tx.stats.restarted_inactive
    # the ground's handlers close once their Finished PDU is acknowledged (or given up on)
    deadline = time.monotonic() + 2
    while rx.open_transactions and time.monotonic() < deadline:
        rx.poll()
        for p in up:
            tx.on_packet(p)
        up.clear()
        tx.step()
        for p in down:
            rx.on_packet(p)
        down.clear()
        time.sleep(0.01)
    assert rx.open_transactions == 0
    assert not list((tmp_path / "staging").iterdir()), "staging not cleaned"


def test_products_reach_the_ground_in_priority_order(tmp_path: Path) -> None:
    rng = random.Random(5)
    spool, tx, rx, down, up, got, _ = ends(tmp_path, FAST)
    fill(spool, rng, 10, max_size=2000)
    exchange(tx, rx, down, up, rng)
    prios = [dict(KINDS)[f.kind] for f in got]
    assert prios == sorted(prios)


def test_a_health_record_preempts_a_cube_that_has_barely_started(tmp_path: Path) -> None:
    rng = random.Random(11)
    spool, tx, rx, down, up, got, failed = ends(tmp_path, FAST)
    cube = rng.randbytes(40_000)
    spool.put("cube_00000001", cube, 3, "cube")
    for _ in range(5):
        tx.step()
    spool.put("health_00000002", b'{"ok": true}', 0, "health")
    exchange(tx, rx, down, up, rng)
    assert [(f.name, len(f.data)) for f in got] == [("health_00000002", 12),
                                                    ("cube_00000001", 40_000)]
    assert got[1].data == cube and tx.stats.preempted == 1
    # past half of its file, a transfer is finished first
    spool.put("cube_00000003", cube, 3, "cube")
    while tx.progress is None or tx.progress[0] < 30_000:
        tx.step()
    spool.put("health_00000004", b"{}", 0, "health")
    exchange(tx, rx, down, up, rng)
    assert [f.name for f in got[2:]] == ["cube_00000003", "health_00000004"]
    assert tx.stats.preempted == 1


def test_undeliverable_spool_entries_are_discarded_with_an_event(tmp_path: Path) -> None:
    spool, tx, rx, down, up, got, _ = ends(tmp_path, FAST)
    spool.put("mystery_1", b"x", 0, "mystery")  # a kind with no APID
    spool.put("residue_1", b"r" * 5000, 1, "residue")
    spool.put("cube_1", b"c" * 5000, 3, "cube")
    spool.entries()[1].path.unlink()  # removed behind the spool's back
    exchange(tx, rx, down, up, random.Random(0))
    assert [f.name for f in got] == ["cube_1"]
    discarded = [e for e in tx.events if e.what == "evicted"]
    assert [e.name for e in discarded] == ["mystery_1", "residue_1"]
    assert "no APID" in discarded[0].reason and "vanished" in discarded[1].reason
    assert all(e.message().code == EventCode.SPOOL_EVICTED for e in discarded)


def test_class1_without_uplink(tmp_path: Path) -> None:
    config = DownlinkConfig(acknowledged=False, check_timer_s=0.01, check_limit=1)
    spool, tx, rx, down, up, got, failed = ends(tmp_path, config, uplink=False)
    blobs = fill(spool, random.Random(6), 6)
    exchange(tx, rx, down, up, random.Random(0))
    assert {f.name: f.data for f in got} == blobs
    assert up == [] and rx.stats.uplink_packets == 0

    # With losses and no uplink a product can be lost; it is reported, never passed on
    # half-received. Two repeats per product recover most of them.
    config = DownlinkConfig(acknowledged=False, check_timer_s=0.01, check_limit=1,
                            class1_repeats=2)
    spool, tx, rx, down, up, got, failed = ends(tmp_path / "b", config, uplink=False)
    blobs = fill(spool, random.Random(7), 10, max_size=3000)
    exchange(tx, rx, down, up, random.Random(1), drop=0.05)
    time.sleep(0.05)
    rx.poll()
    failed += rx.finish()
    assert all(f.data == blobs[f.name] for f in got)
    assert len({f.name for f in got}) >= 8
    assert tx.stats.transfers_started == 20
    assert failed, "5 % loss over 20 transfers must have spoiled at least one copy"


def test_a_transfer_cut_by_a_restart_starts_again_under_a_new_transaction(tmp_path: Path) -> None:
    rng = random.Random(8)
    spool, tx, rx, down, up, got, failed = ends(tmp_path, FAST)
    data = rng.randbytes(20_000)
    spool.put("cube_00000001", data, 3, "cube")
    for _ in range(8):  # metadata and a few file data PDUs, then the payload loses power
        tx.step()
    first_life = list(down)
    for p in first_life:
        rx.on_packet(p)
    down.clear()
    assert rx.stats.transactions == 1 and not got
    # reboot: a new spool object on the same directory, a new sender
    spool2 = Spool(tmp_path / "spool", 50_000_000)
    tx2 = DownlinkSender(spool2, down.append, FAST)
    exchange(tx2, rx, down, up, rng)
    assert [(f.name, f.data) for f in got] == [("cube_00000001", data)]
    assert got[0].transaction[1] == 1  # the first transaction was 0
    assert rx.stats.superseded == 1
    assert [f.reason for f in failed] == ["superseded: the sender started a new transaction"]
    # late packets of the abandoned transfer neither reopen it nor disturb anything
    for p in first_life[1:]:
        rx.on_packet(p)
    assert rx.stats.transactions == 2 and len(got) == 1
    assert rx.stats.bad_reasons["PDU of a superseded transaction"] == len(first_life) - 1


def test_a_repeated_finished_pdu_is_acknowledged_after_the_transfer(tmp_path: Path) -> None:
    spool, tx, rx, down, up, got, _ = ends(tmp_path, FAST)
    spool.put("health_00000001", b"{}", 0, "health")
    exchange(tx, rx, down, up, random.Random(0))
    finished = [p for p in rx._completed.values()]
    assert len(finished) == 1
    # the ground repeats its Finished PDU (its ACK was lost): the payload answers with an ACK
    tx.on_packet(PacketSequencer(PacketType.TC).wrap(APID_UPLINK, finished[0]))
    tx.step()
    assert len(down) == 1 and int.from_bytes(down[0][:2], "big") & 0x7FF == APID_CONTROL


def send_until_done(tx, rx, down: list[bytes], up: list[bytes], lose, deadline: float) -> None:
    """Run both ends until the payload has nothing left to send; ``lose(packet)`` says which
    payload-to-ground packets the link loses."""
    while tx.busy and time.monotonic() < deadline:
        tx.step()
        for packet in down:
            if not lose(packet):
                rx.on_packet(packet)
        down.clear()
        rx.poll()
        for packet in up:
            tx.on_packet(packet)
        up.clear()


def test_the_ack_of_a_repeated_finished_pdu_closes_the_grounds_transaction(tmp_path: Path) -> None:
    """The payload's ACK of the Finished PDU is lost and the payload, done, moves on; the
    ground repeats its Finished PDU and the payload acknowledges it again, on the control
    APID. That ACK closes the ground's transaction: it was dropped unread, and the ground kept
    repeating its Finished PDU, then declared its ACK limit, until the inactivity timeout."""
    spool, tx, rx, down, up, got, _ = ends(tmp_path, FAST)
    spool.put("health_00000001", b"{}", 0, "health")
    lost: list[bytes] = []

    def lose_the_first_ack(packet: bytes) -> bool:  # the payload's only ACK of the Finished PDU
        if isinstance(parse_pdu(packet[6:]), AckPdu) and not lost:
            lost.append(packet)
            return True
        return False

    deadline = time.monotonic() + 30
    send_until_done(tx, rx, down, up, lose_the_first_ack, deadline)
    assert not tx.busy and len(got) == 1 and lost
    assert rx.open_transactions == 1  # waiting for the ACK of its Finished PDU
    while not up and time.monotonic() < deadline:  # its ACK timer runs out: a repeat
        rx.poll()
    assert isinstance(parse_pdu(up[0][6:]), FinishedPdu)
    for packet in up:
        tx.on_packet(packet)
    tx.step()
    assert [int.from_bytes(p[:2], "big") & 0x7FF for p in down] == [APID_CONTROL]
    for packet in down:
        rx.on_packet(packet)
    assert rx.open_transactions == 0 and rx.stats.bad_packets == 0 and rx.stats.failed == 0
    # nothing but an ACK is taken on the control APID
    rx.on_packet(PacketSequencer(PacketType.TM).wrap(APID_CONTROL, up[0][6:]))
    assert rx.stats.bad_reasons == {"PDU other than an ACK on the control APID": 1}
    assert rx.open_transactions == 0


def test_a_finished_pdu_never_acknowledged_ends_its_transaction_at_the_ack_limit(tmp_path: Path) -> None:
    """The payload, done, leaves (end of a pass) and every ACK of the ground's Finished PDU is
    lost: after its ACK limit the ground closes the transaction, the file kept, and sends
    nothing more. cfdp-py's default answer, a cancellation, repeated a second Finished PDU
    and its ACK limit for as long as the ground ran (seen every 1.7 s for minutes)."""
    config = dataclasses.replace(FAST, inactivity_s=60.0)  # the ACK limit ends it, not silence
    spool, tx, rx, down, up, got, failed = ends(tmp_path, config)
    spool.put("health_00000001", b"{}", 0, "health")
    send_until_done(tx, rx, down, up, lambda packet: isinstance(parse_pdu(packet[6:]), AckPdu),
                    time.monotonic() + 30)  # every ACK of a Finished PDU lost
    assert not tx.busy and len(got) == 1 and rx.open_transactions == 1
    limit = time.monotonic() + 10 * config.ack_timer_s * config.ack_limit
    while rx.open_transactions and time.monotonic() < limit:  # the payload is gone
        rx.poll()
    assert rx.open_transactions == 0 and rx.stats.failed == 0 and not failed
    finished = [p for p in up if isinstance(parse_pdu(p[6:]), FinishedPdu)]
    assert 1 <= len(finished) <= FAST.ack_limit
    up.clear()
    quiet_until = time.monotonic() + 3 * FAST.ack_timer_s * FAST.ack_limit
    while time.monotonic() < quiet_until:
        rx.poll()
    assert up == [] and len(got) == 1


def test_a_lost_finished_pdu_is_prompted_again_not_waited_out(tmp_path: Path) -> None:
    """The ground gives up repeating its Finished PDU (limit 1) and the first three are
    lost: the payload repeats its EOF after an ACK interval and the ground answers with its
    Finished PDU at once, long before the payload's inactivity restart."""
    config = DownlinkConfig(ack_timer_s=0.05, nak_timer_s=0.05, ack_limit=1, inactivity_s=30)
    spool, tx, rx, down, up, got, failed = ends(tmp_path, config)
    spool.put("residue_00000001", b"r" * 3000, 1, "residue")
    lost = 0
    deadline = time.monotonic() + 10
    while tx.busy and time.monotonic() < deadline:
        tx.step()
        for p in down:
            rx.on_packet(p)
        down.clear()
        rx.poll()
        for p in up:
            if isinstance(parse_pdu(p[6:]), FinishedPdu) and lost < 3:
                lost += 1
                continue
            tx.on_packet(p)
        up.clear()
        time.sleep(0.001)
    assert not tx.busy and lost == 3
    assert [f.name for f in got] == ["residue_00000001"]
    assert tx.stats.eof_repeats >= 2 and tx.stats.restarted_inactive == 0
    assert tx.stats.failed == 0 and rx.stats.transactions == 1


@settings(max_examples=40, deadline=None)
@given(st.binary(max_size=4000), st.sampled_from(KINDS), st.booleans())
def test_any_payload_round_trips(tmp_path_factory, data: bytes, kind_prio, acknowledged: bool) -> None:
    kind, prio = kind_prio
    tmp = tmp_path_factory.mktemp("any")
    config = FAST if acknowledged else DownlinkConfig(acknowledged=False)
    spool, tx, rx, down, up, got, _ = ends(tmp, config, uplink=acknowledged)
    spool.put(f"{kind}_1", data, prio, kind)
    exchange(tx, rx, down, up, random.Random(0))
    assert [(f.name, f.kind, f.data) for f in got] == [(f"{kind}_1", kind, data)]


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=1100))
def test_random_bytes_never_crash_either_end(tmp_path_factory, junk: bytes) -> None:
    tmp = tmp_path_factory.mktemp("junk")
    spool, tx, rx, down, up, got, _ = ends(tmp, FAST)
    rx.on_packet(junk)
    tx.on_packet(junk)
    tx.step()
    rx.poll()
    assert not got


def test_corrupted_packets_are_refused(tmp_path: Path) -> None:
    """Bit flips inside space packets (past a link that lost its CRC) are caught by the
    PDU CRC-16 or the file CRC-32: nothing corrupt is ever delivered."""
    rng = random.Random(9)
    spool, tx, rx, down, up, got, _ = ends(tmp_path, FAST)
    blobs = fill(spool, rng, 6, max_size=5000)

    def flip(packets: list[bytes]) -> None:
        for i, p in enumerate(packets):
            if rng.random() < 0.2:
                b = bytearray(p)
                b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
                packets[i] = bytes(b)

    deadline = time.monotonic() + 30
    while tx.busy and time.monotonic() < deadline:
        tx.step()
        flip(down)
        for p in down:
            rx.on_packet(p)
        down.clear()
        rx.poll()
        for p in up:
            tx.on_packet(p)
        up.clear()
    assert not tx.busy
    assert rx.stats.bad_packets > 0
    assert all(f.data == blobs[f.name] for f in got) and {f.name for f in got} == set(blobs)


def test_ccsdspy_parses_the_packets_we_emit(tmp_path: Path) -> None:
    """An independent CCSDS decoder reads the downlink: versions, types, APIDs per kind,
    contiguous sequence counts per APID, lengths, and the data fields byte for byte."""
    import ccsdspy
    from ccsdspy.utils import read_primary_headers

    rng = random.Random(10)
    spool, tx, rx, down, up, got, _ = ends(tmp_path, FAST)
    fill(spool, rng, 10, max_size=8000)
    packets: list[bytes] = []
    exchange(tx, rx, down, up, rng, tap=lambda d, p: packets.append(p) if d == 0 else None)
    path = tmp_path / "down.bin"
    path.write_bytes(b"".join(packets))
    h = read_primary_headers(str(path))
    assert len(h["CCSDS_APID"]) == len(packets)
    assert set(h["CCSDS_VERSION_NUMBER"]) == {0} and set(h["CCSDS_PACKET_TYPE"]) == {0}  # TM
    assert set(h["CCSDS_SECONDARY_FLAG"]) == {0} and set(h["CCSDS_SEQUENCE_FLAG"]) == {3}
    np.testing.assert_array_equal(h["CCSDS_PACKET_LENGTH"], [len(p) - 7 for p in packets])
    assert set(h["CCSDS_APID"]) <= set(APID_BY_KIND.values()) | {APID_CONTROL}
    for apid in set(h["CCSDS_APID"]):
        counts = h["CCSDS_SEQUENCE_COUNT"][h["CCSDS_APID"] == apid]
        np.testing.assert_array_equal(counts, np.arange(len(counts)) % 16384)
    # the data fields, as ccsdspy cuts them, are the CFDP PDUs we sent
    pkt = ccsdspy.VariableLength([ccsdspy.PacketArray(name="pdu", data_type="uint", bit_length=8, array_shape="expand")])
    fields = pkt.load(str(path))
    assert [bytes(a.astype(np.uint8)) for a in fields["pdu"]] == [p[6:] for p in packets]
    # and each product's packets travelled on its kind's APID
    kinds = {f.kind for f in got}
    assert {APID_BY_KIND[k] for k in kinds} == set(h["CCSDS_APID"]) - {APID_CONTROL}


def test_overhead_and_drain_time_of_a_typical_product_set(tmp_path: Path) -> None:
    """Bytes on the wire per product (space packets + link frames) and the time a typical
    frame's products take to drain at 115200 baud and over a 9.6 kbit/s radio. The planned
    sizes (drain_estimate) are checked against a real lossless class 2 transfer."""
    rng = np.random.default_rng(0)
    # typical product file sizes of one frame (64 x 64 px, 32-band float16 cube), bytes
    typical = {"health": 600, "residue": 9_000, "quicklook": 12_000, "cube": 250_000}
    spool, tx, rx, down, up, got, _ = ends(tmp_path, FAST)
    for kind, size in typical.items():
        spool.put(f"{kind}_00000001", rng.bytes(size), dict(KINDS)[kind], kind)
    entries = spool.entries()
    uart = drain_estimate(entries, UART_115200, FAST)
    radio = drain_estimate(entries, RADIO_9600, FAST)
    packets: list[bytes] = []
    exchange(tx, rx, down, up, random.Random(0),
             tap=lambda d, p: packets.append(p) if d == 0 else None)
    # class 2 adds one ACK (of the ground's Finished PDU) per product to the planned PDUs
    acks = [p for p in packets if isinstance(parse_pdu(p[6:]), AckPdu)]
    assert len(acks) == len(typical)
    sent = [p for p in packets if p not in acks]
    assert sorted(len(p) for p in sent) == sorted(
        s for e in entries for s in transfer_packet_sizes(e, FAST))
    assert uart.packet_bytes == sum(len(p) for p in sent)
    assert UART_115200.drain_time_s(sent) <= uart.seconds  # exact COBS <= worst case
    lines = []
    for e in entries:
        sizes = transfer_packet_sizes(e, FAST)
        overhead = sum(sizes) - e.size
        wire = UART_115200.drain_time_s(sizes) * UART_115200.bytes_per_s
        lines.append(f"{e.kind:9s} {e.size:7d} B: {len(sizes):4d} packets, CFDP+SP overhead "
                     f"{overhead} B, link frames {wire - sum(sizes):.0f} B more")
        assert 0 < overhead < 150 + 25 * len(sizes)
    print("\n" + "\n".join(lines))
    print(f"one frame's products ({uart.product_bytes} B, {uart.packets} packets): "
          f"{uart.seconds:.1f} s at 115200 baud, {radio.seconds:.1f} s at 9.6 kbit/s")
    assert radio.seconds == pytest.approx(uart.seconds * 11520 / 1200)


def test_estimate_from_the_command_line(tmp_path: Path) -> None:
    import subprocess
    import sys

    spool = Spool(tmp_path, 10_000_000)
    spool.put("cube_00000001", bytes(100_000), 3, "cube")
    out = subprocess.run([sys.executable, "-m", "firmware_bridge.cfdp", str(tmp_path),
                          "--estimate"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    expected = drain_estimate(spool.entries(), RADIO_9600)
    assert f"{expected.seconds:.1f} s at 9.6 kbit/s" in out.stdout
    assert f"1 products, 100000 B in {expected.packets} packets" in out.stdout
    assert expected.packets == 2 + 100  # Metadata, EOF and 100 file data segments of 1000 B


def test_the_flight_side_needs_no_numpy() -> None:
    """docs/design.md: firmware_bridge imports no numpy (nor do cfdp-py and spacepackets)."""
    import subprocess
    import sys

    code = ("import sys, firmware_bridge.cfdp.sender, firmware_bridge.cfdp.receiver, firmware_bridge.spool; "
            "print('numpy' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "False", out.stderr
