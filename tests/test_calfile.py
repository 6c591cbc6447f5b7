"""The calibration file: round trip, and a clear refusal of anything else."""

import json
import zipfile

import numpy as np
import pytest

from onboard.formats import calfile
from onboard.formats.calfile import CalibrationFileError


def test_round_trip_is_exact(imspoc_calibration, tmp_path) -> None:
    path = tmp_path / "inst.cal"
    digest = imspoc_calibration.write(path)
    assert digest == calfile.file_sha256(path) and len(digest) == 64
    back = calfile.read(path)
    np.testing.assert_array_equal(back.white_reference, imspoc_calibration.white_reference)
    np.testing.assert_array_equal(back.radiometric.flat, imspoc_calibration.radiometric.flat)
    np.testing.assert_array_equal(back.bank.opd_um, imspoc_calibration.bank.opd_um)
    np.testing.assert_array_equal(back.bank.opd_gradient_um_per_px,
                                  imspoc_calibration.bank.opd_gradient_um_per_px)
    assert back.layout == imspoc_calibration.layout
    sigma = np.linspace(1.0, 2.2, 50)
    np.testing.assert_array_equal(back.bank.response(sigma), imspoc_calibration.bank.response(sigma))


def _rewrite(src, dst, edit) -> None:
    with np.load(src) as z:
        a = {k: z[k] for k in z.files}
    edit(a)
    np.savez(dst, **a)


def test_refusals_say_why(imspoc_calibration, tmp_path) -> None:
    good = tmp_path / "good.cal"
    imspoc_calibration.write(good)

    with pytest.raises(CalibrationFileError, match="does not exist"):
        calfile.read(tmp_path / "nope.cal")

    trunc = tmp_path / "trunc.cal"
    trunc.write_bytes(good.read_bytes()[:1000])
    with pytest.raises(CalibrationFileError, match="not a readable calibration file"):
        calfile.read(trunc)

    def version(a):
        h = json.loads(a["header"].tobytes())
        h["version"] = 3
        a["header"] = np.frombuffer(json.dumps(h).encode(), np.uint8)

    _rewrite(good, tmp_path / "v3.npz", version)
    with pytest.raises(CalibrationFileError, match="version 3; this runtime reads versions 1"):
        calfile.read(tmp_path / "v3.npz")

    _rewrite(good, tmp_path / "miss.npz", lambda a: a.pop("bank/opd_um"))
    with pytest.raises(CalibrationFileError, match="lacks bank/opd_um"):
        calfile.read(tmp_path / "miss.npz")

    def nan(a):
        a["flat"] = a["flat"].copy()
        a["flat"][3, 3] = np.nan

    _rewrite(good, tmp_path / "nan.npz", nan)
    with pytest.raises(CalibrationFileError, match="flat holds NaN"):
        calfile.read(tmp_path / "nan.npz")

    def shape(a):
        a["bias_dn"] = a["bias_dn"][:-1]

    _rewrite(good, tmp_path / "shape.npz", shape)
    with pytest.raises(CalibrationFileError, match="disagree in shape"):
        calfile.read(tmp_path / "shape.npz")

    with zipfile.ZipFile(tmp_path / "other.npz", "w") as zf:
        zf.writestr("header.npy", b"garbage")
    with pytest.raises(CalibrationFileError):
        calfile.read(tmp_path / "other.npz")
