"""PROTOCOL.md is the contract: its test vectors and tables must match the code exactly."""

from __future__ import annotations

import binascii
import hashlib
import hmac
import json
import re
import subprocess
import sys
from pathlib import Path

import crc
import pytest
from cobs import cobs
from spacepackets.ccsds.spacepacket import PacketType, SequenceFlags, SpacePacket, SpacePacketHeader

import firmware_bridge
from firmware_bridge.auth import AuthKey, sign
from firmware_bridge.framing import Frame, decode, encode
from firmware_bridge.messages import (
    MESSAGE_CLASSES,
    EventCode,
    Message,
    Mode,
    MsgType,
    ResultCode,
    Severity,
    protocol_tables,
)

PROTOCOL = Path(firmware_bridge.__file__).with_name("PROTOCOL.md").read_text()
ENUM_FIELDS = {"mode": Mode, "result": ResultCode, "code": EventCode, "severity": Severity}


def _vectors() -> list[dict[str, str]]:
    blocks = re.findall(r"```vector\n(.*?)```", PROTOCOL, re.S)
    out = []
    for block in blocks:
        fields = {}
        for line in block.strip().splitlines():
            name, _, value = line.partition(":")
            fields[name.strip()] = value.strip()
        out.append(fields)
    return out


VECTORS = _vectors()


def _hex(text: str) -> bytes:
    return bytes.fromhex(text.replace(" ", ""))


def _message(spec: str) -> Message:
    type_name, _, args = spec.partition(" ")
    kwargs = json.loads(args)
    for name, enum in ENUM_FIELDS.items():
        if name in kwargs:
            kwargs[name] = enum[kwargs[name]]
    if "payload_hex" in kwargs:
        kwargs["payload"] = _hex(kwargs.pop("payload_hex"))
    return MESSAGE_CLASSES[MsgType[type_name]](**kwargs)


def test_protocol_has_vectors_for_every_message_type() -> None:
    assert len(VECTORS) >= 10
    covered = {v["message"].split()[0] for v in VECTORS}
    assert covered >= {"PING", "SET_MODE", "SET_CONFIG", "ACK", "EVENT", "HEALTH", "DATA"}
    assert any("key" in v for v in VECTORS)
    assert any("key" in v and v["message"].startswith("DATA") for v in VECTORS)  # uplink


@pytest.mark.parametrize("vec", VECTORS, ids=[v["name"] for v in VECTORS])
def test_code_reproduces_protocol_vector(vec: dict[str, str]) -> None:
    msg = _message(vec["message"])
    seq = int(vec["seq"])
    if "key" in vec:
        frame = sign(msg, seq, AuthKey(_hex(vec["key"])), int(vec["counter"]))
    else:
        frame = Frame.of(msg, seq)
    raw = frame.pack()
    assert raw[:7] == _hex(vec["header"])
    assert frame.body == _hex(vec["body"])
    assert raw[-2:] == _hex(vec["crc"])
    assert raw == _hex(vec["frame"])
    assert encode(frame) == _hex(vec["wire"])
    # And back: the wire bytes decode to the same frame and message.
    assert decode(_hex(vec["wire"])[:-1]) == frame
    assert frame.message() == msg
    if "key" in vec:
        assert raw[7:15] == _hex(vec["counter_bytes"])
        assert frame.mac == _hex(vec["mac"])


@pytest.mark.parametrize("vec", VECTORS, ids=[v["name"] for v in VECTORS])
def test_vectors_check_with_independent_primitives(vec: dict[str, str]) -> None:
    """The documented bytes hold with other implementations of CRC, HMAC and COBS, so the
    vectors are not merely what our code happens to output."""
    raw = _hex(vec["frame"])
    ccitt_false = crc.Calculator(crc.Crc16.IBM_3740)  # = CRC-16/CCITT-FALSE
    assert ccitt_false.checksum(raw[:-2]).to_bytes(2, "big") == raw[-2:]
    assert binascii.crc_hqx(raw[:-2], 0xFFFF) == int.from_bytes(raw[-2:], "big")
    assert cobs.decode(_hex(vec["wire"])[:-1]) == raw
    if "key" in vec:
        mac = hmac.new(_hex(vec["key"]), raw[:-18], hashlib.sha256).digest()[:16]
        assert raw[-18:-2] == mac == _hex(vec["mac"])


