"""Full-frame monochromatic sweeps: detector images simulated with the one forward model
(onboard.physics), characterised back from the frames alone, checked against the truth.

The instrument: 4 x 6 interferometers of 32 x 32 pixels, design indices 14-37 (OPD
2.45-6.5 µm, 3.7-9.6 fringes over the 400-1000 nm sweep), R 0.15-0.35 (or 0.5-0.7), a wedge of up to
20 nm OPD across a thumbnail (both axes), 150 lines, 12-bit detector with shot and read
noise, dark current, 1 % PRNU and dead / hot pixels.

Tolerances, and why:

* OPD: the issue's 0.5 % or 5 nm, and a median under 0.5 nm: a wedge of 10-20 nm is only
  measurable if region OPDs are good to a fraction of a nanometre (measured: max 0.1 nm).
* Wedge: each gradient component within 1e-4 µm/px (3 nm across the thumbnail, 15 % of the
  largest wedge), the dominant (column) one within 15 % (measured: max 0.3e-4 µm/px, 3 % at
  R 0.15-0.35; 0.8e-4 µm/px, 9 % at R 0.5-0.7).
* R < 0.02 and gain < 2 % RMS over the sweep, the issue's (measured: 2e-4 and 0.05 % at
  R 0.15-0.35, 0.003 and 0.9 % at R 0.5-0.7: each region averages 64 pixels, so the SNR is
  ~8 times the pixels').
* Maps: every dead or hot pixel inside a thumbnail found, under 0.1 % false alarms; the
  dark rate's error has the spread the dark stacks' own noise predicts (z-scores with
  standard deviation 0.85-1.15) and no bias (|mean z| < 0.05).
* Reconstruction with the characterised file against the oracle file (simulator's bank,
  same estimators): RMSE to the truth within 15 % of the oracle's, and the two cubes closer
  to each other than half the oracle's own error (measured: 0.056 vs 0.058, difference 0.017).
"""

import json

import numpy as np
import pytest
from conftest import smooth_reflectance

from calibration.acquisitions import AcquisitionError
from calibration.fullframe import (
    FullFrameSpec,
    characterise_full_frame,
    load_full_frame,
    trusted_regions,
    wedge_plane,
    write_simulated,
)
from calibration.simulate import truth_errors
from onboard.formats import calfile
from onboard.sources.simulated import calibrate_imspoc
from onboard.stages import radiometric
from onboard.stages.reconstruct import Reconstructor

N_BANDS = 8


def _run(tmp_path_factory, name: str, **kw):
    folder = tmp_path_factory.mktemp(name)
    _, inst = write_simulated(folder, FullFrameSpec(**kw))
    acq = load_full_frame(folder)
    return acq, inst, characterise_full_frame(acq)


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    return _run(tmp_path_factory, "clean")


@pytest.fixture(scope="module")
def faulty(tmp_path_factory):
    """2 % dead pixels and one line at 3 x the power (its fringe peaks clip)."""
    return _run(tmp_path_factory, "faulty", dead_fraction=0.02, saturated_line=True)


@pytest.fixture(scope="module")
def high(tmp_path_factory):
    """Higher finesse (R 0.5-0.7; a dimmer source keeps the Airy peaks below full well),
    with the same faults."""
    return _run(tmp_path_factory, "high", reflectivity=(0.5, 0.7), signal_e=2500.0,
                dead_fraction=0.02, saturated_line=True)


def _bank_errors(acq, inst, ff) -> dict:
    e = truth_errors(ff.bank, inst.bank, acq.sigma)
    e["grad_abs"] = np.abs(ff.bank.opd_gradient_um_per_px - inst.bank.opd_gradient_um_per_px)
    g_true = inst.bank.opd_gradient_um_per_px[:, 1]
    e["grad_col_rel"] = e["grad_abs"][:, 1] / np.abs(g_true)
    return e


def test_layout_found_on_the_flat(clean, faulty) -> None:
    for _, inst, ff in (clean, faulty):
        assert ff.layout.corners == inst.layout.corners
        assert ff.layout.thumb_shape == inst.layout.thumb_shape
        assert ff.layout.detector_shape == inst.layout.detector_shape


