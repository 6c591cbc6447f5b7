"""The vehicle's pose at a frame's exposure, from the autopilot's stream of position
(GLOBAL_POSITION_INT) and attitude (ATTITUDE) samples, each stamped in the autopilot's boot
clock (ms).

Samples are checked before they are kept, and every refusal is counted by its reason (never
used silently): a value out of range or not finite; a time stamp older than the newest kept
(out of order, or a replay); a time stamp ahead of the autopilot's own clock (by the time
sync) by more than the sync's bound plus :data:`FUTURE_SLACK_S` ("from the future").

The pose at time ``t`` interpolates linearly between the samples either side of ``t`` (yaw
and longitude across the +-180 degree seam), for position and attitude each; the **age** is the longest
time from ``t`` to the sample of either stream it leans on most (the nearer one), 0 on a
sample. There is no pose (a reason says why) when a stream has no sample either side within
``max_gap_s`` (a GPS dropout), or when ``t`` lies beyond the newest sample by more than
``max_extrapolation_s`` (then the last sample is extrapolated with its velocity and rates).
"""

from __future__ import annotations

import bisect
import math
from collections import Counter
from dataclasses import dataclass

from onboard.geo.georef import Pose

#: A sample may be stamped this far (s) past the autopilot's estimated now (beyond the sync bound).
FUTURE_SLACK_S = 0.05
#: Samples kept per stream (at 50 Hz, 40 s).
KEEP = 2000
#: Plausible altitude (m) and velocity component (m/s) in low Earth orbit (PoseBuffer's limits).
ORBIT_LIMITS = {"max_alt_m": 2_000_000.0, "max_speed_m_s": 8_500.0}


@dataclass(frozen=True)
class PositionSample:
    t_s: float  # autopilot boot clock
    lat_deg: float
    lon_deg: float
    alt_m: float
    relative_alt_m: float
    velocity_ned: tuple[float, float, float]


@dataclass(frozen=True)
class AttitudeSample:
    t_s: float
    roll_deg: float
    pitch_deg: float
    yaw_deg: float
    rates_deg_s: tuple[float, float, float]


@dataclass(frozen=True)
class PoseAt:
    """The interpolated pose and how old the samples behind it are (s)."""

    pose: Pose
    age_s: float
    extrapolated: bool


def _bad_position(s: PositionSample, max_alt_m: float, max_speed_m_s: float) -> str | None:
    values = (s.t_s, s.lat_deg, s.lon_deg, s.alt_m, s.relative_alt_m, *s.velocity_ned)
    if not all(math.isfinite(v) for v in values):
        return "not finite"
    if not (-90 <= s.lat_deg <= 90 and -180 <= s.lon_deg <= 180):
        return "latitude or longitude out of range"
    if (s.lat_deg, s.lon_deg) == (0.0, 0.0):
        return "no fix (0, 0)"
    if not -1000 <= s.alt_m <= max_alt_m or max(abs(v) for v in s.velocity_ned) > max_speed_m_s:
        return "altitude or speed out of range"
    return None


def _bad_attitude(s: AttitudeSample) -> str | None:
    values = (s.t_s, s.roll_deg, s.pitch_deg, s.yaw_deg, *s.rates_deg_s)
    if not all(math.isfinite(v) for v in values):
        return "not finite"
    if abs(s.roll_deg) > 180 or abs(s.pitch_deg) > 90 or abs(s.yaw_deg) > 360:
        return "angle out of range"
    return None


def _lerp(a: float, b: float, w: float) -> float:
    return a + (b - a) * w


def _lerp_deg(a: float, b: float, w: float) -> float:
    d = (b - a + 180.0) % 360.0 - 180.0
    return (a + d * w + 180.0) % 360.0 - 180.0


