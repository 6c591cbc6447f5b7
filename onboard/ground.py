"""``onboard ground``: receive a downlink, keep a capture of it, decode products to user formats.

``onboard ground receive --port URL -o DIR`` listens on a serial link (any pyserial URL) as
the flight computer's far end, answers CFDP class 2 transfers (ACK, NAK, Finished) unless
``--no-uplink``, writes every space packet to a capture file and decodes products into DIR.
``onboard ground decode CAPTURE -o DIR`` does the same from a capture, offline.

Each file a CFDP transaction delivers has passed CFDP's CRC-32; it must then parse as a
product (``onboard.formats.products.Product.from_bytes``, which checks the payload's SHA-256) and
its kind must match its APID. A product already in DIR with the same name and SHA-256 is a
duplicate (a retransmission after a payload reboot) and is counted, not written again; a
different product under a name already used gets ``_<sha8>`` appended.

Output in DIR:

* ``raw/NAME.obpr``: the product file exactly as spooled on board.
* residue maps: ``NAME_tillage.tif`` (uint8 class map, rows x cols) and
  ``NAME_fractions.tif`` (float32, 3 x rows x cols: residue, soil, green vegetation), TIFF
  written by tifffile; GeoTIFF tags (ModelPixelScale, ModelTiepoint, GeoKeyDirectory) when
  the product's meta carries ``geotransform`` (GDAL order: x0, dx, 0, y0, 0, dy) and ``epsg``.
* quick-looks: ``NAME.png`` (the payload as sent).
* cubes: ENVI ``NAME.hdr``/``NAME.img`` (float32, band-sequential, ``wavelength`` in nm in
  the header; float16 cubes are widened losslessly) and ``NAME_valid.hdr/.img`` (uint8
  validity mask), written by Spectral Python.
* health and events: one JSON line per product in ``health.jsonl`` / ``events.jsonl``
  (the product header plus its payload under ``"data"``).
* other kinds: the payload with its encoding's extension (``.json``, ``.npz``, ``.png``).
* ``index.jsonl``: one line per accepted product (name, kind, sha256, files, CFDP
  transaction); ``rejected.jsonl``: transfers and files refused, with the reason.

Capture file format (big-endian)::

    file header   8 bytes  b"OBDLCAP1"
    record        1 byte   direction: 0 downlink (payload -> ground), 1 uplink
                  8 bytes  receive time, microseconds since 1970-01-01 UTC, u64
                  2 bytes  packet length L, u16, 7 <= L <= 1024
                  L bytes  one CCSDS space packet, exactly as carried by a DATA frame
                  4 bytes  CRC-32 (zlib/ISO-HDLC) of the 11 header bytes and the packet

A reader refuses a record whose CRC, direction or length is wrong, and a file that ends
inside a record, saying at which record and byte offset; records before that are decoded.
"""

from __future__ import annotations

import importlib.util
import json
import struct
import sys
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import click
import numpy as np

from firmware_bridge.downlink import (
    DownlinkConfig,
    DownlinkReceiver,
    FailedTransfer,
    ReceivedFile,
)
from firmware_bridge.messages import MAX_BODY
from onboard.formats.products import Product, ProductFormatError, ProductKind, decode_arrays

CAPTURE_MAGIC = b"OBDLCAP1"
_RECORD = struct.Struct(">BQH")
_CRC = struct.Struct(">I")
DOWN, UP = 0, 1


class CaptureError(ValueError):
    """A capture file is truncated or corrupt."""


# -- capture files ------------------------------------------------------------------------


class CaptureWriter:
    """Appends space packets to a capture file, flushed record by record."""

    def __init__(self, path: Path) -> None:
        self.path = path
        new = not path.exists() or path.stat().st_size == 0
        self._fh: BinaryIO = open(path, "ab")  # noqa: SIM115 (closed in close())
        if new:
            self._fh.write(CAPTURE_MAGIC)
        self.records = 0

    def write(self, direction: int, packet: bytes, t_us: int | None = None) -> None:
        head = _RECORD.pack(direction, time.time_ns() // 1000 if t_us is None else t_us,
                            len(packet))
        self._fh.write(head + packet + _CRC.pack(zlib.crc32(head + packet)))
        self._fh.flush()
        self.records += 1

    def close(self) -> None:
        self._fh.close()