@pytest.mark.parametrize("case", ["clean", "faulty", "high"])
def test_opd_wedge_reflectivity_gain_against_truth(case, request) -> None:
    acq, inst, ff = request.getfixturevalue(case)
    e = _bank_errors(acq, inst, ff)
    assert np.all((e["opd_rel"] < 0.005) | (e["opd_abs_um"] < 0.005))
    assert np.median(e["opd_abs_um"]) < 0.0005
    assert e["grad_abs"].max() < 1e-4, e["grad_abs"].max()
    assert e["grad_col_rel"].max() < 0.15
    assert e["reflectivity_abs"].max() < 0.02
    assert e["gain_rel"].max() < 0.02
    # a wedge is a plane: the region OPDs must lie on it to within a nanometre
    assert ff.plane_rms_um.max() < 0.001
    assert ff.thumbnails.checks["r_outside_0_1"] == 0


def test_dead_pixels_and_a_saturated_line_move_the_figures_little(clean, faulty) -> None:
    a, b = _bank_errors(*clean), _bank_errors(*faulty)
    assert faulty[2].counts["saturated_thumbnail_lines"] > 0
    for k in ("opd_abs_um", "reflectivity_abs", "gain_rel"):
        # < 10 % of the clean median, or within a floor far below every tolerance
        floor = {"opd_abs_um": 1e-4, "reflectivity_abs": 1e-4, "gain_rel": 5e-4}[k]
        assert np.median(b[k]) < 1.1 * np.median(a[k]) + floor, k


@pytest.mark.parametrize("case", ["clean", "faulty"])
def test_radiometric_maps_against_the_detector(case, request) -> None:
    acq, inst, ff = request.getfixturevalue(case)
    det, maps = inst.detector, ff.maps
    inside = inst.layout.place(np.ones((len(inst.layout), *inst.thumb_shape), bool), fill=False)
    bad_true = det.dead | det.hot
    assert np.all(maps.bad[bad_true & inside]), "a dead or hot pixel inside a thumbnail was missed"
    assert np.all(maps.bad[det.hot])
    assert (maps.bad & ~bad_true).mean() < 0.001
    good = ~maps.bad
    n = acq.dark.shape[1]
    t1, t2 = acq.dark_exposures_s
    s1, s2 = (acq.dark[i].astype(float).std(0, ddof=1) for i in (0, 1))
    predicted = np.sqrt((s1**2 + s2**2) / n) / (t2 - t1)
    err = maps.dark_dn_s - det.dark_map / inst.detector_spec.electrons_per_dn
    ok = good & (predicted > 0)
    z = err[ok] / predicted[ok]
    assert abs(z.mean()) < 0.05 and 0.85 < z.std() < 1.15, (z.mean(), z.std())
    assert abs(float(np.mean(maps.bias_dn[good])) - inst.detector_spec.bias_dn) < 0.1
    # the flat keeps the pixel response: PRNU is 1 %, what remains after dividing is noise
    judged = good & inside & (maps.flat != 1.0)
    assert np.std((det.gain_map / maps.flat)[judged] / np.mean(det.gain_map[judged])) < 0.005


def test_calibration_file_flies_as_well_as_the_oracle(clean, tmp_path) -> None:
    acq, inst, ff = clean
    path = tmp_path / "fullframe.cal"
    ff.calibration(n_bands=N_BANDS).write(path)
    cal = calfile.read(path)
    assert cal.layout == inst.layout
    assert cal.radiometric.bad.any() and abs(float(np.median(cal.radiometric.bias_dn)) - 100) < 1
    assert cal.bank.opd_gradient_um_per_px.any()
    assert cal.provenance["full_frame"]["regions"] == [4, 4]
    json.dumps(cal.provenance)
    oracle = calibrate_imspoc(inst, n_bands=N_BANDS)
    grid = inst.scene_grid()
    refl = smooth_reflectance(grid, inst.thumb_shape, seed=4)
    b, h, w = refl.shape
    truth = np.stack([np.interp(cal.wavelengths_nm, grid, refl.reshape(b, -1)[:, p])
                      for p in range(h * w)], 1).reshape(-1, h, w)
    frame = inst.frame(refl, grid, np.random.default_rng(9))
    cubes = []
    for c in (oracle, cal):
        corrected = radiometric.correct(frame, c.radiometric, acq.saturation_dn)
        cubes.append(Reconstructor(c).reconstruct(corrected)[0])
    valid = cubes[0].valid & cubes[1].valid
    assert valid.mean() > 0.99
    rmse = [np.sqrt(np.mean((c.data - truth)[:, valid] ** 2)) for c in cubes]
    diff = np.sqrt(np.mean((cubes[1].data - cubes[0].data)[:, valid] ** 2))
    assert rmse[1] < 1.15 * rmse[0], rmse
    assert diff < 0.5 * rmse[0], (diff, rmse)


