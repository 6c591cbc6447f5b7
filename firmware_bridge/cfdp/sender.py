"""The payload side of the downlink: one CFDP transfer at a time, in spool order."""

from __future__ import annotations

import logging
import math
import tempfile
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from cfdppy import (
    CfdpState,
    PutRequest,
    RemoteEntityConfigTable,
    RestrictedFilestore,
)
from cfdppy.exceptions import (
    SourceFileDoesNotExist,
)
from cfdppy.handler.source import SourceHandler
from spacepackets.ccsds.spacepacket import (
    CCSDS_HEADER_LEN,
    PacketType,
)
from spacepackets.cfdp import (
    Direction,
)
from spacepackets.cfdp.pdu import (
    AckPdu,
    DirectiveType,
    EofPdu,
    FinishedPdu,
)
from spacepackets.cfdp.pdu.ack import TransactionStatus
from spacepackets.cfdp.pdu.finished import FinishedParams
from spacepackets.cfdp.pdu.helper import GenericPduPacket

from firmware_bridge.cfdp.adapters import Faults, FixedSeq, Timers, User, finished_ok, local_entity
from firmware_bridge.cfdp.common import (
    APID_BY_KIND,
    APID_CONTROL,
    APID_UPLINK,
    FILE_SUFFIX,
    GROUND_ENTITY,
    PAYLOAD_ENTITY,
    CfdpError,
    DownlinkConfig,
    DownlinkError,
    PacketSequencer,
    parse_pdu,
    unwrap,
)
from firmware_bridge.link import ByteRate, wire_bytes
from firmware_bridge.spool import Spool, SpoolEntry, SpoolEvent, pick

log = logging.getLogger(__name__)

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
    pacing. ``events`` collects the spool's ``delivered`` records for telemetry. ``room()``,
    when given, says how many bytes the link carries before the current pass ends (None: no
    contact plan, no limit; 0: no pass now): a transfer starts only if it fits
    (:func:`firmware_bridge.spool.pick`, each entry costing ``cost(entry)`` bytes of the pass,
    by default its transfer's), so none is cut by a pass's end and a product larger than the
    pass never holds back those behind it. ``turnaround_s`` follows (a moving average) how
    long the ground's Finished PDU takes after the EOF: time the link carries nothing of the
    product, which the contact plan counts (firmware_bridge/plan.py).
    """

    def __init__(
        self,
        spool: Spool,
        send: Callable[[bytes], object],
        config: DownlinkConfig | None = None,
        clock: Callable[[], float] = time.monotonic,
        room: Callable[[], float | None] | None = None,
        cost: Callable[[SpoolEntry], float] | None = None,
    ) -> None:
        self.spool = spool
        self.config = config or DownlinkConfig()
        self.cost = TransferCosts(self.config)
        self._room = room or (lambda: None)
        self._choice_cost = cost or self.cost
        self.turnaround_s = 0.0
        self._eof_first_at: float | None = None
        self._send = send
        self._clock = clock
        self._faults = Faults()
        # Files are named relative to the queue: the Metadata PDU carries no local path.
        self._user = User(RestrictedFilestore(spool.queue_dir))
        self._seq = FixedSeq()
        self._remote = RemoteEntityConfigTable([self.config.remote(GROUND_ENTITY)])
        self._source = SourceHandler(
            local_entity(PAYLOAD_ENTITY, self._faults), self._user, self._remote,
            Timers(self.config.check_timer_s), self._seq,
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
            first_eof = isinstance(holder.pdu, EofPdu) and self._eof is None and self.config.acknowledged
            if isinstance(holder.pdu, EofPdu):
                if first_eof:
                    log.info("%s sent, waiting for the ground's confirmation", self._entry.name)
                self._eof, self._eof_sent_at = pdu, self._clock()
            self._emit(apid, pdu)
            if first_eof:  # written once the file data has left (send paces): the round trip starts
                self._eof_first_at = self._clock()

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
        first = pick(self.spool.entries(), self._room(), self._choice_cost)
        if first is None or first.priority >= self._entry.priority:
            return False
        if self._source.step.name not in ("SENDING_METADATA", "SENDING_FILE_DATA"):
            return False  # all data sent: finishing costs less than restarting
        return self._source.progress < self.config.preempt_below * max(1, self._entry.size)

    def _start_next(self) -> bool:
        entry = self.spool.next(self._room(), self._choice_cost)
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
        self._eof_first_at = None
        self._user.finished.clear()
        self._last_heard = self._clock()
        self.stats.transfers_started += 1
        log.info("sending %s (%d B, transaction %d)", entry.name, entry.size, self._seq.value)
        return True

    def _check_finished(self) -> None:
        if self._entry is None:
            return
        if self._user.finished:
            params = self._user.finished[-1].finished_params
            self._end_transfer(params if finished_ok(params) else None)
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
        if self._eof_first_at is not None:  # class 2: the Finished PDU's round trip
            sample = self._clock() - self._eof_first_at
            self.turnaround_s = sample if not self.stats.delivered else 0.7 * self.turnaround_s + 0.3 * sample
            self._eof_first_at = None
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
            if finished_ok(pdu.finished_params):
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
        src = SourceHandler(local_entity(PAYLOAD_ENTITY, Faults()), User(RestrictedFilestore(Path(tmp))),
                            remote, Timers(1.0), FixedSeq())
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


class TransferCosts:
    """Bytes on the link of an entry's transfer (:func:`transfer_packet_sizes` through
    :func:`wire_bytes`), remembered per file name and size: the one cost by which the sender
    chooses what fits a pass and the planner forecasts it."""

    def __init__(self, config: DownlinkConfig | None = None) -> None:
        self.config = config
        self._known: dict[tuple[str, str, int], int] = {}

    def __call__(self, entry: SpoolEntry) -> int:
        key = (entry.path.name, entry.name, entry.size)
        if key not in self._known:
            if len(self._known) >= 4096:  # bounded on a payload that runs for months
                self._known.clear()
            self._known[key] = wire_bytes(transfer_packet_sizes(entry, self.config))
        return self._known[key]


def transfer_wire_bytes(product_bytes: int, name: str = "cube_00000001",
                        config: DownlinkConfig | None = None) -> int:
    """Bytes on the link for one product file of ``product_bytes`` named ``name`` (the
    product's name: it travels in the Metadata PDU) sent once without losses: its CFDP PDUs
    in Space Packets in link frames (COBS at its worst case). What a frame's products cost the
    downlink (``onboard bench``, bench/bench_compress.py)."""
    kind = name.rpartition("_")[0] or name
    entry = SpoolEntry(0, 0, kind, name, Path(f"00.0000000000.{kind}.{name}"), product_bytes)
    return wire_bytes(transfer_packet_sizes(entry, config))


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
