"""A spacecraft's state as its flight computer reports it (firmware_bridge's POSE message:
ECEF position and velocity, the body-to-ECEF attitude quaternion, body rates, on the UTC
time base) turned into the pose buffer's samples (onboard/geo/pose.py), so the CubeSat
path georeferences through the same buffer and camera model as the drone.

The body frame is the one the camera's boresight is given in (``[camera]``): x forward, y
right, z down (towards the nadir when the spacecraft points its camera straight down).
Geodetic latitude and height come from ECEF by Bowring's iteration (millimetres after three
steps at orbital heights); the attitude becomes roll, pitch, yaw from the local
North-East-Down frame (aerospace Z-Y-X, as the autopilot states it); the body rates become
Euler-angle rates by the kinematic equation (the local frame's own turn, under 0.07 deg/s in
orbit, is left out: the rates only extrapolate a few tens of milliseconds and size the
expected error).
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray

from onboard.geo.georef import WGS84_A, WGS84_E2, ned_to_ecef
from onboard.geo.pose import AttitudeSample, PositionSample


def geodetic(x: float, y: float, z: float) -> tuple[float, float, float]:
    """WGS 84 latitude, longitude (deg) and ellipsoidal height (m) of an ECEF point."""
    p = math.hypot(x, y)

    def height(lat: float) -> float:
        n = WGS84_A / math.sqrt(1 - WGS84_E2 * math.sin(lat) ** 2)
        if abs(lat) < math.radians(80):
            return p / math.cos(lat) - n
        return z / math.sin(lat) - n * (1 - WGS84_E2)  # near a pole: cos(lat) ~ 0

    lat = math.atan2(z, p * (1 - WGS84_E2))
    for _ in range(5):
        n = WGS84_A / math.sqrt(1 - WGS84_E2 * math.sin(lat) ** 2)
        lat = math.atan2(z, p * (1 - WGS84_E2 * n / (n + height(lat))))
    return math.degrees(lat), math.degrees(math.atan2(y, x)), float(height(lat))


def quaternion_matrix(q: tuple[float, float, float, float]) -> NDArray[np.float64]:
    """Rotation matrix of a unit quaternion (w, x, y, z), Hamilton convention."""
    w, x, y, z = q
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
                     [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
                     [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)]])


def matrix_quaternion(r: NDArray[np.float64]) -> tuple[float, float, float, float]:
    """Unit quaternion (w, x, y, z) of a rotation matrix, by Shepperd's method (from its
    largest component, so a half-turn is as exact as any other rotation); w >= 0."""
    tr = float(r[0, 0] + r[1, 1] + r[2, 2])
    k = int(np.argmax([tr, r[0, 0], r[1, 1], r[2, 2]]))
    if k == 0:
        s = 2 * math.sqrt(1 + tr)
        q = (s / 4, (r[2, 1] - r[1, 2]) / s, (r[0, 2] - r[2, 0]) / s, (r[1, 0] - r[0, 1]) / s)
    elif k == 1:
        s = 2 * math.sqrt(1 + r[0, 0] - r[1, 1] - r[2, 2])
        q = ((r[2, 1] - r[1, 2]) / s, s / 4, (r[0, 1] + r[1, 0]) / s, (r[0, 2] + r[2, 0]) / s)
    elif k == 2:
        s = 2 * math.sqrt(1 - r[0, 0] + r[1, 1] - r[2, 2])
        q = ((r[0, 2] - r[2, 0]) / s, (r[0, 1] + r[1, 0]) / s, s / 4, (r[1, 2] + r[2, 1]) / s)
    else:
        s = 2 * math.sqrt(1 - r[0, 0] - r[1, 1] + r[2, 2])
        q = ((r[1, 0] - r[0, 1]) / s, (r[0, 2] + r[2, 0]) / s, (r[1, 2] + r[2, 1]) / s, s / 4)
    sign = -1.0 if q[0] < 0 else 1.0
    w, x, y, z = (sign * float(v) for v in q)
    return w, x, y, z


def samples(t_s: float, position_ecef: tuple[float, float, float], velocity_ecef: tuple[float, float, float],
            q_body_to_ecef: tuple[float, float, float, float], rates_body_rad_s: tuple[float, float, float],
            terrain_alt_m: float) -> tuple[PositionSample, AttitudeSample]:
    """The pose buffer's position and attitude samples of one reported state; the height
    above the terrain is the ellipsoidal height less ``terrain_alt_m``."""
    lat, lon, h = geodetic(*position_ecef)
    n = ned_to_ecef(lat, lon)
    v_ned = n.T @ np.asarray(velocity_ecef, dtype=float)
    r = n.T @ quaternion_matrix(q_body_to_ecef)  # body -> NED
    roll = math.atan2(r[2, 1], r[2, 2])
    pitch = -math.asin(max(-1.0, min(1.0, r[2, 0])))
    yaw = math.atan2(r[1, 0], r[0, 0])
    p, q, w = rates_body_rad_s
    sr, cr, cp = math.sin(roll), math.cos(roll), max(math.cos(pitch), 1e-6)
    rates = (p + (q * sr + w * cr) * math.tan(pitch), q * cr - w * sr, (q * sr + w * cr) / cp)
    position = PositionSample(t_s, lat, lon, h, h - terrain_alt_m, (float(v_ned[0]), float(v_ned[1]), float(v_ned[2])))
    attitude = AttitudeSample(t_s, math.degrees(roll), math.degrees(pitch), math.degrees(yaw),
                              (math.degrees(rates[0]), math.degrees(rates[1]), math.degrees(rates[2])))
    return position, attitude
