"""The autopilot's clock and pose as the camera keeps them (onboard/geo/timesync.py, pose.py):
the sync's stated bound holds whatever the link's asymmetry; poses interpolate to the
exposure, across the yaw seam, and refuse (counted, by reason) what must not be used."""

from __future__ import annotations

import math
import random

import pytest

from onboard.geo.pose import AttitudeSample, PoseBuffer, PositionSample
from onboard.geo.timesync import TimeSync

OFFSET_NS = 987_654_321_000  # the autopilot's clock minus the payload's


@pytest.mark.parametrize("up_ms, down_ms", [(1, 1), (0.1, 30), (30, 0.1), (5, 12)])
def test_the_sync_error_stays_within_the_stated_bound(up_ms: float, down_ms: float) -> None:
    rng = random.Random(1)
    sync = TimeSync()
    t = 1_000_000_000_000
    for _ in range(20):
        up, down = (int(1e6 * d * rng.uniform(0.5, 1.5)) for d in (up_ms, down_ms))
        ts1 = t
        tc1 = ts1 + up + OFFSET_NS  # the autopilot reads its clock when the request lands
        sync.add(ts1, tc1, ts1 + up + down)
        t += 100_000_000
    error_s = abs(sync.to_autopilot_s(t) - (t + OFFSET_NS) / 1e9)
    assert error_s <= sync.bound_s
    assert sync.bound_s < (up_ms + down_ms) * 1.5e-3 / 2 + 1e-9


def test_a_restarted_autopilot_clock_restarts_the_sync() -> None:
    sync = TimeSync()
    assert not sync.add(0, OFFSET_NS, 1_000_000)
    assert sync.add(2_000_000_000, 5_000_000, 2_001_000_000)  # its boot clock began again
    assert sync.restarts == 1 and len(sync.samples) == 1
    assert not sync.add(3_000_000_000, 0, 2_999_000_000) and sync.refused == 1  # answered before asked


def _buffer(**kw: float) -> PoseBuffer:
    buf = PoseBuffer(**kw)
    for k in range(11):  # 10 Hz positions flying east at 10 m/s, 50 Hz attitude turning through north
        t = k / 10
        assert buf.add_position(PositionSample(t, 44.8, 0.6 + k * 1.2675e-5, 150.0, 100.0, (0.0, 10.0, 0.0)), 2.0, 0.001)
    for k in range(51):
        t = k / 50
        yaw = (350.0 + 20.0 * t + 180) % 360 - 180  # -10 -> +10 degrees, through the seam at 0/360
        assert buf.add_attitude(AttitudeSample(t, 1.0, -2.0, yaw, (0.0, 0.0, 20.0)), 2.0, 0.001)
    return buf


def test_the_pose_interpolates_to_the_exposure() -> None:
    buf = _buffer()
    at = buf.at(0.55)
    assert at.pose.lon_deg == pytest.approx(0.6 + 5.5 * 1.2675e-5)
    assert at.pose.yaw_deg == pytest.approx(1.0, abs=1e-9)  # -10 + 20 * 0.55
    assert at.age_s == pytest.approx(0.05) and not at.extrapolated
    assert at.pose.height_m == 100.0
    assert buf.at(0.5).age_s == 0.0


def test_across_the_yaw_seam_the_pose_does_not_spin() -> None:
    buf = PoseBuffer()
    for t, yaw in ((0.0, 179.0), (0.02, -179.0)):
        buf.add_attitude(AttitudeSample(t, 0.0, 0.0, yaw, (0.0, 0.0, 100.0)), 1.0, 0.001)
        buf.add_position(PositionSample(t, 44.8, 0.6, 150.0, 100.0, (0.0, 0.0, 0.0)), 1.0, 0.001)
    assert abs(buf.at(0.01).pose.yaw_deg) == pytest.approx(180.0)


def test_no_pose_across_a_dropout_or_far_past_the_newest_sample() -> None:
    buf = _buffer(max_gap_s=0.5, max_extrapolation_s=0.05)
    buf.add_position(PositionSample(1.9, 44.8, 0.6, 150.0, 100.0, (0.0, 10.0, 0.0)), 2.0, 0.001)
    buf.add_attitude(AttitudeSample(1.9, 0.0, 0.0, 0.0, (0.0, 0.0, 0.0)), 2.0, 0.001)
    with pytest.raises(ValueError, match="position gap of 0.90 s"):
        buf.at(1.5)
    with pytest.raises(ValueError, match="no position within 0.05 s"):
        buf.at(2.5)
    with pytest.raises(ValueError, match="no position before the exposure"):
        buf.at(-1.0)
    # just past the newest sample: dead reckoning, said so
    ahead = _buffer().at(1.02)
    assert ahead.extrapolated and ahead.age_s == pytest.approx(0.02)
    assert ahead.pose.lon_deg > 0.6 + 10 * 1.2675e-5


@pytest.mark.parametrize("sample, now, reason", [
    (PositionSample(5.0, 44.8, 0.6, 150.0, 100.0, (0, 0, 0)), 2.0, "position: time stamp from the future"),
    (PositionSample(0.5, 44.8, 0.6, 150.0, 100.0, (0, 0, 0)), 2.0, "position: time stamp not after the previous one"),
    (PositionSample(1.5, 91.0, 0.6, 150.0, 100.0, (0, 0, 0)), 2.0, "position: latitude or longitude out of range"),
    (PositionSample(1.5, math.nan, 0.6, 150.0, 100.0, (0, 0, 0)), 2.0, "position: not finite"),
    (PositionSample(1.5, 0.0, 0.0, 150.0, 100.0, (0, 0, 0)), 2.0, "position: no fix (0, 0)"),
    (PositionSample(1.5, 44.8, 0.6, 150.0, 100.0, (0, 0, 0)), None, "position: no time sync with the autopilot yet"),
])
def test_bad_samples_are_refused_by_reason_and_never_used(sample: PositionSample, now: float | None,
                                                          reason: str) -> None:
    buf = _buffer()
    before = buf.at(1.0)
    assert not buf.add_position(sample, now, 0.001)
    assert buf.refused == {reason: 1}
    assert buf.at(1.0) == before


def test_bad_attitude_is_refused() -> None:
    buf = _buffer()
    assert not buf.add_attitude(AttitudeSample(1.5, 0.0, 95.0, 0.0, (0, 0, 0)), 2.0, 0.001)
    assert not buf.add_attitude(AttitudeSample(1.5, 0.0, 0.0, math.inf, (0, 0, 0)), 2.0, 0.001)
    assert buf.refused == {"attitude: angle out of range": 1, "attitude: not finite": 1}
