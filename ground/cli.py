"""``onboard ground``: ``receive`` from a serial link, ``decode`` a capture, ``export`` product files."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import click

from firmware_bridge.cfdp.common import DownlinkConfig
from firmware_bridge.cfdp.receiver import DownlinkReceiver
from ground.capture import CAPTURE_MAGIC, DOWN, UP, CaptureWriter
from ground.decode import decode_capture
from ground.export import ExportError, export
from ground.sink import ProductSink
from onboard.cli import require_packages
from onboard.formats.products import MAGIC


def _summary(sink: ProductSink, receiver: DownlinkReceiver, as_json: bool) -> None:
    s, r = sink.stats, receiver.stats
    summary = {"products": s.products, "by_kind": s.by_kind, "duplicates": s.duplicates,
               "rejected": s.rejected, "quarantined": s.quarantined,
               "failed_transfers": s.failed_transfers,
               "packets": r.packets, "bad_packets": r.bad_packets,
               "bad_reasons": r.bad_reasons, "transactions": r.transactions}
    if as_json:
        click.echo(json.dumps(summary, indent=2))
        return
    kinds = ", ".join(f"{v} {k}" for k, v in sorted(s.by_kind.items())) or "none"
    click.echo(f"{s.products} products ({kinds}) from {r.packets} packets in {r.transactions} "
               f"CFDP transactions; {s.duplicates} duplicates dropped, {s.rejected} rejected "
               f"({s.quarantined} kept in quarantine/), "
               f"{s.failed_transfers} transfers incomplete, {r.bad_packets} bad packets")


@click.group()
def ground() -> None:
    """Ground segment: receive a downlink, decode captures into product files."""
    require_packages("ground", "ground", "tifffile", "spectral", "rasterio")  # the user formats


@ground.command()
@click.argument("capture", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("-o", "--out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Directory for the decoded products.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def decode(capture: Path, out: Path, as_json: bool) -> None:
    """Turn a downlink CAPTURE back into product files in OUT."""
    with open(capture, "rb") as fh:  # before OUT is made: a wrong file leaves no folders
        start = fh.read(len(CAPTURE_MAGIC))
    if start[: len(MAGIC)] == MAGIC:
        raise click.UsageError(f"{capture} is a product file, not a downlink capture: "
                               f"'onboard ground export {capture} -o {out}' writes it in user formats")
    if start != CAPTURE_MAGIC:
        raise click.UsageError(f"{capture} is not a downlink capture: it starts with {start!r}, expected "
                               f"{CAPTURE_MAGIC!r} (written by 'onboard ground receive')")
    sink, receiver, error = decode_capture(capture, out)
    _summary(sink, receiver, as_json)
    if error is not None:
        click.echo(f"error: {error}; the records before it were decoded", err=True)
        sys.exit(2)


@ground.command("export")
@click.argument("products", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("-o", "--out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Directory for the user-format files.")
@click.option("--json", "as_json", is_flag=True, help="Print what was written as JSON.")
def export_command(products: tuple[Path, ...], out: Path, as_json: bool) -> None:
    """Write PRODUCTS (product files, or folders: an 'onboard run --out' folder, a receiver's
    output) to OUT: cubes as ENVI, residue maps as GeoTIFF, quick-looks as PNG."""
    try:
        report = export(products, out)
    except ExportError as exc:
        raise click.ClickException(str(exc)) from exc
    if as_json:
        click.echo(json.dumps({"files": report.files, "failed": report.failed}, indent=2))
    else:
        n = sum(len(f) for f in report.files.values())
        click.echo(f"{len(report.files)} products exported to {out} ({n} files), {len(report.failed)} failed")
    for path, why in report.failed.items():
        click.echo(f"error: {path}: {why}", err=True)
    if report.failed:
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
@click.option("--key-file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="The uplink key (mode 0600, owned by you): every CFDP PDU sent up is signed "
              "(firmware_bridge/PROTOCOL.md section 4). Needed unless --no-uplink.")
@click.option("--counter-file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="The ground's counter file, made with the key (python -m "
              "firmware_bridge.keytool provision KEY COUNTER --same-key-as PAYLOAD_KEY).")
@click.option("--idle-exit", type=float, default=None,
              help="Exit after this many seconds without a packet.")
@click.option("--ack-timer", type=float, default=10.0, show_default=True,
              help="Seconds before the Finished PDU / NAK sequence is repeated.")
@click.option("--json", "as_json", is_flag=True)
def receive(port: str, out: Path, capture: Path | None, baud: int, rate: float | None,
            no_uplink: bool, key_file: Path | None, counter_file: Path | None,
            idle_exit: float | None, ack_timer: float, as_json: bool) -> None:
    """Listen on a serial link, answer CFDP and decode products into OUT (Ctrl-C stops)."""
    import serial

    from firmware_bridge.auth import CounterStoreError, KeyFileError, UplinkSigner
    from firmware_bridge.link import ByteRate, Link
    from firmware_bridge.messages import MsgType, unpack_message
    from firmware_bridge.stopping import stop_on_signals

    signer = None
    if not no_uplink:
        if key_file is None or counter_file is None:
            raise click.UsageError("answering by CFDP (class 2) signs the uplink: give --key-file "
                                   "and --counter-file, or --no-uplink to listen only")
        try:
            signer = UplinkSigner.load(key_file, counter_file)
        except (KeyFileError, CounterStoreError) as exc:
            raise click.ClickException(str(exc)) from exc
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
            link.send_data(packet, signer=signer)

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
