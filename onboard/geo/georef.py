"""Georeferencing one frame: from the vehicle's pose, the camera's mounting and field of view
and a flat terrain, where each pixel of the product lies on the ground, in UTM.

Camera model: a pinhole whose optical axis is the camera's +z; image rows run against the
camera's +x (row 0 at the forward edge when the camera is mounted unrotated, looking down)
and columns along its +y (column 0 at the left). The camera frame is the body frame (NED:
x forward, y right, z down) rotated by the boresight (roll, pitch, yaw of the mount); the
body frame is the local North-East-Down frame rotated by the attitude (aerospace Z-Y-X:
yaw, then pitch, then roll). A pixel's ray meets a plane ``height_m`` below the camera; the
point's north/east offset from the nadir becomes a latitude and longitude on the WGS 84
ellipsoid (geodesic forward problem), then UTM easting/northing (zone from the vehicle's
position, Norway and Svalbard exceptions included) with pyproj. The plane is the terrain's
tangent at the nadir: over a 200 m footprint it sags below the ellipsoid by 3 mm.

A view close to nadir maps to the ground as an affine transform (a GDAL geotransform, with
rotation terms when the heading is not north); an oblique view does not (its footprint is a
trapezoid), so the product carries ground control points instead (a 5 x 5 grid over the
frame, corners included), which GDAL warps with. The choice is by the affine fit's worst
residual over that grid: under :data:`AFFINE_TOLERANCE_PX` of a ground pixel, a geotransform.

``expected_error_m`` propagates the stated pose uncertainty (position, attitude) and the
timing uncertainty (the clock sync's bound and the pose's interpolation age, times the
vehicle's speed and turn rates) to the ground, as an RMS over the frame's corners: the
number each product carries, measured against the truth by the ``drone_survey`` HIL.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

#: Grid of ground control points per side when the view is oblique (corners included).
GCP_GRID = 5
#: Worst affine residual (ground pixels) over the GCP grid for a geotransform to be written.
AFFINE_TOLERANCE_PX = 0.1


class GeorefError(ValueError):
    """A frame that cannot be georeferenced: the reason, in words (kept in the product)."""


@dataclass(frozen=True)
class CameraGeometry:
    """The camera's field of view (full angles, degrees, across the columns and across the
    rows) and its boresight: the mount's roll, pitch, yaw (degrees) from the body frame."""

    fov_across_deg: float
    fov_along_deg: float
    boresight_deg: tuple[float, float, float] = (0.0, 0.0, 0.0)


@dataclass(frozen=True)
class Pose:
    """The vehicle at exposure: WGS 84 latitude and longitude (deg), altitude (m, the
    autopilot's datum), height above the flat terrain (m), attitude (deg), and for the
    error estimate the velocity (north, east, down m/s) and body rates (deg/s)."""

    lat_deg: float
    lon_deg: float
    alt_m: float
    height_m: float
    roll_deg: float
    pitch_deg: float
    yaw_deg: float
    velocity_ned: tuple[float, float, float] = (0.0, 0.0, 0.0)
    rates_deg_s: tuple[float, float, float] = (0.0, 0.0, 0.0)


def rotation(roll_deg: float, pitch_deg: float, yaw_deg: float) -> NDArray[np.float64]:
    """Body-to-NED rotation matrix, aerospace Z-Y-X order (yaw, pitch, roll)."""
    r, p, y = (math.radians(a) for a in (roll_deg, pitch_deg, yaw_deg))
    cr, sr, cp, sp, cy, sy = math.cos(r), math.sin(r), math.cos(p), math.sin(p), math.cos(y), math.sin(y)
    return np.array([[cy * cp, cy * sp * sr - sy * cr, cy * sp * cr + sy * sr],
                     [sy * cp, sy * sp * sr + cy * cr, sy * sp * cr - cy * sr],
                     [-sp, cp * sr, cp * cr]])


def rays(camera: CameraGeometry, rows: int, cols: int, pixel_rc: NDArray) -> NDArray[np.float64]:
    """Directions (N, 3) in the body frame of image points ``pixel_rc`` (N, 2): (row, col) in
    pixel units, (0, 0) the top-left corner of the first pixel."""
    rc = np.asarray(pixel_rc, dtype=float)
    ta = math.tan(math.radians(camera.fov_along_deg) / 2)
    tc = math.tan(math.radians(camera.fov_across_deg) / 2)
    cam = np.stack([ta * (1 - 2 * rc[:, 0] / rows), tc * (2 * rc[:, 1] / cols - 1), np.ones(len(rc))], axis=1)
    return cam @ rotation(*camera.boresight_deg).T


