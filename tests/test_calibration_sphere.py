"""The absolute radiance gain from an integrating sphere of certified radiance (issue 20):
simulated from physics with a known gain, recovered through the real command line, and bad
certificates or sphere frames refused with the reason."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from calibration.certificate import CertificateError, parse_certificate, write_certificate
from calibration.sphere import (
    SphereError,
    measure_gain,
    simulate_sphere,
    tungsten_certificate,
    write_sphere,
)
from onboard.formats import calfile
from onboard.physics.illumination import LAB_PANEL_PEAK_RADIANCE
from onboard.physics.imspoc import default_instrument
from onboard.sources.simulated import calibrate_imspoc

#: Relative tolerance of the recovered gain per band (455-975 nm, 8 frames of a 2900 K
#: sphere at 0.3 W m-2 sr-1 nm-1 peak): over 8 seeds the error was within -0.9..+2.6 %
#: (the reconstruction's band model: the simulated lab-panel calibration's own gain scatters
#: -2.9..+5.4 % about the truth) with a standard deviation up to 1.3 % in the blue.
TOLERANCE = 0.04


@pytest.fixture(scope="module")
def rig():
    inst = default_instrument(0)
    cal = calibrate_imspoc(inst)
    # the simulator's truth: DN/s per W m-2 sr-1 nm-1 of a unit-gain response, flat in wavelength
    truth = inst.photo_rate_e_s / inst.detector_spec.electrons_per_dn / LAB_PANEL_PEAK_RADIANCE
    return inst, replace(cal, radiance_gain=None, radiance_gain_uncertainty=None), truth


def _onboard(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "onboard", *args], capture_output=True,
                          text=True, timeout=300)


def test_sphere_gain_recovers_the_simulated_instruments_gain(rig) -> None:
    inst, cal, truth = rig
    cert = tungsten_certificate(0.3, relative_uncertainty=0.01)
    measured = measure_gain(cal, simulate_sphere(inst, cert, seed=3), cert)
    err = measured.gain / truth - 1
    assert np.max(np.abs(err)) < TOLERANCE, np.round(100 * err, 2)
    # the certificate's 1 % is the floor of the stated uncertainty; the frames add to it
    assert np.all(measured.uncertainty >= 0.01) and np.all(measured.uncertainty < 0.05)
    assert np.all(measured.certificate == pytest.approx(0.01))
    # each interferometer's signal over the (oracle) bank's prediction is the truth too
    assert np.median(measured.interferometer_ratio) == pytest.approx(truth, rel=0.01)
    assert measured.summary()["interferometer_ratio_spread"] < 0.03


def test_pushbroom_gain_per_detector_band_recovers_the_simulated_instruments() -> None:
    """The FINCH-like push-broom (900-1700 nm, 81 bands): within 2 % of the truth in every
    band (measured: 1.2 % at most, median 0.03 %), with no interferometer check."""
    from onboard.physics.pushbroom import finch_like, ingaas_quantum_efficiency
    from onboard.sources.simulated import calibrate_pushbroom

    pb = finch_like(cross_track=32)
    cal = replace(calibrate_pushbroom(pb), radiance_gain=None, radiance_gain_uncertainty=None)
    truth = (pb.photo_rate_e_s * ingaas_quantum_efficiency(pb.wavelengths_nm) * pb.band_width_nm()
             / pb.detector_spec.electrons_per_dn / LAB_PANEL_PEAK_RADIANCE)
    cert = tungsten_certificate(0.3)
    measured = measure_gain(cal, simulate_sphere(pb, cert, seed=1), cert)
    assert np.max(np.abs(measured.gain / truth - 1)) < 0.02
    assert measured.interferometer_ratio is None and "interferometer_ratio_median" not in measured.summary()
    with pytest.raises(CertificateError, match="covers 350-1100 nm"):
        measure_gain(cal, simulate_sphere(pb, cert, seed=1),
                     tungsten_certificate(0.3, wavelength_nm=np.arange(350.0, 1101.0, 5.0)))


def test_a_longer_exposure_and_a_dimmer_sphere_give_the_same_gain(rig) -> None:
    """The gain is per second and per unit radiance: neither the exposure nor the sphere's
    level may move it beyond the noise."""
    inst, cal, _ = rig
    bright, dim = tungsten_certificate(0.3), tungsten_certificate(0.1)
    a = measure_gain(cal, simulate_sphere(inst, bright, seed=4), bright)
    b = measure_gain(cal, simulate_sphere(inst, dim, exposure_s=0.03, seed=5), dim)
    assert np.max(np.abs(a.gain / b.gain - 1)) < 3 * np.max(np.hypot(a.frames_noise, b.frames_noise)) + 0.01


def test_saturated_and_dark_sphere_frames_are_refused(rig) -> None:
    inst, cal, _ = rig
    cert = tungsten_certificate(1.0)
    with pytest.raises(SphereError, match="saturated.*lower the exposure"):
        measure_gain(cal, simulate_sphere(inst, cert, seed=1), cert)
    off = tungsten_certificate(1e-6)
    with pytest.raises(SphereError, match="sphere frames are dark.*shutter"):
        measure_gain(cal, simulate_sphere(inst, off, seed=1), cert)
    lit = simulate_sphere(inst, tungsten_certificate(0.3), seed=1)
    with pytest.raises(SphereError, match="calibration's detector"):
        measure_gain(cal, replace(lit, frames=lit.frames[:, :-1]), cert)


GOOD = ("# source: test sphere\n# units: W m-2 sr-1 nm-1\n# coverage_factor: 2\n"
        "wavelength_nm,radiance,uncertainty\n300,0.1,0.002\n700,0.2,0.004\n1100,0.3,0.006\n")


@pytest.mark.parametrize(("text", "message"), [
    (GOOD.replace("# units: W m-2 sr-1 nm-1\n", ""), "no '# units"),
    (GOOD.replace("W m-2 sr-1 nm-1", "W m-2 nm-1"), "not a spectral radiance"),
    (GOOD.replace("# coverage_factor: 2\n", ""), "coverage_factor"),
    (GOOD.replace("700,", "1200,"), r"strictly ascending: line 7 \(1100 nm\) follows 1200"),
    (GOOD.replace("700,", "300,"), "strictly ascending"),
    (GOOD.replace("0.2,0.004", "-0.2,0.004"), "line 6: radiance -0.2 is not positive"),
    (GOOD.replace("0.2,0.004", "0.2,abc"), "line 6.*not three numbers"),
    (GOOD.replace("0.2,0.004", "0.2,0.3"), "uncertainty 0.3 must be"),
    (GOOD.replace("radiance,", "L,"), "header must be"),
    (GOOD.replace("0.2,0.004", "0.2"), "line 6: 2 values"),
])
def test_a_malformed_certificate_is_refused_with_the_line(text: str, message: str) -> None:
    with pytest.raises(CertificateError, match=message):
        parse_certificate(text, "cert.csv")


def test_a_certificate_in_other_units_is_converted_and_its_k_divided_out() -> None:
    c = parse_certificate(GOOD.replace("W m-2 sr-1 nm-1", "µW cm-2 sr-1 nm-1"))
    np.testing.assert_allclose(c.radiance, [1e-3, 2e-3, 3e-3])
    np.testing.assert_allclose(c.uncertainty / c.radiance, 0.01)  # 2 % at k = 2


def test_a_certificate_not_covering_the_bands_is_refused(rig) -> None:
    inst, cal, _ = rig
    short = tungsten_certificate(0.3, wavelength_nm=np.arange(500.0, 1101.0, 5.0))
    with pytest.raises(CertificateError, match="covers 500-1100 nm.*bands span"):
        measure_gain(cal, simulate_sphere(inst, tungsten_certificate(0.3), seed=2), short)


def test_calibrate_radiance_writes_a_version_2_file_through_the_cli(rig, tmp_path: Path) -> None:
    inst, cal, truth = rig
    v1 = tmp_path / "v1.cal"
    cal.write(v1)
    sphere = tmp_path / "sphere"
    run = _onboard("calibrate", "simulate-sphere", "-o", str(sphere), "--seed", "0")
    assert run.returncode == 0, run.stderr
    out = tmp_path / "v2.cal"
    run = _onboard("calibrate", "radiance", str(v1), str(sphere), "--certificate",
                   str(sphere / "certificate.csv"), "-o", str(out), "--json")
    assert run.returncode == 0, run.stderr
    summary = json.loads(run.stdout)
    back = calfile.read(out)
    assert back.format_version == 2 and calfile.read(v1).format_version == 1
    assert np.max(np.abs(back.radiance_gain / truth - 1)) < TOLERANCE
    np.testing.assert_allclose(back.radiance_gain, summary["gain"])
    assert "certificate.csv" in back.provenance["radiance_source"]
    # the runtime's radiance of one unit of lab reflectance, from the sphere's gain
    assert np.all(np.isfinite(back.lab_radiance()))

    bad = tmp_path / "bad.csv"
    write_certificate(bad, tungsten_certificate(0.3))
    bad.write_text(bad.read_text().replace("W m-2 sr-1 nm-1\n", "W/m2/sr/nm\n"))
    run = _onboard("calibrate", "radiance", str(v1), str(sphere), "--certificate", str(bad),
                   "-o", str(tmp_path / "never.cal"))
    assert run.returncode == 1 and "units 'W/m2/sr/nm'" in run.stderr
    assert "Traceback" not in run.stderr and not (tmp_path / "never.cal").exists()

    hot = tmp_path / "hot"
    write_sphere(hot, simulate_sphere(inst, tungsten_certificate(1.0), seed=0))
    run = _onboard("calibrate", "radiance", str(v1), str(hot), "--certificate",
                   str(sphere / "certificate.csv"), "-o", str(tmp_path / "never.cal"))
    assert run.returncode == 1 and "saturated" in run.stderr and "Traceback" not in run.stderr
    assert not (tmp_path / "never.cal").exists()


def test_the_runtime_measures_radiance_with_the_spheres_gain(rig) -> None:
    """A uniform scene of known radiance (0.3 reflectance under the lab lamp, a spectrum
    unlike the sphere's) comes back through the runtime's correction and reconstruction
    in W m-2 sr-1 nm-1 within 5 % per band (460-900 nm) with the gain the sphere gave
    (measured: -4.0 % at 460 nm, within 1 % from 560 nm)."""
    from onboard.physics.illumination import lab_panel_radiance
    from onboard.physics.imspoc import band_mean
    from onboard.stages import radiometric
    from onboard.stages.reconstruct import Reconstructor

    inst, cal, _ = rig
    cert = tungsten_certificate(0.3)
    measured = measure_gain(cal, simulate_sphere(inst, cert, seed=6), cert)
    v2 = replace(cal, radiance_gain=measured.gain, radiance_gain_uncertainty=measured.uncertainty)
    grid = inst.scene_grid()
    frame = inst.frame(np.full((grid.size, *inst.thumb_shape), 0.3), grid, np.random.default_rng(2))
    cube = Reconstructor(v2).reconstruct(radiometric.correct(frame, v2.radiometric,
                                                             inst.detector_spec.max_dn - 1))[0]
    radiance = np.median(cube.data[:, cube.valid], axis=1) * v2.lab_radiance()
    lab = v2.lab_radiance()
    truth = band_mean(grid, 0.3 * lab_panel_radiance(grid), v2.wavelengths_nm)
    expected = lab * (cube.response @ (truth / lab))  # as the reconstruction's bands see it
    keep = (v2.wavelengths_nm > 460) & (v2.wavelengths_nm < 900)
    assert np.max(np.abs(radiance[keep] / expected[keep] - 1)) < 0.05


def test_characterize_takes_the_sphere_and_keeps_its_work_when_the_sphere_is_bad(tmp_path: Path) -> None:
    """``characterize --sphere --certificate`` writes version 2 from a full-frame sweep (the
    small preset: 12 interferometers, 8 bands); a sphere that cannot be used still leaves the
    characterisation, as version 1, and says how to add the gain later."""
    from calibration.fullframe import FullFrameSpec, instrument_for

    acq = tmp_path / "acq"
    run = _onboard("calibrate", "simulate", "--full-frame", "-o", str(acq), "--grid", "3", "4",
                   "--lines", "100", "--seed", "3")
    assert run.returncode == 0, run.stderr
    inst = instrument_for(FullFrameSpec(grid=(3, 4), n_lines=100, seed=3))
    truth = inst.photo_rate_e_s / inst.detector_spec.electrons_per_dn / LAB_PANEL_PEAK_RADIANCE
    cert = tungsten_certificate(0.3)
    write_certificate(tmp_path / "cert.csv", cert)
    write_sphere(tmp_path / "sphere", simulate_sphere(inst, cert, seed=5))
    write_sphere(tmp_path / "hot", simulate_sphere(inst, cert, exposure_s=0.1, seed=5))  # 10 x: saturated

    lonely = _onboard("calibrate", "characterize", str(acq), "-o", str(tmp_path / "x.cal"),
                      "--sphere", str(tmp_path / "sphere"))
    assert lonely.returncode == 2 and "go together" in lonely.stderr
    assert not (tmp_path / "x.cal").exists()

    out = tmp_path / "ff.cal"
    run = _onboard("calibrate", "characterize", str(acq), "-o", str(out), "--no-plots", "--json",
                   "--sphere", str(tmp_path / "sphere"), "--certificate", str(tmp_path / "cert.csv"))
    assert run.returncode == 0, run.stderr
    c = calfile.read(out)
    assert c.format_version == 2 and "cert.csv" in c.provenance["radiance_source"]
    # a fitted bank of 12 interferometers, 8 bands: the median band within 5 % of the truth
    # (measured 813.5 against 800); per band -31 to +27 %, stated 1-13 % (docs/reflectance.md)
    assert abs(np.median(c.radiance_gain) / truth - 1) < 0.05
    assert json.loads(run.stdout)["radiance_gain"]["uncertainty_max"] > 0.05

    kept = tmp_path / "kept.cal"
    run = _onboard("calibrate", "characterize", str(acq), "-o", str(kept), "--no-plots",
                   "--sphere", str(tmp_path / "hot"), "--certificate", str(tmp_path / "cert.csv"))
    assert run.returncode == 1 and "saturated" in run.stderr and "WITHOUT a radiance gain" in run.stderr
    assert "Traceback" not in run.stderr and calfile.read(kept).format_version == 1
