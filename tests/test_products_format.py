"""The product format (onboard/formats/products.py): pinned by golden bytes, every malformed
header refused with ProductFormatError, payload sizes checked before inflating (issue 11
sections 3 and 5, issue 22)."""

from __future__ import annotations

import hashlib
import io
import json
import random
import struct
import time
import zipfile
from pathlib import Path

import deflate
import numpy as np
import pytest
from fuzzing import mutate

from onboard.formats import products
from onboard.formats.products import (
    DEFAULT_PRIORITY,
    MAX_DECODED_BYTES,
    Product,
    ProductFormatError,
    ProductKind,
    decode_arrays,
    encode_arrays,
    event_product,
    json_product,
)

GOLDEN = Path(__file__).parent / "data" / "golden"


def golden_residue() -> Product:
    """The golden residue product's content (its payload is the shipped golden .npz)."""
    return Product(kind=ProductKind.RESIDUE, frame_counter=7, created_utc=1700000000.25,
                   payload=(GOLDEN / "residue_payload.npz").read_bytes(), encoding="npz",
                   meta={"method": "classical"}, instrument="imspoc", software_version="golden",
                   model_versions={"bundle": "b1"})


def golden_arrays() -> dict[str, np.ndarray]:
    return {"tillage": np.array([[0, 1, 2], [2, 1, 0]], np.uint8),
            "fractions": np.linspace(0, 1, 3 * 2 * 3, dtype=np.float32).reshape(3, 2, 3)}


def _blob(header: dict, payload: bytes, version: int = 1, magic: bytes = b"OBPR") -> bytes:
    h = json.dumps(header).encode()
    return struct.pack(">4sBI", magic, version, len(h)) + h + payload


def _good_header(payload: bytes = b"{}") -> dict:
    return {"kind": "event", "frame_counter": 3, "created_utc": 1.5, "encoding": "json",
            "payload_bytes": len(payload), "payload_sha256": hashlib.sha256(payload).hexdigest(),
            "priority": 0, "instrument": "imspoc", "software_version": "x", "model_versions": {},
            "meta": {}}


# --- golden bytes ---------------------------------------------------------------------------


def test_product_bytes_are_the_golden_bytes() -> None:
    assert golden_residue().to_bytes() == (GOLDEN / "residue_00000007.obpr").read_bytes()


def test_event_product_bytes_are_the_golden_bytes() -> None:
    p = event_product(12, 1700000001.5, "imspoc", "frame not replayed", "frame_00000012: damaged",
                      stage="replay")
    p.software_version = "golden"
    assert p.to_bytes() == (GOLDEN / "event_00000012.obpr").read_bytes()
    assert json.loads(p.payload) == {"event": "frame not replayed", "detail": "frame_00000012: damaged",
                                     "frame": 12, "stage": "replay"}
    assert p.meta == {"event": "frame not replayed"} and p.encoding == "json" and p.priority == 0


@pytest.mark.parametrize("name", ["residue_00000007.v1.obpr", "event_00000012.v1.obpr"])
def test_format_1_products_still_read(name: str) -> None:
    """Products written before format 2 (the residue confidence) read back unchanged: the
    golden files of format 1, kept when format 2 was pinned."""
    blob = (GOLDEN / name).read_bytes()
    assert blob[4] == 1
    p = Product.from_bytes(blob)
    now = Product.from_bytes((GOLDEN / name.replace(".v1", "")).read_bytes())
    assert p.header() == now.header() and p.payload == now.payload


def test_golden_product_reads_back_field_for_field() -> None:
    p = Product.from_bytes((GOLDEN / "residue_00000007.obpr").read_bytes())
    want = golden_residue()
    assert p.header() == want.header() and p.payload == want.payload
    assert p.name == "residue_00000007" and p.priority == 1
    arrays = decode_arrays(p.payload, p.kind)
    for k, v in golden_arrays().items():
        assert arrays[k].dtype == v.dtype
        np.testing.assert_array_equal(arrays[k], v)
    assert arrays["fractions"].flags.writeable


