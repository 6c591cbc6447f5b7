"""Hostile and damaged calibration files (issue 11 section 5, issue 22): every one is refused
with CalibrationFileError, sizes are checked before inflating, and the format is pinned by a
golden file."""

from __future__ import annotations

import hashlib
import io
import json
import random
import zipfile
from pathlib import Path

import numpy as np
import pytest
from fuzzing import mutate

from firmware_bridge import storage
from onboard.formats import calfile
from onboard.formats.calfile import Calibration, CalibrationFileError, Radiometric
from onboard.physics.imspoc import ThumbnailLayout
from onboard.physics.interferometers import InterferometerBank

GOLDEN = Path(__file__).parent / "data" / "golden" / "tiny_imspoc.cal"


def tiny(kind: str = "imspoc", detector: tuple[int, int] = (6, 12), n_layout: int = 2, n_bank: int = 2,
         **changes: object) -> Calibration:
    """A 2-interferometer ImSPOC calibration on a 6 x 12 detector (the golden file's content)."""
    rows, cols = detector
    rng = np.random.default_rng(22)
    radiometric = Radiometric(rng.uniform(90, 110, detector).astype(np.float32),
                              rng.uniform(0, 5, detector).astype(np.float32),
                              rng.uniform(0.9, 1.1, detector).astype(np.float32),
                              rng.random(detector) < 0.1)
    layout = ThumbnailLayout(tuple((0, 6 * k) for k in range(n_layout)), (4, 4), (6, 6 * n_layout))
    bank = InterferometerBank(
        opd_um=np.linspace(1.0, 3.0, n_bank), phase_rad=np.linspace(0.0, 0.3, n_bank),
        gain_cheb=np.tile([1.0, 0.1, 0.01], (n_bank, 1)), reflectivity_cheb=np.tile([0.3, 0.02, 0.0], (n_bank, 1)),
        offset=np.full(n_bank, 0.5), sigma_domain=(1.0, 2.2), harmonics=None,
        opd_gradient_um_per_px=np.zeros((n_bank, 2)))
    args: dict = dict(kind=kind, instrument="tiny", wavelengths_nm=np.linspace(450.0, 900.0, 5),
                      white_reference=np.linspace(1000.0, 1400.0, 5), radiometric=radiometric,
                      layout=layout if kind == "imspoc" else None, bank=bank if kind == "imspoc" else None,
                      provenance={"source": "tests/test_calfile_hostile.py"}, created_utc=1.7e9,
                      software_version="golden")
    args.update(changes)
    return Calibration(**args)


