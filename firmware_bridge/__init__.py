"""firmware_bridge: the serial protocol between the payload computer and the flight computer.

Bytes, frames and messages only: no numpy, nothing from ``onboard``. PROTOCOL.md specifies
every byte. Modules: ``messages`` (declared types, codes, dataclasses), ``framing``
(header, CRC, COBS), ``auth`` (key, MAC, counters), ``dispatch`` (telecommand checks and
routing), ``link`` (pyserial link with pacing), ``linkemu`` (pty link emulator for tests and
HIL).
"""

from firmware_bridge.framing import PROTOCOL_VERSION, Frame, FrameError
from firmware_bridge.messages import MAX_BODY, EventCode, MessageError, MsgType, ResultCode

__all__ = [
    "MAX_BODY",
    "PROTOCOL_VERSION",
    "EventCode",
    "Frame",
    "FrameError",
    "MessageError",
    "MsgType",
    "ResultCode",
]
