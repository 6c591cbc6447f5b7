"""Ground decoding: products round-trip bit-exact spool -> CFDP -> space packets -> capture ->
``onboard ground decode`` -> user formats; duplicates dropped; bad captures refused clearly."""

from __future__ import annotations

import io
import json
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from test_downlink import FAST, exchange

from firmware_bridge.cfdp.common import DownlinkConfig
from firmware_bridge.cfdp.receiver import DownlinkReceiver, ReceivedFile
from firmware_bridge.cfdp.sender import DownlinkSender
from firmware_bridge.spool import Spool
from ground.capture import CAPTURE_MAGIC, CaptureError, CaptureWriter, read_capture
from ground.decode import decode_capture
from ground.sink import ProductSink
from onboard.formats.products import Product, ProductKind, decode_arrays, encode_arrays

ROWS, COLS, BANDS = 24, 20, 16


def make_product(i: int, kind: ProductKind) -> Product:
    """A deterministic product of each kind, with the payload layouts of onboard.formats.products."""
    rng = np.random.default_rng(i)
    meta: dict = {"seed": i}
    if kind == ProductKind.RESIDUE:
        fractions = rng.dirichlet([2, 2, 1], size=(ROWS, COLS)).transpose(2, 0, 1)
        guess = np.digitize(fractions[0], [0.15, 0.30]).astype(np.uint8)
        confidence = rng.uniform(0, 1, (ROWS, COLS)).astype(np.float32)
        tillage = np.where(confidence < 0.3, 254, guess).astype(np.uint8)  # format 2: 254 uncertain
        payload = encode_arrays(tillage=tillage, fractions=fractions.astype(np.float32), guess=guess,
                                confidence=confidence)
        meta.update(geotransform=[500000.0, 100.0, 0.0, 5600000.0, 0.0, -100.0], epsg=32614)
        encoding = "npz"
    elif kind == ProductKind.QUICKLOOK:
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 255, (ROWS, COLS, 3), dtype=np.uint8)).save(buf, "PNG")
        payload, encoding = buf.getvalue(), "png"
    elif kind == ProductKind.CUBE:
        payload = encode_arrays(
            data=rng.uniform(0, 0.7, (BANDS, ROWS, COLS)).astype(np.float16),
            wavelengths_nm=np.linspace(900, 1700, BANDS), valid=rng.random((ROWS, COLS)) > 0.05)
        encoding = "npz"
    else:
        payload = json.dumps({"i": i, "temperature_c": float(rng.normal(40, 2))}).encode()
        encoding = "json"
    return Product(kind=kind, frame_counter=i, created_utc=1.7e9 + i, payload=payload,
                   encoding=encoding, meta=meta)


ALL_KINDS = [ProductKind.CUBE, ProductKind.HEALTH, ProductKind.RESIDUE, ProductKind.QUICKLOOK,
             ProductKind.EVENT]


def products(n: int) -> list[Product]:
    return [make_product(i, ALL_KINDS[i % len(ALL_KINDS)]) for i in range(n)]


def downlink_capture(tmp_path: Path, prods: list[Product], drop: float, seed: int = 0,
                     config: DownlinkConfig = FAST) -> Path:
    """Spool ``prods``, deliver them (class 2 unless ``config`` says otherwise) over a lossy
    in-process channel and keep what the ground's antenna saw (the packets that were not
    dropped) in a capture."""
    spool = Spool(tmp_path / "spool", 50_000_000)
    for p in prods:
        spool.put(p.name, p.to_bytes(), p.priority, p.kind.value)
    down: list[bytes] = []
    up: list[bytes] = []
    rx = DownlinkReceiver(tmp_path / "staging", lambda f: None,
                          up.append if config.acknowledged else None, config)
    tx = DownlinkSender(spool, down.append, config)
    path = tmp_path / "down.cap"
    writer = CaptureWriter(path)
    exchange(tx, _Recorder(rx, writer), down, up, random.Random(seed), drop)
    writer.close()
    return path


class _Recorder:
    """The ground's antenna: records the downlink packets the receiver actually gets."""

    def __init__(self, rx: DownlinkReceiver, writer: CaptureWriter) -> None:
        self.rx, self.writer = rx, writer

    def on_packet(self, packet: bytes) -> None:
        self.writer.write(0, packet)
        self.rx.on_packet(packet)

    def poll(self) -> None:
        self.rx.poll()


def onboard(*args: str) -> subprocess.CompletedProcess:
    """The real CLI in a subprocess."""
    return subprocess.run([sys.executable, "-m", "onboard", *args], capture_output=True,
                          text=True, timeout=120)


def ground_cli(*args: str):
    """The same click command in this process (faster; stdout and stderr apart)."""
    from click.testing import CliRunner

    from ground.cli import ground

    return CliRunner().invoke(ground, list(args))


