"""The shipped spectral library: contents, physics of each spectrum, resampling, the lean
reader, and the command that rebuilds it."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from onboard.scene.library import KINDS, LIBRARY_PATH, SPLITS, load, resample


@pytest.fixture(scope="module")
def lib():
    return load()


def test_shipped_file_is_small_and_documented(lib) -> None:
    assert LIBRARY_PATH.stat().st_size < 1_000_000
    np.testing.assert_array_equal(lib.wavelengths_nm, np.arange(400, 2451, 10))
    meta = lib.meta
    assert meta["command"] == "onboard export spectra -o onboard/scene/data/spectral_library.npz"
    assert meta["generator_version"] >= 3 and "split_rule" in meta and "caps" in meta
    assert set(lib.sources) == {"earthlib", "usgs1995", "prosail"}
    for kind in KINDS:
        for split in SPLITS:
            assert len(lib.indices(kind, split)) >= 3, (kind, split)
            for source in set(lib.sources):  # the cap holds per source
                n = sum(k == kind and s == split and src == source
                        for k, s, src in zip(lib.kinds, lib.splits, lib.sources, strict=True))
                assert n <= meta["caps"][kind][split], (kind, split, source)
    assert np.isfinite(lib.spectra).all() and lib.spectra.min() > 0 and lib.spectra.max() <= 1.02
    # the measured real soils outnumber everything else: real variability, not a few models
    soils = [i for i in lib.indices("soil", "train") if lib.sources[i] == "earthlib"]
    assert len(soils) >= 200 and len({lib.sites[i] for i in soils}) >= 150


def test_split_is_by_site_and_reproducible(lib) -> None:
    """No site lies in two splits, and a site's split is its hash's, whatever else is in
    the library."""
    from export.spectral_library import split_of

    by_site: dict[str, set[str]] = {}
    for site, split in zip(lib.sites, lib.splits, strict=True):
        by_site.setdefault(site, set()).add(split)
    assert all(len(v) == 1 for v in by_site.values())
    real = [i for i, src in enumerate(lib.sources) if src != "prosail"]
    assert all(lib.splits[i] == split_of(lib.sites[i]) for i in real)
    shares = np.mean([[split_of(f"site-{k}") == s for s in SPLITS] for k in range(3000)], axis=0)
    np.testing.assert_allclose(shares, [0.6, 0.2, 0.2], atol=0.03)


def test_water_band_gaps_are_bridged_and_marked(lib) -> None:
    """earthlib has no samples in 1360-1450 and 1800-1950 nm: those are marked unmeasured,
    straight lines between the measured neighbours, and inside the bands the residue
    stages do not read."""
    from onboard.stages.residue import usable_bands

    wl = lib.wavelengths_nm
    earth = [i for i, src in enumerate(lib.sources) if src == "earthlib"]
    gap = ~lib.measured[earth[0]]
    np.testing.assert_array_equal(wl[gap], np.concatenate([np.arange(1360, 1451, 10), np.arange(1800, 1951, 10)]))
    assert not usable_bands(wl[gap]).any()
    s = lib.spectra[earth[0]]
    lo, hi = wl.searchsorted(1350), wl.searchsorted(1460)
    np.testing.assert_allclose(s[lo:hi + 1], np.linspace(s[lo], s[hi], hi - lo + 1), rtol=1e-5)
    assert lib.measured[[i for i, src in enumerate(lib.sources) if src == "prosail"]].all()


def test_spectra_have_their_physical_features(lib) -> None:
    at = {nm: int(np.searchsorted(lib.wavelengths_nm, nm)) for nm in (550, 670, 800, 1650, 2100, 2030, 2200)}
    green = lib.spectra[[i for i, k in enumerate(lib.kinds) if k == "green"]]
    residue = lib.spectra[[i for i, k in enumerate(lib.kinds) if k == "residue"]]
    soil = lib.spectra[[i for i, k in enumerate(lib.kinds) if k == "soil"]]
    # green vegetation: red edge and a green peak
    assert (green[:, at[800]] > 2.5 * green[:, at[670]]).mean() > 0.95
    assert (green[:, at[550]] > green[:, at[670]]).mean() > 0.95
    # dry vegetation: (nearly) no red edge; the cellulose-lignin absorption near 2100 nm
    assert (residue[:, at[800]] < 2.5 * residue[:, at[670]]).mean() > 0.9
    assert (residue[:, at[2100]] < 0.5 * (residue[:, at[2030]] + residue[:, at[2200]])).mean() > 0.95
    # soils: no red edge and no cellulose absorption (the feature neither sensor covers)
    assert (soil[:, at[800]] < 2.0 * soil[:, at[670]]).mean() > 0.99
    assert (soil[:, at[2100]] < 0.5 * (soil[:, at[2030]] + soil[:, at[2200]])).mean() < 0.02
    # moistening darkens a soil everywhere
    assert (lib.wet_ratio < 1).all() and (lib.wet_ratio > 0).all()


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
    np.savez(tmp_path / "partial.npz", **{k: v for k, v in arrays.items() if k != "spectra"})
    with pytest.raises(ValueError, match="lacks.*spectra"):
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
    pytest.importorskip("earthlib", reason="the generator needs earthlib (pip install 'onboard[ground]')")
    out = tmp_path / "lib.npz"
    done = subprocess.run([sys.executable, "-m", "onboard", "export", "spectra", "-o", str(out)], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    with np.load(out) as new, np.load(LIBRARY_PATH) as shipped:
        pairs = list(zip(shipped["kinds"].tolist(), shipped["splits"].tolist(), strict=True))
        counts = f"soil {pairs.count(('soil', 'train'))}/{pairs.count(('soil', 'val'))}/{pairs.count(('soil', 'test'))}"
        assert counts in done.stdout, done.stdout
        assert sorted(new.files) == sorted(shipped.files)
        for key in new.files:  # bit for bit: the shipped file is what the command makes
            np.testing.assert_array_equal(new[key], shipped[key], err_msg=key)
    bad = subprocess.run([sys.executable, "-m", "onboard", "export", "spectra", "-o", str(tmp_path / "lib.txt")],
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode != 0 and ".npz" in bad.stderr


def test_training_library_holds_every_train_spectrum_and_nothing_held_out(lib) -> None:
    pytest.importorskip("prosail", reason="the generator needs prosail (pip install 'onboard[ground]')")
    pytest.importorskip("earthlib", reason="the generator needs earthlib (pip install 'onboard[ground]')")
    from export.spectral_library import split_of, training_library

    full = training_library()
    assert set(full.splits) == {"train", "shared"}
    # no site of a held-out split reaches training (the split is by site)
    held_out = {s for s, sp in zip(lib.sites, lib.splits, strict=True) if sp in ("val", "test")}
    assert not held_out & set(full.sites)
    assert all(split_of(s) == "train" for s, src in zip(full.sites, full.sources, strict=True)
               if src != "prosail")
    # soils one per site, more sites than the shipped subset; every shipped residue and green
    soil_sites = [s for s, k in zip(full.sites, full.kinds, strict=True) if k == "soil"]
    assert len(set(soil_sites)) == len(soil_sites) > 1.5 * len(lib.indices("soil", "train"))
    shipped = {n for n, k, sp in zip(lib.names, lib.kinds, lib.splits, strict=True)
               if sp == "train" and k != "soil"}
    assert shipped <= set(full.names)
