"""cfdp-py plumbing: the timers, fault handler, user and sequence counter its handlers need."""

from __future__ import annotations

import logging
from collections.abc import Callable

from cfdppy import (
    IndicationConfig,
    LocalEntityConfig,
    RestrictedFilestore,
)
from cfdppy.mib import CheckTimerProvider, DefaultFaultHandlerBase, EntityType
from cfdppy.user import CfdpUserBase, TransactionFinishedParams
from spacepackets.cfdp import (
    ConditionCode,
    TransactionId,
)
from spacepackets.cfdp.pdu import (
    DeliveryCode,
)
from spacepackets.cfdp.pdu.finished import FinishedParams
from spacepackets.countdown import Countdown
from spacepackets.seqcount import ProvidesSeqCount
from spacepackets.util import UnsignedByteField

log = logging.getLogger(__name__)

# -- cfdp-py plumbing ---------------------------------------------------------------------


class Timers(CheckTimerProvider):
    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def provide_check_timer(
        self, local_entity_id: UnsignedByteField, remote_entity_id: UnsignedByteField,
        entity_type: EntityType,
    ) -> Countdown:
        return Countdown.from_seconds(self.seconds)


class Faults(DefaultFaultHandlerBase):
    """Logs every CFDP fault (the handlers act on them) and passes it to ``on_fault``."""

    def __init__(self, on_fault: Callable[[TransactionId, ConditionCode], None] | None = None) -> None:
        super().__init__()
        self._on_fault = on_fault

    def _record(self, tid: TransactionId, cond: ConditionCode, progress: int) -> None:
        log.info("CFDP fault %s on %s at %d bytes", cond.name, tid, progress)
        if self._on_fault is not None:
            self._on_fault(tid, cond)

    notice_of_suspension_cb = notice_of_cancellation_cb = abandoned_cb = ignore_cb = _record


class User(CfdpUserBase):
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


class FixedSeq(ProvidesSeqCount):
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


def local_entity(entity: UnsignedByteField, faults: Faults) -> LocalEntityConfig:
    quiet = IndicationConfig(
        eof_sent_indication_required=False, eof_recv_indication_required=False,
        file_segment_recvd_indication_required=False, suspended_indication_required=False,
        resumed_indication_required=False,
    )
    return LocalEntityConfig(entity, quiet, faults)


def finished_ok(params: FinishedParams) -> bool:
    return (params.condition_code == ConditionCode.NO_ERROR
            and params.delivery_code == DeliveryCode.DATA_COMPLETE)
