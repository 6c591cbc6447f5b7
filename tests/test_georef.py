"""Georeferencing against an independent truth: each frame corner's ray intersected with the
terrain plane in Earth-centred coordinates (pyproj's geodetic <-> ECEF), not the module's
geodesic offsets. With a perfect pose the product's geotransform or GCPs must put the corners
within one ground pixel (RMS) of it; nadir, yawed, oblique and boresight-tilted views."""

from __future__ import annotations

import math

import numpy as np
import pytest

pyproj = pytest.importorskip("pyproj")

from onboard.geo.georef import (  # noqa: E402
    CameraGeometry,
    GeorefError,
    Pose,
    corners_rc,
    expected_error_m,
    georeference,
    pixel_to_xy,
    rotation,
    utm_epsg,
)

ROWS, COLS = 64, 64


def truth_corners(pose: Pose, camera: CameraGeometry, epsg: int) -> np.ndarray:
    """Each corner's ray (camera model written out again, in ECEF) meets the plane tangent to
    the ellipsoid-parallel surface at the nadir, ``height_m`` below the vehicle."""
    lat, lon = math.radians(pose.lat_deg), math.radians(pose.lon_deg)
    ned_to_ecef = np.array([[-math.sin(lat) * math.cos(lon), -math.sin(lon), -math.cos(lat) * math.cos(lon)],
                            [-math.sin(lat) * math.sin(lon), math.cos(lon), -math.cos(lat) * math.sin(lon)],
                            [math.cos(lat), 0.0, -math.sin(lat)]])
    to_ecef = pyproj.Transformer.from_crs(4979, 4978, always_xy=True)
    from_ecef = pyproj.Transformer.from_crs(4978, 4979, always_xy=True)
    cam = np.array(to_ecef.transform(pose.lon_deg, pose.lat_deg, pose.alt_m))
    down = ned_to_ecef[:, 2]
    ground0 = cam + pose.height_m * down
    out = []
    for r, c in corners_rc(ROWS, COLS):
        ta, tc = math.tan(math.radians(camera.fov_along_deg) / 2), math.tan(math.radians(camera.fov_across_deg) / 2)
        v_cam = np.array([ta * (1 - 2 * r / ROWS), tc * (2 * c / COLS - 1), 1.0])
        v = ned_to_ecef @ rotation(pose.roll_deg, pose.pitch_deg, pose.yaw_deg) @ rotation(*camera.boresight_deg) @ v_cam
        t = np.dot(ground0 - cam, down) / np.dot(v, down)
        lo, la, _ = from_ecef.transform(*(cam + t * v))
        out.append(pyproj.Transformer.from_crs(4326, epsg, always_xy=True).transform(lo, la))
    return np.asarray(out)


CASES = {
    "nadir north": (Pose(44.80, 0.60, 150.0, 100.0, 0.0, 0.0, 0.0), CameraGeometry(20.0, 20.0)),
    "nadir yawed": (Pose(44.80, 0.60, 150.0, 100.0, 0.0, 0.0, 123.0), CameraGeometry(20.0, 15.0)),
    "oblique roll": (Pose(-33.90, 151.20, 80.0, 120.0, 18.0, -6.0, 250.0), CameraGeometry(20.0, 20.0)),
    "boresight forward": (Pose(60.10, 5.30, 300.0, 90.0, 2.0, 3.0, 45.0), CameraGeometry(30.0, 24.0, (0.0, 25.0, 0.0))),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_perfect_pose_puts_corners_within_a_ground_pixel(case: str) -> None:
    pose, camera = CASES[case]
    geo = georeference(pose, camera, ROWS, COLS)
    truth = truth_corners(pose, camera, geo["epsg"])
    got = pixel_to_xy(geo, corners_rc(ROWS, COLS))
    rms_px = float(np.sqrt((np.sum((got - truth) ** 2, axis=1)).mean())) / geo["gsd_m"]
    assert rms_px <= 1.0, rms_px
    assert rms_px < 0.05, rms_px  # in fact far better: the same geometry, two ways
    # nadir views get a geotransform, oblique ones ground control points
    assert ("geotransform" in geo) == case.startswith("nadir"), sorted(geo)


def test_the_zone_follows_the_position() -> None:
    assert utm_epsg(44.8, 0.6) == 32631
    assert utm_epsg(-33.9, 151.2) == 32756
    assert utm_epsg(60.1, 5.3) == 32632  # the Norway exception: 32V widened west
    assert utm_epsg(78.2, 15.6) == 32633  # Svalbard
    assert utm_epsg(45.0, 180.0) == 32601


def test_a_view_above_the_horizon_is_refused() -> None:
    with pytest.raises(GeorefError, match="horizon"):
        georeference(Pose(44.8, 0.6, 150.0, 100.0, 85.0, 0.0, 0.0), CameraGeometry(20.0, 20.0), ROWS, COLS)
    with pytest.raises(GeorefError, match="not above"):
        georeference(Pose(44.8, 0.6, 150.0, -3.0, 0.0, 0.0, 0.0), CameraGeometry(20.0, 20.0), ROWS, COLS)


def test_expected_error_grows_with_each_uncertainty() -> None:
    pose = Pose(44.8, 0.6, 150.0, 100.0, 0.0, 0.0, 0.0, velocity_ned=(8.0, 0.0, 0.0), rates_deg_s=(0, 0, 10))
    cam = CameraGeometry(20.0, 20.0)
    base = expected_error_m(pose, cam, ROWS, COLS, 0.0, 0.0, 0.0)
    assert base == 0.0
    assert expected_error_m(pose, cam, ROWS, COLS, 1.0, 0.0, 0.0) == pytest.approx(1.0, rel=0.05)
    # 0.1 deg of roll at 100 m height moves the ground by about 0.17 m
    assert expected_error_m(pose, cam, ROWS, COLS, 0.0, 0.1, 0.0) == pytest.approx(0.17 * math.sqrt(3), rel=0.3)
    # 10 ms at 8 m/s: 8 cm, plus the yaw rate's turn of the corners
    assert 0.08 < expected_error_m(pose, cam, ROWS, COLS, 0.0, 0.0, 0.01) < 0.12