def test_format_constants_and_priorities() -> None:
    assert (products.MAGIC, products.FORMAT_VERSION, products.READ_VERSIONS) == (b"OBPR", 3, (1, 2, 3))
    assert {k.value: v for k, v in DEFAULT_PRIORITY.items()} == {
        "event": 0, "health": 0, "summary": 0, "residue": 1, "calibration_report": 2, "quicklook": 2, "cube": 3, "raw": 4}
    for kind, prio in DEFAULT_PRIORITY.items():
        assert Product(kind=kind, frame_counter=1, created_utc=0.0, payload=b"", encoding="json").priority == prio
    assert Product(kind="cube", frame_counter=1, created_utc=0.0, payload=b"", encoding="npz",
                   priority=9).priority == 9


def test_json_product_is_sorted_json() -> None:
    p = json_product(ProductKind.HEALTH, 4, 2.0, {"b": 1, "a": 2}, "pushbroom", {"m": 1})
    assert p.payload == b'{"a": 2, "b": 1}' and p.instrument == "pushbroom" and p.meta == {"m": 1}
    assert json_product(ProductKind.HEALTH, 4, 2.0, {}, "x").meta == {}


# --- malformed bytes: always ProductFormatError ------------------------------------------------


@pytest.mark.parametrize("field", sorted(_good_header()))
def test_missing_header_field_is_named(field: str) -> None:
    h = _good_header()
    del h[field]
    with pytest.raises(ProductFormatError, match=f"lacks '{field}'"):
        Product.from_bytes(_blob(h, b"{}"))


_WRONG = {"kind": [None, 3, "pancake"], "frame_counter": [None, 1.5, "3", True],
          "created_utc": [None, "now", True], "encoding": [None, 1], "payload_bytes": [None, "2", 2.0],
          "payload_sha256": [None, 5], "priority": [None, 1.0, -1, 100, True], "instrument": [None, 1],
          "software_version": [None, []], "model_versions": [None, []], "meta": [None, "x", []]}


@pytest.mark.parametrize("field,value", [(f, v) for f, vs in _WRONG.items() for v in vs])
def test_header_field_of_wrong_type_or_range_is_refused(field: str, value: object) -> None:
    h = _good_header()
    h[field] = value
    with pytest.raises(ProductFormatError, match=field.replace("_", ".") if field != "kind" else "kind"):
        Product.from_bytes(_blob(h, b"{}"))


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_time_is_refused(value: float) -> None:
    h = _good_header()
    h["created_utc"] = value
    with pytest.raises(ProductFormatError, match="created_utc"):
        Product.from_bytes(_blob(h, b"{}"))


@pytest.mark.parametrize("priority", [0, 99])
def test_priority_bounds_are_accepted(priority: int) -> None:
    h = _good_header()
    h["priority"] = priority
    assert Product.from_bytes(_blob(h, b"{}")).priority == priority


def test_header_that_is_not_an_object_is_refused() -> None:
    for header in (b"null", b"[1]", b'"x"', b"[" * 100_000):
        blob = struct.pack(">4sBI", b"OBPR", 1, len(header)) + header
        with pytest.raises(ProductFormatError, match="not a JSON object|not valid JSON"):
            Product.from_bytes(blob)


def test_prefix_boundaries() -> None:
    good = golden_residue().to_bytes()
    with pytest.raises(ProductFormatError, match="8 bytes, no header"):
        Product.from_bytes(good[:8])
    with pytest.raises(ProductFormatError, match="not valid JSON"):
        Product.from_bytes(struct.pack(">4sBI", b"OBPR", 1, 0))  # 9 bytes: a prefix, empty header
    with pytest.raises(ProductFormatError, match="magic b'OBPX'"):
        Product.from_bytes(b"OBPX" + good[4:])
    with pytest.raises(ProductFormatError, match=r"version 4 is newer than the versions this software reads \(1, 2, 3\)"):
        Product.from_bytes(good[:4] + b"\x04" + good[5:])
    (header_len,) = struct.unpack_from(">I", good, 5)
    end = 9 + header_len
    with pytest.raises(ProductFormatError, match="truncated inside its header"):
        Product.from_bytes(good[: end - 1])
    with pytest.raises(ProductFormatError, match=r"payload is 0 bytes, header says \d+"):
        Product.from_bytes(good[:end])  # the whole header, no payload
    with pytest.raises(ProductFormatError, match="padded"):
        Product.from_bytes(good + b"\0")
    flipped = bytearray(good)
    flipped[-1] ^= 1
    with pytest.raises(ProductFormatError, match="SHA-256 mismatch"):
        Product.from_bytes(bytes(flipped))


