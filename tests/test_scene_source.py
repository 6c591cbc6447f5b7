"""The real-scene source (``onboard/sources/scene.py``) on cubes whose answer is known by
construction: the scene file format and its refusals, bad bands, spectral range and gaps, area
resampling and the flight track; and ``onboard run --scene`` refusing in one line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from onboard.sources.scene import (
    SceneError,
    SceneTrack,
    area_weights,
    on_grid,
    read_scene,
    write_scene,
)

#: An AVIRIS-like grid (10 nm) with the 1.4 µm water bands missing, as in Jasper Ridge.
WL = np.concatenate([np.arange(400.0, 1350.0, 10.0), np.arange(1450.0, 2500.0, 10.0)])


def linear_cube(rows: int = 20, cols: int = 30, wl: np.ndarray = WL) -> np.ndarray:
    """(rows, cols, bands) reflectance linear in wavelength, a different line at each pixel:
    linear interpolation and area averaging reproduce it exactly."""
    r, c = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
    slope = 1e-4 * (1 + (r + c) % 5)
    return (0.1 + 0.01 * r / rows)[..., None] + slope[..., None] * (wl - 400.0) / 10


def test_a_scene_reads_back_as_written(tmp_path: Path) -> None:
    cube = linear_cube()
    scene = read_scene(write_scene(tmp_path / "s.npz", cube, WL))
    assert scene.name == "s" and scene.notes == ()
    np.testing.assert_array_equal(scene.wavelengths_nm, WL)
    np.testing.assert_allclose(scene.reflectance, cube.transpose(2, 0, 1), rtol=1e-6)


def test_bad_bands_are_dropped_and_negatives_clipped_and_said(tmp_path: Path) -> None:
    cube = linear_cube()
    cube[..., 3] = np.nan          # a band with no data
    cube[5, 5, 4] = np.inf         # one bad pixel spoils its band
    cube[..., 7] = 0.0             # a zeroed water band
    cube[0, 0, 10] = -0.01         # over-corrected
    scene = read_scene(write_scene(tmp_path / "s.npz", cube, WL))
    assert scene.reflectance.shape == (len(WL) - 3, 20, 30)
    assert not np.isin(scene.wavelengths_nm, WL[[3, 4, 7]]).any()
    assert scene.reflectance.min() == 0.0
    assert any("3 of 200 bands dropped" in n and "430-440" in n and "470" in n for n in scene.notes)
    assert any("negative, clipped to 0" in n for n in scene.notes)


@pytest.mark.parametrize(("arrays", "message"), [
    ({"reflectance": np.arange(48.0).reshape(4, 4, 3) * 200.0, "wavelengths_nm": [500.0, 600.0, 700.0]},
     "divide the cube by its scale"),
    ({"reflectance": np.ones((4, 4, 3))}, "no wavelengths_nm"),
    ({"reflectance": np.ones((4, 3)), "wavelengths_nm": [500.0, 600.0, 700.0]}, "must be (rows, cols, bands)"),
    ({"reflectance": np.ones((4, 4, 3)), "wavelengths_nm": [500.0, 600.0]}, "must be (rows, cols, bands)"),
    ({"reflectance": np.ones((4, 4, 3)), "wavelengths_nm": [700.0, 600.0, 500.0]}, "strictly ascending"),
    ({"reflectance": np.ones((4, 4, 3)), "wavelengths_nm": [0.5, 0.6, 0.7]}, "micrometres?"),
    ({"reflectance": np.full((4, 4, 3), "a"), "wavelengths_nm": [500.0, 600.0, 700.0]}, "real numbers"),
    ({"reflectance": np.ones((4, 4, 3)), "wavelengths_nm": [500.0, 600.0, 700.0]}, "no usable band"),
    ({"reflectance": np.where(np.arange(3) == 1, 0.5, np.nan) * np.ones((4, 4, 3)),
      "wavelengths_nm": [500.0, 600.0, 700.0]}, "no usable band"),
])
def test_a_scene_that_cannot_be_flown_is_refused_by_name(tmp_path: Path, arrays: dict, message: str) -> None:
    path = tmp_path / "bad.npz"
    np.savez(path, **{k: np.asarray(v) for k, v in arrays.items()})
    with pytest.raises(SceneError, match=r"bad\.npz") as err:
        read_scene(path)
    assert message in str(err.value)


def test_a_corrupt_or_foreign_file_is_refused_with_what_to_do(tmp_path: Path) -> None:
    good = write_scene(tmp_path / "good.npz", linear_cube(), WL).read_bytes()
    for name, data, message in (("cut.npz", good[: len(good) // 2], "not a readable scene .npz"),
                                ("noise.npz", bytes(range(256)) * 8, "not a readable scene .npz"),
                                ("cube.npy", good, "an .npy holds no wavelengths"),
                                ("cube.mat", good, "onboard export scene")):
        (tmp_path / name).write_bytes(data)
        with pytest.raises(SceneError, match=message):
            read_scene(tmp_path / name)
    with pytest.raises(SceneError, match="cannot read the scene"):
        read_scene(tmp_path / "absent.npz")


def test_linear_spectra_are_resampled_exactly_and_the_gap_is_named(tmp_path: Path) -> None:
    scene = read_scene(write_scene(tmp_path / "s.npz", linear_cube(), WL))
    grid = np.arange(900.0, 1701.0, 10.0)
    out, notes = on_grid(scene, grid, "finch-like", (900.0, 1700.0))
    np.testing.assert_allclose(out, linear_cube(wl=grid).transpose(2, 0, 1), rtol=1e-5)
    assert notes == ["scene: instrument bands 1350-1440 nm fall in the cube's gap 1340-1450 nm "
                     "(bands missing or dropped): interpolated across it"]


def test_instrument_bands_outside_the_cube_are_refused_with_both_ranges(tmp_path: Path) -> None:
    wl = np.linspace(401.0, 889.0, 50)  # Samson's range
    scene = read_scene(write_scene(tmp_path / "samson.npz", linear_cube(wl=wl), wl))
    with pytest.raises(SceneError) as err:
        on_grid(scene, np.arange(452.5, 1000.0, 5.0), "imspoc-default", (450.0, 1000.0))
    assert str(err.value).startswith("scene samson covers 396-894 nm but the simulated imspoc-default "
                                     "sees 450-1000 nm: give a cube that covers the instrument's range, "
                                     "or fly another --sensor")
    # half a band beyond the last centre is inside the cube's last band
    out, _ = on_grid(scene, np.array([450.0, 893.0]), "x", (450.0, 893.0))
    np.testing.assert_allclose(out[1], scene.reflectance[-1], rtol=1e-6)


def test_area_weights_average_down_and_repeat_up() -> None:
    np.testing.assert_allclose(area_weights(4, 2), [[0.5, 0.5, 0, 0], [0, 0, 0.5, 0.5]])
    np.testing.assert_allclose(area_weights(2, 4), [[1, 0], [1, 0], [0, 1], [0, 1]])
    np.testing.assert_allclose(area_weights(3, 2), [[2 / 3, 1 / 3, 0], [0, 1 / 3, 2 / 3]])
    np.testing.assert_array_equal(area_weights(7, 7), np.eye(7))
    x = np.random.default_rng(0).uniform(size=100)
    for n in (37, 64, 128):  # area averaging keeps the mean
        assert area_weights(100, n).sum(0) @ x / n == pytest.approx(x.mean())


def test_the_track_covers_the_scene_then_flies_it_again(tmp_path: Path) -> None:
    cube = linear_cube(rows=100, cols=40)
    scene = read_scene(write_scene(tmp_path / "s.npz", cube, WL))
    grid = np.arange(500.0, 901.0, 20.0)
    track = SceneTrack(scene, grid, (32, 20), "test", (500.0, 900.0))
    # 40 columns onto a 20-pixel swath: 100 rows become 50; 32-row frames start at 0 and 18
    assert track.cube.shape == (len(grid), 50, 20) and track.starts == [0, 18]
    tiles = [t for _, t in zip(range(5), track, strict=False)]
    assert [t.origin for t in tiles] == [(0, 0), (18, 0), (0, 0), (18, 0), (0, 0)]
    assert all(t.fractions is None and t.tillage is None for t in tiles)
    # each instrument pixel is the mean of the 2 x 2 cube pixels under it
    truth = linear_cube(rows=100, cols=40, wl=grid).reshape(50, 2, 20, 2, -1).mean((1, 3)).transpose(2, 0, 1)
    np.testing.assert_allclose(tiles[1].reflectance, truth[:, 18:50], rtol=1e-5)
    wide = read_scene(write_scene(tmp_path / "wide.npz", linear_cube(rows=20, cols=100), WL))
    with pytest.raises(SceneError, match="20 x 100 px: .* 13 rows long, shorter than one 64-row frame; give a cube of at least 100 rows, or crop its width"):
        SceneTrack(wide, grid, (64, 64), "test", (500.0, 900.0))


def _run(*args: str, tmp_path: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    return subprocess.run([sys.executable, "-m", "onboard", "run", "--quiet", "--frames", "1",
                           "--out", str(tmp_path / "out"), *args],
                          capture_output=True, text=True, env=env, timeout=600)


def test_run_refuses_a_scene_it_cannot_fly_in_one_line(tmp_path: Path) -> None:
    wl = np.linspace(401.0, 889.0, 50)
    path = write_scene(tmp_path / "vnir.npz", linear_cube(wl=wl), wl)
    proc = _run("--sensor", "pushbroom", "--scene", str(path), tmp_path=tmp_path)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "scene vnir covers 396-894 nm but the simulated finch-like sees 900-1700 nm" in proc.stderr
    assert not (tmp_path / "out").exists()
    (tmp_path / "junk.npz").write_bytes(b"PK\x03\x04 not really a zip")
    proc = _run("--scene", str(tmp_path / "junk.npz"), tmp_path=tmp_path)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "junk.npz: not a readable scene .npz" in proc.stderr
    proc = _run("--scene", str(path), "--replay", str(tmp_path), tmp_path=tmp_path)
    assert proc.returncode == 1 and "scene and replay both give the frames" in proc.stderr