def test_primitive_check_values_in_protocol() -> None:
    assert "`123456789` is **0x29B1**" in PROTOCOL
    assert crc.Calculator(crc.Crc16.IBM_3740).checksum(b"123456789") == 0x29B1
    tag = hmac.new(b"Jefe", b"what do ya want for nothing?", hashlib.sha256).digest()[:16]
    assert " ".join(f"{b:02X}" for b in tag) in PROTOCOL
    examples = re.findall(r"`([0-9A-F ]+)` → `([0-9A-F ]+)`", PROTOCOL)
    assert len(examples) == 3
    for plain, stuffed in examples:
        assert cobs.encode(_hex(plain)) == _hex(stuffed)
    assert "254 bytes of 0x01 encode as `FF` followed by the 254 bytes" in PROTOCOL
    assert cobs.encode(b"\x01" * 254) == b"\xff" + b"\x01" * 254


def test_data_vector_is_a_real_space_packet() -> None:
    packet = SpacePacket(
        SpacePacketHeader(
            packet_type=PacketType.TM,
            apid=0x123,
            seq_count=0,
            data_len=2,
            seq_flags=SequenceFlags.UNSEGMENTED,
        ),
        sec_header=None,
        user_data=b"\x01\x02\x03",
    ).pack()
    data = next(v for v in VECTORS if v["message"].startswith("DATA"))
    assert _hex(data["body"]) == packet


def test_uplink_data_vector_is_a_signed_cfdp_finished_pdu(tmp_path: Path) -> None:
    """The uplink DATA vector carries the ground's Finished PDU in a TC space packet, signed
    on the data channel: the payload admits it once and refuses it replayed or unsigned."""
    from spacepackets.cfdp.pdu import FinishedPdu

    from firmware_bridge.auth import DATA, TELECOMMAND, CounterStore
    from firmware_bridge.cfdp.adapters import finished_ok
    from firmware_bridge.cfdp.common import APID_UPLINK, parse_pdu, unwrap
    from firmware_bridge.dispatch import CommandDispatcher

    vec = next(v for v in VECTORS if v["name"] == "data-uplink-finished-authenticated")
    header, data = unwrap(_hex(vec["body"]), PacketType.TC)
    pdu = parse_pdu(data)
    assert header.apid == APID_UPLINK and header.seq_count == 0
    assert isinstance(pdu, FinishedPdu) and finished_ok(pdu.finished_params)
    assert pdu.transaction_seq_num.value == 7
    frame = decode(_hex(vec["wire"])[:-1])
    disp = CommandDispatcher({}, key=AuthKey(_hex(vec["key"])),
                             counters=CounterStore.create(tmp_path / "c.json"))
    assert disp.accept_data(frame)[0]
    assert not disp.accept_data(frame)[0]  # replayed
    assert not disp.accept_data(Frame.of(frame.message(), frame.seq))[0]  # MAC stripped
    assert (disp.counters.last(DATA), disp.counters.last(TELECOMMAND)) == (1, 0)


def test_declaration_tables_in_protocol_match_code() -> None:
    for table in protocol_tables().strip().split("\n\n"):
        assert table in PROTOCOL, f"PROTOCOL.md is out of date; paste:\n{table}"
    # Every row of the message-type table names a declared type with the same number.
    rows = re.findall(r"^\| 0x([0-9A-F]{2}) \| ([A-Z_]+) \|", PROTOCOL, re.M)
    assert {(int(n, 16), name) for n, name in rows} == {(int(t), t.name) for t in MsgType}


def test_firmware_bridge_imports_no_numpy() -> None:
    """docs/design.md: firmware_bridge knows bytes, frames and messages; no numpy, no onboard."""
    code = (
        "import sys, firmware_bridge.link, firmware_bridge.linkemu, firmware_bridge.dispatch;"
        "bad = [m for m in ('numpy', 'onboard') if m in sys.modules]; print(bad)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