def test_fuzzed_products_only_raise_product_format_error() -> None:
    """3 000 seeded random mutations of the golden product bytes, then of its payload
    through decode_arrays: a product (or arrays) comes back, or ProductFormatError."""
    rng = random.Random(22)
    blob = (GOLDEN / "residue_00000007.obpr").read_bytes()
    payload = golden_residue().payload
    refused = 0
    for i in range(3000):
        b = mutate(payload if i % 2 else blob, rng, edits=4, insert_max=8, delete_max=32)
        try:
            if i % 2:
                decode_arrays(b, ProductKind.RESIDUE)
            else:
                Product.from_bytes(b)
        except ProductFormatError:
            refused += 1
    assert refused > 1500


# --- payloads: sizes checked before inflating ---------------------------------------------------


def _bomb(shape: tuple[int, ...]) -> bytes:
    """An .npz whose one member declares ``shape`` float32 and holds only its header."""
    head = io.BytesIO()
    np.lib.format.write_array_header_1_0(head, {"descr": "<f4", "fortran_order": False, "shape": shape})
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("fractions.npy", head.getvalue())
    return buf.getvalue()


def test_tiny_payload_declaring_tebibytes_is_refused_before_inflating() -> None:
    bomb = _bomb((1 << 20, 1 << 18))  # 1 TiB of float32
    p = Product(kind=ProductKind.RESIDUE, frame_counter=1, created_utc=0.0, payload=bomb, encoding="npz")
    assert len(p.to_bytes()) < 800
    back = Product.from_bytes(p.to_bytes())
    with pytest.raises(ProductFormatError, match="over the limit"):
        decode_arrays(back.payload, back.kind)


def test_compressed_payload_inflating_past_the_kind_limit_is_refused() -> None:
    """Zeros compress 1000:1: 40 MiB of them in a payload of ~40 kB, over the residue limit
    (32 MiB) but under the cube's, so the same bytes are refused as a residue map only."""
    payload = encode_arrays(fractions=np.zeros((10, 1024, 1024), np.float32))
    assert len(payload) < 200_000
    with pytest.raises(ProductFormatError, match="over the limit of 33554432"):
        decode_arrays(payload, ProductKind.RESIDUE)
    assert decode_arrays(payload, ProductKind.CUBE)["fractions"].shape == (10, 1024, 1024)


def test_decoded_size_limit_is_exact(monkeypatch: pytest.MonkeyPatch) -> None:
    payload = golden_residue().payload
    with zipfile.ZipFile(io.BytesIO(payload)) as z:
        declared = sum(i.file_size for i in z.infolist())
    monkeypatch.setitem(MAX_DECODED_BYTES, ProductKind.RESIDUE, declared)
    assert set(decode_arrays(payload, ProductKind.RESIDUE)) == {"tillage", "fractions"}
    monkeypatch.setitem(MAX_DECODED_BYTES, ProductKind.RESIDUE, declared - 1)
    with pytest.raises(ProductFormatError, match="over the limit"):
        decode_arrays(payload, ProductKind.RESIDUE)


def test_limits_per_kind() -> None:
    assert MAX_DECODED_BYTES[ProductKind.RESIDUE] == 32 << 20
    assert MAX_DECODED_BYTES[ProductKind.CUBE] == 256 << 20
    assert set(MAX_DECODED_BYTES) == set(ProductKind)


def test_pickled_payload_is_refused() -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        member = io.BytesIO()
        np.save(member, np.array([{"x": 1}], dtype=object), allow_pickle=True)
        z.writestr("fractions.npy", member.getvalue())
    with pytest.raises(ProductFormatError, match="objects"):
        decode_arrays(buf.getvalue(), ProductKind.RESIDUE)


def test_payload_that_is_not_a_zip_is_refused() -> None:
    with pytest.raises(ProductFormatError, match="residue payload is not a readable .npz"):
        decode_arrays(b"PK\x03\x04 not really", ProductKind.RESIDUE)
    with pytest.raises(ProductFormatError, match="product payload"):
        decode_arrays(b"", None)


def test_refusal_names_field_value_and_expected_type() -> None:
    h = _good_header()
    h["priority"] = None
    with pytest.raises(ProductFormatError, match=r"^product header 'priority' is None, expected int$"):
        Product.from_bytes(_blob(h, b"{}"))
    h = _good_header()
    h["created_utc"] = "noon"
    with pytest.raises(ProductFormatError, match=r"^product header 'created_utc' is 'noon', expected int or float$"):
        Product.from_bytes(_blob(h, b"{}"))