def check_outputs(out: Path, prods: list[Product]) -> None:
    """Every product in ``out`` in its user format, equal to what was spooled."""
    import tifffile
    from spectral.io import envi

    index = [json.loads(line) for line in (out / "index.jsonl").read_text().splitlines()]
    assert sorted(r["name"] for r in index) == sorted(p.name for p in prods)

    def lines(file: str) -> list[dict]:
        return [json.loads(x) for x in (out / file).read_text().splitlines()]

    for p in prods:
        assert (out / "raw" / f"{p.name}.obp").read_bytes() == p.to_bytes()
        if p.kind == ProductKind.RESIDUE:
            arrays = decode_arrays(p.payload)
            with tifffile.TiffFile(out / f"{p.name}_tillage.tif") as tif:
                np.testing.assert_array_equal(tif.asarray(), arrays["tillage"])
                geo = tif.pages[0].geotiff_tags
                assert geo["ProjectedCSTypeGeoKey"] == 32614
                assert geo["ModelTiepoint"][3:5] == [500000.0, 5600000.0]  # UTM 14N corner
                assert geo["ModelPixelScale"][:2] == [100.0, 100.0]
            fr = tifffile.imread(out / f"{p.name}_fractions.tif")
            assert fr.dtype == np.float32
            np.testing.assert_array_equal(fr, arrays["fractions"])
            np.testing.assert_array_equal(tifffile.imread(out / f"{p.name}_guess.tif"), arrays["guess"])
            conf = tifffile.imread(out / f"{p.name}_confidence.tif")
            assert conf.dtype == np.float32
            np.testing.assert_array_equal(conf, arrays["confidence"])
        elif p.kind == ProductKind.CUBE:
            arrays = decode_arrays(p.payload)
            img = envi.open(str(out / f"{p.name}.hdr"))
            cube = np.moveaxis(np.asarray(img.load()), -1, 0)  # spectral gives rows, cols, bands
            np.testing.assert_array_equal(cube, arrays["data"].astype(np.float32))
            np.testing.assert_allclose([float(w) for w in img.metadata["wavelength"]],
                                       arrays["wavelengths_nm"], atol=1e-3)
            valid = np.asarray(envi.open(str(out / f"{p.name}_valid.hdr")).load())[..., 0]
            np.testing.assert_array_equal(valid.astype(bool), arrays["valid"])
        elif p.kind == ProductKind.QUICKLOOK:
            assert (out / f"{p.name}.png").read_bytes() == p.payload
            Image.open(out / f"{p.name}.png").verify()
        else:
            file = "health.jsonl" if p.kind == ProductKind.HEALTH else "events.jsonl"
            [rec] = [r for r in lines(file) if r["name"] == p.name]
            assert rec["data"] == json.loads(p.payload)
            assert rec["payload_sha256"] == p.sha256