def read_capture(path: Path) -> Iterator[tuple[int, int, bytes]]:
    """(direction, time_us, packet) per record; CaptureError at the first bad one."""
    data = path.read_bytes()
    if data[: len(CAPTURE_MAGIC)] != CAPTURE_MAGIC:
        raise CaptureError(
            f"{path} is not a downlink capture: it starts with {data[:8]!r}, expected "
            f"{CAPTURE_MAGIC!r} (write one with 'onboard ground receive')"
        )
    pos, n = len(CAPTURE_MAGIC), 0
    while pos < len(data):
        n += 1
        where = f"{path}: record {n} at byte {pos}"
        if pos + _RECORD.size > len(data):
            raise CaptureError(f"{where}: file ends inside the record header (truncated capture)")
        direction, t_us, length = _RECORD.unpack_from(data, pos)
        end = pos + _RECORD.size + length + _CRC.size
        if direction not in (DOWN, UP) or not 7 <= length <= MAX_BODY:
            raise CaptureError(f"{where}: direction {direction}, length {length}: corrupt record")
        if end > len(data):
            raise CaptureError(
                f"{where}: record needs {end - pos} bytes, only {len(data) - pos} left "
                "(truncated capture)")
        (crc,) = _CRC.unpack_from(data, end - _CRC.size)
        if zlib.crc32(data[pos : end - _CRC.size]) != crc:
            raise CaptureError(f"{where}: CRC-32 mismatch (corrupt capture)")
        yield direction, t_us, data[pos + _RECORD.size : end - _CRC.size]
        pos = end


# -- products to user formats -------------------------------------------------------------


def _geotiff_tags(meta: dict) -> list[tuple]:
    """GeoTIFF tags for tifffile's ``extratags`` from meta's geotransform and EPSG code."""
    gt, epsg = meta.get("geotransform"), meta.get("epsg")
    if gt is None or epsg is None:
        return []
    x0, dx, _, y0, _, dy = (float(v) for v in gt)
    geographic = int(epsg) == 4326
    keys = [1, 1, 0, 3,
            1024, 0, 1, 2 if geographic else 1,  # GTModelType: geographic / projected
            1025, 0, 1, 1,  # GTRasterType: PixelIsArea
            2048 if geographic else 3072, 0, 1, int(epsg)]
    return [(33550, "d", 3, (dx, abs(dy), 0.0), False),
            (33922, "d", 6, (0.0, 0.0, 0.0, x0, y0, 0.0), False),
            (34735, "H", len(keys), tuple(keys), False)]


def _write_tiff(path: Path, array: np.ndarray, meta: dict) -> None:
    import tifffile

    tifffile.imwrite(path, array, photometric="minisblack", extratags=_geotiff_tags(meta),
                     metadata=None)


def _write_envi(path: Path, array: np.ndarray, header: dict) -> list[str]:
    """(bands, rows, cols) array as ENVI BSQ; returns the file names written."""
    from spectral.io import envi

    hdr = path.with_suffix(".hdr")
    envi.save_image(str(hdr), np.ascontiguousarray(np.moveaxis(array, 0, -1)),
                    interleave="bsq", ext=".img", force=True, metadata=header)
    return [hdr.name, path.with_suffix(".img").name]


@dataclass
class GroundStats:
    products: int = 0
    duplicates: int = 0
    rejected: int = 0
    failed_transfers: int = 0
    by_kind: dict[str, int] = field(default_factory=dict)