def _arrays(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def _write(path: Path, arrays: dict[str, np.ndarray]) -> Path:
    with open(path, "wb") as fh:
        np.savez_compressed(fh, **arrays)
    return path


def _header(arrays: dict[str, np.ndarray], header: object) -> None:
    arrays["header"] = np.frombuffer(json.dumps(header).encode(), np.uint8)


def _npy_header_only(shape: tuple[int, ...], descr: str = "<f4") -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": descr, "fortran_order": False, "shape": shape})
    return buf.getvalue()


# --- the golden file: the format as shipped, read back value for value --------------------------


def test_golden_file_reads_to_the_recorded_values() -> None:
    cal = calfile.read(GOLDEN)
    want = tiny()
    assert cal.header() == want.header()
    for name in ("wavelengths_nm", "white_reference"):
        np.testing.assert_array_equal(getattr(cal, name), getattr(want, name))
    for name in ("bias_dn", "dark_dn_s", "flat", "bad"):
        np.testing.assert_array_equal(getattr(cal.radiometric, name), getattr(want.radiometric, name))
    assert cal.layout == want.layout
    for k, v in want.bank.arrays().items():
        np.testing.assert_array_equal(cal.bank.arrays()[k], v)


def test_writer_produces_the_golden_entries(tmp_path: Path) -> None:
    """Zip timestamps differ from run to run, so the writer is pinned entry by entry: the same
    names, dtypes, shapes, bytes and header (sorted-key JSON) as the golden file."""
    tiny().write(tmp_path / "t.cal")
    got, want = _arrays(tmp_path / "t.cal"), _arrays(GOLDEN)
    assert sorted(got) == sorted(want)
    for k in want:
        assert (got[k].dtype, got[k].shape, got[k].tobytes()) == (want[k].dtype, want[k].shape, want[k].tobytes()), k
    header = json.loads(want["header"].tobytes())
    assert header["format"] == "onboard-calibration" and header["version"] == 1
    assert not (tmp_path / "t.cal.tmp").exists()


# --- damaged files ----------------------------------------------------------------------------


def test_every_single_bit_flip_of_a_small_file_is_refused_or_read(tmp_path: Path) -> None:
    """Every single-bit flip over the whole golden file (issue 11: 1 in 300 gave a raw
    zlib.error): read() returns a calibration or raises CalibrationFileError."""
    blob = GOLDEN.read_bytes()
    path = tmp_path / "flip.cal"
    refused = 0
    rng = random.Random(3)
    positions = rng.sample(range(len(blob) * 8), min(1500, len(blob) * 8))
    for bit in positions:
        b = bytearray(blob)
        b[bit // 8] ^= 1 << (bit % 8)
        path.write_bytes(bytes(b))
        try:
            calfile.read(path)
        except CalibrationFileError:
            refused += 1
    assert refused > len(positions) // 2


def test_fuzzed_files_only_raise_calibration_file_error(tmp_path: Path) -> None:
    """1 000 seeded random mutations (bytes overwritten, inserted, cut) of the golden file."""
    rng = random.Random(11)
    blob = GOLDEN.read_bytes()
    path = tmp_path / "fuzz.cal"
    for _ in range(1000):
        path.write_bytes(mutate(blob, rng, edits=6, insert_max=16, delete_max=64))
        try:
            calfile.read(path)
        except CalibrationFileError:
            pass


@pytest.mark.parametrize("header", [None, [1, 2], "onboard-calibration", 7])
def test_header_that_is_not_an_object_is_refused(tmp_path: Path, header: object) -> None:
    a = _arrays(GOLDEN)
    _header(a, header)
    with pytest.raises(CalibrationFileError, match="not a JSON object"):
        calfile.read(_write(tmp_path / "h.cal", a))


@pytest.mark.filterwarnings("ignore:Duplicate name")
def test_member_declaring_tebibytes_is_refused_before_inflating(tmp_path: Path) -> None:
    """A 1 TiB ``flat`` declared in 100 bytes: refused from its header, nothing allocated."""
    a = _arrays(GOLDEN)
    path = _write(tmp_path / "bomb.cal", a)
    with zipfile.ZipFile(path, "a") as z:
        z.writestr("flat.npy", _npy_header_only((1 << 19, 1 << 19)))  # duplicate name
    with pytest.raises(CalibrationFileError, match="duplicate"):
        calfile.read(path)
    del a["flat"]
    path = _write(tmp_path / "bomb2.cal", a)
    with zipfile.ZipFile(path, "a") as z:
        z.writestr("flat.npy", _npy_header_only((1 << 19, 1 << 19)))
    with pytest.raises(CalibrationFileError, match="over the limit"):
        calfile.read(path)


def test_declared_size_limit_is_exact(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A file whose members declare exactly MAX_FILE_BYTES is read; one byte less of limit
    refuses it, before inflating (the limit stands for a 4096 x 4096 detector)."""
    with zipfile.ZipFile(GOLDEN) as z:
        declared = sum(i.file_size for i in z.infolist())
    monkeypatch.setattr(calfile, "MAX_FILE_BYTES", declared)
    calfile.read(GOLDEN)
    monkeypatch.setattr(calfile, "MAX_FILE_BYTES", declared - 1)
    with pytest.raises(CalibrationFileError, match="over the limit"):
        calfile.read(GOLDEN)


def test_limit_fits_a_4k_detector_and_not_a_bomb() -> None:
    maps_4k = 4096 * 4096 * (3 * 4 + 1)
    assert maps_4k < calfile.MAX_FILE_BYTES < 2 * maps_4k


def test_member_that_is_not_an_array_is_refused(tmp_path: Path) -> None:
    path = _write(tmp_path / "x.cal", _arrays(GOLDEN))
    with zipfile.ZipFile(path, "a") as z:
        z.writestr("notes.txt", b"hello")
    with pytest.raises(CalibrationFileError, match="not an .npy array"):
        calfile.read(path)


def test_pickled_member_is_refused(tmp_path: Path) -> None:
    a = _arrays(GOLDEN)
    buf = io.BytesIO()
    np.save(buf, np.array([{"x": 1}], dtype=object), allow_pickle=True)
    path = _write(tmp_path / "p.cal", a)
    with zipfile.ZipFile(path, "a") as z:
        z.writestr("extra.npy", buf.getvalue())
    with pytest.raises(CalibrationFileError, match="objects"):
        calfile.read(path)


@pytest.mark.parametrize("missing", ["layout/corners", "layout/thumb_shape", "layout/detector_shape",
                                     "bank/harmonics", "bank/sigma_domain", "white_reference", "bad"])
def test_missing_entry_is_named(tmp_path: Path, missing: str) -> None:
    a = _arrays(GOLDEN)
    del a[missing]
    with pytest.raises(CalibrationFileError, match=f"lacks {missing}"):
        calfile.read(_write(tmp_path / "m.cal", a))


@pytest.mark.parametrize("key,value,match", [
    ("format", "other-format", "is a 'other-format' file"),
    ("version", 3, "version 3; this runtime reads versions 1, 2"),
    ("version", 2, "lacks radiance_gain, radiance_gain_uncertainty"),
    ("version", None, "version None"),
    ("kind", "hyperspectral", "kind 'hyperspectral' is not one of"),
    ("kind", None, "kind None is not one of"),
])
def test_header_fields_are_checked(tmp_path: Path, key: str, value: object, match: str) -> None:
    a = _arrays(GOLDEN)
    h = json.loads(a["header"].tobytes())
    h[key] = value
    _header(a, h)
    with pytest.raises(CalibrationFileError, match=match):
        calfile.read(_write(tmp_path / "k.cal", a))


def test_pushbroom_file_needs_no_layout(tmp_path: Path) -> None:
    a = _arrays(GOLDEN)
    h = json.loads(a["header"].tobytes())
    h["kind"] = "pushbroom"
    _header(a, h)
    for k in [k for k in a if k.startswith(("layout/", "bank/"))]:
        del a[k]
    cal = calfile.read(_write(tmp_path / "pb.cal", a))
    assert cal.kind == "pushbroom" and cal.layout is None and cal.bank is None


@pytest.mark.parametrize("name", ["wavelengths_nm", "white_reference", "bias_dn", "dark_dn_s", "flat"])
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_values_are_named(tmp_path: Path, name: str, bad: float) -> None:
    a = _arrays(GOLDEN)
    a[name] = a[name].copy()
    a[name].flat[1] = bad
    with pytest.raises(CalibrationFileError, match=f"{name} holds NaN or infinite"):
        calfile.read(_write(tmp_path / "n.cal", a))


# --- an ImSPOC file with inconsistent shapes: every check of Calibration ----------------------


def test_inconsistent_imspoc_files_are_refused(tmp_path: Path) -> None:
    cases = {
        "thumbnail count": (lambda a: a.update({"layout/corners": a["layout/corners"][:1]}),
                            "layout has 1 thumbnails, bank 2 interferometers"),
        "detector shape": (lambda a: a.update({"layout/detector_shape": np.array([6, 13])}),
                           r"radiometric maps are \(6, 12\); detector is \(6, 13\)"),
        "white reference": (lambda a: a.update({"white_reference": a["white_reference"][:4]}),
                            r"white reference has \(4,\) entries for \(5,\) wavelengths"),
        "radiometric": (lambda a: a.update({"bad": a["bad"][:, :5]}), "disagree in shape"),
        "corners": (lambda a: a.update({"layout/corners": np.array([[0, 0], [0, 9]])}),
                    "falls outside"),
        "corners shape": (lambda a: a.update({"layout/corners": np.array([0, 0])}), "inconsistent"),
        "sigma domain": (lambda a: a.update({"bank/sigma_domain": np.array([1.0])}), "inconsistent"),
    }
    for name, (edit, match) in cases.items():
        a = _arrays(GOLDEN)
        edit(a)
        with pytest.raises(CalibrationFileError, match=match):
            calfile.read(_write(tmp_path / f"{name}.cal", a))


def test_calibration_checks_in_memory() -> None:
    with pytest.raises(CalibrationFileError, match="needs a thumbnail layout and a bank"):
        tiny(layout=None)
    with pytest.raises(CalibrationFileError, match="needs a thumbnail layout and a bank"):
        tiny(bank=None)
    with pytest.raises(CalibrationFileError, match="layout has 3 thumbnails, bank 2"):
        tiny(n_layout=3, detector=(6, 18))
    with pytest.raises(CalibrationFileError, match="kind 'cube' is not one of"):
        tiny(kind="cube")
    assert calfile.KINDS == ("imspoc", "pushbroom")
    assert tiny(kind="pushbroom").layout is None


def test_header_defaults_for_optional_fields(tmp_path: Path) -> None:
    a = _arrays(GOLDEN)
    h = json.loads(a["header"].tobytes())
    for k in ("instrument", "provenance", "created_utc", "software_version"):
        del h[k]
    _header(a, h)
    cal = calfile.read(_write(tmp_path / "d.cal", a))
    assert (cal.instrument, cal.provenance, cal.created_utc, cal.software_version) == ("?", {}, 0.0, "?")


def test_unreadable_path_is_refused(tmp_path: Path) -> None:
    with pytest.raises(CalibrationFileError, match="is a folder, not a calibration file"):
        calfile.read(tmp_path)
    with pytest.raises(CalibrationFileError, match="does not exist"):
        calfile.read(tmp_path / "absent.cal")


def test_writer_stores_the_declared_dtypes(tmp_path: Path) -> None:
    """float32 grids and int32 layout numbers in memory are written as float64 and int64, as
    the format says."""
    i32 = np.int32
    layout = ThumbnailLayout(((i32(0), i32(0)), (i32(0), i32(6))), (i32(4), i32(4)), (i32(6), i32(12)))
    cal = tiny(wavelengths_nm=np.linspace(450.0, 900.0, 5, dtype=np.float32),
               white_reference=np.linspace(1000.0, 1400.0, 5, dtype=np.float32), layout=layout)
    cal.write(tmp_path / "f.cal")
    a = _arrays(tmp_path / "f.cal")
    assert a["wavelengths_nm"].dtype == np.float64 and a["white_reference"].dtype == np.float64
    assert {a[k].dtype for k in ("layout/corners", "layout/thumb_shape", "layout/detector_shape")} == {np.dtype(np.int64)}


def test_interrupted_write_keeps_the_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "c.cal"
    path.write_bytes(GOLDEN.read_bytes())

    def cut(*args: object) -> None:
        raise OSError("power cut")
    monkeypatch.setattr(storage.os, "replace", cut)
    with pytest.raises(OSError, match="power cut"):
        tiny(kind="pushbroom").write(path)
    assert path.read_bytes() == GOLDEN.read_bytes() and not (tmp_path / "c.cal.tmp").exists()


def test_file_sha256_reads_every_chunk(tmp_path: Path) -> None:
    blob = random.Random(1).randbytes(3 * (1 << 20) + 17)  # several 1 MiB chunks
    (tmp_path / "b").write_bytes(blob)
    assert calfile.file_sha256(tmp_path / "b") == hashlib.sha256(blob).hexdigest()
    assert calfile.file_sha256(GOLDEN) == hashlib.sha256(GOLDEN.read_bytes()).hexdigest()


def test_refusals_say_what_to_do(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rebuild = "rebuild it with 'onboard calibrate characterize ACQ -o FILE'"
    a = _arrays(GOLDEN)
    del a["flat"]
    with pytest.raises(CalibrationFileError, match=rf"lacks flat; {rebuild}$"):
        calfile.read(_write(tmp_path / "m.cal", a))
    a = _arrays(GOLDEN)
    a["header"] = np.frombuffer(b"{nope", np.uint8)
    with pytest.raises(CalibrationFileError, match=rf"header is not valid JSON \(.*\); {rebuild}$"):
        calfile.read(_write(tmp_path / "j.cal", a))
    a = _arrays(GOLDEN)
    del a["header"]
    with pytest.raises(CalibrationFileError, match=r"h\.cal has no header: not an onboard calibration file$"):
        calfile.read(_write(tmp_path / "h.cal", a))

    def refuse(*args: object, **kwargs: object) -> None:
        raise PermissionError("denied")
    monkeypatch.setattr(calfile, "open", refuse, raising=False)
    with pytest.raises(CalibrationFileError, match=r"tiny_imspoc\.cal cannot be read \(denied\)$"):
        calfile.read(GOLDEN)


def test_bad_pixel_map_is_read_as_bool(tmp_path: Path) -> None:
    a = _arrays(GOLDEN)
    a["bad"] = a["bad"].astype(np.uint8)  # a writer that stored 0/1 bytes
    cal = calfile.read(_write(tmp_path / "b.cal", a))
    assert cal.radiometric.bad.dtype == np.bool_
    np.testing.assert_array_equal(cal.radiometric.bad, _arrays(GOLDEN)["bad"])
