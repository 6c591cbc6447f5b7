"""What both ends of the downlink share: entities, APIDs, configuration, space packets."""

from __future__ import annotations

import re
from dataclasses import dataclass

from cfdppy import (
    RemoteEntityConfig,
)
from cfdppy.exceptions import (
    InvalidDestinationId,
    InvalidNakPdu,
    InvalidPduDirection,
    InvalidPduForDestHandler,
    InvalidPduForSourceHandler,
    InvalidSourceId,
    InvalidTransactionSeqNum,
    NoRemoteEntityConfigFound,
    PduIgnoredForDest,
    PduIgnoredForSource,
)
from spacepackets.ccsds.spacepacket import (
    CCSDS_HEADER_LEN,
    PacketType,
    SequenceFlags,
    SpacePacket,
    SpacePacketHeader,
)
from spacepackets.cfdp import (
    ChecksumType,
    TransmissionMode,
)
from spacepackets.cfdp.pdu.helper import GenericPduPacket, PduFactory
from spacepackets.util import UnsignedByteField

from firmware_bridge.errors import BridgeError
from firmware_bridge.messages import MAX_BODY

PAYLOAD_ENTITY = UnsignedByteField(1, 2)
GROUND_ENTITY = UnsignedByteField(2, 2)

#: Downlink APID of each product kind (kinds as in ``onboard.formats.products.ProductKind``).
APID_BY_KIND: dict[str, int] = {
    "health": 0x100,
    "event": 0x101,
    "summary": 0x102,
    "residue": 0x110,
    "quicklook": 0x120,
    "calibration_report": 0x121,
    "cube": 0x130,
    "raw": 0x131,
}
KIND_BY_APID = {apid: kind for kind, apid in APID_BY_KIND.items()}
#: Payload -> ground CFDP PDUs that belong to no product (an ACK of a stale Finished PDU).
APID_CONTROL = 0x1F0
#: Ground -> payload CFDP PDUs (ACK, NAK, Finished), TC packets.
APID_UPLINK = 0x1F1
#: Largest space packet: one DATA frame body.
MAX_PACKET = MAX_BODY
SEQ_COUNT_MODULO = 1 << 14
#: What a product file is called on the ground: the product name and this suffix, the same as
#: on board. Senders before it was unified named their files ``.obpr``: still received.
FILE_SUFFIX = ".obp"
DEST_NAME_RE = re.compile(r"^([A-Za-z0-9_-]{1,64})\.obpr?$")


class DownlinkError(BridgeError, ValueError):
    """A packet or PDU is not one this downlink accepts."""


#: What cfdp-py raises for a PDU it will not take in the current state (it has no common
#: base class); ValueError covers its lost-segment bookkeeping refusing an odd segment.
CfdpError = (
    InvalidDestinationId, InvalidNakPdu, InvalidPduDirection, InvalidPduForDestHandler,
    InvalidPduForSourceHandler, InvalidSourceId, InvalidTransactionSeqNum,
    NoRemoteEntityConfigFound, PduIgnoredForDest, PduIgnoredForSource, ValueError,
)


