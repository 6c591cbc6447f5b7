"""The shipped spectral library: contents, physics of each spectrum, resampling, the lean
reader, and the command that rebuilds it."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from onboard.scene.library import LIBRARY_PATH, load, resample


@pytest.fixture(scope="module")
def lib():
    return load()


def test_shipped_file_is_small_and_documented(lib) -> None:
    assert LIBRARY_PATH.stat().st_size < 1_000_000
    np.testing.assert_array_equal(lib.wavelengths_nm, np.arange(400, 2501))
    meta = lib.meta
    assert meta["command"] == "onboard export spectra -o onboard/scene/data/spectral_library.npz"
    assert meta["generator_version"] >= 1 and meta["prosail_version"] != "unknown"
    assert len(meta["green"]) == len(lib.green_names) and len(meta["residue"]) == len(lib.residue_names)
    for kind in ("green", "residue"):
        assert len(lib.variants(kind, "train")) >= 2 and len(lib.variants(kind, "eval")) >= 2
    for spectra in (lib.soil, lib.green, lib.residue):
        assert np.isfinite(spectra).all() and spectra.min() >= 0 and spectra.max() <= 1


def test_spectra_have_their_physical_features(lib) -> None:
    at = {nm: int(nm - 400) for nm in (550, 670, 800, 1450, 1650, 2030, 2100, 2200)}
    green, residue, (dry, wet) = lib.green, lib.residue, lib.soil
    # green canopies: red edge and a green peak; water absorption at 1450 nm
    assert (green[:, at[800]] > 4 * green[:, at[670]]).all()
    assert (green[:, at[550]] > green[:, at[670]]).all()
    assert (green[:, at[1450]] < green[:, at[1650]]).all()
    # residue: no red edge, and the cellulose-lignin absorption near 2100 nm
    assert (residue[:, at[800]] < 2 * residue[:, at[670]]).all()
    assert (residue[:, at[2100]] < 0.5 * (residue[:, at[2030]] + residue[:, at[2200]])).all()
    # moister residue variants are darker in the short-wave infrared
    names = list(lib.residue_names)
    assert residue[names.index("residue-fresh-moist"), at[1650]] < residue[names.index("residue-fresh-dry"), at[1650]]
    # wet soil is darker than dry soil at every wavelength
    assert (wet < dry).all()


def test_resample_interp_and_band_average() -> None:
    src = np.arange(400.0, 2501.0)
    line = np.stack([0.1 + 1e-4 * (src - 400), np.full_like(src, 0.3)])
    grid = np.arange(900.0, 1701.0, 10.0)
    for method in ("interp", "band"):  # a straight line and a constant are kept by both
        out = resample(line, src, grid, method)
        np.testing.assert_allclose(out[0], 0.1 + 1e-4 * (grid - 400), atol=1e-12)
        np.testing.assert_allclose(out[1], 0.3, atol=1e-12)
    step = (src >= 1000).astype(float)  # a band across the step sees half of it
    np.testing.assert_allclose(resample(step, src, [1000.0], "band", fwhm_nm=20)[0, 0], 0.5, atol=0.03)
    assert resample(step, src, [1000.0], "interp")[0, 0] == 1.0
    # a narrow absorption line: averaging over 50 nm dilutes it as a wide band would
    dip = 1 - 0.5 * (np.abs(src - 1400) < 2)
    assert resample(dip, src, [1400.0], "band", fwhm_nm=50)[0, 0] == pytest.approx(1 - 0.5 * 4 / 50, abs=0.011)
    with pytest.raises(ValueError, match="outside"):
        resample(line, src, [350.0, 500.0])
    with pytest.raises(ValueError, match="method"):
        resample(line, src, grid, "cubic")


def test_reader_refuses_damaged_or_foreign_files(tmp_path) -> None:
    with np.load(LIBRARY_PATH) as z:
        arrays = {k: z[k] for k in z.files}
    future = dict(arrays, meta=np.frombuffer(json.dumps({"format_version": 99}).encode(), np.uint8))
    np.savez(tmp_path / "future.npz", **future)
    with pytest.raises(ValueError, match="format version 99.*onboard export spectra"):
        load(str(tmp_path / "future.npz"))
    np.savez(tmp_path / "partial.npz", **{k: v for k, v in arrays.items() if k != "green"})
    with pytest.raises(ValueError, match="lacks.*green"):
        load(str(tmp_path / "partial.npz"))
    with pytest.raises(FileNotFoundError, match="onboard export spectra"):
        load(str(tmp_path / "absent.npz"))


def test_simulator_runs_without_prosail_numba_or_scipy() -> None:
    code = ("import sys; import numpy as np; from onboard.scene.farmland import FarmlandScene;"
            "s = FarmlandScene.generate(size=64, seed=1);"
            "next(s.track(np.linspace(450, 950, 30), (32, 32), method='band'));"
            "bad = [m for m in ('prosail', 'numba', 'scipy', 'torch') if m in sys.modules];"
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_export_spectra_rebuilds_the_shipped_library(tmp_path: Path) -> None:
    pytest.importorskip("prosail", reason="the generator needs prosail (pip install 'onboard[ground]')")
    out = tmp_path / "lib.npz"
    done = subprocess.run(["onboard", "export", "spectra", "-o", str(out)], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    with np.load(out) as new, np.load(LIBRARY_PATH) as shipped:
        counts = f"{len(shipped['soil'])} soil, {len(shipped['green'])} green, {len(shipped['residue'])} residue"
        assert counts in done.stdout, done.stdout
        assert sorted(new.files) == sorted(shipped.files)
        for key in new.files:  # bit for bit: the shipped file is what the command makes
            np.testing.assert_array_equal(new[key], shipped[key], err_msg=key)
    bad = subprocess.run(["onboard", "export", "spectra", "-o", str(tmp_path / "lib.txt")],
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode != 0 and ".npz" in bad.stderr
