"""Verify telecommands, route them to handlers, answer each with an ACK.

The order of checks is part of the protocol (PROTOCOL.md, "Telecommand acceptance"):

1. Authenticated frame: a key must be loaded (else NO_KEY), the MAC must match (else
   BAD_AUTH), the counter must exceed the last accepted one (else REPLAY). The counter is
   then persisted *before* anything else happens, even if the body turns out malformed, so
   an authenticated frame can never be executed twice.
2. Unauthenticated frame: its type must be on the allow-list (default: PING only), else
   NOT_AUTHENTICATED.
3. The type must be a telecommand with a handler, else UNKNOWN_COMMAND.
4. The body must parse, else BAD_ARGUMENT.
5. The handler runs: it returns a result code (None means OK) or raises CommandRefused;
   any other exception gives FAILED and a HANDLER_ERROR event, never a crash.

Every refusal in steps 1-4 also produces an EVENT, rate-limited per event code so that a
flood of forged frames cannot fill the downlink (suppressed events are counted in the next
one's text).
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping

from firmware_bridge.auth import AuthKey, CounterStore, CounterStoreError
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


def _ping(message: Message) -> ResultCode:
    return ResultCode.OK


class CommandDispatcher:
    """Checks each telecommand frame and returns the telemetry to send back (ACK + events).

    ``handlers`` maps telecommand types to handlers; PING is answered OK unless overridden.
    ``key``/``counters``: both or neither; without a key only allow-listed commands work.
    """

    def __init__(
        self,
        handlers: Mapping[MsgType, Handler],
        *,
        key: AuthKey | None = None,
        counters: CounterStore | None = None,
        allow_unauthenticated: Iterable[MsgType] = (MsgType.PING,),
        events: EventLimiter | None = None,
    ) -> None:
        if (key is None) != (counters is None):
            raise ValueError("give both a key and a counter store, or neither")
        self.handlers: dict[MsgType, Handler] = {MsgType.PING: _ping, **handlers}
        self.allow_unauthenticated = frozenset(MsgType(t) for t in allow_unauthenticated)
        for t in [*self.handlers, *self.allow_unauthenticated]:
            if MsgType(t).direction is not Direction.TC:
                raise ValueError(f"{MsgType(t).name} is not a telecommand")
        self.key = key
        self.counters = counters
        self.events = events or EventLimiter()
        self.results: Counter[ResultCode] = Counter()

    def dispatch(self, frame: Frame) -> list[Message]:
        """The ACK for ``frame`` and any events, in the order to send them."""
        result, event = self._check_and_run(frame)
        self.results[result] += 1
        out: list[Message] = [Ack(frame.seq, frame.msg_type, result)]
        if event is not None:
            limited = self.events.event(*event)
            if limited is not None:
                out.append(limited)
        return out

    def _check_and_run(self, frame: Frame) -> tuple[ResultCode, tuple[EventCode, str] | None]:
        what = f"type 0x{frame.msg_type:02X} seq {frame.seq}"
        if frame.authenticated:
            if self.key is None or self.counters is None:
                return ResultCode.NO_KEY, (EventCode.AUTH_FAILED, f"{what}: no key loaded")
            if not self.key.verify(frame.signed_part(), frame.mac or b""):
                return ResultCode.BAD_AUTH, (EventCode.AUTH_FAILED, f"{what}: MAC mismatch")
            assert frame.counter is not None  # Frame guarantees it when authenticated
            if frame.counter <= self.counters.last:
                return ResultCode.REPLAY, (
                    EventCode.REPLAY_REFUSED,
                    f"{what}: counter {frame.counter} <= last accepted {self.counters.last}",
                )
            try:
                self.counters.advance(frame.counter)
            except CounterStoreError as exc:
                log.error("%s", exc)
                return ResultCode.FAILED, (EventCode.HANDLER_ERROR, f"{what}: {exc}")
        elif frame.msg_type not in self.allow_unauthenticated:
            return ResultCode.NOT_AUTHENTICATED, (
                EventCode.UNAUTHENTICATED_REFUSED,
                f"{what}: authentication required",
            )
        handler = self.handlers.get(frame.msg_type)  # type: ignore[call-overload]
        if handler is None:
            return ResultCode.UNKNOWN_COMMAND, (EventCode.UNKNOWN_COMMAND, f"{what}: no handler")
        try:
            message = frame.message()
        except MessageError as exc:
            return ResultCode.BAD_ARGUMENT, (EventCode.BAD_ARGUMENT, f"{what}: {exc}")
        try:
            result = handler(message)
        except CommandRefused as exc:
            return exc.result, None
        except Exception as exc:  # a handler bug must not take the payload down
            log.exception("handler for %s failed", MsgType(frame.msg_type).name)
            return ResultCode.FAILED, (
                EventCode.HANDLER_ERROR,
                f"{MsgType(frame.msg_type).name}: {type(exc).__name__}: {exc}",
            )
        return ResultCode.OK if result is None else ResultCode(result), None