def test_a_failed_region_is_set_aside_before_the_plane() -> None:
    rng = np.random.default_rng(0)
    offsets = np.stack(np.meshgrid(np.arange(4) * 8 - 12.0, np.arange(4) * 8 - 12.0,
                                   indexing="ij"), -1).reshape(-1, 2)
    grad = np.array([[2e-4, 6e-4], [-1e-4, 9e-4]])
    opd = np.array([[5.0], [6.0]]) + grad @ offsets.T + rng.normal(0, 2e-4, (2, 16))
    rms = np.full((2, 16), 0.01)
    opd[0, 5] -= 0.286  # a region stuck in a local minimum, as one was at R 0.5-0.7
    rms[0, 5] = 0.75
    opd[1, 9] += 0.05  # a fit that looks fine but sits 50 nm off its neighbours' plane
    use = trusted_regions(opd, rms, offsets)
    assert not use[0, 5] and not use[1, 9] and use.sum() == 30
    centre, g, _ = wedge_plane(opd, offsets, use)
    assert np.all(np.abs(centre - [5.0, 6.0]) < 2e-4) and np.all(np.abs(g - grad) < 2e-5)
    assert np.abs(wedge_plane(opd, offsets)[1] - grad).max() > 1e-4  # the plain plane is pulled


def test_wedge_not_measured_where_regions_cannot_fix_the_opd(tmp_path_factory) -> None:
    """Interferometers with 1-8 fringes across the sweep: below ~3 a region's OPD trades
    against its gain series, its regions scatter off any plane, and the wedge is not
    claimed; the others' wedges are measured."""
    acq, inst, ff = _run(tmp_path_factory, "few", grid=(2, 4), first_index=1, opd_step_um=0.7,
                         n_lines=120)
    fringes = inst.bank.opd_um * np.ptp(acq.sigma)
    assert ff.wedge_measured[fringes >= 4].all() and not ff.wedge_measured[fringes < 2.5].any()
    assert ff.counts["wedge_not_measured"] == int((~ff.wedge_measured).sum())
    off = ~ff.wedge_measured
    assert np.all(ff.bank.opd_gradient_um_per_px[off] == 0)
    np.testing.assert_array_equal(ff.bank.opd_um[off], ff.thumbnails.bank.opd_um[off])
    g_err = np.abs(ff.bank.opd_gradient_um_per_px - inst.bank.opd_gradient_um_per_px)
    assert g_err[ff.wedge_measured].max() < 1e-4


def _copy(src, dst):
    dst.mkdir()
    for p in src.iterdir():
        (dst / p.name).write_bytes(p.read_bytes())
    return dst


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny")
    write_simulated(folder, FullFrameSpec(grid=(2, 2), thumb=12, n_lines=10))
    return folder


@pytest.mark.parametrize("damage, message", [
    (lambda d: (d / "frames.npy").unlink(), "frames.npy is missing"),
    (lambda d: np.save(d / "norm.npy", np.ones(9)), "one of each per line"),
    (lambda d: np.save(d / "dark.npy", np.load(d / "dark.npy")[0]), "expected"),
    (lambda d: np.save(d / "flat.npy", np.load(d / "flat.npy")[:, :-1]), "flat.npy is"),
    (lambda d: np.save(d / "frames.npy", np.where(np.arange(10)[:, None, None] == 3, np.nan,
                                                  np.load(d / "frames.npy").astype(float))),
     "NaN"),
    (lambda d: (d / "frames.npy").write_bytes((d / "frames.npy").read_bytes()[:500]), "readable"),
    (lambda d: (d / "options.json").write_text(json.dumps(
        {**json.loads((d / "options.json").read_text()), "dark_exposures_s": [0.05]})),
     "dark_exposures_s"),
], ids=["missing", "norm-length", "dark-shape", "flat-shape", "nan", "truncated", "options"])
def test_bad_input_is_one_clear_error(tiny, tmp_path, damage, message) -> None:
    folder = _copy(tiny, tmp_path / "acq")
    damage(folder)
    with pytest.raises(AcquisitionError, match=message):
        load_full_frame(folder)


def test_unlit_flat_is_refused(tiny, tmp_path) -> None:
    folder = _copy(tiny, tmp_path / "acq")
    np.save(folder / "flat.npy", np.load(folder / "dark.npy")[1])
    with pytest.raises(AcquisitionError, match="flat.npy"):
        characterise_full_frame(load_full_frame(folder))
