"""The CubeSat path's pose: the flight computer's POSE message (strict: malformed,
non-finite, non-unit attitude refused), its state turned into the drone's pose samples, and
the georeferencing from orbit against an independent truth: each frame corner's ray from the
simulated spacecraft's true position and attitude, marched to the ellipsoid with pyproj's
geodetic heights (bisection), not the module's quadratic. Poses reach the buffer at 1 Hz,
as a flight computer sends them, and the frame is exposed between two of them."""

from __future__ import annotations

import math
import struct

import numpy as np
import pytest

from firmware_bridge.messages import MessageError, PoseState
from hil.orbit import Orbit
from onboard.geo.frame import frame_georef, swath_georef
from onboard.geo.georef import CameraGeometry, corners_rc, pixel_to_xy, rotation
from onboard.geo.pose import ORBIT_LIMITS, PoseBuffer
from onboard.geo.spacecraft import geodetic, matrix_quaternion, quaternion_matrix, samples

pyproj = pytest.importorskip("pyproj")

ROWS, COLS = 64, 64
T0 = 1_796_673_600.0  # 2026-12-07T20:00:00Z


def truth_points(orbit: Orbit, t: float, camera: CameraGeometry, epsg: int, rc: np.ndarray, rows: int = ROWS,
                 cols: int = COLS) -> np.ndarray:
    """Where the rays of image points ``rc`` (row, col) from the true state at ``t`` meet the
    ellipsoid (height 0), found by bisection on pyproj's geodetic height along each ray."""
    pos, _, rot = orbit.state(t)
    to_geo = pyproj.Transformer.from_crs(4978, 4979, always_xy=True)
    to_utm = pyproj.Transformer.from_crs(4326, epsg, always_xy=True)
    ta, tc = math.tan(math.radians(camera.fov_along_deg) / 2), math.tan(math.radians(camera.fov_across_deg) / 2)
    out = []
    for r, c in rc:
        v = rot @ rotation(*camera.boresight_deg) @ np.array([ta * (1 - 2 * r / rows), tc * (2 * c / cols - 1), 1.0])
        lo, hi = 0.0, -float(pos @ v) / float(v @ v)  # up to the ray's closest approach to the centre
        assert to_geo.transform(*(pos + hi * v))[2] < 0, "the truth ray misses the Earth"
        for _ in range(80):
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if to_geo.transform(*(pos + mid * v))[2] > 0 else (lo, mid)
        lon, lat, _ = to_geo.transform(*(pos + lo * v))
        out.append(to_utm.transform(lon, lat))
    return np.asarray(out)


def truth_corners(orbit: Orbit, t: float, camera: CameraGeometry, epsg: int, rows: int = ROWS,
                  cols: int = COLS) -> np.ndarray:
    """The frame's four outer corners (top-left clockwise) on the ground, truly."""
    return truth_points(orbit, t, camera, epsg, corners_rc(rows, cols), rows, cols)


def fed_buffer(orbit: Orbit, start: float, seconds: int) -> PoseBuffer:
    """A pose buffer holding the flight computer's POSEs at 1 Hz from ``start``, each
    checked at its arrival as the payload does."""
    buf = PoseBuffer(2.0, 0.2, 0.0, **ORBIT_LIMITS)
    for k in range(seconds + 1):
        msg = PoseState.unpack(orbit.pose(start + k).pack())
        position, attitude = samples(msg.time_us / 1e6, msg.position_m, msg.velocity_m_s, msg.quaternion,
                                     msg.rates_rad_s, 0.0)
        assert buf.add_position(position, start + k + 0.01, 0.001), buf.last_refusal
        assert buf.add_attitude(attitude, start + k + 0.01, 0.001), buf.last_refusal
    return buf


