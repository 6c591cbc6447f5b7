"""Georeferencing one frame: from the vehicle's pose, the camera's mounting and field of view
and a flat terrain, where each pixel of the product lies on the ground, in UTM.

Camera model: a pinhole whose optical axis is the camera's +z; image rows run against the
camera's +x (row 0 at the forward edge when the camera is mounted unrotated, looking down)
and columns along its +y (column 0 at the left). The camera frame is the body frame (NED:
x forward, y right, z down) rotated by the boresight (roll, pitch, yaw of the mount); the
body frame is the local North-East-Down frame rotated by the attitude (aerospace Z-Y-X:
yaw, then pitch, then roll). A pixel's ray, in Earth-centred Earth-fixed coordinates (the
camera at its WGS 84 latitude, longitude and altitude), meets the terrain: the WGS 84
ellipsoid grown by the terrain's height ``alt_m - height_m`` (both semi-axes; from a drone's
100 m or a CubeSat's 500 km alike: the Earth's curvature is in the model, which a plane
tangent at the nadir would miss by kilometres off-nadir from orbit). Each ground point's
latitude and longitude (pyproj, ECEF to geodetic) become UTM easting/northing (zone from
the vehicle's position, Norway and Svalbard exceptions included). Growing both semi-axes
by h instead of following the normal puts the surface within 1.5e-6 h of the geodetic
height h (7 mm at 5 km, checked against pyproj): nothing beside a ground pixel.

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

from onboard.errors import OnboardError

#: Grid of ground control points per side when the view is oblique (corners included).
GCP_GRID = 5
#: Worst affine residual (ground pixels) over the GCP grid for a geotransform to be written.
AFFINE_TOLERANCE_PX = 0.1


class GeorefError(OnboardError, ValueError):
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


#: WGS 84 semi-major axis (m) and first eccentricity squared.
WGS84_A, WGS84_E2 = 6378137.0, 6.69437999014e-3


def ecef(lat_deg: float, lon_deg: float, alt_m: float) -> NDArray[np.float64]:
    """Earth-centred Earth-fixed position (m) of a WGS 84 geodetic point."""
    lat, lon = math.radians(lat_deg), math.radians(lon_deg)
    n = WGS84_A / math.sqrt(1 - WGS84_E2 * math.sin(lat) ** 2)
    return np.array([(n + alt_m) * math.cos(lat) * math.cos(lon), (n + alt_m) * math.cos(lat) * math.sin(lon),
                     (n * (1 - WGS84_E2) + alt_m) * math.sin(lat)])


def ned_to_ecef(lat_deg: float, lon_deg: float) -> NDArray[np.float64]:
    """Rotation taking local North-East-Down vectors at (lat, lon) to ECEF."""
    lat, lon = math.radians(lat_deg), math.radians(lon_deg)
    sl, cl, so, co = math.sin(lat), math.cos(lat), math.sin(lon), math.cos(lon)
    return np.array([[-sl * co, -so, -cl * co], [-sl * so, co, -cl * so], [cl, 0.0, -sl]])


def ground_ecef(pose: Pose, camera: CameraGeometry, rows: int, cols: int,
                pixel_rc: NDArray) -> NDArray[np.float64]:
    """(N, 3) ECEF points (m) where the rays of ``pixel_rc`` meet the terrain (the nearer
    intersection); GeorefError if a ray misses it or grazes it (at or above the horizon)."""
    if not pose.height_m > 0:
        raise GeorefError(f"height above the terrain is {pose.height_m:.1f} m: not above it")
    d_ned = rays(camera, rows, cols, pixel_rc) @ rotation(pose.roll_deg, pose.pitch_deg, pose.yaw_deg).T
    d_ned /= np.linalg.norm(d_ned, axis=1, keepdims=True)
    horizon = GeorefError("part of the view is at or above the horizon: attitude "
                          f"roll {pose.roll_deg:.1f}, pitch {pose.pitch_deg:.1f} deg")
    if (d_ned[:, 2] < 0.05).any():  # steeper than ~87 degrees off the local vertical
        raise horizon
    h0 = pose.alt_m - pose.height_m
    a, b = WGS84_A + h0, WGS84_A * math.sqrt(1 - WGS84_E2) + h0
    cam = ecef(pose.lat_deg, pose.lon_deg, pose.alt_m)
    d = d_ned @ ned_to_ecef(pose.lat_deg, pose.lon_deg).T
    scale = np.array([1 / a, 1 / a, 1 / b])  # the terrain as the unit sphere
    p, v = cam * scale, d * scale
    qa, qb, qc = (v * v).sum(1), 2 * (p * v).sum(1), float(p @ p) - 1
    disc = qb * qb - 4 * qa * qc
    if (disc <= 0).any():
        raise horizon
    t = (-qb - np.sqrt(disc)) / (2 * qa)
    hit = cam + t[:, None] * d
    normal = hit * scale * scale  # the ellipsoid's outward normal at the hit, unnormalised
    if ((-(d * normal).sum(1) / np.linalg.norm(normal, axis=1)) < 0.05).any():  # grazing the limb
        raise horizon
    return hit


def ground_offsets(pose: Pose, camera: CameraGeometry, rows: int, cols: int,
                   pixel_rc: NDArray) -> NDArray[np.float64]:
    """(N, 2) north, east offsets (m, in the local frame at the vehicle) from the vehicle's
    nadir on the terrain of where ``pixel_rc`` look; GeorefError as :func:`ground_ecef`."""
    nadir = ecef(pose.lat_deg, pose.lon_deg, pose.alt_m - pose.height_m)
    return ((ground_ecef(pose, camera, rows, cols, pixel_rc) - nadir) @ ned_to_ecef(pose.lat_deg, pose.lon_deg))[:, :2]


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
    from pyproj import Transformer

    g = ground_ecef(pose, camera, rows, cols, pixel_rc)
    lon, lat, _ = Transformer.from_crs(4978, 4979, always_xy=True).transform(g[:, 0], g[:, 1], g[:, 2])
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
    over flat terrain, which is what made them), or for a push-broom ``swath`` by
    interpolating its grid of GCPs."""
    rc = np.asarray(pixel_rc, dtype=float)
    if "geotransform" in georef:
        return apply_geotransform(georef["geotransform"], rc)
    g = np.asarray(georef["gcps"], dtype=float)
    if georef.get("swath"):
        return _grid_interpolate(g, rc)
    h = _homography(g[:, :2], g[:, 2:4])
    p = np.column_stack([rc[:, 1], rc[:, 0], np.ones(len(rc))]) @ h.T
    return p[:, :2] / p[:, 2:3]


def _grid_interpolate(g: NDArray, rc: NDArray) -> NDArray[np.float64]:
    """Bilinear interpolation in a push-broom swath's GCPs, which lie on a rectilinear grid
    of (row, col) (each georeferenced line has the same columns): exact on a GCP, and
    between them as good as the footprint is smooth, whatever the platform's motion."""
    rows, cols = np.unique(g[:, 0]), np.unique(g[:, 1])
    order = np.lexsort((g[:, 1], g[:, 0]))
    xy = g[order, 2:4].reshape(len(rows), len(cols), 2)
    i = np.clip(np.searchsorted(rows, rc[:, 0], side="right") - 1, 0, len(rows) - 2)
    j = np.clip(np.searchsorted(cols, rc[:, 1], side="right") - 1, 0, len(cols) - 2)
    u = ((rc[:, 0] - rows[i]) / (rows[i + 1] - rows[i]))[:, None]
    v = ((rc[:, 1] - cols[j]) / (cols[j + 1] - cols[j]))[:, None]
    return ((1 - u) * (1 - v) * xy[i, j] + (1 - u) * v * xy[i, j + 1]
            + u * (1 - v) * xy[i + 1, j] + u * v * xy[i + 1, j + 1])


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
