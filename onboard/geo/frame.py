"""One frame's ``meta["georef"]`` from a pose buffer: shared by the MAVLink camera (drone)
and the payload service (the CubeSat's flight computer), which differ only in where the
samples come from and how the exposure time maps to the pose's clock.

The keys: ``georeferenced`` (bool) and, if not, ``reason``; ``pose`` (lat, lon deg, alt,
height m, roll, pitch, yaw deg), ``pose_age_s``, ``pose_extrapolated``; ``epsg``,
``geotransform`` or ``gcps``, ``gsd_m``, ``corners_xy`` (onboard/geo/georef.py);
``expected_error_m``, which counts the caller's time bound plus a share of the pose's age as
timing uncertainty: half for a drone, whose manoeuvres between noisy samples linear
interpolation follows only roughly; none for a spacecraft, whose orbit and slow attitude
interpolate to metres between 1 Hz states (gravity bounds the acceleration: g t (T - t) / 2,
1.2 m mid-way between states 1 s apart, inside any navigation solution's sigma).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from onboard.formats.products import ProductKind
from onboard.geo.georef import CameraGeometry, GeorefError, expected_error_m, georeference
from onboard.geo.pose import PoseBuffer

if TYPE_CHECKING:
    from onboard.config import CameraConfig
    from onboard.runtime.pipeline import FrameResult

#: Why a push-broom frame is not georeferenced (yet): each line needs its own pose.
PUSHBROOM_REASON = "push-broom lines are not georeferenced yet (one pose per line needed)"


def camera_geometry(cc: CameraConfig) -> CameraGeometry:
    """The camera model of the mission file's ``[camera]``."""
    return CameraGeometry(cc.fov_across_deg, cc.fov_along_deg,
                          (cc.boresight_roll_deg, cc.boresight_pitch_deg, cc.boresight_yaw_deg))


def attach(result: FrameResult, geo: dict) -> None:
    """Put ``geo`` into every data product of the frame (not its events or health), and a
    flag saying why when it is not georeferenced."""
    if not geo["georeferenced"]:
        result.flags.append(f"frame {result.counter}: not georeferenced: {geo['reason']}")
    for p in result.products:
        if p.kind not in (ProductKind.EVENT, ProductKind.HEALTH):
            p.meta["georef"] = geo


def frame_georef(poses: PoseBuffer, t_s: float, camera: CameraGeometry, rows: int, cols: int,
                 position_sigma_m: float, attitude_sigma_deg: float, time_bound_s: float,
                 age_share: float = 0.5) -> dict:
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
                                                   attitude_sigma_deg, time_bound_s + age_share * at.age_s)
    except (ValueError, GeorefError) as exc:
        out["reason"] = str(exc)
        return out
    except ImportError as exc:  # pyproj: the UTM projection
        out["reason"] = f"{exc.name} is not installed (pip install 'onboard[drone]')"
        return out
    out["georeferenced"] = True
    return out