class PoseBuffer:
    """Checked pose samples of one autopilot, and the pose at any instant between them."""

    def __init__(self, max_gap_s: float = 0.5, max_extrapolation_s: float = 0.05,
                 terrain_alt_m: float | None = None, max_alt_m: float = 20000.0,
                 max_speed_m_s: float = 200.0) -> None:
        """``max_alt_m`` and ``max_speed_m_s`` bound a plausible position sample: a drone's
        by default, a spacecraft's (:data:`ORBIT_LIMITS`) on the CubeSat path."""
        self.max_gap_s = max_gap_s
        self.max_alt_m, self.max_speed_m_s = max_alt_m, max_speed_m_s
        self.max_extrapolation_s = max_extrapolation_s
        self.terrain_alt_m = terrain_alt_m
        self.positions: list[PositionSample] = []
        self.attitudes: list[AttitudeSample] = []
        self.refused: Counter[str] = Counter()
        self.last_refusal: str | None = None  # why the latest sample offered was refused

    def clear(self) -> None:
        self.positions.clear()
        self.attitudes.clear()

    def newest_s(self) -> float:
        """The time up to which both streams have samples (-inf while one has none)."""
        if not self.positions or not self.attitudes:
            return -math.inf
        return min(self.positions[-1].t_s, self.attitudes[-1].t_s)

    def _admit(self, kind: str, stream: list, sample, bad: str | None, now_s: float | None,
               bound_s: float) -> bool:
        if bad is None and now_s is None:
            bad = "no time sync with the autopilot yet"
        if bad is None and now_s is not None and sample.t_s > now_s + bound_s + FUTURE_SLACK_S:
            bad = "time stamp from the future"
        if bad is None and stream and sample.t_s <= stream[-1].t_s:
            bad = "time stamp not after the previous one"
        if bad is not None:
            self.last_refusal = f"{kind}: {bad}"
            self.refused[self.last_refusal] += 1
            return False
        stream.append(sample)
        if len(stream) > KEEP:
            del stream[: len(stream) - KEEP]
        return True

    def add_position(self, s: PositionSample, now_s: float | None, bound_s: float) -> bool:
        """Keep ``s`` if it passes the checks (``now_s``: the autopilot's clock now, by the
        time sync, None before one)."""
        return self._admit("position", self.positions, s,
                           _bad_position(s, self.max_alt_m, self.max_speed_m_s), now_s, bound_s)

    def add_attitude(self, s: AttitudeSample, now_s: float | None, bound_s: float) -> bool:
        return self._admit("attitude", self.attitudes, s, _bad_attitude(s), now_s, bound_s)

    def _bracket(self, stream: list, t: float, what: str) -> tuple[object, object, float, float]:
        """(before, after, weight, age) around ``t``; ValueError naming the gap otherwise."""
        if not stream:
            raise ValueError(f"no {what} received")
        i = bisect.bisect_left([s.t_s for s in stream], t)
        if i < len(stream) and stream[i].t_s == t:
            return stream[i], stream[i], 0.0, 0.0
        if i == len(stream):
            last = stream[-1]
            if t - last.t_s > self.max_extrapolation_s:
                raise ValueError(f"no {what} within {self.max_extrapolation_s:g} s before the exposure "
                                 f"(newest {t - last.t_s:.2f} s older)")
            return last, last, t - last.t_s, t - last.t_s
        if i == 0:
            raise ValueError(f"no {what} before the exposure (oldest kept {stream[0].t_s - t:.2f} s after)")
        a, b = stream[i - 1], stream[i]
        if b.t_s - a.t_s > self.max_gap_s:
            raise ValueError(f"{what} gap of {b.t_s - a.t_s:.2f} s around the exposure "
                             f"(more than {self.max_gap_s:g} s: a dropout)")
        w = (t - a.t_s) / (b.t_s - a.t_s)
        return a, b, w, min(t - a.t_s, b.t_s - t)

    def at(self, t_s: float) -> PoseAt:
        """The pose at autopilot time ``t_s``; ValueError with the reason when there is none."""
        p0, p1, wp, age_p = self._bracket(self.positions, t_s, "position")
        a0, a1, wa, age_a = self._bracket(self.attitudes, t_s, "attitude")
        assert isinstance(p0, PositionSample) and isinstance(p1, PositionSample)
        assert isinstance(a0, AttitudeSample) and isinstance(a1, AttitudeSample)
        extrapolated = p0 is p1 and age_p > 0 or a0 is a1 and age_a > 0
        vel: tuple[float, ...]
        rates: tuple[float, ...]
        if p0 is p1:  # on a sample, or past the newest: dead reckoning with its velocity
            dt = wp
            vn, ve, vd = p0.velocity_ned
            lat = p0.lat_deg + math.degrees(vn * dt / 6378137.0)
            lon = _lerp_deg(p0.lon_deg, p0.lon_deg + math.degrees(
                ve * dt / (6378137.0 * math.cos(math.radians(p0.lat_deg)))), 1.0)
            alt, rel, vel = p0.alt_m - vd * dt, p0.relative_alt_m - vd * dt, p0.velocity_ned
        else:
            lat, lon = _lerp(p0.lat_deg, p1.lat_deg, wp), _lerp_deg(p0.lon_deg, p1.lon_deg, wp)
            alt, rel = _lerp(p0.alt_m, p1.alt_m, wp), _lerp(p0.relative_alt_m, p1.relative_alt_m, wp)
            vel = tuple(_lerp(u, v, wp) for u, v in zip(p0.velocity_ned, p1.velocity_ned, strict=True))
        if a0 is a1:
            dt = wa
            roll, pitch, yaw = (a0.roll_deg + a0.rates_deg_s[0] * dt, a0.pitch_deg + a0.rates_deg_s[1] * dt,
                                _lerp_deg(a0.yaw_deg, a0.yaw_deg + a0.rates_deg_s[2] * dt, 1.0))
            rates = a0.rates_deg_s
        else:
            roll, pitch = _lerp(a0.roll_deg, a1.roll_deg, wa), _lerp(a0.pitch_deg, a1.pitch_deg, wa)
            yaw = _lerp_deg(a0.yaw_deg, a1.yaw_deg, wa)
            rates = tuple(_lerp(u, v, wa) for u, v in zip(a0.rates_deg_s, a1.rates_deg_s, strict=True))
        height = rel if self.terrain_alt_m is None else alt - self.terrain_alt_m
        pose = Pose(lat, lon, alt, height, roll, pitch, yaw, tuple(vel), tuple(rates))  # type: ignore[arg-type]
        return PoseAt(pose, max(age_p, age_a), extrapolated)
