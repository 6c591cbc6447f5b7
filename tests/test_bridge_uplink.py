"""The uplink under attack, end to end: a real payload process (``python -m
firmware_bridge.cfdp``: the spool, the CFDP sender and ``PayloadEndpoint`` with its key and
counter files) on one pseudo-terminal of the link emulator, and on the other this test's
ground (the real CFDP receiver, signing what it uplinks) and an attacker who reads the
public downlink.

For the transfer in progress the attacker sends a PDU of every CFDP type (ACK, NAK for the
whole file, Finished "no error", Metadata, EOF, File Data, Prompt, Keep Alive) unsigned,
signed with a wrong key, and with a genuine frame's counter and MAC on a forged body; and
replays genuine frames byte for byte, a genuine NAK of the same transfer among them. None
may be accepted, no product may be deleted or sent again, and the genuine ground then
completes every product bit-exact.
"""

from __future__ import annotations

import copy
import json
import random
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from spacepackets.ccsds.spacepacket import PacketType
from spacepackets.cfdp import ChecksumType, ConditionCode, Direction
from spacepackets.cfdp.pdu import (
    AckPdu,
    DirectiveType,
    EofPdu,
    FileDataPdu,
    FinishedPdu,
    KeepAlivePdu,
    MetadataPdu,
    NakPdu,
    PromptPdu,
)
from spacepackets.cfdp.pdu.ack import TransactionStatus
from spacepackets.cfdp.pdu.file_data import FileDataParams
from spacepackets.cfdp.pdu.finished import DeliveryCode, FileStatus, FinishedParams
from spacepackets.cfdp.pdu.helper import GenericPduPacket
from spacepackets.cfdp.pdu.metadata import MetadataParams
from spacepackets.cfdp.pdu.prompt import ResponseRequired

from firmware_bridge.auth import AuthKey, CounterStore, UplinkSigner, provision, sign
from firmware_bridge.cfdp.common import (
    APID_UPLINK,
    DownlinkConfig,
    PacketSequencer,
    parse_pdu,
    unwrap,
)
from firmware_bridge.cfdp.receiver import DownlinkReceiver, ReceivedFile
from firmware_bridge.framing import FLAG_AUTH, Frame, encode
from firmware_bridge.link import ByteRate, Link
from firmware_bridge.linkemu import Impairments, LinkEmulator
from firmware_bridge.messages import Ack, Data, MsgType, Ping
from firmware_bridge.spool import Spool

RATE = 50_000.0  # bytes/s
PRODUCTS = {f"residue_{i:08d}": random.Random(i).randbytes(6000) for i in (1, 2, 3)}


def forged_pdus(conf, size: int) -> dict[str, GenericPduPacket]:
    """One PDU of every CFDP type for the transaction of ``conf`` (towards the sender: the
    direction the payload's CFDP entity listens to)."""
    return {
        "ACK": AckPdu(conf, DirectiveType.EOF_PDU, ConditionCode.NO_ERROR,
                      TransactionStatus.ACTIVE),
        "NAK": NakPdu(conf, 0, size, [(0, size)]),
        "Finished": FinishedPdu(conf, FinishedParams(
            ConditionCode.NO_ERROR, DeliveryCode.DATA_COMPLETE, FileStatus.FILE_RETAINED)),
        "Metadata": MetadataPdu(conf, MetadataParams(True, ChecksumType.CRC_32, size,
                                                     "x", "residue_00000009.obpr")),
        "EOF": EofPdu(conf, 0, size),
        "FileData": FileDataPdu(conf, FileDataParams(b"\x55" * 100, 0)),
        "Prompt": PromptPdu(conf, ResponseRequired.NAK),
        "KeepAlive": KeepAlivePdu(conf, size),
    }


