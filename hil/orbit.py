"""A spacecraft in a circular low Earth orbit whose true state at any instant is known: what
a CubeSat's flight computer would send as POSE telecommands (firmware_bridge/PROTOCOL.md
section 6.1), and the truth the payload's georeferencing is judged against.

The orbit is a Kepler circle in an Earth-centred inertial frame (``altitude_m`` above the
equatorial radius, ``inclination_deg``, the ascending node at longitude ``node_lon_deg`` at
``t0``), turned into Earth-fixed coordinates by the Earth's rotation since ``t0``; the
velocity is Earth-fixed too (the rotation's share taken off). The body points its z axis at
the Earth's centre and its x axis along the Earth-fixed velocity (made perpendicular), then
rolls by ``roll_deg(t)`` about x: nadir pointing, or an off-nadir look. Body rates come from
the attitude at t and t + 1 ms.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from firmware_bridge.messages import PoseState
from onboard.geo.georef import WGS84_A
from onboard.geo.spacecraft import matrix_quaternion

#: Earth's gravitational parameter (m^3/s^2) and rotation rate (rad/s), WGS 84.
GM, OMEGA_EARTH = 3.986004418e14, 7.292115e-5


def _roll(angle_deg: float) -> NDArray[np.float64]:
    a = math.radians(angle_deg)
    return np.array([[1, 0, 0], [0, math.cos(a), -math.sin(a)], [0, math.sin(a), math.cos(a)]])


@dataclass
class Orbit:
    t0: float  # UTC s at which the spacecraft crosses the ascending node
    altitude_m: float = 500e3
    inclination_deg: float = 97.4
    node_lon_deg: float = 0.0
    roll_deg: Callable[[float], float] = field(default=lambda t: 0.0)

    @property
    def radius_m(self) -> float:
        return WGS84_A + self.altitude_m

    def _ecef(self, t: float) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        r = self.radius_m
        n = math.sqrt(GM / r**3)
        u = n * (t - self.t0)  # argument of latitude
        i, node = math.radians(self.inclination_deg), math.radians(self.node_lon_deg)
        p = r * np.array([math.cos(u), math.cos(i) * math.sin(u), math.sin(i) * math.sin(u)])
        v = r * n * np.array([-math.sin(u), math.cos(i) * math.cos(u), math.sin(i) * math.cos(u)])
        theta = node - OMEGA_EARTH * (t - self.t0)  # the inertial node seen from the turning Earth
        c, s = math.cos(theta), math.sin(theta)
        rot = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])
        pos = rot @ p
        return pos, rot @ v - np.cross([0.0, 0.0, OMEGA_EARTH], pos)

    def attitude(self, t: float) -> NDArray[np.float64]:
        """Body-to-ECEF rotation at ``t``."""
        pos, vel = self._ecef(t)
        z = -pos / np.linalg.norm(pos)
        x = vel - (vel @ z) * z
        x /= np.linalg.norm(x)
        return np.column_stack([x, np.cross(z, x), z]) @ _roll(self.roll_deg(t))

    def state(self, t: float) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
        """ECEF position (m), velocity (m/s) and body-to-ECEF rotation at UTC ``t``."""
        pos, vel = self._ecef(t)
        return pos, vel, self.attitude(t)

    def pose(self, t: float) -> PoseState:
        """The POSE telecommand the flight computer sends for instant ``t`` (whole microseconds)."""
        t = round(t * 1e6) / 1e6
        pos, vel, rot = self.state(t)
        dt = 1e-3
        d = rot.T @ self.attitude(t + dt)  # body turn over dt, in body axes
        rates = np.array([d[2, 1] - d[1, 2], d[0, 2] - d[2, 0], d[1, 0] - d[0, 1]]) / (2 * dt)
        return PoseState(round(t * 1e6), (pos[0], pos[1], pos[2]), (vel[0], vel[1], vel[2]),
                         matrix_quaternion(rot), (rates[0], rates[1], rates[2]))
