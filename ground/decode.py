"""A downlink capture decoded offline, as the live receiver would have."""

from __future__ import annotations

from pathlib import Path

from firmware_bridge.cfdp.common import DownlinkConfig
from firmware_bridge.cfdp.receiver import DownlinkReceiver
from ground.capture import DOWN, CaptureError, read_capture
from ground.sink import ProductSink

#: Offline decoding: CFDP timers must never fire on wall-clock time.
_OFFLINE = DownlinkConfig(ack_timer_s=1e9, nak_timer_s=1e9, check_timer_s=1e9, inactivity_s=1e9)


def decode_capture(capture: Path, out: Path) -> tuple[ProductSink, DownlinkReceiver, str | None]:
    """Decode every good record of ``capture`` into ``out``; the error text if the capture
    is truncated or corrupt (the records before it are decoded)."""
    sink = ProductSink(out)
    staging = out / ".staging"
    receiver = DownlinkReceiver(staging, sink.receive, None, _OFFLINE, sink.failed)
    error = None
    try:
        for direction, _t, packet in read_capture(capture):
            if direction == DOWN:
                receiver.on_packet(packet)
    except CaptureError as exc:
        error = str(exc)
    receiver.finish()
    return sink, receiver, error