@dataclass(frozen=True)
class DownlinkConfig:
    """Timers and limits of both ends. Defaults suit a 115200 baud link with a ground
    round trip of a few seconds; tests shorten them."""

    acknowledged: bool = True  # class 2; False: class 1 (no uplink)
    ack_timer_s: float = 10.0  # positive ACK procedure: EOF (payload) and Finished (ground)
    ack_limit: int = 3
    nak_timer_s: float = 10.0  # ground: repeat the NAK sequence for still-missing data
    nak_limit: int = 3
    check_timer_s: float = 5.0  # ground, class 1: wait for late file data after EOF
    check_limit: int = 2
    inactivity_s: float = 60.0  # payload, class 2: nothing from the ground -> restart the transfer
    #: A more important product preempts a transfer that has sent less than this fraction of
    #: its file (cfdp-py cannot suspend, so the preempted one restarts later from scratch).
    preempt_below: float = 0.5
    class1_repeats: int = 1  # class 1: how many times each product is sent
    max_packet: int = MAX_PACKET
    #: ground: the largest file a transaction may declare (a product is at most the spool's
    #: quota, 256 MB by default)
    max_file_bytes: int = 256 * 2**20
    #: ground: transactions open at once; the payload runs one at a time (two overlap while
    #: a Finished PDU waits for its ACK)
    max_open_transactions: int = 16

    def __post_init__(self) -> None:
        if not 64 <= self.max_packet <= MAX_PACKET:
            raise ValueError(f"max_packet must be 64-{MAX_PACKET}, got {self.max_packet}")
        if self.class1_repeats < 1:
            raise ValueError("class1_repeats must be >= 1")
        if self.max_file_bytes < 1 or self.max_open_transactions < 1:
            raise ValueError("max_file_bytes and max_open_transactions must be >= 1")

    @property
    def mode(self) -> TransmissionMode:
        return TransmissionMode.ACKNOWLEDGED if self.acknowledged else TransmissionMode.UNACKNOWLEDGED

    def remote(self, entity: UnsignedByteField) -> RemoteEntityConfig:
        return RemoteEntityConfig(
            entity_id=entity,
            max_file_segment_len=None,
            max_packet_len=self.max_packet - CCSDS_HEADER_LEN,
            closure_requested=self.acknowledged,
            crc_on_transmission=True,
            default_transmission_mode=self.mode,
            crc_type=ChecksumType.CRC_32,
            positive_ack_timer_interval_seconds=self.ack_timer_s,
            positive_ack_timer_expiration_limit=self.ack_limit,
            check_limit=self.check_limit,
            disposition_on_cancellation=True,
            immediate_nak_mode=True,
            nak_timer_interval_seconds=self.nak_timer_s,
            nak_timer_expiration_limit=self.nak_limit,
        )


# -- space packets ------------------------------------------------------------------------


class PacketSequencer:
    """Wraps PDUs in space packets of one type, with a 14-bit sequence count per APID.
    The counts start at 0 when the process starts (CCSDS allows a reset; the ground does not
    rely on them for reassembly, CFDP offsets do that)."""

    def __init__(self, packet_type: PacketType) -> None:
        self.packet_type = packet_type
        self.counts: dict[int, int] = {}

    def wrap(self, apid: int, pdu: bytes) -> bytes:
        if not 0 <= apid < 0x7FF:  # 0x7FF is the idle packet APID
            raise ValueError(f"APID {apid:#x} out of range 0-0x7FE")
        if not pdu or len(pdu) + CCSDS_HEADER_LEN > MAX_PACKET:
            raise ValueError(f"PDU of {len(pdu)} bytes does not fit a {MAX_PACKET}-byte packet")
        count = self.counts.get(apid, 0)
        self.counts[apid] = (count + 1) % SEQ_COUNT_MODULO
        header = SpacePacketHeader(
            packet_type=self.packet_type, apid=apid, seq_count=count, data_len=len(pdu) - 1,
            seq_flags=SequenceFlags.UNSEGMENTED,
        )
        return bytes(SpacePacket(header, sec_header=None, user_data=bytes(pdu)).pack())


def unwrap(packet: bytes, packet_type: PacketType) -> tuple[SpacePacketHeader, bytes]:
    """Header and data field of one space packet; DownlinkError says what is wrong."""
    if len(packet) < CCSDS_HEADER_LEN + 1:
        raise DownlinkError(f"space packet of {len(packet)} bytes is shorter than 7")
    header = SpacePacketHeader.unpack(packet)
    if header.ccsds_version != 0:
        raise DownlinkError(f"space packet version {header.ccsds_version}, expected 0")
    if header.packet_len != len(packet):
        raise DownlinkError(
            f"space packet length field says {header.packet_len} bytes, got {len(packet)}"
        )
    if header.packet_type != packet_type or header.sec_header_flag:
        raise DownlinkError(
            f"space packet APID {header.apid:#x} is {header.packet_type.name}"
            f"{' with a secondary header' if header.sec_header_flag else ''}; expected "
            f"{packet_type.name} without one"
        )
    if header.seq_flags != SequenceFlags.UNSEGMENTED:
        raise DownlinkError(f"space packet is segmented ({header.seq_flags.name}); not supported")
    return header, bytes(packet[CCSDS_HEADER_LEN:])


def parse_pdu(data: bytes) -> GenericPduPacket:
    """A CFDP PDU from a packet's data field (its CRC-16 checked by spacepackets)."""
    try:
        pdu = PduFactory.from_raw(data)
    except Exception as exc:  # spacepackets raises ValueError subclasses and struct errors
        raise DownlinkError(f"bad CFDP PDU ({type(exc).__name__}: {exc})") from exc
    if pdu is None:
        raise DownlinkError("unknown CFDP PDU type")
    return pdu