CASES = {  # name: (orbit, camera, exposure after T0)
    "nadir, 500 km, 2 deg": (Orbit(T0), CameraGeometry(2.0, 2.0), 600.4),
    "rolled 25 deg, 500 km": (Orbit(T0, roll_deg=lambda t: 25.0), CameraGeometry(2.0, 2.0), 600.4),
    "rolled -35 deg, 700 km, 6 deg FOV": (Orbit(T0, 700e3, 51.6, 40.0, lambda t: -35.0), CameraGeometry(6.0, 4.0), 1800.7),
    "nadir over the antimeridian": (Orbit(T0, 500e3, 97.4, -179.0), CameraGeometry(2.0, 2.0), 80.9),  # between 80 s (lon -179.99) and 81 s (+179.998)
    "boresight tilted forward 20 deg, near the pole": (Orbit(T0), CameraGeometry(2.0, 2.0, (0.0, 20.0, 0.0)), 1380.3),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_perfect_pose_from_orbit_within_a_ground_pixel(case: str) -> None:
    orbit, camera, after = CASES[case]
    t = T0 + after
    buf = fed_buffer(orbit, math.floor(t) - 5, 10)
    geo = frame_georef(buf, t, camera, ROWS, COLS, 10.0, 0.01, 0.001, age_share=0.0)
    assert geo["georeferenced"], geo.get("reason")
    truth = truth_corners(orbit, t, camera, geo["epsg"])
    got = pixel_to_xy(geo, corners_rc(ROWS, COLS))
    rms_px = float(np.sqrt(np.sum((got - truth) ** 2, axis=1).mean())) / geo["gsd_m"]
    assert rms_px <= 1.0, rms_px
    # in fact far better: what is left is the 1 Hz interpolation (metres) and, with GCPs, the
    # projective fit to a footprint the Earth's curvature bends (0.08 px for 6 deg at 35 deg)
    assert rms_px < 0.1, rms_px
    assert 0 < geo["pose_age_s"] <= 0.5
    # the stated sigmas: 10 m, 0.01 deg (87 m to 500 m from 500-900 km slant), 1 ms (7.6 m)
    assert 10.0 < geo["expected_error_m"] < 400.0, geo["expected_error_m"]


SWATHS = {  # name: (orbit, camera: 128 pixels across the slit, one line along)
    "push-broom nadir, 500 km": (Orbit(T0), CameraGeometry(2.0, 0.0113)),
    "push-broom rolled 25 deg, 500 km": (Orbit(T0, roll_deg=lambda t: 25.0), CameraGeometry(2.0, 0.0113)),
    "push-broom rolled -30 deg, 700 km, 4 deg": (Orbit(T0, 700e3, 51.6, 40.0, lambda t: -30.0), CameraGeometry(4.0, 0.0113)),
}


@pytest.mark.parametrize("case", sorted(SWATHS))
def test_push_broom_lines_each_get_their_pose(case: str) -> None:
    """64 lines 14 ms apart (0.9 s of flight, 6.4 km of ground track) between 1 Hz poses:
    corners and points inside the swath (lines without a GCP of their own, columns between
    GCPs) within a ground pixel of the truth at each line's own exposure."""
    orbit, camera = SWATHS[case]
    times = [T0 + 600.37 + 0.014 * i for i in range(64)]
    geo = swath_georef(fed_buffer(orbit, T0 + 595, 10), times, camera, 128, 10.0, 0.01, 0.001, age_share=0.0)
    assert geo["georeferenced"] and geo["swath"], geo.get("reason")
    a = truth_corners(orbit, times[0], camera, geo["epsg"], 1, 128)
    b = truth_corners(orbit, times[-1], camera, geo["epsg"], 1, 128)
    got = pixel_to_xy(geo, corners_rc(64, 128))
    corner_px = float(np.sqrt(np.sum((got - [a[0], a[1], b[2], b[3]]) ** 2, axis=1).mean())) / geo["gsd_m"]
    assert corner_px <= 1.0, corner_px
    assert corner_px < 0.01, corner_px  # the corners are GCPs, from each line's own pose
    inside = []
    for line in (5, 20, 37, 58):
        cols = np.array([3.0, 37.0, 64.0, 101.0, 125.0])
        truth = truth_points(orbit, times[line], camera, geo["epsg"], np.column_stack([np.full(5, 0.5), cols]), 1, 128)
        inside.append(pixel_to_xy(geo, np.column_stack([np.full(5, line + 0.5), cols])) - truth)
    inside_px = float(np.sqrt(np.sum(np.concatenate(inside) ** 2, axis=1).mean())) / geo["gsd_m"]
    assert inside_px <= 1.0, inside_px
    assert inside_px < 0.25, inside_px  # bilinear between 5 columns: 0.10 px at 30 deg off-nadir
    # one pose for the whole block (the first line's) would put its far end a swath length off
    still = swath_georef(fed_buffer(orbit, T0 + 595, 10), [times[0]] * 64, camera, 128, 10.0, 0.01, 0.001)
    far_px = float(np.hypot(*(pixel_to_xy(still, corners_rc(64, 128))[2] - b[2]))) / geo["gsd_m"]
    assert far_px > 20, far_px


def test_a_plane_at_the_nadir_would_miss_from_orbit() -> None:
    """The check above can fail: the flat terrain of a drone (the tangent plane, the old
    model) puts an off-nadir view from 500 km kilometres off."""
    orbit, camera, after = CASES["rolled 25 deg, 500 km"]
    t = T0 + after
    geo = frame_georef(fed_buffer(orbit, math.floor(t) - 5, 10), t, camera, ROWS, COLS, 10.0, 0.01, 0.001)
    truth = truth_corners(orbit, t, camera, geo["epsg"])
    pos, _, rot = orbit.state(t)
    lat, lon, h = geodetic(*pos)
    up = -np.array([math.cos(math.radians(lat)) * math.cos(math.radians(lon)),
                    math.cos(math.radians(lat)) * math.sin(math.radians(lon)), math.sin(math.radians(lat))])
    plane = []
    ta = tc = math.tan(math.radians(1.0))
    for r, c in corners_rc(ROWS, COLS):
        v = rot @ np.array([ta * (1 - 2 * r / ROWS), tc * (2 * c / COLS - 1), 1.0])
        p = pos + (h / float(v @ up)) * v
        lo, la, _ = pyproj.Transformer.from_crs(4978, 4979, always_xy=True).transform(*p)
        plane.append(pyproj.Transformer.from_crs(4326, geo["epsg"], always_xy=True).transform(lo, la))
    miss_px = float(np.sqrt(np.sum((np.asarray(plane) - truth) ** 2, axis=1).mean())) / geo["gsd_m"]
    assert miss_px > 3.0, miss_px


def test_state_to_samples_matches_pyproj_and_the_nadir_attitude() -> None:
    orbit = Orbit(T0)
    for after in (5.0, 700.0, 1500.0, 2900.0):
        pos, vel, rot = orbit.state(T0 + after)
        lon, lat, h = pyproj.Transformer.from_crs(4978, 4979, always_xy=True).transform(*pos)
        position, attitude = samples(T0 + after, tuple(pos), tuple(vel), matrix_quaternion(rot), (0, 0, 0), 100.0)
        # PROJ's non-iterative inverse is itself good to millimetres at orbital heights
        assert position.lat_deg == pytest.approx(lat, abs=1e-7) and position.lon_deg == pytest.approx(lon, abs=1e-9)
        assert position.alt_m == pytest.approx(h, abs=1e-2) and position.relative_alt_m == position.alt_m - 100.0
        assert math.hypot(*position.velocity_ned) == pytest.approx(np.linalg.norm(vel), rel=1e-9)
        assert abs(position.velocity_ned[2]) < 30  # a circle: level flight, to the ellipsoid's flattening
        # pointing at the Earth's centre: within the geocentric-geodetic angle (<= 0.2 deg) of level
        assert abs(attitude.roll_deg) < 0.2 and abs(attitude.pitch_deg) < 0.2
        heading = math.degrees(math.atan2(position.velocity_ned[1], position.velocity_ned[0]))
        assert (attitude.yaw_deg - heading + 180) % 360 - 180 == pytest.approx(0, abs=0.01)


def test_quaternions_both_ways() -> None:
    rng = np.random.default_rng(0)
    for q in rng.normal(size=(200, 4)).tolist() + [[0, 1, 0, 0], [0, 0, 0, 1], [1, 0, 0, 0]]:
        q = np.asarray(q) / np.linalg.norm(q)
        back = np.asarray(matrix_quaternion(quaternion_matrix(tuple(q))))
        assert min(np.abs(back - q).max(), np.abs(back + q).max()) < 1e-12


def test_pose_message_is_strict() -> None:
    good = Orbit(T0).pose(T0 + 10.0)
    assert PoseState.unpack(good.pack()) == good
    body = good.pack()
    with pytest.raises(MessageError, match="112 bytes"):
        PoseState.unpack(body[:-1])
    with pytest.raises(MessageError, match="112 bytes"):
        PoseState.unpack(body + b"\0")
    values = list(struct.unpack(">Q13d", body))
    for i, bad in ((1, math.nan), (5, math.inf), (12, -math.inf)):  # position, velocity, rate
        with pytest.raises(MessageError, match="not finite"):
            PoseState.unpack(struct.pack(">Q13d", *values[:i], bad, *values[i + 1:]))
    with pytest.raises(MessageError, match="norm"):
        PoseState.unpack(struct.pack(">Q13d", *values[:7], *(2 * v for v in values[7:11]), *values[11:]))
    with pytest.raises(MessageError, match="before 2000"):
        PoseState.unpack(struct.pack(">Q13d", 0, *values[1:]))
    with pytest.raises(MessageError, match="not finite"):  # and the sender cannot make one either
        PoseState(good.time_us, (math.nan, 0.0, 0.0), good.velocity_m_s, good.quaternion).pack()


def test_the_buffer_refuses_future_out_of_order_and_implausible_states() -> None:
    orbit = Orbit(T0, node_lon_deg=10.0)
    buf = fed_buffer(orbit, T0, 3)
    pos, vel, rot = orbit.state(T0 + 4)
    q = matrix_quaternion(rot)
    now = T0 + 4.5

    def offer(t: float, position=tuple(pos), velocity=tuple(vel)) -> str | None:
        p, a = samples(t, position, velocity, q, (0.0, 0.0, 0.0), 0.0)
        return None if buf.add_position(p, now, 0.001) and buf.add_attitude(a, now, 0.001) else buf.last_refusal

    assert offer(T0 + 2.5) == "position: time stamp not after the previous one"
    assert offer(T0 + 3.0) == "position: time stamp not after the previous one"  # a repeat
    assert offer(T0 + 30.0) == "position: time stamp from the future"
    assert offer(T0 + 4, position=tuple(pos * 1.5)) == "position: altitude or speed out of range"  # 3700 km up
    assert offer(T0 + 4, velocity=tuple(vel * 2)) == "position: altitude or speed out of range"
    assert offer(T0 + 4) is None
    assert buf.newest_s() == T0 + 4
    drone = PoseBuffer()  # a drone's limits refuse an orbit outright
    p, _ = samples(T0, tuple(pos), tuple(vel), q, (0.0, 0.0, 0.0), 0.0)
    assert not drone.add_position(p, T0, 0.001)
