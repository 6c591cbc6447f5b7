"""The autopilot's clock as seen from the payload: MAVLink TIMESYNC, NTP-style.

The payload sends ``TIMESYNC(tc1=0, ts1=its own time, ns)``; the autopilot answers with
``tc1`` = its time (ns since its boot) and ``ts1`` echoed. With ``t`` the payload's time
when the answer arrives, the autopilot's clock reads ``tc1`` at some instant in
``[ts1, t]``, so ``offset = tc1 - (ts1 + t) / 2`` is off by at most half the round trip,
whatever the asymmetry of the two directions. Of the last :data:`WINDOW` exchanges the one
with the shortest round trip is kept: its half round trip is the **bound** this module
states for every conversion (plus the 0.5 ms by which a pose message's millisecond
timestamp is rounded, counted where poses are used).

An answer more than :data:`JUMP_S` away from the current estimate means the autopilot
rebooted (its boot clock restarted) or a clock was stepped: the window restarts and the
caller is told, so that poses stamped on the old clock are dropped.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

#: Exchanges kept; the one of shortest round trip is used.
WINDOW = 8
#: An offset this far (s) from the estimate is a restarted clock, not noise.
JUMP_S = 1.0
#: A round trip longer than this (s) is not used at all (a queue, not a link).
MAX_RTT_S = 0.5


@dataclass(frozen=True)
class SyncSample:
    offset_ns: int  # autopilot time minus payload time
    rtt_ns: int


class TimeSync:
    """Offset between the payload's clock (ns) and the autopilot's boot clock (ns)."""

    def __init__(self) -> None:
        self.samples: deque[SyncSample] = deque(maxlen=WINDOW)
        self.refused = 0
        self.restarts = 0

    def add(self, ts1_ns: int, tc1_ns: int, now_ns: int) -> bool:
        """One answer (our ``ts1`` echoed, their ``tc1``) received at ``now_ns``. True when it
        restarted the window (a rebooted autopilot); an answer that cannot be ours (in the
        future, or older than a round trip can be) is counted in ``refused``."""
        rtt = now_ns - ts1_ns
        if not 0 <= rtt <= MAX_RTT_S * 1e9 or tc1_ns <= 0:
            self.refused += 1
            return False
        sample = SyncSample(tc1_ns - (ts1_ns + now_ns) // 2, rtt)
        best = self.best
        restarted = best is not None and abs(sample.offset_ns - best.offset_ns) > JUMP_S * 1e9
        if restarted:
            self.samples.clear()
            self.restarts += 1
        self.samples.append(sample)
        return restarted

    @property
    def best(self) -> SyncSample | None:
        return min(self.samples, key=lambda s: s.rtt_ns) if self.samples else None

    @property
    def synced(self) -> bool:
        return bool(self.samples)

    @property
    def bound_s(self) -> float:
        """Half the kept round trip: the autopilot time of any payload instant is known to
        within this (s). inf before the first exchange."""
        best = self.best
        return best.rtt_ns / 2e9 if best is not None else float("inf")

    def to_autopilot_s(self, payload_ns: int) -> float:
        """The autopilot's boot-clock time (s) at the payload's instant ``payload_ns``."""
        best = self.best
        if best is None:
            raise ValueError("no TIMESYNC answer yet")
        return (payload_ns + best.offset_ns) / 1e9

    def reset(self) -> None:
        self.samples.clear()
