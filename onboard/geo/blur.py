"""Motion blur of one frame, in pixels, from the physics of the pose at its exposure.

During an exposure of ``t`` seconds the image of a ground point moves across the detector by

    blur_px = |v_h| t / gsd  +  sqrt((p t / ifov_across)^2 + (q t / ifov_along)^2)

* ``v_h``: the horizontal ground speed, ``hypot(v_north, v_east)`` (m/s) of the pose at the
  exposure (the autopilot's GLOBAL_POSITION_INT velocity, or the flight computer's POSE
  velocity, interpolated to the exposure: onboard/geo/pose.py); ``gsd`` (m): the ground pixel at
  the frame's centre, as the georeferencing measured it (``meta["georef"]["gsd_m"]``, the tilt
  included). The vertical speed changes the scale, not the position, and is left out (a pixel
  at the frame's edge moves ``v_down t / height`` of its distance from the centre: 0.01 px for a
  drone descending at 2 m/s from 100 m over a 1 ms exposure).
* ``p``, ``q``: the roll and pitch rates (rad/s) of the pose, the rotations about the body's
  forward and right axes, which sweep a nadir view across and along the ground; ``ifov_across``
  and ``ifov_along`` (rad): the camera's field of view across and along divided by its columns
  and rows (``[camera]``). The yaw rate turns the image about the boresight and is not counted
  (at the frame's corner it moves ``r t`` times the half-diagonal in pixels).

The two terms are added as magnitudes: an upper bound, since their directions are not
compared (a pitch rate that tracks the ground, forward motion compensation, would cancel part
of the first term). Numpy-free: it runs per frame on the flight computer.
"""

from __future__ import annotations

import math

from onboard.geo.georef import CameraGeometry


def motion_blur_px(speed_m_s: float, roll_rate_deg_s: float, pitch_rate_deg_s: float, exposure_s: float,
                   gsd_m: float, camera: CameraGeometry, rows: int, cols: int) -> float:
    """The image motion during the exposure (pixels; module docstring)."""
    if not (exposure_s >= 0 and gsd_m > 0 and rows > 0 and cols > 0):
        raise ValueError(f"blur needs exposure >= 0, gsd > 0 and a frame size (got {exposure_s}, {gsd_m}, "
                         f"{rows} x {cols})")
    ifov_across = math.radians(camera.fov_across_deg) / cols
    ifov_along = math.radians(camera.fov_along_deg) / rows
    linear = abs(speed_m_s) * exposure_s / gsd_m
    angular = math.hypot(math.radians(roll_rate_deg_s) * exposure_s / ifov_across,
                         math.radians(pitch_rate_deg_s) * exposure_s / ifov_along)
    return linear + angular


def frame_blur(geo: dict, exposure_s: float | None, camera: CameraGeometry, rows: int,
               cols: int) -> tuple[float | None, str | None]:
    """``(blur_px, None)`` for a frame whose ``meta["georef"]`` holds the pose at the exposure
    (its ``velocity_ned``, ``rates_deg_s`` and ``gsd_m``), else ``(None, why)``."""
    if exposure_s is None:
        return None, "no exposure time"
    if geo.get("swath"):
        return None, "push-broom: along-track motion is the scan, not blur (not estimated)"
    if not geo.get("georeferenced") or "velocity_ned" not in geo:
        return None, f"no pose at the exposure ({geo.get('reason', 'not georeferenced')})"
    vn, ve, _vd = geo["velocity_ned"]
    p, q, _r = geo["rates_deg_s"]
    return motion_blur_px(math.hypot(vn, ve), p, q, exposure_s, geo["gsd_m"], camera, rows, cols), None
