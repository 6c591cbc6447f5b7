"""One frame's ``meta["georef"]`` from a pose buffer: shared by the MAVLink camera (drone)
and the payload service (the CubeSat's flight computer), which differ only in where the
samples come from and how the exposure time maps to the pose's clock.

The keys: ``georeferenced`` (bool) and, if not, ``reason``; ``pose`` (lat, lon deg, alt,
height m, roll, pitch, yaw deg), ``velocity_ned`` (m/s) and ``rates_deg_s`` (roll, pitch, yaw: the motion blur's
inputs, onboard/geo/blur.py), ``pose_age_s``, ``pose_extrapolated``; ``epsg``,
``geotransform`` or ``gcps``, ``gsd_m``, ``corners_xy`` (onboard/geo/georef.py);
``expected_error_m``, which counts the caller's time bound plus a share of the pose's age as
timing uncertainty: half for a drone, whose manoeuvres between noisy samples linear
interpolation follows only roughly; none for a spacecraft, whose orbit and slow attitude
interpolate to metres between 1 Hz states (gravity bounds the acceleration: g t (T - t) / 2,
1.2 m mid-way between states 1 s apart, inside any navigation solution's sigma).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from onboard.formats.products import ProductKind
from onboard.geo.georef import (
    GCP_GRID,
    CameraGeometry,
    GeorefError,
    expected_error_m,
    georeference,
    ground_points_lonlat,
    utm_epsg,
)
from onboard.geo.pose import PoseBuffer

if TYPE_CHECKING:
    from onboard.config import CameraConfig
    from onboard.runtime.pipeline import FrameResult

#: Why a push-broom frame is not georeferenced where its lines share one time stamp.
PUSHBROOM_REASON = "push-broom lines are not georeferenced yet (one pose per line needed)"
#: Lines of a push-broom block that get ground control points (the first and last included).
SWATH_LINES = 9


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
                         pose.pitch_deg, pose.yaw_deg], pose_age_s=at.age_s, pose_extrapolated=at.extrapolated,
                   velocity_ned=list(pose.velocity_ned), rates_deg_s=list(pose.rates_deg_s))
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


def swath_georef(poses: PoseBuffer, line_times_s: list[float], camera: CameraGeometry, cols: int,
                 position_sigma_m: float, attitude_sigma_deg: float, time_bound_s: float,
                 age_share: float = 0.5) -> dict:
    """The georeferencing of a block of push-broom lines (product row i = line i, exposed at
    ``line_times_s[i]``; the camera's ``fov_along_deg`` is one line's): each of
    :data:`SWATH_LINES` lines gets the pose at its own exposure and :data:`GCP_GRID` ground
    control points across the slit, at its centre, and at the block's outer edges for the
    first and last lines. ``swath`` true: the GCPs follow the platform's motion and need a
    polynomial or thin-plate warp (``gdalwarp -tps``), not a projective one. ``pose`` is the
    middle line's; ``pose_age_s``, ``pose_extrapolated`` and ``expected_error_m`` the worst line's. Never raises."""
    n = len(line_times_s)
    out: dict = {"georeferenced": False, "swath": True, "lines": n}
    picked = sorted({int(round(v)) for v in np.linspace(0, n - 1, min(SWATH_LINES, n))})
    across = np.linspace(0, cols, GCP_GRID)
    try:
        epsg = None
        gcps, ages, errors, extrapolated, middle = [], [], [], [], None
        for i in picked:
            at = poses.at(line_times_s[i])
            pose = at.pose
            epsg = epsg or utm_epsg(pose.lat_deg, pose.lon_deg)
            edges = ([0.0] if i == 0 else []) + [0.5] + ([1.0] if i == n - 1 else [])
            for r in edges:
                rc = np.column_stack([np.full(GCP_GRID, r), across])
                points = ground_points_lonlat(pose, camera, 1, cols, rc, epsg)
                gcps += [[float(i + r), float(c), *map(float, p)] for c, p in zip(across, points, strict=True)]
            ages.append(at.age_s)
            extrapolated.append(at.extrapolated)
            errors.append(expected_error_m(pose, camera, 1, cols, position_sigma_m, attitude_sigma_deg,
                                           time_bound_s + age_share * at.age_s))
            if middle is None or abs(i - (n - 1) / 2) < abs(middle[0] - (n - 1) / 2):
                middle = (i, at)
    except (ValueError, GeorefError) as exc:
        out["reason"] = f"line {i}: {exc}"
        return out
    except ImportError as exc:
        out["reason"] = f"{exc.name} is not installed (pip install 'onboard[drone]')"
        return out
    assert middle is not None
    g = np.asarray(gcps)
    first, last = g[g[:, 0] == 0.0], g[g[:, 0] == float(n)]
    across_m = float(np.hypot(*(first[-1, 2:4] - first[0, 2:4]))) / cols
    along_m = float(np.hypot(*(last[GCP_GRID // 2, 2:4] - first[GCP_GRID // 2, 2:4]))) / n
    p = middle[1].pose
    out.update(epsg=epsg, gcps=gcps, gsd_m=math.sqrt(across_m * along_m),
               corners_xy=np.array([first[0, 2:4], first[-1, 2:4], last[-1, 2:4], last[0, 2:4]]).round(3).tolist(),
               pose=[p.lat_deg, p.lon_deg, p.alt_m, p.height_m, p.roll_deg, p.pitch_deg, p.yaw_deg],
               pose_age_s=max(ages), pose_extrapolated=any(extrapolated),
               expected_error_m=max(errors), georeferenced=True)
    return out