def test_size_and_checksum_refusals_name_the_product() -> None:
    h = _good_header()
    h["payload_bytes"] = 3
    with pytest.raises(ProductFormatError, match=r"^product event#3: payload is 2 bytes, header says 3 "):
        Product.from_bytes(_blob(h, b"{}"))
    h = _good_header()
    with pytest.raises(ProductFormatError, match=r"^product event#3: payload SHA-256 mismatch"):
        Product.from_bytes(_blob(h, b"[]"))


def test_integer_time_is_read_as_float() -> None:
    h = _good_header()
    h["created_utc"] = 17
    p = Product.from_bytes(_blob(h, b"{}"))
    assert p.created_utc == 17.0 and isinstance(p.created_utc, float)


def test_payload_without_a_kind_gets_the_largest_limit() -> None:
    payload = encode_arrays(fractions=np.zeros((10, 1024, 1024), np.float32))  # 40 MiB > residue's 32
    assert decode_arrays(payload)["fractions"].shape == (10, 1024, 1024)


# --- payload encoding (issue 17) ---------------------------------------------------------------


def test_npz_payload_bytes_do_not_depend_on_the_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """The same arrays give the same payload at any time, so products of the same seed compare
    byte for byte (as with numpy.savez_compressed; zipfile's writestr would stamp the clock)."""
    first = encode_arrays(**golden_arrays())
    later = time.struct_time((2031, 5, 6, 7, 8, 10, 1, 126, 0))
    monkeypatch.setattr(time, "localtime", lambda *_: later)
    monkeypatch.setattr(time, "time", lambda: time.mktime(later))
    assert encode_arrays(**golden_arrays()) == first


@pytest.mark.parametrize("level", [0, 1, 6, 9])
def test_npz_payload_at_any_level_reads_back_exactly(level: int) -> None:
    """Whatever the deflate level, numpy.load (a user's reader) and decode_arrays (the ground's)
    get the arrays back bit for bit, dtype and all, and every member's CRC checks."""
    rng = np.random.default_rng(level)
    data = rng.random((4, 8, 8)).astype(np.float16)
    data[0, 1, 2] = np.nan
    arrays = {**golden_arrays(), "data": data, "valid": rng.random((8, 8)) > 0.2,
              "ccsds123": rng.integers(0, 256, 500, dtype=np.uint8)}
    payload = products.npz_bytes(arrays, level)
    with zipfile.ZipFile(io.BytesIO(payload)) as z:
        assert z.testzip() is None
        assert {i.compress_type for i in z.infolist()} == {zipfile.ZIP_STORED if level == 0 else zipfile.ZIP_DEFLATED}
    with np.load(io.BytesIO(payload), allow_pickle=False) as users:
        read = [dict(users), decode_arrays(payload, ProductKind.CUBE)]
    for got in read:
        assert set(got) == set(arrays)
        for name, want in arrays.items():
            assert got[name].dtype == want.dtype
            np.testing.assert_array_equal(got[name], want)


def test_npz_members_are_libdeflate_streams_as_small_as_numpys() -> None:
    """Each member of a payload is libdeflate's stream at NPZ_LEVEL (a third of zlib's time,
    bench/bench_package.py), and a reflectance-like float16 cube comes out as small as
    numpy.savez_compressed made it (zlib's default level, the payload before issue 17) within
    0.5 % (the bench's product cubes: 0.3-0.4 % smaller)."""
    rng = np.random.default_rng(8)
    smooth = np.cumsum(rng.normal(0, 0.01, (24, 64, 64)), axis=2) + np.linspace(0.1, 0.5, 24)[:, None, None]
    arrays = {"data": (smooth + rng.normal(0, 0.002, smooth.shape)).astype(np.float16),
              "wavelengths_nm": np.linspace(450, 900, 24), "valid": rng.random((64, 64)) > 0.05}
    payload = encode_arrays(**arrays)
    with zipfile.ZipFile(io.BytesIO(payload)) as z:
        for info in z.infolist():
            assert info.compress_size == len(deflate.deflate_compress(z.read(info), products.NPZ_LEVEL)), info
    before = io.BytesIO()
    np.savez_compressed(before, **arrays)
    assert len(payload) <= 1.005 * len(before.getvalue())
    for name, got in decode_arrays(payload, ProductKind.CUBE).items():
        np.testing.assert_array_equal(got, arrays[name])
