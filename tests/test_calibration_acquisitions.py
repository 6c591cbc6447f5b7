"""Reading sweep folders: each kind of bad input gives one clear error, from the API and
from the real command line."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from calibration.acquisitions import AcquisitionError, load_acquisition
from calibration.simulate import SweepSpec, write_sweep

SPEC = SweepSpec(n_interferometers=12, n_lines=60, seed=3)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    write_sweep(tmp_path / "acq", SPEC)
    return tmp_path / "acq"


def test_reads_what_simulate_writes(folder: Path) -> None:
    acq = load_acquisition(folder)
    assert acq.data.shape == (12, 60) and acq.sigma.shape == (60,)
    assert acq.opd_step_um == SPEC.opd_step_um and not acq.is_normalized
    np.testing.assert_allclose(acq.responses(), np.load(folder / "data.npy") / np.load(folder / "norm.npy"))


def test_reads_the_real_layout() -> None:
    acq = load_acquisition(Path(__file__).parent / "data" / "imspoc" / "imagaz_1")
    assert acq.n_interferometers == 20 and acq.n_lines == 343 and acq.first_index == 29
    assert np.all(np.diff(acq.sigma) > 0)


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda f: (f / "data.npy").unlink(), "data.npy is missing"),
        (lambda f: (f / "norm.npy").unlink(), "norm.npy is missing"),
        (lambda f: (f / "options.json").unlink(), "options.json is missing"),
        (lambda f: np.save(f / "data.npy", np.ones((12, 59))), r"expected \(interferometers, 60\)"),
        (lambda f: np.save(f / "norm.npy", np.ones((11, 60))), "norm.npy is"),
        (lambda f: (f / "data.npy").write_bytes((f / "data.npy").read_bytes()[:500]), "corrupt or truncated"),
        (lambda f: (f / "central_wavenumbers.npy").write_bytes(b"not numpy"), "corrupt or truncated"),
        (lambda f: np.save(f / "data.npy", np.where(np.eye(12, 60) > 0, np.nan, 1.0)), "NaN"),
        (lambda f: np.save(f / "norm.npy", np.zeros((12, 60))), "non-positive source power"),
        (lambda f: (f / "options.json").write_text("{"), "not valid JSON"),
        (lambda f: (f / "options.json").write_text(json.dumps({"opd_step": -1})), "opd_step must be"),
        (lambda f: np.save(f / "central_wavenumbers.npy", np.full(60, 1.5)), "repeats a wavenumber"),
    ],
)
def test_bad_input_gives_one_clear_error(folder: Path, damage, message: str) -> None:
    damage(folder)
    with pytest.raises(AcquisitionError, match=message):
        load_acquisition(folder)


def test_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(AcquisitionError, match="does not exist"):
        load_acquisition(tmp_path / "nowhere")


def test_cli_reports_a_truncated_file_and_fails(folder: Path, tmp_path: Path) -> None:
    (folder / "norm.npy").write_bytes((folder / "norm.npy").read_bytes()[:300])
    run = subprocess.run(
        [sys.executable, "-m", "onboard", "calibrate", "characterize", str(folder), "-o",
         str(tmp_path / "x.cal")], capture_output=True, text=True, timeout=120,
    )
    assert run.returncode == 1
    assert "norm.npy is not a readable .npy array" in run.stderr
    assert "Traceback" not in run.stderr
    assert not (tmp_path / "x.cal").exists()
