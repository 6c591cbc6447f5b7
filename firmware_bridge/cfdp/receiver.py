"""The ground side of the downlink: one cfdp-py destination handler per transaction.

**Durable, then acknowledged.** A file that CFDP delivered complete goes to ``on_file``
before the Finished PDU that tells the payload to delete it is sent: ``on_file`` returns
once the file is kept durably (or set aside), and if it raises OSError (the ground's disk is
full) no Finished PDU is sent, the transaction is failed, and the payload sends the file
again later. The staged copy is deleted only after ``on_file`` returned.

**Declared sizes and counts are not trusted.** A Metadata PDU declaring more than
``max_file_bytes`` or a checksum other than the configured one (CRC-32: a NULL checksum
would accept anything), file data beyond the declared size, and an EOF whose size differs
from the Metadata's fail the transaction before anything is written. At most
``max_open_transactions`` are open at once; a new one fails the oldest first. Each of these
is a :class:`FailedTransfer` (``on_failure``), i.e. an event on the ground.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from cfdppy import (
    CfdpState,
    RemoteEntityConfigTable,
    RestrictedFilestore,
)
from cfdppy.handler.dest import DestHandler, LostSegmentTracker, acknowledge_inactive_eof_pdu
from spacepackets.ccsds.spacepacket import (
    PacketType,
)
from spacepackets.cfdp import (
    ChecksumType,
    ConditionCode,
    Direction,
    TransactionId,
)
from spacepackets.cfdp.pdu import (
    AckPdu,
    EofPdu,
    FileDataPdu,
    FinishedPdu,
    MetadataPdu,
)
from spacepackets.cfdp.pdu.ack import TransactionStatus
from spacepackets.cfdp.pdu.finished import FinishedParams
from spacepackets.cfdp.pdu.helper import GenericPduPacket

from firmware_bridge.cfdp.adapters import Faults, Timers, User, finished_ok, local_entity
from firmware_bridge.cfdp.common import (
    APID_CONTROL,
    APID_UPLINK,
    DEST_NAME_RE,
    FILE_SUFFIX,
    GROUND_ENTITY,
    KIND_BY_APID,
    PAYLOAD_ENTITY,
    CfdpError,
    DownlinkConfig,
    DownlinkError,
    PacketSequencer,
    parse_pdu,
    unwrap,
)

log = logging.getLogger(__name__)

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
    refused: int = 0  # transactions failed for a declared size, checksum type or count


class _DestHandler(DestHandler):
    """cfdp-py 0.7's ``_AckedModeParams`` shares one ``LostSegmentTracker`` default object
    between all transactions of all handlers (a dataclass default instance), so segments
    lost in a cancelled transfer would be NAKed in the next one. Each transaction gets its
    own tracker here (the report for upstream: docs/upstream/cfdp-py-lost-segment-tracker.md)."""

    def _common_first_packet_handler(self, pdu: GenericPduPacket) -> bool | None:
        result = super()._common_first_packet_handler(pdu)
        self._params.acked_params.lost_seg_tracker = LostSegmentTracker()
        return result


@dataclass
class _Incoming:
    handler: _DestHandler
    user: User
    apid: int
    staging: Path
    name: str | None = None
    file_name: str = ""  # as the Metadata PDU named it (the suffix of the sender's version)
    size: int | None = None  # as the Metadata PDU declared it
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
        self._faults = Faults(self._fault)
        self._unacknowledged: set[tuple[int, int]] = set()  # Finished PDUs past their ACK limit
        self._remote = RemoteEntityConfigTable([self.config.remote(PAYLOAD_ENTITY)])
        self._packets = PacketSequencer(PacketType.TC)
        self._active: dict[tuple[int, int], _Incoming] = {}
        self._completed: OrderedDict[tuple[int, int], bytes] = OrderedDict()  # Finished PDUs
        self._newest: dict[int, int] = {}  # highest transaction number seen per source
        self._refused: OrderedDict[tuple[int, int], None] = OrderedDict()
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
        # APID_CONTROL carries the payload's ACK of a Finished PDU it had already acknowledged
        # (we repeated it: its first ACK was lost or crossed our repeat). It ends our wait as
        # the first would have, through the same checks; for a closed transaction it is
        # dropped below. Nothing else travels there.
        if header.apid == APID_CONTROL and not isinstance(pdu, AckPdu):
            self._bad("PDU other than an ACK on the control APID")
            return
        if pdu.direction != Direction.TOWARDS_RECEIVER or pdu.dest_entity_id.value != GROUND_ENTITY.value:
            self._bad("PDU not addressed to the ground entity")
            return
        if pdu.source_entity_id.value != PAYLOAD_ENTITY.value:
            self._bad(f"PDU from unknown entity {pdu.source_entity_id.value}")
            return
        key = (pdu.source_entity_id.value, pdu.transaction_seq_num.value)
        if key in self._refused:
            self._bad("PDU of a refused transaction")
            return
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
        named = DEST_NAME_RE.match(pdu.dest_file_name or "") if isinstance(pdu, MetadataPdu) else None
        if isinstance(pdu, MetadataPdu) and named is None:
            self._bad("Metadata PDU with a file name outside the product pattern")
            return
        incoming.last_heard = self._clock()
        if named is not None:
            incoming.name, incoming.file_name = named.group(1), named.group(0)
        refusal = self._refusal(pdu, incoming)
        if refusal is not None:
            self._bad(refusal.split(":")[0])
            self._refuse(key, refusal)
            return
        if isinstance(pdu, MetadataPdu):
            incoming.size = pdu.file_size
        try:
            incoming.handler.state_machine(pdu)
        except CfdpError as exc:
            self._bad(type(exc).__name__)
        self._after(key, incoming)

    def _refuse(self, key: tuple[int, int], reason: str) -> None:
        """Fail an open transaction for good: its later PDUs are dropped, not reopened."""
        self.stats.refused += 1
        self._refused[key] = None
        while len(self._refused) > self.REMEMBER:
            self._refused.popitem(last=False)
        self._close(key, FailedTransfer(key, self._active[key].name, reason))

    def _refusal(self, pdu: GenericPduPacket, incoming: _Incoming) -> str | None:
        """Why ``pdu`` fails its transaction before cfdp-py sees it, or None."""
        limit = self.config.max_file_bytes
        if isinstance(pdu, MetadataPdu):
            if pdu.checksum_type != ChecksumType.CRC_32:
                return (f"checksum type {pdu.checksum_type.name}: the downlink requires "
                        f"{ChecksumType.CRC_32.name}")
            if pdu.file_size > limit:
                return f"declared file size: {pdu.file_size} B exceeds the limit of {limit} B"
        elif isinstance(pdu, FileDataPdu):
            end = pdu.offset + len(pdu.file_data)
            if end > (limit if incoming.size is None else incoming.size):
                return (f"file data beyond the declared size: up to byte {end} of "
                        f"{incoming.size if incoming.size is not None else limit} B")
        elif isinstance(pdu, EofPdu):
            size = pdu.file_size
            if size > limit or (incoming.size is not None and size != incoming.size):
                return (f"EOF file size: {size} B, declared {incoming.size} B, "
                        f"limit {limit} B")
        return None

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
        while len(self._active) >= self.config.max_open_transactions:
            oldest = next(iter(self._active))  # dicts keep the order transactions opened in
            self._refuse(oldest, f"too many open transactions: {len(self._active)}, the "
                                 "limit; the oldest is failed to make room")
        staging = self.staging / f"{key[0]}-{key[1]}"
        staging.mkdir(parents=True, exist_ok=True)
        user = User(RestrictedFilestore(staging))
        handler = _DestHandler(local_entity(GROUND_ENTITY, self._faults), user, self._remote,
                               Timers(self.config.check_timer_s))
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
        """Deliver a finished file, then send what the handler produced (its Finished PDU
        only once the file is kept), and retire idle handlers.

        cfdp-py 0.7 can fail to pack a PDU it built itself (seen once after a link cut: an
        ACK with condition code 16); that transaction is then dropped as failed, the
        payload's silence timeout restarts the file, and the receiver keeps running."""
        try:
            pending = self._pending(key, incoming)
        except (ValueError, RuntimeError) as exc:
            if key in self._active:
                self._close(key, FailedTransfer(key, incoming.name, f"CFDP library error: {exc}"))
            return
        try:
            self._finish(key, incoming)
        except OSError as exc:
            # not kept, so not acknowledged: the payload keeps the product and sends it again
            self._close(key, FailedTransfer(key, incoming.name,
                                            f"cannot keep the file: {exc.strerror or exc}"))
            return
        for pdu, finished in pending:
            if finished:
                self._completed[key] = pdu
                while len(self._completed) > self.REMEMBER:
                    self._completed.popitem(last=False)
            self._uplink(pdu)
        if incoming.handler.state == CfdpState.IDLE or (incoming.done and self._send is None) or (
                incoming.done and key in self._unacknowledged):
            self._close(key, None)

    def _fault(self, tid: TransactionId, cond: ConditionCode) -> None:
        """A Finished PDU whose ACK never came ends its transaction: the file is kept and its
        fate was told (the payload left at the end of a pass, or its last ACK was lost).
        cfdp-py's answer, a cancellation, would send a second Finished PDU that waits for an
        ACK too, and so on for as long as the receiver runs."""
        if cond == ConditionCode.POSITIVE_ACK_LIMIT_REACHED:
            self._unacknowledged.add((tid.source_id.value, tid.seq_num.value))

    def _pending(self, key: tuple[int, int], incoming: _Incoming) -> list[tuple[bytes, bool]]:
        """The PDUs the handler wants sent, packed, each with whether it is a Finished PDU."""
        out = []
        handler = incoming.handler
        while (holder := handler.get_next_packet()) is not None:
            pdu = bytes(holder.pdu.pack())  # now: cfdp-py mutates the PDU's parameters later
            finished = isinstance(holder.pdu, FinishedPdu)
            if finished and key in self._completed and pdu != self._completed[key]:
                # cfdp-py cancels a transaction whose Finished PDU was never acknowledged
                # and reports that in a second Finished PDU; the file's fate was told in
                # the first, and the payload would needlessly resend the file.
                continue
            out.append((pdu, finished))
        return out

    def _finish(self, key: tuple[int, int], incoming: _Incoming) -> None:
        if not incoming.done and incoming.user.finished:
            params = incoming.user.finished[0].finished_params
            self._deliver(key, incoming, params)
            incoming.done = True

    def _deliver(self, key: tuple[int, int], incoming: _Incoming, params: FinishedParams) -> None:
        name = incoming.name
        path = incoming.staging / (incoming.file_name or f"{name}{FILE_SUFFIX}")
        if finished_ok(params) and name and path.is_file():
            self.on_file(ReceivedFile(key, incoming.apid, KIND_BY_APID.get(incoming.apid), name,
                                      path.read_bytes()))
            path.unlink()  # kept by on_file; the handler may repeat its Finished PDU without it
            self.stats.files += 1
            return
        reason = (f"CFDP condition {params.condition_code.name}, "
                  f"delivery {params.delivery_code.name}")
        self.stats.failed += 1
        self.on_failure(FailedTransfer(key, name, reason))

    def _close(self, key: tuple[int, int], failure: FailedTransfer | None) -> None:
        incoming = self._active.pop(key)
        self._unacknowledged.discard(key)
        shutil.rmtree(incoming.staging, ignore_errors=True)
        if failure is not None:
            self.stats.failed += 1
            self.on_failure(failure)
        elif incoming.done and self._send is not None:
            # live class 2: the payload acknowledged the Finished PDU (or its ACK limit was
            # reached, a CFDP fault logged apart); nothing more is sent for this file
            log.info("%s: CFDP transaction %d closed", incoming.name, key[1])

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
