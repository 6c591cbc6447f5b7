"""The real command line in a subprocess: simulate a sweep, characterise it, read the
calibration file back with the runtime's reader, and check the report."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from calibration.simulate import truth_errors
from onboard.formats import calfile
from onboard.physics.interferometers import InterferometerBank


def _onboard(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "onboard", *args], capture_output=True,
                          text=True, timeout=300)


def test_simulate_then_characterize(tmp_path: Path) -> None:
    acq = tmp_path / "sweep"
    run = _onboard("calibrate", "simulate", "-o", str(acq), "--interferometers", "40",
                   "--lines", "200", "--reflectivity", "0.5", "0.7", "--seed", "5")
    assert run.returncode == 0, run.stderr
    assert {p.name for p in acq.iterdir()} >= {"central_wavenumbers.npy", "data.npy", "norm.npy",
                                               "options.json", "truth.npz"}
    cal = tmp_path / "instrument.cal"
    run = _onboard("calibrate", "characterize", str(acq), "-o", str(cal), "--json")
    assert run.returncode == 0, run.stderr
    summary = json.loads(run.stdout)
    assert summary["r_outside_0_1"] == 0 and summary["opd_trend_outliers"] == 0
    assert "initialising" in run.stderr  # progress goes to stderr
    c = calfile.read(cal)
    assert c.kind == "imspoc" and len(c.bank) == 40
    assert c.provenance["characterisation"]["model"] == summary["model"]
    truth = InterferometerBank.from_arrays(dict(np.load(acq / "truth.npz")))
    sigma = np.load(acq / "central_wavenumbers.npy")
    e = truth_errors(c.bank, truth, sigma)
    keep = e["fringes"] >= 6
    assert np.all(e["opd_abs_um"][keep] < np.maximum(0.005, 0.005 * truth.opd_um[keep]))
    report = tmp_path / "instrument_report"
    doc = json.loads((report / "report.json").read_text())
    assert len(doc["interferometers"]) == 40 and "bic" in doc
    assert all((report / f).stat().st_size > 10_000 for f in ("fits.png", "opd.png", "residuals.png"))


def test_characterize_real_subset_with_its_layout(tmp_path: Path) -> None:
    src = Path(__file__).parent / "data" / "imspoc" / "imagaz_1"
    cal = tmp_path / "imagaz.cal"
    run = _onboard("calibrate", "characterize", str(src), "-o", str(cal), "--no-plots")
    assert run.returncode == 0, run.stderr
    assert "median" in run.stdout and "wrote" in run.stdout
    assert "no absolute radiance gain" in run.stdout and "onboard calibrate radiance" in run.stdout
    c = calfile.read(cal)
    assert c.layout.detector_shape == (1, 20)  # no device.json: one sample per interferometer
    assert "1 x 1 sample" in c.provenance["layout"]


def test_full_frame_simulate_then_characterize(tmp_path: Path) -> None:
    acq = tmp_path / "frames"
    run = _onboard("calibrate", "simulate", "--full-frame", "-o", str(acq), "--grid", "3", "4",
                   "--lines", "100", "--dead-fraction", "0.02", "--seed", "3")
    assert run.returncode == 0, run.stderr
    assert {p.name for p in acq.iterdir()} >= {"central_wavenumbers.npy", "frames.npy", "norm.npy",
                                               "dark.npy", "flat.npy", "options.json", "truth.npz"}
    cal = tmp_path / "ff.cal"
    run = _onboard("calibrate", "characterize", str(acq), "-o", str(cal), "--json", "--no-plots")
    assert run.returncode == 0, run.stderr
    assert "region 16/16" in run.stderr  # progress goes to stderr
    summary = json.loads(run.stdout)
    assert summary["full_frame"]["thumbnails"] == 12 and summary["r_outside_0_1"] == 0
    c = calfile.read(cal)
    truth = dict(np.load(acq / "truth.npz"))
    assert c.layout.corners == tuple(map(tuple, truth["layout/corners"].tolist()))
    inside = c.layout.place(np.ones((12, *c.layout.thumb_shape), bool), fill=False)
    assert np.all(c.radiometric.bad[truth["dead"] & inside])  # real maps, not neutral ones
    assert abs(float(np.median(c.radiometric.bias_dn)) - float(truth["bias_dn"])) < 1
    bank = InterferometerBank.from_arrays({k[5:]: v for k, v in truth.items() if k.startswith("bank/")})
    assert np.all(np.abs(c.bank.opd_um - bank.opd_um) < 0.002)
    assert np.all(np.abs(c.bank.opd_gradient_um_per_px - bank.opd_gradient_um_per_px) < 1e-4)
    report = json.loads((tmp_path / "ff_report" / "report.json").read_text())
    assert len(report["wedge"]) == 12 and len(report["wedge"][0]["region_opd_um"]) == 16


def test_full_frame_bad_input_is_one_clear_error(tmp_path: Path) -> None:
    acq = tmp_path / "frames"
    assert _onboard("calibrate", "simulate", "--full-frame", "-o", str(acq), "--grid", "1", "2",
                    "--thumb", "12", "--lines", "10").returncode == 0
    (acq / "dark.npy").unlink()
    run = _onboard("calibrate", "characterize", str(acq), "-o", str(tmp_path / "x.cal"))
    assert run.returncode == 1 and "dark.npy is missing" in run.stderr
    assert "Traceback" not in run.stderr
    run = _onboard("calibrate", "simulate", "--full-frame", "-o", str(acq), "--snr", "50")
    assert run.returncode == 2 and "--snr" in run.stderr


def test_readme_flow_makes_no_unflyable_file_unnoticed(tmp_path: Path) -> None:
    """The README's flow on a response sweep: the file has no detector geometry, so
    characterize warns, info flags it (status 1) and run refuses it, each naming the
    commands that make a flyable one; the README documents them."""
    acq, cal = tmp_path / "acq", tmp_path / "acq.cal"
    assert _onboard("calibrate", "simulate", "-o", str(acq), "--interferometers", "12",
                    "--lines", "120").returncode == 0
    made = _onboard("calibrate", "characterize", str(acq), "-o", str(cal), "--no-plots")
    assert made.returncode == 0, made.stderr
    assert "cannot fly" in made.stdout
    info = _onboard("info", "--calibration", str(cal))
    assert info.returncode == 1
    assert "CANNOT FLY" in info.stdout and "--full-frame --preset default" in info.stdout
    info_json = _onboard("info", "--calibration", str(cal), "--json")
    assert "no detector geometry" in json.loads(info_json.stdout)["calibration"]["flight_problem"]
    run = _onboard("run", "--calibration", str(cal), "--frames", "1", "--out", str(tmp_path / "o"))
    assert run.returncode != 0 and "Traceback" not in run.stderr
    assert "no detector geometry" in run.stderr and "--full-frame --preset default" in run.stderr
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    assert "--preset default" in readme


#: Runs the real CLI with some packages made unimportable, as in a runtime-only install.
_WITHOUT = """
import sys
sys.modules.update(dict.fromkeys({blocked!r}))  # None in sys.modules: Python's own "not installed"
from onboard.cli import main
sys.argv = ["onboard", *{args!r}]
main()
"""


def test_characterize_without_the_ground_extra_says_so_before_any_work(tmp_path: Path) -> None:
    src = Path(__file__).parent / "data" / "imspoc" / "imagaz_1"
    cal = tmp_path / "x.cal"
    code = _WITHOUT.format(blocked={"matplotlib", "threadpoolctl"},
                           args=["calibrate", "characterize", str(src), "-o", str(cal)])
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert run.returncode != 0 and "Traceback" not in run.stderr, run.stderr
    assert "pip install 'onboard[ground]'" in run.stderr
    assert "matplotlib" in run.stderr and "threadpoolctl" in run.stderr
    assert "initialising" not in run.stderr  # no work started
    assert not cal.exists() and not (tmp_path / "x_report").exists()


@pytest.mark.slow
def test_readme_flow_with_the_default_preset_flies(tmp_path: Path) -> None:
    """The README's flyable flow: a full-frame sweep of the instrument 'onboard run'
    simulates, characterised, passes 'info' and flies: products, accuracy against truth."""
    acq, cal, out = tmp_path / "acq", tmp_path / "acq.cal", tmp_path / "out"
    assert _onboard("calibrate", "simulate", "--full-frame", "--preset", "default", "-o",
                    str(acq)).returncode == 0
    made = _onboard("calibrate", "characterize", str(acq), "-o", str(cal), "--no-plots")
    assert made.returncode == 0 and "cannot fly" not in made.stdout, made.stderr
    info = _onboard("info", "--calibration", str(cal))
    assert info.returncode == 0 and "CANNOT FLY" not in info.stdout, info.stdout
    run = _onboard("run", "--calibration", str(cal), "--frames", "2", "--out", str(out),
                   "--json", str(tmp_path / "s.json"), "--quiet")
    assert run.returncode == 0, run.stderr
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["frames"] == 2 and summary["products_written"] >= 2
    assert summary["accuracy"]["psnr_gain_db"] > 0