class ProductSink:
    """Verifies delivered files as products, drops duplicates, writes user formats."""

    def __init__(self, out: Path) -> None:
        missing = [m for m in ("tifffile", "spectral") if importlib.util.find_spec(m) is None]
        if missing:
            raise click.ClickException(
                f"writing products needs {', '.join(missing)}: pip install 'onboard[ground]'")
        self.out = out
        (out / "raw").mkdir(parents=True, exist_ok=True)
        self.index_path = out / "index.jsonl"
        self.seen: dict[str, set[str]] = {}
        if self.index_path.exists():
            for line in self.index_path.read_text().splitlines():
                rec = json.loads(line)
                self.seen.setdefault(rec["name"], set()).add(rec["sha256"])
        self.stats = GroundStats()

    def append_jsonl(self, file: str, record: dict) -> None:
        with open(self.out / file, "a") as fh:
            fh.write(json.dumps(record, sort_keys=True) + "\n")

    def reject(self, what: str, reason: str, transaction: tuple[int, int] | None = None) -> None:
        self.stats.rejected += 1
        self.append_jsonl("rejected.jsonl", {"what": what, "reason": reason,
                                     "transaction": list(transaction) if transaction else None})
        click.echo(f"rejected {what}: {reason}", err=True)

    def failed(self, failure: FailedTransfer) -> None:
        self.stats.failed_transfers += 1
        self.append_jsonl("rejected.jsonl", {"what": failure.name or "?", "reason": failure.reason,
                                     "transaction": list(failure.transaction)})

    def receive(self, f: ReceivedFile) -> None:
        try:
            product = Product.from_bytes(f.data)
        except ProductFormatError as exc:
            self.reject(f.name, f"not a valid product: {exc}", f.transaction)
            return
        if f.kind is not None and product.kind.value != f.kind:
            self.reject(f.name, f"product kind {product.kind.value} came on the APID of "
                                f"{f.kind}", f.transaction)
            return
        if product.name != f.name:
            self.reject(f.name, f"file name says {f.name}, product header says {product.name}",
                        f.transaction)
            return
        sha = product.sha256
        names = self.seen.setdefault(product.name, set())
        if sha in names:
            self.stats.duplicates += 1
            return
        stem = product.name if not names else f"{product.name}_{sha[:8]}"
        (self.out / "raw" / f"{stem}.obpr").write_bytes(f.data)
        files = [f"raw/{stem}.obpr", *self._write_formats(product, stem)]
        names.add(sha)
        self.stats.products += 1
        self.stats.by_kind[product.kind.value] = self.stats.by_kind.get(product.kind.value, 0) + 1
        self.append_jsonl("index.jsonl", {"name": product.name, "kind": product.kind.value,
                                  "sha256": sha, "files": files,
                                  "transaction": list(f.transaction),
                                  "received_utc": time.time()})

    def _write_formats(self, p: Product, stem: str) -> list[str]:
        out = self.out
        if p.kind == ProductKind.RESIDUE:
            arrays = decode_arrays(p.payload)
            _write_tiff(out / f"{stem}_tillage.tif", arrays["tillage"].astype(np.uint8), p.meta)
            _write_tiff(out / f"{stem}_fractions.tif", arrays["fractions"].astype(np.float32),
                        p.meta)
            return [f"{stem}_tillage.tif", f"{stem}_fractions.tif"]
        if p.kind == ProductKind.CUBE:
            arrays = decode_arrays(p.payload)
            data = arrays["data"].astype(np.float32)
            header = {"wavelength": [f"{w:.3f}" for w in arrays["wavelengths_nm"]],
                      "wavelength units": "nm",
                      "description": f"onboard cube {p.name}, frame {p.frame_counter}"}
            files = _write_envi(out / f"{stem}.img", data, header)
            if "valid" in arrays:
                files += _write_envi(out / f"{stem}_valid.img",
                                     arrays["valid"].astype(np.uint8)[None], {})
            return files
        if p.kind == ProductKind.QUICKLOOK and p.encoding == "png":
            (out / f"{stem}.png").write_bytes(p.payload)
            return [f"{stem}.png"]
        if p.kind in (ProductKind.HEALTH, ProductKind.EVENT) and p.encoding == "json":
            file = "health.jsonl" if p.kind == ProductKind.HEALTH else "events.jsonl"
            self.append_jsonl(file, {**p.header(), "name": p.name, "data": json.loads(p.payload)})
            return [file]
        ext = {"json": ".json", "npz": ".npz", "png": ".png"}.get(p.encoding, ".bin")
        (out / f"{stem}{ext}").write_bytes(p.payload)
        return [f"{stem}{ext}"]


# -- the commands -------------------------------------------------------------------------


#: Offline decoding: CFDP timers must never fire on wall-clock time.
_OFFLINE = DownlinkConfig(ack_timer_s=1e9, nak_timer_s=1e9, check_timer_s=1e9, inactivity_s=1e9)


def decode_capture(capture: Path, out: Path) -> tuple[ProductSink, DownlinkReceiver, str | None]:
    """Decode every good record of ``capture`` into ``out``; the error text if the capture
    is truncated or corrupt (the records before it are decoded)."""
    sink = ProductSink(out)
    staging = out / ".staging"
    receiver = DownlinkReceiver(staging, sink.receive, None, _OFFLINE, sink.failed)
    error = None
    try:
        for direction, _t, packet in read_capture(capture):
            if direction == DOWN:
                receiver.on_packet(packet)
    except CaptureError as exc:
        error = str(exc)
    receiver.finish()
    return sink, receiver, error


