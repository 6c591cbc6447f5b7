"""Products to the ground: CFDP (``cfdp-py``) transfers carried in CCSDS Space Packets.

Nesting on the way down::

    spool file (a product) -> CFDP PDUs (Metadata, File Data, EOF; CCSDS 727.0-B, each with
    its CRC-16) -> one CCSDS Space Packet per PDU (133.0-B, 6-byte primary header, no
    secondary header, TM, APID per product kind, 14-bit sequence count per APID)
    -> one DATA frame of the serial link (``link.Link.send_data``)

and on the way up the ground's ACK, NAK and Finished PDUs travel in TC space packets with
APID ``APID_UPLINK``.

**Modes.** With an uplink the transfer is CFDP class 2 (acknowledged): the ground NAKs lost
segments, the payload retransmits them, and a product leaves the spool only when the
ground's Finished PDU says the file arrived complete with a good CRC-32. Without an uplink
it is class 1 (unacknowledged): each product is sent ``class1_repeats`` times and then
leaves the spool; the ground keeps the first good copy.

**Order.** One transfer at a time, in spool order (priority, then age). A more important
product that arrives during a transfer preempts it if less than ``preempt_below`` of the
file has been sent; the preempted product is sent again from scratch afterwards.

**Power cuts.** ``cfdp-py`` keeps a transfer's state in memory only. The spool therefore
keeps the product until the ground confirmed it, and after a restart the transfer starts
again from scratch under a new transaction sequence number (persisted by the spool, so it
never repeats); the ground drops the old half-received transaction when the new one starts
and drops whole duplicates by product name and SHA-256 (``ground.sink``).

**Entities.** The payload is CFDP entity ``PAYLOAD_ENTITY`` and the ground ``GROUND_ENTITY``
(2-byte entity IDs, 4-byte transaction sequence numbers).

``DownlinkSender`` runs on the payload (one transfer at a time, in spool order);
``DownlinkReceiver`` runs on the ground (one ``cfdp-py`` destination handler per
transaction, files staged in a directory until complete). Both are transport-agnostic: they
take a ``send(packet: bytes)`` callable and are fed received packets with ``on_packet``.

Run ``python -m firmware_bridge.downlink --help`` to serve a spool over a serial port.
"""

from __future__ import annotations

import argparse
import logging
import math
import re
import shutil
import tempfile
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from cfdppy import (
    CfdpState,
    IndicationConfig,
    LocalEntityConfig,
    PutRequest,
    RemoteEntityConfig,
    RemoteEntityConfigTable,
    RestrictedFilestore,
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
    SourceFileDoesNotExist,
)
from cfdppy.handler.dest import DestHandler, LostSegmentTracker, acknowledge_inactive_eof_pdu
from cfdppy.handler.source import SourceHandler
from cfdppy.mib import CheckTimerProvider, DefaultFaultHandlerBase, EntityType
from cfdppy.user import CfdpUserBase, TransactionFinishedParams
from spacepackets.ccsds.spacepacket import (
    CCSDS_HEADER_LEN,
    PacketType,
    SequenceFlags,
    SpacePacket,
    SpacePacketHeader,
)
from spacepackets.cfdp import (
    ChecksumType,
    ConditionCode,
    Direction,
    TransactionId,
    TransmissionMode,
)
from spacepackets.cfdp.pdu import (
    AckPdu,
    DeliveryCode,
    DirectiveType,
    EofPdu,
    FinishedPdu,
    MetadataPdu,
)
from spacepackets.cfdp.pdu.ack import TransactionStatus
from spacepackets.cfdp.pdu.finished import FinishedParams
from spacepackets.cfdp.pdu.helper import GenericPduPacket, PduFactory
from spacepackets.countdown import Countdown
from spacepackets.seqcount import ProvidesSeqCount
from spacepackets.util import UnsignedByteField

from firmware_bridge.link import ByteRate
from firmware_bridge.messages import MAX_BODY
from firmware_bridge.spool import Spool, SpoolEntry, SpoolEvent

log = logging.getLogger(__name__)

PAYLOAD_ENTITY = UnsignedByteField(1, 2)
GROUND_ENTITY = UnsignedByteField(2, 2)

