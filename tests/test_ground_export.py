"""``onboard ground export``: a real ``onboard run`` (CCSDS 123 coded cube and residue) in a
subprocess, exported by the real CLI in a subprocess, read back with other libraries than
the writers: rasterio (GDAL) reads tifffile's GeoTIFFs, Spectral Python's ENVI reader the
headers, and the values are checked against ``onboard.formats.products.load``."""

import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from onboard.formats.products import load
from onboard.formats.types import ENDMEMBERS, INVALID_CLASS, UNCERTAIN_CLASS
from onboard.physics.imspoc import band_edges_nm

rasterio = pytest.importorskip("rasterio")
# Products are not georeferenced yet (issue 19's pose and georeferencing are to come): GDAL
# says so for every file it opens, which is what these files are.
pytestmark = pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")
spectral = pytest.importorskip("spectral")


def _cli(*args, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "XDG_CACHE_HOME": str(cwd / "cache")}
    return subprocess.run([sys.executable, "-m", "onboard", *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=600)


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> tuple[Path, Path, dict]:
    tmp = tmp_path_factory.mktemp("export")
    mission = tmp / "m.toml"
    mission.write_text('[products]\ncube_coding = "ccsds123"\nresidue_coding = "ccsds123"\n')
    run = _cli("run", "--sensor", "imspoc", "--frames", "1", "--out", tmp / "run", "--quiet",
               "--config", mission, cwd=tmp)
    assert run.returncode == 0, run.stderr
    proc = _cli("ground", "export", tmp / "run", "-o", tmp / "user", "--json", cwd=tmp)
    assert proc.returncode == 0, proc.stderr
    return tmp / "run" / "products", tmp / "user", json.loads(proc.stdout)


@pytest.mark.slow
def test_residue_fractions_are_one_geotiff_of_three_named_bands(exported) -> None:
    products, user, report = exported
    arrays, header = load(products / "residue_00000000.obp")
    assert header["meta"]["coding"] == "ccsds123"  # the coded product went through the decoder
    with rasterio.open(user / "residue_00000000_fractions.tif") as src:
        assert src.count == 3 and src.descriptions == ENDMEMBERS
        assert np.isnan(src.nodata)
        np.testing.assert_array_equal(src.read(), arrays["fractions"])


@pytest.mark.slow
def test_tillage_map_has_a_colour_table_and_class_names(exported) -> None:
    products, user, _ = exported
    arrays, _ = load(products / "residue_00000000.obp")
    path = user / "residue_00000000_tillage.tif"
    with rasterio.open(path) as src:
        assert src.count == 1 and src.nodata == INVALID_CLASS
        np.testing.assert_array_equal(src.read(1), arrays["tillage"])
        colours = src.colormap(1)
        tags = src.tags()
    distinct = {colours[v][:3] for v in (0, 1, 2, UNCERTAIN_CLASS, INVALID_CLASS)}
    assert len(distinct) == 5  # every class its own colour, uncertain and invalid included
    assert tags[f"CLASS_{UNCERTAIN_CLASS}"] == "uncertain" and tags["CLASS_2"] == "conservation tillage"
    categories = [c.text or "" for c in ET.parse(f"{path}.aux.xml").iter("Category")]  # GDAL's legend
    assert len(categories) == 256 and categories[0] == "intensive tillage"
    assert categories[INVALID_CLASS] == "no valid measurement"


@pytest.mark.slow
def test_cube_envi_header_has_wavelengths_fwhm_and_time(exported) -> None:
    products, user, _ = exported
    arrays, header = load(products / "cube_00000000.obp")
    img = spectral.open_image(str(user / "cube_00000000.hdr"))
    lam = arrays["wavelengths_nm"]
    np.testing.assert_allclose(img.bands.centers, lam, atol=1e-3)
    np.testing.assert_allclose(img.bands.bandwidths, np.diff(band_edges_nm(lam)), atol=1e-3)
    assert img.metadata["data ignore value"] == "nan"
    assert len(img.metadata["default bands"]) == 3
    assert img.metadata["acquisition time"].startswith(("2026", "2027", "2028", "2029", "203"))  # not 1970
    assert img.metadata["sensor type"] == header["instrument"]
    cube = np.moveaxis(np.asarray(img.load()), -1, 0)
    np.testing.assert_array_equal(cube, arrays["data"])


@pytest.mark.slow
def test_products_name_their_models_without_a_local_path(exported) -> None:
    products, _, _ = exported
    _, header = load(products / "residue_00000000.obp")
    assert header["created_utc"] > 1.7e9  # the simulated frame is dated when it was taken
    versions = header["model_versions"]
    if versions:  # the learned stages ran: the bundle by name and manifest hash
        assert "/" not in versions["bundle"] and len(versions["manifest_sha256"]) == 64


@pytest.mark.slow
def test_a_bad_file_is_reported_and_the_rest_exported(exported, tmp_path) -> None:
    products, _, _ = exported
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "broken_00000001.obp").write_bytes(b"OBPR\x02garbage")
    good = products / "quicklook_00000000.obp"
    proc = _cli("ground", "export", tmp_path / "in", good, "-o", tmp_path / "user", cwd=tmp_path)
    assert proc.returncode == 2 and "broken_00000001.obp" in proc.stderr
    assert (tmp_path / "user" / "quicklook_00000000.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_ground_decode_of_a_product_file_points_to_export_and_makes_no_folders(exported, tmp_path) -> None:
    products, _, _ = exported
    proc = _cli("ground", "decode", products / "cube_00000000.obp", "-o", tmp_path / "out", cwd=tmp_path)
    assert proc.returncode == 2 and "ground export" in proc.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_the_readme_load_example_runs(exported) -> None:
    products, _, _ = exported
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = readme.split("```python\n", 1)[1].split("```", 1)[0]
    code = "\n".join(line.strip() for line in block.splitlines())
    assert len(code.splitlines()) == 5
    space: dict = {}
    exec(code.replace("onboard-out/products", str(products)), space)  # noqa: S102 (our README)
    assert space["arrays"]["fractions"].shape[0] == 3


def test_a_receiver_folder_exports_its_products_not_its_quarantine_or_staging(tmp_path) -> None:
    from ground.export import export
    from onboard.formats.products import Product, ProductKind

    p = Product(ProductKind.QUICKLOOK, 3, 1.7e9, b"\x89PNG\r\n\x1a\nnot-decoded", "png")
    ground = tmp_path / "ground"
    for sub, blob in (("raw", p.to_bytes()), ("quarantine", b"OBPR refused"), (".staging/1-2", b"OBPR half")):
        (ground / sub).mkdir(parents=True)
        (ground / sub / "quicklook_00000003.obpr").write_bytes(blob)
    report = export([ground], tmp_path / "user")
    assert report.failed == {} and list(report.files) == [str(ground / "raw" / "quicklook_00000003.obpr")]
    assert (tmp_path / "user" / "quicklook_00000003.png").read_bytes() == p.payload
