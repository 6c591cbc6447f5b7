"""``onboard ground export`` of georeferenced products: a real run's products given the
georeferencing the MAVLink camera writes (onboard/geo/georef.py) for a yawed nadir view and
an oblique one, exported by the CLI, then read back by GDAL (rasterio) and Spectral Python:
the CRS, the geotransform (rotation included) or the GCPs put the frame's corners where the
product says; cubes are Cloud-Optimised GeoTIFFs; quick-looks get a caption."""

from __future__ import annotations

import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

pyproj = pytest.importorskip("pyproj")
rasterio = pytest.importorskip("rasterio")

from onboard.formats.products import Product, ProductKind  # noqa: E402
from onboard.geo.georef import CameraGeometry, Pose, corners_rc, georeference, pixel_to_xy  # noqa: E402

VIEWS = {0: Pose(44.80, 0.60, 150.0, 100.0, 0.0, 0.0, 35.0), 1: Pose(44.80, 0.60, 150.0, 100.0, 15.0, 0.0, 35.0)}


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[int, dict]]:
    tmp = tmp_path_factory.mktemp("georef_export")
    run = subprocess.run([sys.executable, "-m", "onboard", "run", "--frames", "3", "--out", str(tmp / "run"),
                          "--quiet"], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    geos = {}
    for path in sorted((tmp / "run" / "products").glob("*.obp")):
        p = Product.from_bytes(path.read_bytes())
        if p.frame_counter in VIEWS and p.kind != ProductKind.EVENT:
            geos[p.frame_counter] = p.meta["georef"] = georeference(VIEWS[p.frame_counter], CameraGeometry(20, 20), 64, 64)
            path.write_bytes(p.to_bytes())
    done = subprocess.run([sys.executable, "-m", "onboard", "ground", "export", str(tmp / "run"), "-o", str(tmp / "user")],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return tmp / "user", geos


def _corners(ds) -> np.ndarray:
    return np.array([ds.xy(int(r), int(c), offset="ul") for r, c in corners_rc(64, 64)])


def test_a_yawed_nadir_view_gets_a_rotated_geotransform_in_every_format(exported) -> None:
    user, geos = exported
    geo = geos[0]
    assert "geotransform" in geo and geo["geotransform"][2] != 0  # rotated: heading 35 degrees
    want = pixel_to_xy(geo, corners_rc(64, 64))
    for name in ("residue_00000000_fractions.tif", "residue_00000000_tillage.tif", "cube_00000000.tif",
                 "cube_00000000.img"):
        with rasterio.open(user / name) as ds:
            assert ds.crs.to_epsg() == 32631, name
            assert np.abs(_corners(ds) - want).max() < 0.01, name  # ENVI's map info: 4 decimals


def test_an_oblique_view_gets_ground_control_points(exported) -> None:
    user, geos = exported
    geo = geos[1]
    assert "gcps" in geo and "geotransform" not in geo
    for name in ("residue_00000001_fractions.tif", "cube_00000001.tif"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
            ds = rasterio.open(user / name)
        with ds:
            gcps, crs = ds.gcps
            assert crs.to_epsg() == 32631 and len(gcps) == 25, name
            got = {(g.row, g.col): (g.x, g.y) for g in gcps}
            for r, c, x, y, *_ in geo["gcps"]:
                assert got[(r, c)] == pytest.approx((x, y), abs=1e-6)
    from spectral.io import envi

    points = [float(v) for v in envi.open(str(user / "cube_00000001.hdr")).metadata["geo points"]]
    assert len(points) == 4 * 25 and points[:2] == [1.0, 1.0]  # ENVI's first pixel corner is (1, 1)
    assert points[2:4] == pytest.approx(geo["gcps"][0][5:3:-1])  # latitude, longitude


def test_cubes_are_cloud_optimised_geotiffs_with_named_bands(exported) -> None:
    user, _ = exported
    from spectral.io import envi

    envi_cube = np.asarray(envi.open(str(user / "cube_00000002.hdr")).load())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
        ds = rasterio.open(user / "cube_00000002.tif")  # frame 2: not georeferenced
    with ds:
        assert ds.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
        assert ds.count == envi_cube.shape[-1] and ds.crs is None and np.isnan(ds.nodata)
        assert ds.descriptions[0].endswith(" nm") and ds.block_shapes[0][0] > 1  # tiled
        np.testing.assert_array_equal(ds.read(), np.moveaxis(envi_cube, -1, 0))


def test_quicklooks_get_a_caption_and_a_scale(exported) -> None:
    from PIL import Image

    user, _ = exported
    plain = Image.open(user / "quicklook_00000000.png")
    captioned = Image.open(user / "quicklook_00000000_captioned.png")
    assert captioned.width >= 4 * plain.width and captioned.height > 4 * plain.height + 3 * 14
    # the enlarged quick-look is the quick-look, pixel for pixel
    top = np.asarray(captioned.convert("RGB"))[: 4 * plain.height : 4, : 4 * plain.width : 4]
    np.testing.assert_array_equal(top, np.asarray(plain.convert("RGB")))
    # georeferenced frames carry a scale bar: a black line under the caption; frame 2 none
    bar_row = np.asarray(captioned.convert("L"))[-6]
    assert (bar_row < 50).sum() > 10
    unreferenced = np.asarray(Image.open(user / "quicklook_00000002_captioned.png").convert("L"))[-6]
    assert (unreferenced < 50).sum() == 0
