"""Verify uplinked frames: telecommands go to handlers and get an ACK; DATA frames (the
ground's CFDP PDUs) are authenticated the same way before anything acts on them.

The order of checks is part of the protocol (PROTOCOL.md, "Uplink acceptance"):

1. Authenticated frame: a key must be loaded (else NO_KEY), the MAC must match (else
   BAD_AUTH), the counter must exceed the last accepted one on the frame's channel (else
   REPLAY). The counter is then persisted *before* anything else happens, even if the body
   turns out malformed, so an authenticated frame can never be acted on twice.
2. Unauthenticated frame: its type must be on the allow-list (default: PING only), else
   NOT_AUTHENTICATED.
3. DATA stops here: an accepted one goes to the CFDP entity, a refused one is dropped (DATA
   is never acknowledged by this layer).
4. The type must be a telecommand with a handler, else UNKNOWN_COMMAND.
5. The body must parse, else BAD_ARGUMENT.
6. The handler runs: it returns a result code (None means OK) or raises CommandRefused;
   any other exception gives FAILED and a HANDLER_ERROR event, never a crash.

Every refusal also produces an EVENT, rate-limited per event code so that a flood of forged
frames cannot fill the downlink (suppressed events are counted in the next one's text).
For the same reason the ACK of a frame that did not authenticate (a refusal, or the answer
to an allow-listed PING) is sent only within an :class:`AnswerBudget`: an unauthenticated
frame is shorter than its ACK, and ACKs go ahead of DATA, so answering each one would let
anyone with a transmitter stop the downlink. Frames that authenticated are always answered.
"""

from __future__ import annotations

import logging
import os
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from firmware_bridge.auth import AuthKey, CounterStore, CounterStoreError, channel_of, load_key
from firmware_bridge.errors import BridgeError
from firmware_bridge.framing import Frame
from firmware_bridge.messages import (
    Ack,
    Direction,
    Event,
    EventCode,
    Message,
    MessageError,
    MsgType,
    ResultCode,
)

log = logging.getLogger(__name__)

#: A handler gets the parsed telecommand and returns a result code (None means OK).
Handler = Callable[[Message], "ResultCode | None"]


class CommandRefused(BridgeError):
    """Raised by a handler to refuse a command with a specific result code (e.g. BUSY)."""

    def __init__(self, result: ResultCode, reason: str = "") -> None:
        super().__init__(reason or result.name)
        self.result = ResultCode(result)


class EventLimiter:
    """At most one event per code per ``interval_s``; the rest are counted, not lost."""

    def __init__(self, interval_s: float = 1.0, clock: Callable[[], float] = time.monotonic):
        self.interval_s = interval_s
        self._clock = clock
        self._last: dict[EventCode, float] = {}
        self.suppressed: Counter[EventCode] = Counter()

    def event(self, code: EventCode, text: str) -> Event | None:
        now = self._clock()
        last = self._last.get(code)
        if last is not None and now - last < self.interval_s:
            self.suppressed[code] += 1
            return None
        self._last[code] = now
        n = self.suppressed.pop(code, 0)
        return Event(code, f"{text} (+{n} suppressed)" if n else text)


class AnswerBudget:
    """A token bucket for answers to frames that did not authenticate: ``per_s`` on
    average, ``burst`` at once. PROTOCOL.md section 4 states the numbers."""

    def __init__(self, per_s: float = 5.0, burst: float = 10.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.per_s = per_s
        self.burst = burst
        self._clock = clock
        self._tokens = burst
        self._at = clock()

    def take(self) -> bool:
        """True if an answer may be sent now (and count it)."""
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._at) * self.per_s)
        self._at = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False


def _ping(message: Message) -> ResultCode:
    return ResultCode.OK


_Refusal = tuple[ResultCode, tuple[EventCode, str]]