class Ground:
    """The ground (a real CFDP receiver whose uplink is signed and can be cut) and the
    attacker, on the far end of the link; records every downlinked PDU."""

    def __init__(self, url: str, signer: UplinkSigner, staging: Path) -> None:
        self.link = Link.open(url, rate=ByteRate(RATE))
        self.signer = signer
        self.files: list[ReceivedFile] = []
        self.pdus: list[GenericPduPacket] = []  # every downlinked PDU, in order
        self.acks: set[int] = set()
        self.uplink_on = True
        self.genuine: list[Frame] = []  # every signed frame the ground sent
        self.rx = DownlinkReceiver(staging, self.files.append, self._uplink,
                                   DownlinkConfig(ack_timer_s=0.5, nak_timer_s=0.5,
                                                  ack_limit=100, nak_limit=100))
        self.uplink_packets = PacketSequencer(PacketType.TC)

    def _uplink(self, packet: bytes) -> None:
        if self.uplink_on:  # cut: the packet is lost before it is signed
            self.genuine.append(self.link.send_data(packet, signer=self.signer))

    def pump(self, until: Callable[[], bool], timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while not until():
            assert time.monotonic() < deadline, f"timed out waiting for {until.__doc__}"
            frame = self.link.receive(0.02)
            while frame is not None:
                if frame.msg_type == MsgType.DATA:
                    self.pdus.append(parse_pdu(unwrap(frame.body, PacketType.TM)[1]))
                    self.rx.on_packet(frame.body)
                else:
                    msg = frame.message()
                    if isinstance(msg, Ack):
                        self.acks.add(msg.acked_seq)
                frame = self.link.receive(0.0)
            self.rx.poll()

    def sync(self) -> None:
        """Return once the payload has handled everything sent so far and stepped its CFDP
        sender after it: it handles frames in order, steps, then reads again; so by the
        second of two authenticated PINGs answered, whatever the frames before them caused
        is already on the line, ahead of that ACK."""
        for _ in range(2):
            ping = self.link.send(Ping(), signer=self.signer)
            self.pump(lambda p=ping: p.seq in self.acks)

    def transactions(self) -> list[int]:
        return list(dict.fromkeys(p.transaction_seq_num.value for p in self.pdus))

    def count(self, kind: type, transaction: int) -> int:
        return sum(isinstance(p, kind) and p.transaction_seq_num.value == transaction
                   for p in self.pdus)

    def pdu_frame(self, pdu: GenericPduPacket) -> Frame:
        return Frame.of(Data(self.uplink_packets.wrap(APID_UPLINK, bytes(pdu.pack()))), 0)


def test_forged_and_replayed_uplink_pdus_of_every_cfdp_type_move_nothing(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool", 10_000_000)
    for name, data in PRODUCTS.items():
        spool.put(name, data, 5, "residue")
    secret = bytes(range(40, 72))
    provision(tmp_path / "payload.key", tmp_path / "payload.counter", secret)
    signer = UplinkSigner(provision(tmp_path / "ground.key", tmp_path / "ground.counter", secret),
                          CounterStore(tmp_path / "ground.counter"))
    with LinkEmulator(Impairments(RATE, buffer_bytes=65536)) as emu:
        ground = Ground(emu.b_path, signer, tmp_path / "staging")
        payload = subprocess.Popen(
            [sys.executable, "-m", "firmware_bridge.cfdp", str(tmp_path / "spool"), "--port",
             emu.a_path, "--rate", str(RATE), "--until-empty", "--ack-timer", "3",
             "--inactivity", "60", "--key-file", str(tmp_path / "payload.key"),
             "--counter-file", str(tmp_path / "payload.counter")],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            # product 1 goes down and is confirmed by the genuine ground; its frames are
            # recorded for replay. When product 2 starts, the ground's uplink goes quiet.
            ground.pump(lambda: len(ground.transactions()) == 2)
            ground.uplink_on = False
            tx1, tx2 = ground.transactions()
            ground.pump(lambda: ground.count(EofPdu, tx2) >= 1)
            ground.sync()
            first_pass = ground.count(FileDataPdu, tx2)
            assert first_pass >= 6  # the ground has product 2, its answers were lost

            # a genuine NAK of the transfer in progress is obeyed (the channel is live) ...
            conf = copy.deepcopy(next(p for p in ground.pdus
                                      if p.transaction_seq_num.value == tx2).pdu_header.pdu_conf)
            conf.direction = Direction.TOWARDS_SENDER
            attack = forged_pdus(conf, len(PRODUCTS["residue_00000002"]))
            genuine_nak = ground.link.send_data(ground.uplink_packets.wrap(
                APID_UPLINK, bytes(NakPdu(conf, 0, 100, [(0, 100)]).pack())), signer=signer)
            ground.genuine.append(genuine_nak)
            ground.sync()
            after_nak = ground.count(FileDataPdu, tx2)
            assert after_nak > first_pass

            # ... and nothing else is: every type forged three ways, genuine frames replayed
            wrong = AuthKey(bytes(reversed(secret)))
            sent: dict[str, int] = {"unsigned": 0, "wrong key": 0, "tampered": 0, "replayed": 0}
            for pdu in attack.values():
                plain = ground.pdu_frame(pdu)
                ground.link.send_frame(plain)
                ground.link.send_frame(sign(plain.message(), 7, wrong, 2**62))
                ground.link.send_frame(Frame(MsgType.DATA, genuine_nak.seq, plain.body, FLAG_AUTH,
                                             genuine_nak.counter, genuine_nak.mac))
                sent["unsigned"] += 1
                sent["wrong key"] += 1
                sent["tampered"] += 1
            for frame in [genuine_nak] * 3 + ground.genuine:
                ground.link.port.write(encode(frame))  # byte for byte
                sent["replayed"] += 1
            ground.sync()
            assert ground.count(FileDataPdu, tx2) == after_nak, "a forged or replayed PDU resent data"
            assert ground.count(MetadataPdu, tx2) == 1
            assert ground.transactions() == [tx1, tx2], "product 2 was given up or deleted"
            queued = sorted(p.name.split(".")[-1] for p in (tmp_path / "spool/queue").iterdir())
            assert queued == ["residue_00000002", "residue_00000003"]

            # the genuine ground comes back: everything is delivered, bit-exact
            ground.uplink_on = True
            ground.pump(lambda: payload.poll() is not None, timeout=120)
            out, err = payload.communicate(timeout=30)
        finally:
            if payload.poll() is None:
                payload.kill()
            ground.link.close()
    assert payload.returncode == 0, err
    assert {f.name: f.data for f in ground.files} == PRODUCTS
    assert len(ground.files) == 3  # none twice
    uplink = json.loads(out.strip().splitlines()[-1])["uplink_frames"]
    refused = {k: v for k, v in uplink.items() if k != "OK"}
    print(f"\nattack frames sent {sent}; payload's uplink DATA frames by result {uplink}")
    assert uplink["OK"] == len(ground.genuine)  # every genuine frame, and nothing else
    assert refused == {"NOT_AUTHENTICATED": sent["unsigned"],
                       "BAD_AUTH": sent["wrong key"] + sent["tampered"],
                       "REPLAY": sent["replayed"]}
    assert len(attack) == 8


def _run(*args: str | Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *map(str, args)], capture_output=True,
                          text=True, timeout=120)


def test_a_payload_with_a_key_but_no_counter_file_refuses_to_start(tmp_path: Path) -> None:
    """A lost counter file used to count from 0 again (recorded commands replayed): the
    payload now refuses to start and says how to recover; and it refuses an uplink it could
    not authenticate (class 2 without a key)."""
    provision(tmp_path / "p.key", tmp_path / "p.counter")
    (tmp_path / "p.counter").unlink()
    (tmp_path / "m.toml").write_text(
        f'[link]\nkey_file = "{tmp_path / "p.key"}"\ncounter_file = "{tmp_path / "p.counter"}"\n')
    lost = _run("onboard", "run", "--port", "loop://", "--config", tmp_path / "m.toml",
                "--out", tmp_path / "out", "--quiet")
    assert lost.returncode != 0
    assert "cannot start the payload service" in lost.stderr
    assert "does not exist" in lost.stderr and "set-counter" in lost.stderr
    keyless = _run("onboard", "run", "--port", "loop://", "--out", tmp_path / "out", "--quiet")
    assert keyless.returncode != 0 and "uplink = true needs key_file" in keyless.stderr


def test_the_ground_signs_its_uplink_or_does_not_answer(tmp_path: Path) -> None:
    unsigned = _run("onboard", "ground", "receive", "--port", "loop://", "-o", tmp_path / "g")
    assert unsigned.returncode == 2 and "--key-file" in unsigned.stderr
    (tmp_path / "g.key").write_text(bytes(range(32)).hex())
    (tmp_path / "g.key").chmod(0o600)  # a key without its counter file
    lost = _run("onboard", "ground", "receive", "--port", "loop://", "-o", tmp_path / "g",
                "--key-file", tmp_path / "g.key", "--counter-file", tmp_path / "g.counter")
    assert lost.returncode == 1 and "does not exist" in lost.stderr
