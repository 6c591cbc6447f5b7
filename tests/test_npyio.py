"""The size-checking .npy/.npz reader (onboard/formats/npyio.py) at its edges: every .npy
version, Fortran order, the refusals' words."""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest

from onboard.formats.npyio import load_npy, load_npz, read_header


class Refused(ValueError):
    pass


def _npy(arr: np.ndarray, version: tuple[int, int] | None) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array(buf, arr, version=version, allow_pickle=False)
    return buf.getvalue()


@pytest.mark.parametrize("version", [(1, 0), (2, 0), (3, 0)])
def test_every_npy_version_reads(version: tuple[int, int]) -> None:
    arr = np.arange(12, dtype="<u2").reshape(3, 4)
    blob = _npy(arr, version)
    assert blob[6:8] == bytes(version)
    got = load_npy(io.BytesIO(blob), len(blob), 24, "x", Refused)
    np.testing.assert_array_equal(got, arr)
    assert got.dtype == arr.dtype and got.flags.writeable


@pytest.mark.parametrize("version", [(4, 0), (2, 1), (1, 1), (0, 0)])
def test_unknown_npy_versions_are_refused(version: tuple[int, int]) -> None:
    blob = bytearray(_npy(np.zeros(2, np.uint8), (2, 0)))
    blob[6:8] = bytes(version)
    with pytest.raises(Refused, match=r"^x \(.*version"):
        load_npy(io.BytesIO(bytes(blob)), len(blob), 100, "x", Refused)


def test_fortran_order_is_kept() -> None:
    arr = np.asfortranarray(np.arange(6, dtype=np.float32).reshape(2, 3))
    blob = _npy(arr, None)
    np.testing.assert_array_equal(load_npy(io.BytesIO(blob), len(blob), 24, "x", Refused), arr)
    assert read_header(io.BytesIO(blob)) == ((2, 3), np.dtype("<f4"), True)


def test_limit_is_exact_and_the_words_say_what() -> None:
    blob = _npy(np.zeros((2, 3), np.uint16), None)
    assert load_npy(io.BytesIO(blob), len(blob), 12, "x", Refused).shape == (2, 3)
    with pytest.raises(Refused, match=r"^frame is bad \(the array declares \(2, 3\) uint16: 12 bytes, "
                                      r"over the limit of 11\)$"):
        load_npy(io.BytesIO(blob), len(blob), 11, "frame is bad", Refused)
    with pytest.raises(Refused, match=r"the array declares \(2, 3\) uint16 \(12 bytes\) but holds 11 bytes"):
        load_npy(io.BytesIO(blob[:-1]), len(blob) - 1, 100, "x", Refused)


def _zip(**members: bytes) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in members.items():
            z.writestr(name, data)
    return buf.getvalue()


def test_npz_refusals_name_the_member() -> None:
    head = io.BytesIO()
    np.lib.format.write_array_header_1_0(head, {"descr": "|u1", "fortran_order": False, "shape": (10,)})
    with pytest.raises(Refused, match=r"^p \(member 'a\.npy' declares \(10,\) uint8 \(10 bytes\) but holds 0 bytes\)$"):
        load_npz(_zip(**{"a.npy": head.getvalue()}), 1000, "p", Refused)
    full = _npy(np.zeros(10, np.uint8), None)
    with pytest.raises(Refused, match=rf"^p \(members declare {len(full)} bytes, over the limit of {len(full) - 1}\)$"):
        load_npz(_zip(**{"a.npy": full}), len(full) - 1, "p", Refused)
    assert load_npz(_zip(**{"a.npy": full}), len(full), "p", Refused)["a"].shape == (10,)


def test_npz_duplicate_and_stray_members() -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z, pytest.warns(UserWarning):
        z.writestr("a.npy", _npy(np.zeros(1), None))
        z.writestr("a.npy", _npy(np.ones(1), None))
    with pytest.raises(Refused, match=r"^p \(duplicate member names\)$"):
        load_npz(buf.getvalue(), 1000, "p", Refused)
    with pytest.raises(Refused, match=r"^p \(member 'a\.txt' is not an \.npy array\)$"):
        load_npz(_zip(**{"a.txt": b"x"}), 1000, "p", Refused)
    arrays = load_npz(_zip(**{"b.npy": _npy(np.arange(3), None)}), 1000, "p", Refused)
    assert list(arrays) == ["b"]


class _Dribble(io.BytesIO):
    """A stream that hands out one byte per readinto, as a pipe or a zip member may."""

    def readinto(self, b) -> int:  # type: ignore[no-untyped-def, override]
        return super().readinto(memoryview(b)[:1])


def test_short_reads_and_streams_not_at_zero() -> None:
    arr = np.arange(6, dtype="<u2")
    blob = _npy(arr, None)
    np.testing.assert_array_equal(load_npy(_Dribble(blob), len(blob), 100, "x", Refused), arr)
    fp = io.BytesIO(b"prefix" + blob)
    fp.seek(6)
    np.testing.assert_array_equal(load_npy(fp, len(blob), 100, "x", Refused), arr)
    with pytest.raises(Refused, match=r"^x \(the array is truncated: 11 of 12 bytes\)$"):
        load_npy(io.BytesIO(blob[:-1]), len(blob), 100, "x", Refused)


def test_zero_sized_arrays_read_and_negative_shapes_are_refused() -> None:
    blob = _npy(np.zeros((0, 3), np.uint16), None)
    assert load_npy(io.BytesIO(blob), len(blob), 0, "x", Refused).shape == (0, 3)
    head = io.BytesIO()
    np.lib.format.write_array_header_1_0(head, {"descr": "<u2", "fortran_order": False, "shape": (-1, 2)})
    with pytest.raises(Refused, match=r"^x \(invalid shape \(-1, 2\)\)$"):
        load_npy(io.BytesIO(head.getvalue()), len(head.getvalue()), 100, "x", Refused)