def test_products_round_trip_through_a_lossy_downlink_and_the_cli(tmp_path: Path) -> None:
    prods = products(10)
    capture = downlink_capture(tmp_path, prods, drop=0.15, seed=3)
    result = onboard("ground", "decode", str(capture), "-o", str(tmp_path / "out"), "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["products"] == 10 and summary["rejected"] == 0
    assert summary["packets"] > 0 and summary["bad_packets"] == 0
    check_outputs(tmp_path / "out", prods)
    # decoding the same capture again: everything is a duplicate, nothing written twice
    again = ground_cli("decode", str(capture), "-o", str(tmp_path / "out"), "--json")
    assert json.loads(again.stdout)["products"] == 0
    assert json.loads(again.stdout)["duplicates"] == 10
    assert len((tmp_path / "out" / "index.jsonl").read_text().splitlines()) == 10


def test_truncated_and_corrupt_captures_are_refused_clearly(tmp_path: Path) -> None:
    prods = products(5)
    capture = downlink_capture(tmp_path, prods, drop=0.0)
    data = capture.read_bytes()

    cut = tmp_path / "cut.cap"
    cut.write_bytes(data[: len(data) * 2 // 3])
    result = ground_cli("decode", str(cut), "-o", str(tmp_path / "a"))
    assert result.exit_code == 2
    assert "truncated capture" in result.stderr and "record" in result.stderr
    assert "products" in result.stdout  # what came before the cut is decoded and reported
    decoded = (tmp_path / "a" / "index.jsonl").read_text().splitlines()
    assert 0 < len(decoded) < 5

    bad = bytearray(data)
    bad[len(data) // 2] ^= 0x10
    (tmp_path / "bad.cap").write_bytes(bytes(bad))
    result = ground_cli("decode", str(tmp_path / "bad.cap"), "-o", str(tmp_path / "b"))
    assert result.exit_code == 2
    assert "CRC-32 mismatch" in result.stderr or "corrupt record" in result.stderr

    (tmp_path / "junk.cap").write_bytes(b"PK\x03\x04 not a capture")
    result = ground_cli("decode", str(tmp_path / "junk.cap"), "-o", str(tmp_path / "c"))
    assert result.exit_code == 2 and "not a downlink capture" in result.stderr


def test_incomplete_transfers_at_the_end_of_a_capture_are_reported(tmp_path: Path) -> None:
    capture = downlink_capture(tmp_path, products(3), drop=0.0)
    data = capture.read_bytes()
    # keep whole records up to just before the last product's EOF: re-frame a prefix
    records = list(read_capture(capture))
    short = tmp_path / "short.cap"
    w = CaptureWriter(short)
    for direction, t, packet in records[: len(records) - 6]:
        w.write(direction, packet, t)
    w.close()
    assert len(short.read_bytes()) < len(data)
    sink, receiver, error = decode_capture(short, tmp_path / "out")
    assert error is None
    rejected = [json.loads(x) for x in (tmp_path / "out" / "rejected.jsonl").read_text().splitlines()]
    assert sink.stats.failed_transfers == 1
    assert "incomplete at end of input" in rejected[0]["reason"]


def test_sink_rejects_what_is_not_a_valid_product_and_keeps_same_named_products(tmp_path: Path) -> None:
    sink = ProductSink(tmp_path)
    p = make_product(1, ProductKind.HEALTH)
    sink.receive(ReceivedFile((1, 0), 0x110, "residue", p.name, p.to_bytes()))
    assert sink.stats.rejected == 1  # health product on the residue APID
    blob = bytearray(p.to_bytes())
    blob[-2] ^= 1
    sink.receive(ReceivedFile((1, 1), 0x100, "health", p.name, bytes(blob)))
    assert sink.stats.rejected == 2  # SHA-256 mismatch
    reasons = [json.loads(x)["reason"] for x in (tmp_path / "rejected.jsonl").read_text().splitlines()]
    assert "APID" in reasons[0] and "SHA-256" in reasons[1]
    sink.receive(ReceivedFile((1, 2), 0x100, "health", p.name, p.to_bytes()))
    # same name (health of frame 1 after a payload reboot), different content: both kept
    other = Product(kind=ProductKind.HEALTH, frame_counter=1, created_utc=5.0, payload=b"{}",
                    encoding="json")
    sink.receive(ReceivedFile((1, 3), 0x100, "health", other.name, other.to_bytes()))
    sink.receive(ReceivedFile((1, 4), 0x100, "health", other.name, other.to_bytes()))
    assert sink.stats.products == 2 and sink.stats.duplicates == 1
    assert (tmp_path / "raw" / f"{p.name}_{other.sha256[:8]}.obp").exists()


def test_a_payload_that_names_its_files_obpr_is_still_received(tmp_path: Path, monkeypatch) -> None:
    """One product file extension, ``.obp``, on board and on the ground; a payload flying the
    software from before (its CFDP files named ``.obpr``) still delivers."""
    import firmware_bridge.cfdp.sender as sender

    monkeypatch.setattr(sender, "FILE_SUFFIX", ".obpr")
    prods = products(3)
    capture = downlink_capture(tmp_path, prods, drop=0.0)
    result = ground_cli("decode", str(capture), "-o", str(tmp_path / "out"), "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["products"] == 3
    check_outputs(tmp_path / "out", prods)  # kept as raw/NAME.obp


def test_a_class_1_capture_decodes(tmp_path: Path) -> None:
    prods = products(5)
    capture = downlink_capture(tmp_path, prods, drop=0.0, config=DownlinkConfig(acknowledged=False))
    sink, receiver, error = decode_capture(capture, tmp_path / "out")
    assert error is None and sink.stats.products == 5 and receiver.stats.uplink_packets == 0
    check_outputs(tmp_path / "out", prods)


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_each_kind_decodes_offline_without_losses(tmp_path: Path, kind: ProductKind) -> None:
    prods = [make_product(100, kind)]
    capture = downlink_capture(tmp_path, prods, drop=0.0)
    sink, _, error = decode_capture(capture, tmp_path / "out")
    assert error is None and sink.stats.products == 1
    check_outputs(tmp_path / "out", prods)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_random_capture_bytes_give_capture_errors_only(tmp_path_factory, junk: bytes) -> None:
    path = tmp_path_factory.mktemp("cap") / "x.cap"
    for data in (junk, CAPTURE_MAGIC + junk):
        path.write_bytes(data)
        try:
            for _direction, _t, packet in read_capture(path):
                assert 7 <= len(packet) <= 1024
        except CaptureError:
            pass