class CommandDispatcher:
    """Checks each uplinked frame: returns the telemetry to send back for a telecommand (ACK
    and events), and says whether a DATA frame may reach the CFDP entity.

    ``handlers`` maps telecommand types to handlers; PING is answered OK unless overridden.
    ``key``/``counters``: both or neither; without a key only allow-listed frames pass.
    ``allow_unauthenticated``: telecommand types, and DATA on a bench link with no key.
    ``answers``: the budget of ACKs to frames that did not authenticate.
    """

    def __init__(
        self,
        handlers: Mapping[MsgType, Handler],
        *,
        key: AuthKey | None = None,
        counters: CounterStore | None = None,
        allow_unauthenticated: Iterable[MsgType] = (MsgType.PING,),
        events: EventLimiter | None = None,
        answers: AnswerBudget | None = None,
    ) -> None:
        if (key is None) != (counters is None):
            raise ValueError("give both a key and a counter store, or neither")
        self.handlers: dict[MsgType, Handler] = {MsgType.PING: _ping, **handlers}
        self.allow_unauthenticated = frozenset(MsgType(t) for t in allow_unauthenticated)
        for t in self.handlers:
            if MsgType(t).direction is not Direction.TC:
                raise ValueError(f"{MsgType(t).name} is not a telecommand")
        for t in self.allow_unauthenticated:
            if MsgType(t).direction is Direction.TM:
                raise ValueError(f"{MsgType(t).name} is telemetry, never uplinked")
        self.key = key
        self.counters = counters
        self.events = events or EventLimiter()
        self.answers = answers or AnswerBudget()
        self.results: Counter[ResultCode] = Counter()  # telecommands, by result
        self.data_results: Counter[ResultCode] = Counter()  # DATA frames: OK or the refusal
        self.unanswered = 0  # telecommands refused without an ACK (over the answer budget)

    @classmethod
    def from_files(
        cls,
        handlers: Mapping[MsgType, Handler],
        key_file: str | os.PathLike[str] | None,
        counter_file: str | os.PathLike[str] | None,
        **options: Any,
    ) -> CommandDispatcher:
        """The dispatcher of a payload configured with a key file (mode 0600) and its counter
        file, or with neither. Raises ``KeyFileError``/``CounterStoreError`` saying what to
        fix, a key file whose counter file is missing among them."""
        if (key_file is None) != (counter_file is None):
            raise ValueError("give both key_file and counter_file, or neither")
        key = load_key(key_file) if key_file is not None else None
        counters = CounterStore(counter_file) if counter_file is not None else None
        return cls(handlers, key=key, counters=counters, **options)

    def dispatch(self, frame: Frame) -> list[Message]:
        """The ACK for ``frame`` (unless over the answer budget) and any events, in order."""
        result, event, authenticated = self._check_and_run(frame)
        self.results[result] += 1
        out: list[Message] = []
        if authenticated or self.answers.take():
            out.append(Ack(frame.seq, frame.msg_type, result))
        else:
            self.unanswered += 1
        if event is not None:
            limited = self.events.event(*event)
            if limited is not None:
                out.append(limited)
        return out

    def accept_data(self, frame: Frame) -> tuple[bool, Event | None]:
        """Whether the DATA ``frame`` may reach the CFDP entity, and the (rate-limited)
        event to send when it may not. Its counter is persisted before True is returned."""
        refusal = self._admit(frame)
        self.data_results[ResultCode.OK if refusal is None else refusal[0]] += 1
        if refusal is None:
            return True, None
        return False, self.events.event(*refusal[1])

    def _admit(self, frame: Frame) -> _Refusal | None:
        """Steps 1-2: None if the frame authenticated (its counter now persisted) or is
        allow-listed, else the refusal."""
        what = f"type 0x{frame.msg_type:02X} seq {frame.seq}"
        if not frame.authenticated:
            if frame.msg_type in self.allow_unauthenticated:
                return None
            return ResultCode.NOT_AUTHENTICATED, (
                EventCode.UNAUTHENTICATED_REFUSED, f"{what}: authentication required")
        if self.key is None or self.counters is None:
            return ResultCode.NO_KEY, (EventCode.AUTH_FAILED, f"{what}: no key loaded")
        if not self.key.verify(frame.signed_part(), frame.mac or b""):
            return ResultCode.BAD_AUTH, (EventCode.AUTH_FAILED, f"{what}: MAC mismatch")
        assert frame.counter is not None  # Frame guarantees it when authenticated
        channel = channel_of(frame.msg_type)
        last = self.counters.last(channel)
        if frame.counter <= last:
            return ResultCode.REPLAY, (
                EventCode.REPLAY_REFUSED,
                f"{what}: {channel} counter {frame.counter} <= last accepted {last}",
            )
        try:
            self.counters.advance(frame.counter, channel)
        except CounterStoreError as exc:
            log.error("%s", exc)
            return ResultCode.FAILED, (EventCode.HANDLER_ERROR, f"{what}: {exc}")
        return None

    def _check_and_run(
        self, frame: Frame
    ) -> tuple[ResultCode, tuple[EventCode, str] | None, bool]:
        """(result, refusal event, whether the frame authenticated)."""
        refusal = self._admit(frame)
        if refusal is not None:
            return refusal[0], refusal[1], False
        authenticated = frame.authenticated
        what = f"type 0x{frame.msg_type:02X} seq {frame.seq}"
        handler = self.handlers.get(frame.msg_type)  # type: ignore[call-overload]
        if handler is None:
            return ResultCode.UNKNOWN_COMMAND, (
                EventCode.UNKNOWN_COMMAND, f"{what}: no handler"), authenticated
        try:
            message = frame.message()
        except MessageError as exc:
            return ResultCode.BAD_ARGUMENT, (
                EventCode.BAD_ARGUMENT, f"{what}: {exc}"), authenticated
        try:
            result = handler(message)
        except CommandRefused as exc:
            return exc.result, None, authenticated
        except Exception as exc:  # a handler bug must not take the payload down
            log.exception("handler for %s failed", MsgType(frame.msg_type).name)
            return ResultCode.FAILED, (
                EventCode.HANDLER_ERROR,
                f"{MsgType(frame.msg_type).name}: {type(exc).__name__}: {exc}",
            ), authenticated
        return (ResultCode.OK if result is None else ResultCode(result)), None, authenticated