#: Downlink APID of each product kind (kinds as in ``onboard.formats.products.ProductKind``).
APID_BY_KIND: dict[str, int] = {
    "health": 0x100,
    "event": 0x101,
    "residue": 0x110,
    "quicklook": 0x120,
    "calibration_report": 0x121,
    "cube": 0x130,
}
KIND_BY_APID = {apid: kind for kind, apid in APID_BY_KIND.items()}
#: Payload -> ground CFDP PDUs that belong to no product (an ACK of a stale Finished PDU).
APID_CONTROL = 0x1F0
#: Ground -> payload CFDP PDUs (ACK, NAK, Finished), TC packets.
APID_UPLINK = 0x1F1
#: Largest space packet: one DATA frame body.
MAX_PACKET = MAX_BODY
SEQ_COUNT_MODULO = 1 << 14
#: What a product file is called on the ground: the product name and this suffix.
FILE_SUFFIX = ".obpr"
_DEST_NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}\.obpr$")


class DownlinkError(ValueError):
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

    def __post_init__(self) -> None:
        if not 64 <= self.max_packet <= MAX_PACKET:
            raise ValueError(f"max_packet must be 64-{MAX_PACKET}, got {self.max_packet}")
        if self.class1_repeats < 1:
            raise ValueError("class1_repeats must be >= 1")

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


# -- cfdp-py plumbing ---------------------------------------------------------------------


class _Timers(CheckTimerProvider):
    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def provide_check_timer(
        self, local_entity_id: UnsignedByteField, remote_entity_id: UnsignedByteField,
        entity_type: EntityType,
    ) -> Countdown:
        return Countdown.from_seconds(self.seconds)


class _Faults(DefaultFaultHandlerBase):
    """Records every CFDP fault (the handlers act on them; we report them)."""

    def __init__(self) -> None:
        super().__init__()
        self.faults: list[tuple[TransactionId, ConditionCode]] = []

    def _record(self, tid: TransactionId, cond: ConditionCode, progress: int) -> None:
        log.info("CFDP fault %s on %s at %d bytes", cond.name, tid, progress)
        self.faults.append((tid, cond))

    notice_of_suspension_cb = notice_of_cancellation_cb = abandoned_cb = ignore_cb = _record


class _User(CfdpUserBase):
    """Collects the one indication we act on: Transaction-Finished."""

    def __init__(self, vfs: RestrictedFilestore | None = None) -> None:
        super().__init__(vfs)
        self.finished: list[TransactionFinishedParams] = []

    def transaction_finished_indication(self, params: TransactionFinishedParams) -> None:
        self.finished.append(params)

    def transaction_indication(self, *a: object) -> None: ...
    def eof_sent_indication(self, *a: object) -> None: ...
    def metadata_recv_indication(self, *a: object) -> None: ...
    def file_segment_recv_indication(self, *a: object) -> None: ...
    def report_indication(self, *a: object) -> None: ...
    def suspended_indication(self, *a: object) -> None: ...
    def resumed_indication(self, *a: object) -> None: ...
    def fault_indication(self, *a: object) -> None: ...
    def abandoned_indication(self, *a: object) -> None: ...
    def eof_recv_indication(self, *a: object) -> None: ...


class _FixedSeq(ProvidesSeqCount):
    """Hands cfdp-py the transaction number the spool reserved (persisted)."""

    def __init__(self) -> None:
        self.value = 0

    @property
    def max_bit_width(self) -> int:
        return 32

    @max_bit_width.setter
    def max_bit_width(self, width: int) -> None:
        raise AttributeError("fixed at 32 bits")

    def get_and_increment(self) -> int:
        return self.value


def _local(entity: UnsignedByteField, faults: _Faults) -> LocalEntityConfig:
    quiet = IndicationConfig(
        eof_sent_indication_required=False, eof_recv_indication_required=False,
        file_segment_recvd_indication_required=False, suspended_indication_required=False,
        resumed_indication_required=False,
    )
    return LocalEntityConfig(entity, quiet, faults)


def _good(params: FinishedParams) -> bool:
    return (params.condition_code == ConditionCode.NO_ERROR
            and params.delivery_code == DeliveryCode.DATA_COMPLETE)


# -- payload side -------------------------------------------------------------------------


@dataclass
class SenderStats:
    transfers_started: int = 0
    delivered: int = 0
    failed: int = 0  # cancelled or faulted transfers (the product stays queued)
    restarted_inactive: int = 0  # class 2 transfers given up for silence from the ground
    preempted: int = 0  # transfers set aside for a more important product
    eof_repeats: int = 0  # EOFs sent again to prompt a lost Finished PDU
    packets_sent: int = 0
    bytes_sent: int = 0  # space packet bytes
    uplink_packets: int = 0
    uplink_rejected: int = 0
    rejections: dict[str, int] = field(default_factory=dict)