def _summary(sink: ProductSink, receiver: DownlinkReceiver, as_json: bool) -> None:
    s, r = sink.stats, receiver.stats
    summary = {"products": s.products, "by_kind": s.by_kind, "duplicates": s.duplicates,
               "rejected": s.rejected, "failed_transfers": s.failed_transfers,
               "packets": r.packets, "bad_packets": r.bad_packets,
               "bad_reasons": r.bad_reasons, "transactions": r.transactions}
    if as_json:
        click.echo(json.dumps(summary, indent=2))
        return
    kinds = ", ".join(f"{v} {k}" for k, v in sorted(s.by_kind.items())) or "none"
    click.echo(f"{s.products} products ({kinds}) from {r.packets} packets in {r.transactions} "
               f"CFDP transactions; {s.duplicates} duplicates dropped, {s.rejected} rejected, "
               f"{s.failed_transfers} transfers incomplete, {r.bad_packets} bad packets")


@click.group()
def ground() -> None:
    """Ground segment: receive a downlink, decode captures into product files."""


@ground.command()
@click.argument("capture", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("-o", "--out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Directory for the decoded products.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def decode(capture: Path, out: Path, as_json: bool) -> None:
    """Turn a downlink CAPTURE back into product files in OUT."""
    sink, receiver, error = decode_capture(capture, out)
    _summary(sink, receiver, as_json)
    if error is not None:
        click.echo(f"error: {error}; the records before it were decoded", err=True)
        sys.exit(2)


@ground.command()
@click.option("--port", required=True, help="pyserial URL of the link: /dev/ttyUSB0, a pty, "
              "socket://host:port.")
@click.option("-o", "--out", type=click.Path(file_okay=False, path_type=Path), required=True)
@click.option("--capture", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Capture file to append to (default OUT/downlink.cap).")
@click.option("--baud", type=int, default=115200, show_default=True)
@click.option("--rate", type=float, default=None,
              help="Uplink pacing in bytes/s (default: the UART rate of --baud).")
@click.option("--no-uplink", is_flag=True, help="Listen only (class 1 transfers).")
@click.option("--idle-exit", type=float, default=None,
              help="Exit after this many seconds without a packet.")
@click.option("--ack-timer", type=float, default=10.0, show_default=True,
              help="Seconds before the Finished PDU / NAK sequence is repeated.")
@click.option("--json", "as_json", is_flag=True)
def receive(port: str, out: Path, capture: Path | None, baud: int, rate: float | None,
            no_uplink: bool, idle_exit: float | None, ack_timer: float, as_json: bool) -> None:
    """Listen on a serial link, answer CFDP and decode products into OUT (Ctrl-C stops)."""
    import serial

    from firmware_bridge.link import ByteRate, Link
    from firmware_bridge.messages import MsgType, unpack_message
    from firmware_bridge.stopping import stop_on_signals

    with stop_on_signals() as stop:
        out.mkdir(parents=True, exist_ok=True)
        sink = ProductSink(out)
        try:
            link = Link.open(port, baudrate=baud, rate=ByteRate(rate) if rate else None)
        except (serial.SerialException, ValueError) as exc:
            raise click.ClickException(f"cannot open the link {port}: {exc}") from exc
        writer = CaptureWriter(capture or out / "downlink.cap")

        def uplink(packet: bytes) -> None:
            writer.write(UP, packet)
            link.send_data(packet)

        config = DownlinkConfig(ack_timer_s=ack_timer, nak_timer_s=ack_timer)
        receiver = DownlinkReceiver(out / ".staging", sink.receive, None if no_uplink else uplink,
                                    config, sink.failed)
        click.echo(f"listening on {port} ({'class 1, no uplink' if no_uplink else 'class 2'}); "
                   f"capture {writer.path}", err=True)
        last = time.monotonic()
        try:
            while not stop and (idle_exit is None or time.monotonic() - last < idle_exit):
                frame = link.receive(0.05)
                while frame is not None:
                    last = time.monotonic()
                    if frame.msg_type == MsgType.DATA:
                        writer.write(DOWN, frame.body)
                        receiver.on_packet(frame.body)
                    else:
                        try:
                            msg = unpack_message(frame.msg_type, frame.body)
                            sink.append_jsonl("telemetry.jsonl", {"t": time.time(), "type": type(msg).__name__,
                                                          "message": repr(msg)})
                        except ValueError as exc:
                            sink.append_jsonl("telemetry.jsonl", {"t": time.time(), "error": str(exc)})
                    frame = link.receive(0.0)
                receiver.poll()
        finally:
            link.close()
            writer.close()
    if link.decoder.bad_frames:
        click.echo(f"link: {link.decoder.bad_frames} bad frames refused "
                   f"({dict(link.decoder.bad)})", err=True)
    _summary(sink, receiver, as_json)
