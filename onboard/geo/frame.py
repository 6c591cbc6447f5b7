"""One frame's ``meta["georef"]`` from a pose buffer: shared by the MAVLink camera (drone)
and the payload service (the CubeSat's flight computer), which differ only in where the
samples come from and how the exposure time maps to the pose's clock.

The keys: ``georeferenced`` (bool) and, if not, ``reason``; ``pose`` (lat, lon deg, alt,
height m, roll, pitch, yaw deg), ``pose_age_s``, ``pose_extrapolated``; ``epsg``,
``geotransform`` or ``gcps``, ``gsd_m``, ``corners_xy`` (onboard/geo/georef.py);
``expected_error_m``, which counts the caller's time bound plus half the pose's age.
"""

from __future__ import annotations

from onboard.geo.georef import CameraGeometry, GeorefError, expected_error_m, georeference
from onboard.geo.pose import PoseBuffer


def frame_georef(poses: PoseBuffer, t_s: float, camera: CameraGeometry, rows: int, cols: int,
                 position_sigma_m: float, attitude_sigma_deg: float, time_bound_s: float) -> dict:
    """The georeferencing of a frame of ``rows`` x ``cols`` exposed at ``t_s`` (the pose
    buffer's clock); never raises: what went wrong is the ``reason``."""
    out: dict = {"georeferenced": False}
    try:
        at = poses.at(t_s)
        pose = at.pose
        out.update(pose=[pose.lat_deg, pose.lon_deg, pose.alt_m, pose.height_m, pose.roll_deg,
                         pose.pitch_deg, pose.yaw_deg], pose_age_s=at.age_s, pose_extrapolated=at.extrapolated)
        out.update(georeference(pose, camera, rows, cols))
        out["expected_error_m"] = expected_error_m(pose, camera, rows, cols, position_sigma_m,
                                                   attitude_sigma_deg, time_bound_s + at.age_s / 2)
    except (ValueError, GeorefError) as exc:
        out["reason"] = str(exc)
        return out
    except ImportError as exc:  # pyproj: the UTM projection
        out["reason"] = f"{exc.name} is not installed (pip install 'onboard[drone]')"
        return out
    out["georeferenced"] = True
    return out