class DownlinkSender:
    """Delivers spooled products one at a time by CFDP; call :meth:`step` in a loop and
    :meth:`on_packet` with each uplinked space packet.

    ``send(packet)`` writes one space packet (e.g. ``link.send_data``) and may block for
    pacing. ``events`` collects the spool's ``delivered`` records for telemetry.
    """

    def __init__(
        self,
        spool: Spool,
        send: Callable[[bytes], object],
        config: DownlinkConfig | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.spool = spool
        self.config = config or DownlinkConfig()
        self._send = send
        self._clock = clock
        self._faults = _Faults()
        # Files are named relative to the queue: the Metadata PDU carries no local path.
        self._user = _User(RestrictedFilestore(spool.queue_dir))
        self._seq = _FixedSeq()
        self._remote = RemoteEntityConfigTable([self.config.remote(GROUND_ENTITY)])
        self._source = SourceHandler(
            _local(PAYLOAD_ENTITY, self._faults), self._user, self._remote,
            _Timers(self.config.check_timer_s), self._seq,
        )
        self._packets = PacketSequencer(PacketType.TM)
        self._uplink: deque[bytes] = deque()
        self._entry: SpoolEntry | None = None
        self._repeats_done = 0
        self._last_heard = clock()
        self._eof: bytes | None = None  # the current transfer's EOF PDU, to prompt with
        self._eof_sent_at = 0.0
        self.events: list[SpoolEvent] = []
        self.stats = SenderStats()

    @property
    def busy(self) -> bool:
        return self._entry is not None or bool(len(self.spool))

    @property
    def current(self) -> SpoolEntry | None:
        return self._entry

    @property
    def progress(self) -> tuple[int, int] | None:
        """(bytes of the current file sent so far, its size), or None between transfers."""
        if self._entry is None:
            return None
        return self._source.progress, self._entry.size

    def on_packet(self, packet: bytes) -> None:
        """Queue one uplinked space packet for the next :meth:`step`."""
        self._uplink.append(bytes(packet))

    def _reject(self, reason: str) -> None:
        self.stats.uplink_rejected += 1
        self.stats.rejections[reason] = self.stats.rejections.get(reason, 0) + 1
        log.debug("uplink packet refused: %s", reason)

    def _emit(self, apid: int, pdu: bytes) -> None:
        packet = self._packets.wrap(apid, pdu)
        self._send(packet)
        self.stats.packets_sent += 1
        self.stats.bytes_sent += len(packet)

    def _flush(self) -> None:
        assert self._entry is not None
        apid = APID_BY_KIND[self._entry.kind]
        while (holder := self._source.get_next_packet()) is not None:
            pdu = bytes(holder.pdu.pack())
            if isinstance(holder.pdu, EofPdu):
                self._eof, self._eof_sent_at = pdu, self._clock()
            self._emit(apid, pdu)

    def _prompt_finished(self) -> None:
        """Waiting for the ground's Finished PDU and hearing nothing for an ACK interval:
        send the EOF again. The ground answers a repeated EOF of a finished transaction with
        its Finished PDU at once, so a lost Finished costs one ACK interval, not a restart."""
        assert self._entry is not None
        if (self._eof is not None and self._source.step.name == "WAITING_FOR_FINISHED"
                and self._clock() - max(self._last_heard, self._eof_sent_at)
                > self.config.ack_timer_s):
            self._eof_sent_at = self._clock()
            self.stats.eof_repeats += 1
            self._emit(APID_BY_KIND[self._entry.kind], self._eof)

    def step(self) -> bool:
        """Handle uplinked PDUs, then advance the transfer by one PDU. False when idle."""
        while self._uplink:
            self._handle_uplink(self._uplink.popleft())
        if self._entry is not None and self._should_preempt():
            self.stats.preempted += 1
            log.info("%s set aside for a more important product", self._entry.name)
            self._source.reset()
            self._entry = None
            self.spool.release()
        if self._entry is None:
            if not self._start_next():
                return False
            if self._entry is None:  # the product could not be sent and was discarded
                return True
        try:
            self._source.state_machine()
        except (SourceFileDoesNotExist, FileNotFoundError) as exc:
            # removed behind the spool's back: report it, never retry it forever
            entry = self._entry
            assert entry is not None
            self._source.reset()
            self._entry = None
            self.events.append(self.spool.discard(entry, f"file vanished from the spool ({exc})"))
            return True
        except CfdpError as exc:
            log.warning("CFDP source error on %s: %s; transfer restarted", self._entry, exc)
            self._end_transfer(None)
            return True
        self._flush()
        self._check_finished()
        if self._entry is not None and self.config.acknowledged:
            self._prompt_finished()
        if (self._entry is not None and self.config.acknowledged
                and self._clock() - self._last_heard > self.config.inactivity_s):
            self.stats.restarted_inactive += 1
            log.warning("no PDU from the ground for %.0f s: restarting %s",
                        self.config.inactivity_s, self._entry.name)
            self._end_transfer(None)
        return True

    def _should_preempt(self) -> bool:
        assert self._entry is not None
        entries = self.spool.entries()
        if not entries or entries[0].priority >= self._entry.priority:
            return False
        if self._source.step.name not in ("SENDING_METADATA", "SENDING_FILE_DATA"):
            return False  # all data sent: finishing costs less than restarting
        return self._source.progress < self.config.preempt_below * max(1, self._entry.size)

    def _start_next(self) -> bool:
        entry = self.spool.next()
        if entry is None:
            return False
        if entry.kind not in APID_BY_KIND:
            self.events.append(self.spool.discard(
                entry, f"kind {entry.kind!r} has no APID; known kinds: {sorted(APID_BY_KIND)}"))
            return True
        self._seq.value = self.spool.reserve_transaction() % (1 << 32)
        request = PutRequest(
            destination_id=GROUND_ENTITY, source_file=Path(entry.path.name),
            dest_file=Path(entry.name + FILE_SUFFIX), trans_mode=self.config.mode,
            closure_requested=self.config.acknowledged,
        )
        try:
            accepted = self._source.put_request(request)
        except SourceFileDoesNotExist as exc:
            self.events.append(self.spool.discard(entry, f"file vanished from the spool ({exc})"))
            return True
        if not accepted:
            raise RuntimeError("CFDP source handler busy with no transfer in progress")
        self._entry = entry
        self._eof = None
        self._user.finished.clear()
        self._last_heard = self._clock()
        self.stats.transfers_started += 1
        return True

    def _check_finished(self) -> None:
        if self._entry is None:
            return
        if self._user.finished:
            params = self._user.finished[-1].finished_params
            self._end_transfer(params if _good(params) else None)
        elif self._source.state == CfdpState.IDLE:  # abandoned after a fault, no indication
            self._end_transfer(None)

    def _end_transfer(self, confirmed: FinishedParams | None) -> None:
        """Close the current transfer: delivered if ``confirmed`` (or class 1 sent)."""
        entry = self._entry
        assert entry is not None
        if self._source.state != CfdpState.IDLE:
            self._source.reset()
        self._entry = None
        if confirmed is None:
            self.stats.failed += 1
            self.spool.release()
            return
        self._repeats_done += 1
        if not self.config.acknowledged and self._repeats_done < self.config.class1_repeats:
            self.spool.release()  # send it again; it is still first in line
            return
        self._repeats_done = 0
        self.stats.delivered += 1
        self.events.append(self.spool.delivered(entry))

    def _handle_uplink(self, packet: bytes) -> None:
        self.stats.uplink_packets += 1
        try:
            header, data = unwrap(packet, PacketType.TC)
            if header.apid != APID_UPLINK:
                raise DownlinkError(f"uplink APID {header.apid:#x}, expected {APID_UPLINK:#x}")
            pdu = parse_pdu(data)
        except DownlinkError as exc:
            self._reject(str(exc).split(" (")[0])
            return
        if pdu.direction != Direction.TOWARDS_SENDER:
            self._reject("PDU towards receiver on the uplink")
            return
        current = self._source.transaction_id
        seq = pdu.transaction_seq_num.value
        if (self._entry is None or current is None
                or seq != current.seq_num.value):
            self._stale(pdu)
            return
        self._last_heard = self._clock()
        if (isinstance(pdu, FinishedPdu)
                and self._source.step.name == "WAITING_FOR_EOF_ACK"):
            # Our EOF's ACK was lost but the ground finished: the Finished PDU says more.
            self._ack_finished(pdu)
            if _good(pdu.finished_params):
                self._end_transfer(pdu.finished_params)
            else:
                self._end_transfer(None)
            return
        try:
            self._source.state_machine(pdu)
        except CfdpError as exc:
            self._reject(type(exc).__name__)
            return
        self._flush()
        self._check_finished()

    def _stale(self, pdu: GenericPduPacket) -> None:
        """A PDU for a transaction that is not running: a Finished PDU is acknowledged (the
        ground repeats it until then), anything else is dropped."""
        if isinstance(pdu, FinishedPdu):
            self._ack_finished(pdu)
        self._reject("PDU for a transaction not in progress")

    def _ack_finished(self, pdu: FinishedPdu) -> None:
        conf = pdu.pdu_header.pdu_conf
        conf.direction = Direction.TOWARDS_RECEIVER
        ack = AckPdu(conf, DirectiveType.FINISHED_PDU, pdu.condition_code,
                     TransactionStatus.TERMINATED)
        self._emit(APID_CONTROL, bytes(ack.pack()))

    def run_until_idle(self, poll: Callable[[], object] = lambda: None,
                       timeout_s: float = math.inf) -> bool:
        """Step until the spool is empty (``poll`` feeds uplink packets in between).
        True if it emptied within ``timeout_s``."""
        deadline = self._clock() + timeout_s
        while self.busy and self._clock() < deadline:
            poll()
            if not self.step():
                time.sleep(0.005)
        return not self.busy


def transfer_packet_sizes(entry: SpoolEntry, config: DownlinkConfig | None = None) -> list[int]:
    """Space packet sizes of one transfer of ``entry`` without losses: Metadata, File Data
    segments, EOF (exact: cfdp-py builds the PDUs, from a zero-filled stand-in file)."""
    config = config or DownlinkConfig()
    remote = RemoteEntityConfigTable([config.remote(GROUND_ENTITY)])
    with tempfile.TemporaryDirectory() as tmp:
        src = SourceHandler(_local(PAYLOAD_ENTITY, _Faults()), _User(RestrictedFilestore(Path(tmp))),
                            remote, _Timers(1.0), _FixedSeq())
        with open(Path(tmp) / entry.path.name, "wb") as fh:
            fh.truncate(entry.size)
        src.put_request(PutRequest(GROUND_ENTITY, Path(entry.path.name),
                                   Path(entry.name + FILE_SUFFIX), config.mode, config.acknowledged))
        sizes: list[int] = []
        waiting = ("WAITING_FOR_EOF_ACK", "WAITING_FOR_FINISHED")
        while src.state != CfdpState.IDLE and src.step.name not in waiting:
            src.state_machine()
            while (h := src.get_next_packet()) is not None:
                sizes.append(CCSDS_HEADER_LEN + len(h.pdu.pack()))
        return sizes


@dataclass(frozen=True)
class DrainEstimate:
    """How long the queue takes to leave at a byte rate, without losses or retransmissions."""

    products: int
    product_bytes: int
    packets: int
    packet_bytes: int
    seconds: float


def drain_estimate(entries: Iterable[SpoolEntry], rate: ByteRate,
                   config: DownlinkConfig | None = None) -> DrainEstimate:
    """Drain time of ``entries`` over a link of ``rate`` (link framing included, COBS at its
    worst case, so an upper bound for lossless transfers)."""
    sizes: list[int] = []
    products = product_bytes = 0
    for entry in entries:
        sizes += transfer_packet_sizes(entry, config)
        products += 1
        product_bytes += entry.size
    return DrainEstimate(products, product_bytes, len(sizes), sum(sizes),
                         rate.drain_time_s(sizes))


# -- ground side --------------------------------------------------------------------------


@dataclass(frozen=True)
class ReceivedFile:
    """One file that a CFDP transaction delivered complete, its CRC-32 verified."""

    transaction: tuple[int, int]  # (source entity, transaction sequence number)
    apid: int
    kind: str | None  # from the APID; None for an APID not in APID_BY_KIND
    name: str  # the CFDP destination file name without FILE_SUFFIX
    data: bytes


@dataclass(frozen=True)
class FailedTransfer:
    """A transaction that ended without a complete, verified file."""

    transaction: tuple[int, int]
    name: str | None
    reason: str


@dataclass
class ReceiverStats:
    packets: int = 0
    bad_packets: int = 0
    bad_reasons: dict[str, int] = field(default_factory=dict)
    transactions: int = 0
    files: int = 0
    failed: int = 0
    superseded: int = 0  # transactions dropped because the sender restarted
    uplink_packets: int = 0


class _DestHandler(DestHandler):
    """cfdp-py 0.7's ``_AckedModeParams`` shares one ``LostSegmentTracker`` default object
    between all transactions of all handlers (a dataclass default instance), so segments
    lost in a cancelled transfer would be NAKed in the next one. Each transaction gets its
    own tracker here."""

    def _common_first_packet_handler(self, pdu: GenericPduPacket) -> bool | None:
        result = super()._common_first_packet_handler(pdu)
        self._params.acked_params.lost_seg_tracker = LostSegmentTracker()
        return result


@dataclass
class _Incoming:
    handler: _DestHandler
    user: _User
    apid: int
    staging: Path
    name: str | None = None
    done: bool = False
    last_heard: float = 0.0


class DownlinkReceiver:
    """The ground's CFDP entity. ``on_file`` gets each complete, CRC-verified file once per
    transaction; ``on_failure`` each transaction that ended otherwise. ``send`` (or None
    when there is no uplink, e.g. decoding a capture) carries ACK/NAK/Finished PDUs up."""

    #: Completed transactions remembered to answer a repeated EOF with ACK + Finished.
    REMEMBER = 256

    def __init__(
        self,
        staging: str | Path,
        on_file: Callable[[ReceivedFile], object],
        send: Callable[[bytes], object] | None = None,
        config: DownlinkConfig | None = None,
        on_failure: Callable[[FailedTransfer], object] = lambda f: None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.staging = Path(staging)
        self.staging.mkdir(parents=True, exist_ok=True)
        self.config = config or DownlinkConfig()
        self.on_file = on_file
        self.on_failure = on_failure
        self._send = send
        self._clock = clock
        self._faults = _Faults()
        self._remote = RemoteEntityConfigTable([self.config.remote(PAYLOAD_ENTITY)])
        self._packets = PacketSequencer(PacketType.TC)
        self._active: dict[tuple[int, int], _Incoming] = {}
        self._completed: OrderedDict[tuple[int, int], bytes] = OrderedDict()  # Finished PDUs
        self._newest: dict[int, int] = {}  # highest transaction number seen per source
        self.stats = ReceiverStats()

    @property
    def open_transactions(self) -> int:
        """Transactions still receiving, or waiting for the ACK of their Finished PDU."""
        return len(self._active)

    def _bad(self, reason: str) -> None:
        self.stats.bad_packets += 1
        self.stats.bad_reasons[reason] = self.stats.bad_reasons.get(reason, 0) + 1

    def on_packet(self, packet: bytes) -> None:
        """Handle one downlinked space packet."""
        self.stats.packets += 1
        try:
            header, data = unwrap(packet, PacketType.TM)
            pdu = parse_pdu(data)
        except DownlinkError as exc:
            self._bad(str(exc).split(" (")[0])
            return
        if header.apid == APID_CONTROL:
            return  # the payload acknowledging a stale Finished PDU: nothing to do
        if pdu.direction != Direction.TOWARDS_RECEIVER or pdu.dest_entity_id.value != GROUND_ENTITY.value:
            self._bad("PDU not addressed to the ground entity")
            return
        if pdu.source_entity_id.value != PAYLOAD_ENTITY.value:
            self._bad(f"PDU from unknown entity {pdu.source_entity_id.value}")
            return
        key = (pdu.source_entity_id.value, pdu.transaction_seq_num.value)
        if key in self._completed and isinstance(pdu, EofPdu):
            self._answer_completed(key, pdu)
            return
        incoming = self._active.get(key)
        if incoming is None:
            if key in self._completed or isinstance(pdu, AckPdu):
                return  # a late ACK of our Finished, or data of a finished transfer
            if key[1] < self._newest.get(key[0], -1) and not isinstance(pdu, MetadataPdu):
                # a late packet of a transfer the sender has abandoned (it restarted)
                self._bad("PDU of a superseded transaction")
                return
            incoming = self._open(key, header.apid)
        if isinstance(pdu, MetadataPdu) and not _DEST_NAME_RE.match(pdu.dest_file_name or ""):
            self._bad("Metadata PDU with a file name outside the product pattern")
            return
        incoming.last_heard = self._clock()
        if isinstance(pdu, MetadataPdu):
            incoming.name = (pdu.dest_file_name or "")[: -len(FILE_SUFFIX)]
        try:
            incoming.handler.state_machine(pdu)
        except CfdpError as exc:
            self._bad(type(exc).__name__)
        self._after(key, incoming)

    def _open(self, key: tuple[int, int], apid: int) -> _Incoming:
        # The payload runs one transfer at a time and numbers them in increasing order: a
        # newer transaction from the same source means it restarted, so its unfinished older
        # ones will never complete.
        self._newest[key[0]] = max(key[1], self._newest.get(key[0], -1))
        for old_key, old in list(self._active.items()):
            if old_key[0] == key[0] and old_key[1] < key[1] and not old.done:
                self.stats.superseded += 1
                self._close(old_key, FailedTransfer(
                    old_key, old.name, "superseded: the sender started a new transaction"))
        staging = self.staging / f"{key[0]}-{key[1]}"
        staging.mkdir(parents=True, exist_ok=True)
        user = _User(RestrictedFilestore(staging))
        handler = _DestHandler(_local(GROUND_ENTITY, self._faults), user, self._remote,
                               _Timers(self.config.check_timer_s))
        incoming = _Incoming(handler, user, apid, staging, last_heard=self._clock())
        self._active[key] = incoming
        self.stats.transactions += 1
        return incoming

    def _answer_completed(self, key: tuple[int, int], pdu: EofPdu) -> None:
        """A repeated EOF after we finished (our EOF ACK or Finished PDU was lost): ACK it
        and repeat our Finished PDU at once."""
        self._uplink(bytes(acknowledge_inactive_eof_pdu(pdu, TransactionStatus.TERMINATED).pack()))
        self._uplink(self._completed[key])

    def _uplink(self, pdu: bytes) -> None:
        if self._send is not None:
            self._send(self._packets.wrap(APID_UPLINK, pdu))
            self.stats.uplink_packets += 1

    def _after(self, key: tuple[int, int], incoming: _Incoming) -> None:
        """Send what the handler produced, deliver a finished file, retire idle handlers.

        cfdp-py 0.7 can fail to pack a PDU it built itself (seen once after a link cut: an
        ACK with condition code 16); that transaction is then dropped as failed, the
        payload's silence timeout restarts the file, and the receiver keeps running."""
        try:
            self._send_pending(key, incoming)
        except (ValueError, RuntimeError) as exc:
            if key in self._active:
                self._close(key, FailedTransfer(key, incoming.name, f"CFDP library error: {exc}"))
            return
        self._finish(key, incoming)

    def _send_pending(self, key: tuple[int, int], incoming: _Incoming) -> None:
        handler = incoming.handler
        while (holder := handler.get_next_packet()) is not None:
            pdu = bytes(holder.pdu.pack())  # now: cfdp-py mutates the PDU's parameters later
            if isinstance(holder.pdu, FinishedPdu):
                if key in self._completed and pdu != self._completed[key]:
                    # cfdp-py cancels a transaction whose Finished PDU was never acknowledged
                    # and reports that in a second Finished PDU; the file's fate was told in
                    # the first, and the payload would needlessly resend the file.
                    continue
                self._completed[key] = pdu
                while len(self._completed) > self.REMEMBER:
                    self._completed.popitem(last=False)
            self._uplink(pdu)

    def _finish(self, key: tuple[int, int], incoming: _Incoming) -> None:
        handler = incoming.handler
        if not incoming.done and incoming.user.finished:
            incoming.done = True
            params = incoming.user.finished[0].finished_params
            self._deliver(key, incoming, params)
        if handler.state == CfdpState.IDLE or (incoming.done and self._send is None):
            self._close(key, None)

    def _deliver(self, key: tuple[int, int], incoming: _Incoming, params: FinishedParams) -> None:
        name = incoming.name
        path = incoming.staging / f"{name}{FILE_SUFFIX}"
        if _good(params) and name and path.is_file():
            data = path.read_bytes()
            path.unlink()  # the handler may still repeat its Finished PDU; it needs no file
            self.stats.files += 1
            self.on_file(ReceivedFile(key, incoming.apid, KIND_BY_APID.get(incoming.apid), name,
                                      data))
            return
        reason = (f"CFDP condition {params.condition_code.name}, "
                  f"delivery {params.delivery_code.name}")
        self.stats.failed += 1
        self.on_failure(FailedTransfer(key, name, reason))

    def _close(self, key: tuple[int, int], failure: FailedTransfer | None) -> None:
        incoming = self._active.pop(key)
        shutil.rmtree(incoming.staging, ignore_errors=True)
        if failure is not None:
            self.stats.failed += 1
            self.on_failure(failure)

    def poll(self) -> None:
        """Advance every transaction's timers (NAK repeats, Finished repeats, check limit);
        call it regularly when live. Transactions silent for ``inactivity_s`` are dropped."""
        now = self._clock()
        for key, incoming in list(self._active.items()):
            if now - incoming.last_heard > self.config.inactivity_s:
                failure = None if incoming.done else FailedTransfer(
                    key, incoming.name, f"no PDU for {self.config.inactivity_s:.0f} s")
                self._close(key, failure)
                continue
            try:
                incoming.handler.state_machine()
            except CfdpError as exc:
                self._bad(type(exc).__name__)
            self._after(key, incoming)

    def finish(self) -> list[FailedTransfer]:
        """End of input (a capture's last packet): every transaction still open is reported
        as incomplete, with how far it got."""
        out = []
        for key, incoming in list(self._active.items()):
            if incoming.done:
                self._close(key, None)
                continue
            h = incoming.handler
            size = "?" if h.file_size is None else str(h.file_size)
            failure = FailedTransfer(key, incoming.name,
                                     f"incomplete at end of input: {h.progress} of {size} bytes, "
                                     f"step {h.step.name}")
            out.append(failure)
            self._close(key, failure)
        return out


# -- a payload-side server ----------------------------------------------------------------


def serve(spool: Spool, port_url: str, config: DownlinkConfig, rate_bytes_per_s: float,
          until_empty: bool = False) -> DownlinkSender:
    """Deliver ``spool`` over the serial link at ``port_url`` (see ``link.Link.open``)."""
    from firmware_bridge.dispatch import CommandDispatcher
    from firmware_bridge.link import Link, PayloadEndpoint

    link = Link.open(port_url, rate=ByteRate(rate_bytes_per_s))
    sender = DownlinkSender(spool, link.send_data, config)
    endpoint = PayloadEndpoint(link, CommandDispatcher({}), sender.on_packet)
    try:
        while True:
            endpoint.poll(0.0)
            if not sender.step():
                if until_empty:
                    break
                endpoint.poll(0.05)
    finally:
        link.close()
    return sender


def main(argv: Iterable[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Serve a downlink spool over a serial link.")
    parser.add_argument("spool", type=Path)
    parser.add_argument("--port", help="pyserial URL: /dev/ttyTHS1, a pty, socket://")
    parser.add_argument("--estimate", action="store_true",
                        help="print how long the queue takes to drain at --rate, 115200 baud "
                             "and 9.6 kbit/s, and exit")
    parser.add_argument("--quota-mb", type=float, default=512.0)
    parser.add_argument("--rate", type=float, default=11520.0, help="bytes/s (11520: 115200 8N1)")
    parser.add_argument("--no-uplink", action="store_true", help="class 1: no ACK/NAK from the ground")
    parser.add_argument("--until-empty", action="store_true", help="exit when the spool is empty")
    parser.add_argument("--ack-timer", type=float, default=10.0,
                        help="seconds before an unacknowledged EOF is sent again")
    parser.add_argument("--inactivity", type=float, default=60.0,
                        help="seconds of silence from the ground before a transfer restarts")
    args = parser.parse_args(list(argv) if argv is not None else None)
    logging.basicConfig(level=logging.INFO)
    spool = Spool(args.spool, int(args.quota_mb * 1e6))
    if args.estimate:
        for label, rate in (("--rate", ByteRate(args.rate)), ("115200 baud", ByteRate.uart(115200)),
                            ("9.6 kbit/s", ByteRate.bits(9600))):
            e = drain_estimate(spool.entries(), rate)
            print(f"{e.products} products, {e.product_bytes} B in {e.packets} packets "
                  f"({e.packet_bytes} B): {e.seconds:.1f} s at {label} "
                  f"({rate.bytes_per_s:.0f} B/s)")
        return
    if args.port is None:
        parser.error("--port is required to serve the spool")
    config = DownlinkConfig(acknowledged=not args.no_uplink, ack_timer_s=args.ack_timer,
                            inactivity_s=args.inactivity)
    sender = serve(spool, args.port, config, args.rate, args.until_empty)
    print(sender.stats)


if __name__ == "__main__":
    main()