def ground_offsets(pose: Pose, camera: CameraGeometry, rows: int, cols: int,
                   pixel_rc: NDArray) -> NDArray[np.float64]:
    """(N, 2) north, east offsets (m) from the vehicle's nadir of where ``pixel_rc`` look on
    the terrain; GeorefError if a ray does not reach it (at or above the horizon)."""
    if not pose.height_m > 0:
        raise GeorefError(f"height above the terrain is {pose.height_m:.1f} m: not above it")
    d = rays(camera, rows, cols, pixel_rc) @ rotation(pose.roll_deg, pose.pitch_deg, pose.yaw_deg).T
    if (d[:, 2] < 0.05).any():  # steeper than ~87 degrees off nadir: the ground point is unbounded
        raise GeorefError("part of the view is at or above the horizon: attitude "
                          f"roll {pose.roll_deg:.1f}, pitch {pose.pitch_deg:.1f} deg")
    return d[:, :2] * (pose.height_m / d[:, 2:3])


def utm_epsg(lat_deg: float, lon_deg: float) -> int:
    """EPSG code of the WGS 84 / UTM zone holding the point: 6-degree zones, with the zone
    widened over south-west Norway (32V, 3-12 E) and Svalbard's four (31X-37X)."""
    if not -80.0 <= lat_deg <= 84.0:
        raise GeorefError(f"lat {lat_deg:.5f} is outside UTM (80 S - 84 N): UPS is not supported")
    lon = (lon_deg + 180.0) % 360.0 - 180.0
    zone = min(int((lon + 180.0) // 6) + 1, 60)
    if 56.0 <= lat_deg < 64.0 and 3.0 <= lon < 12.0:
        zone = 32
    elif lat_deg >= 72.0 and 0.0 <= lon < 42.0:
        zone = 31 if lon < 9.0 else 33 if lon < 21.0 else 35 if lon < 33.0 else 37
    return (32600 if lat_deg >= 0 else 32700) + zone


def ground_points(pose: Pose, camera: CameraGeometry, rows: int, cols: int, pixel_rc: NDArray,
                  epsg: int) -> NDArray[np.float64]:
    """(N, 2) easting, northing in ``epsg`` (m) of image points ``pixel_rc``."""
    return ground_points_lonlat(pose, camera, rows, cols, pixel_rc, epsg)[:, :2]


def ground_points_lonlat(pose: Pose, camera: CameraGeometry, rows: int, cols: int, pixel_rc: NDArray,
                         epsg: int) -> NDArray[np.float64]:
    """(N, 4) easting, northing in ``epsg`` (m), longitude, latitude (deg) of ``pixel_rc``."""
    from pyproj import Geod, Transformer

    ne = ground_offsets(pose, camera, rows, cols, pixel_rc)
    az = np.degrees(np.arctan2(ne[:, 1], ne[:, 0]))
    n = len(ne)
    lon, lat, _ = Geod(ellps="WGS84").fwd(np.full(n, pose.lon_deg), np.full(n, pose.lat_deg), az,
                                          np.hypot(ne[:, 0], ne[:, 1]))
    x, y = Transformer.from_crs(4326, epsg, always_xy=True).transform(lon, lat)
    return np.stack([np.asarray(x), np.asarray(y), np.asarray(lon), np.asarray(lat)], axis=1)


def grid_rc(rows: int, cols: int, n: int = GCP_GRID) -> NDArray[np.float64]:
    """An n x n grid of image points over the whole frame, corners included (row, col)."""
    r, c = np.meshgrid(np.linspace(0, rows, n), np.linspace(0, cols, n), indexing="ij")
    return np.stack([r.ravel(), c.ravel()], axis=1)


def corners_rc(rows: int, cols: int) -> NDArray[np.float64]:
    """The frame's four outer corners (row, col): top-left, top-right, bottom-right, bottom-left."""
    return np.array([[0, 0], [0, cols], [rows, cols], [rows, 0]], dtype=float)


def apply_geotransform(gt: list[float], pixel_rc: NDArray) -> NDArray[np.float64]:
    """GDAL's geotransform applied to (row, col) points: (N, 2) x, y."""
    rc = np.asarray(pixel_rc, dtype=float)
    return np.stack([gt[0] + rc[:, 1] * gt[1] + rc[:, 0] * gt[2],
                     gt[3] + rc[:, 1] * gt[4] + rc[:, 0] * gt[5]], axis=1)


def _affine(rc: NDArray, xy: NDArray) -> tuple[list[float], NDArray]:
    """Least-squares GDAL geotransform through (row, col) -> (x, y); and its residuals (m)."""
    a = np.column_stack([np.ones(len(rc)), rc[:, 1], rc[:, 0]])
    cx, *_ = np.linalg.lstsq(a, xy[:, 0], rcond=None)
    cy, *_ = np.linalg.lstsq(a, xy[:, 1], rcond=None)
    gt = [float(v) for v in (*cx, *cy)]
    return gt, np.hypot(*(apply_geotransform(gt, rc) - xy).T)


def expected_error_m(pose: Pose, camera: CameraGeometry, rows: int, cols: int, position_sigma_m: float,
                     attitude_sigma_deg: float, time_sigma_s: float) -> float:
    """RMS over the frame's corners of the ground error (m, 1 sigma) that the stated
    uncertainties cause: horizontal position, each attitude angle (by finite differences of
    the footprint), height (as a share of it, like the position), and time (speed and turn
    rates times ``time_sigma_s``)."""
    rc = corners_rc(rows, cols)
    base = ground_offsets(pose, camera, rows, cols, rc)
    var = np.full(len(rc), position_sigma_m ** 2 + (math.hypot(*pose.velocity_ned[:2]) * time_sigma_s) ** 2)
    rates = pose.rates_deg_s
    for i, name in enumerate(("roll_deg", "pitch_deg", "yaw_deg")):
        step = 0.01
        moved = Pose(**{**pose.__dict__, name: getattr(pose, name) + step})
        per_deg = np.hypot(*(ground_offsets(moved, camera, rows, cols, rc) - base).T) / step
        sigma = math.hypot(attitude_sigma_deg, rates[i] * time_sigma_s)
        var += (per_deg * sigma) ** 2
    # a height error scales the footprint about the nadir; the position's sigma stands for it
    var += (np.hypot(*base.T) * position_sigma_m / pose.height_m) ** 2
    return float(math.sqrt(var.mean()))


def georeference(pose: Pose, camera: CameraGeometry, rows: int, cols: int) -> dict:
    """The product's georeferencing (``meta["georef"]``): ``epsg``, ``geotransform`` (GDAL
    order) when the view is close enough to nadir, else ``gcps`` ([row, col, x, y, lon, lat],
    pixel corners convention: (0, 0) is the first pixel's outer corner), ``gsd_m`` and the
    footprint's ``corners_xy`` and ``corners_lonlat`` (top-left clockwise; lon, lat degrees).
    GeorefError when the view does not meet the terrain."""
    epsg = utm_epsg(pose.lat_deg, pose.lon_deg)
    rc = grid_rc(rows, cols)
    points = ground_points_lonlat(pose, camera, rows, cols, rc, epsg)
    xy = points[:, :2]
    gt, residual = _affine(rc, xy)
    gsd = math.sqrt(abs(gt[1] * gt[5] - gt[2] * gt[4]))
    at = [0, GCP_GRID - 1, GCP_GRID * GCP_GRID - 1, GCP_GRID * (GCP_GRID - 1)]
    # the footprint in lon/lat too (already computed): REQUEST_AREA matches it without pyproj
    out: dict = {"epsg": epsg, "gsd_m": gsd, "corners_xy": xy[at].round(3).tolist(),
                 "corners_lonlat": points[at, 2:4].round(7).tolist()}
    if residual.max() <= AFFINE_TOLERANCE_PX * gsd:
        out["geotransform"] = gt
    else:
        out["gcps"] = [[float(v) for v in (r, c, *p)] for (r, c), p in zip(rc, points, strict=True)]
    return out


def pixel_to_xy(georef: dict, pixel_rc: NDArray) -> NDArray[np.float64]:
    """Where a product's georeferencing puts image points (row, col): through its geotransform,
    or, with GCPs, through the plane projective transform fitted to them (exact for a pinhole
    over flat terrain, which is what made them)."""
    rc = np.asarray(pixel_rc, dtype=float)
    if "geotransform" in georef:
        return apply_geotransform(georef["geotransform"], rc)
    g = np.asarray(georef["gcps"], dtype=float)
    h = _homography(g[:, :2], g[:, 2:4])
    p = np.column_stack([rc[:, 1], rc[:, 0], np.ones(len(rc))]) @ h.T
    return p[:, :2] / p[:, 2:3]


def _homography(rc: NDArray, xy: NDArray) -> NDArray[np.float64]:
    """The 3 x 3 projective transform (col, row, 1) -> (x, y, w), least squares (DLT), with
    the ground points centred for conditioning."""
    x0 = xy.mean(0)
    rows = []
    for (r, c), (x, y) in zip(rc, xy - x0, strict=True):
        rows.append([c, r, 1, 0, 0, 0, -x * c, -x * r, -x])
        rows.append([0, 0, 0, c, r, 1, -y * c, -y * r, -y])
    h = np.linalg.svd(np.asarray(rows))[2][-1].reshape(3, 3)
    return np.array([[1, 0, x0[0]], [0, 1, x0[1]], [0, 0, 1]]) @ h
