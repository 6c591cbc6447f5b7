"""``onboard run``: the main job. Ingest frames, process them, write and downlink products.

With no camera and no calibration configured it flies the simulated instrument over a
simulated farmland (or, with ``--scene``, over a real reflectance cube) and says so; because the
ground truth is then known, the summary also reports accuracy (RMSE, spectral angle and PSNR of
the reconstructed and denoised cubes, the PSNR gain of denoising; on the farmland, whose covers
are known, residue fraction MAE and tillage class accuracy).
"""

from __future__ import annotations

import json
import signal
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import click
import numpy as np
from rich.console import Console
from rich.table import Table
from tqdm import tqdm

from firmware_bridge.storage import StorageBudget
from onboard import metrics
from onboard.config import Config, ConfigError, RunConfig, override
from onboard.config import load as load_config
from onboard.formats.products import Product, event_product
from onboard.runtime.loop import FrameLoop
from onboard.runtime.pipeline import FrameResult
from onboard.runtime.session import Session, build_session
from onboard.runtime.writer import ProductWriter
from onboard.scene.clouds import CLOUD as TRUE_CLOUD
from onboard.sources.base import Truth
from onboard.stages.screen import CLOUD, INVALID


@dataclass
class Accuracy:
    """Per-frame accuracy against the simulator's truth (the residue's only where the scene's
    covers are known)."""

    rows: list[dict] = field(default_factory=list)

    def add(self, result: FrameResult, truth: Truth) -> None:
        if result.cube is None or result.residue is None or not result.cube.valid.any():
            return
        v = result.cube.valid & np.isfinite(result.residue.fractions).all(0)
        den = result.denoised if result.denoised is not None else result.cube
        row = {
            "frame": result.counter,
            "rmse_reconstructed": metrics.rmse(result.cube.data, truth.reflectance, v),
            "rmse_denoised": metrics.rmse(den.data, truth.reflectance, v),
            "sam_reconstructed_deg": metrics.spectral_angle_deg(result.cube.data, truth.reflectance, v),
            "sam_denoised_deg": metrics.spectral_angle_deg(den.data, truth.reflectance, v),
            "psnr_denoised_db": metrics.psnr_db(den.data, truth.reflectance, v, 1.0),
            "psnr_gain_db": metrics.psnr_db(den.data, truth.reflectance, v, 1.0)
            - metrics.psnr_db(result.cube.data, truth.reflectance, v, 1.0),
        }
        if truth.fractions is not None and truth.tillage is not None:
            row["residue_fraction_mae"] = metrics.fraction_mae(result.residue.fractions, truth.fractions, v)
            row["tillage_accuracy"] = metrics.class_accuracy(result.residue.tillage, truth.tillage, v)
        if truth.clouds is not None and result.screening is not None:
            screened = (result.screening.mask & INVALID) == 0
            row["cloud_mask_accuracy"] = metrics.class_accuracy((result.screening.mask & CLOUD) > 0,
                                                                truth.clouds == TRUE_CLOUD, screened)
        self.rows.append(row)

    def summary(self) -> dict[str, float]:
        if not self.rows:
            return {}
        keys = [k for k in self.rows[0] if k != "frame"]
        return {k: float(np.mean([r[k] for r in self.rows])) for k in keys}


def _summary_table(session: Session, results: list[FrameResult], writer: ProductWriter,
                   accuracy: Accuracy) -> tuple[Table, dict]:
    stages = list(dict.fromkeys(s for r in results for s in r.seconds))
    latency = {s: statistics.median(r.seconds.get(s, 0.0) for r in results) for s in stages}
    median_frame_s = statistics.median(sum(r.seconds.values()) for r in results) if results else 0.0
    flagged_frames = sum(1 for r in results if r.flags)
    worth_sending = sum(1 for r in results if r.screening is not None and r.screening.worth_sending)
    accuracy_summary = accuracy.summary()
    summary = {
        "sensor": session.sensor,
        "instrument": session.instrument,
        "simulated": session.simulated,
        "frames": len(results),
        "frame_shape": list(session.frame_shape),
        "cube_shape": session.cube_shape,
        "median_latency_s": latency,
        "median_frame_s": median_frame_s,
        "products_written": writer.count,
        "product_bytes": writer.bytes,
        "flagged_frames": flagged_frames,
        "frames_worth_sending": worth_sending,
        "accuracy": accuracy_summary,
    }
    table = Table(title=f"onboard run: {session.sensor} ({session.instrument})", show_header=True)
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_row("frames", str(len(results)))
    table.add_row("frame (detector)", " x ".join(map(str, session.frame_shape)))
    table.add_row("cube (bands x rows x cols)", " x ".join(map(str, session.cube_shape)))
    for s, v in latency.items():
        table.add_row(f"median {s}", f"{1000 * v:.1f} ms")
    table.add_row("median frame total", f"{1000 * median_frame_s:.1f} ms")
    table.add_row("products written", f"{writer.count} ({writer.bytes / 1024:.0f} KiB)")
    table.add_row("flagged frames", str(flagged_frames))
    table.add_row("frames worth sending (screen)", f"{worth_sending} of {len(results)}")
    labels = {
        "rmse_reconstructed": ("RMSE reconstructed", "{:.4f}"),
        "rmse_denoised": ("RMSE denoised", "{:.4f}"),
        "sam_reconstructed_deg": ("spectral angle reconstructed", "{:.2f} deg"),
        "sam_denoised_deg": ("spectral angle denoised", "{:.2f} deg"),
        "psnr_denoised_db": ("PSNR denoised (peak 1)", "{:.2f} dB"),
        "psnr_gain_db": ("PSNR gain of denoising", "{:+.2f} dB"),
        "residue_fraction_mae": ("residue fraction MAE", "{:.3f}"),
        "tillage_accuracy": ("tillage class accuracy", "{:.1%}"),
        "cloud_mask_accuracy": ("cloud mask accuracy", "{:.1%}"),
    }
    for k, v in accuracy_summary.items():
        name, fmt = labels[k]
        table.add_row(f"{name} (vs truth)", fmt.format(v))
    return table, summary


@click.command()
@click.option("--sensor", type=click.Choice(["imspoc", "pushbroom"]), help="Instrument (default imspoc).")
@click.option("--frames", type=click.IntRange(min=1), help="Frames to process (default 5).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path),
              help=f"Output folder (default {RunConfig.out}; [run] out in a mission file).")
@click.option("--overwrite", is_flag=True,
              help="Delete the products and frame manifests of an earlier run in --out first.")
@click.option("--config", "config_path", type=click.Path(path_type=Path), help="Mission TOML file.")
@click.option("--calibration", type=click.Path(path_type=Path), help="Calibration file (.cal).")
@click.option("--seed", type=int, help="Seed of the simulated scene and noise.")
@click.option("--replay", type=click.Path(file_okay=False, path_type=Path),
              help="Process recorded frames from this folder (onboard/sources/replay.py format).")
@click.option("--scene", type=click.Path(dir_okay=False, path_type=Path),
              help="Fly the simulated instrument over this real reflectance cube (.npz: reflectance "
              "rows x cols x bands, wavelengths_nm; onboard/sources/scene.py) instead of the farmland.")
@click.option("--record", type=click.Path(file_okay=False, path_type=Path),
              help="Also record every raw frame into this folder.")
@click.option("--port", help="Serve a flight computer on this serial port (pyserial URL): "
              "frames are captured on command and products downlinked (onboard/runtime/payload.py).")
@click.option("--mavlink", help="Be a MAVLink camera for an autopilot on this link (pymavlink URL: a serial "
              "device, udpin:HOST:PORT, udpout:HOST:PORT): capture on its commands, every product "
              "georeferenced from its pose (onboard/runtime/mavlink_camera.py; pip install 'onboard[drone]').")
@click.option("--json", "json_path", type=click.Path(path_type=Path), help="Write the summary as JSON.")
@click.option("--quiet", is_flag=True, help="No progress.")
def run(sensor: str | None, frames: int | None, out: Path | None, overwrite: bool,
        config_path: Path | None, calibration: Path | None, seed: int | None, replay: Path | None,
        scene: Path | None, record: Path | None, port: str | None, mavlink: str | None,
        json_path: Path | None, quiet: bool) -> None:
    """Ingest frames, calibrate, reconstruct, denoise, classify and write products.

    Exits 0 when every frame was processed, 130 after Ctrl-C and 143 after SIGTERM (the
    products of every processed frame are written either way), 1 on an error."""
    console = Console(stderr=False)
    try:
        config: Config = load_config(config_path)
        for key, value in (("sensor", sensor), ("frames", frames), ("out", out), ("seed", seed),
                           ("calibration", calibration), ("replay", replay), ("scene", scene),
                           ("record", record)):
            if value is not None:
                override(config, "run", key, str(value) if isinstance(value, Path) else value)
        if port is not None:
            override(config, "link", "port", port)
        if mavlink is not None:
            override(config, "mavlink", "url", mavlink)
        if config.link.port and config.mavlink.url:
            raise ConfigError("a flight computer's serial link (--port) and a MAVLink autopilot "
                              "(--mavlink) cannot both drive the capture: choose one")
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc
    # serving a flight computer, the replay folder is the sensor's drop folder, followed live
    follow = Path(config.run.replay) if config.link.port and config.run.replay else None
    if follow is not None:
        config.run.replay = None
    session = build_session(config)  # a SessionError is said in one line by onboard.cli
    out_dir = Path(config.run.out)
    # output paths are checked before any frame: a run must not end in a traceback after the
    # job; a run refused for its set-up (above) leaves no folder behind
    if config.link.port is None:
        _claim_output(out_dir, overwrite)
    if json_path is not None:
        _check_writable(json_path)
    for line in session.notes:
        click.echo(line, err=True)
    try:
        writer = ProductWriter(out_dir, StorageBudget(int(config.run.disk_floor_mb * 1e6)))
    except OSError as exc:
        raise click.ClickException(f"cannot write products to {out_dir}: {exc.strerror or exc}") from exc
    if config.link.port is not None:
        _serve(config, session, writer, json_path, follow)
        return
    if config.mavlink.url is not None:
        _serve_mavlink(config, session, writer, json_path)
        return
    accuracy = Accuracy()
    results: list[FrameResult] = []
    loop = FrameLoop(session.pipeline, config.run.deadline_s, faster_inference=session.faster_inference,
                     health=session.health,
                     health_period_s=config.run.health_period_s, workers=config.run.workers)
    bar = _progress(config.run.frames, quiet)
    with loop.signals():
        for result, truth in loop.run(session.frames(config.run.frames)):
            for shed in writer.write(result):
                bar.write(f"storage: {shed.message().text}", file=sys.stderr)
            for flag in result.flags:
                bar.write(f"warning: {flag}", file=sys.stderr)
            for event in loop.stats.events:
                if event.frame == result.counter:
                    bar.write(f"deadline: {event.describe()}", file=sys.stderr)
            if truth is not None:
                accuracy.add(result, truth)
            results.append(result)
            bar.update(1)
    bar.close()
    for problem in getattr(session.source, "problems", []):
        counter = int(problem.stem.rsplit("_", 1)[-1]) if problem.stem.rsplit("_", 1)[-1].isdigit() else -1
        click.echo(f"warning: recorded frame {problem.stem} not replayed: {problem.reason}", err=True)
        writer.write(FrameResult(counter=counter, flags=[problem.reason], products=[event_product(
            counter, time.time(), session.instrument, "frame not replayed", f"{problem.stem}: {problem.reason}")]))
    if loop.stats.stopped_by_signal:
        click.echo(f"stopped by {loop.stats.stopped_by_signal} after {len(results)} frames; "
                   "products of every processed frame were written", err=True)
    table, summary = _summary_table(session, results, writer, accuracy)
    summary["deadline_misses"] = loop.stats.deadline_misses
    summary["degrade_events"] = [e.describe() for e in loop.stats.events]
    table.add_row("deadline misses", f"{loop.stats.deadline_misses} (deadline {config.run.deadline_s * 1000:.0f} ms)")
    console.print(table)
    click.echo(f"products in {out_dir / 'products'}")
    if json_path is not None:
        json_path.write_text(json.dumps(summary, indent=2))
    if loop.stats.stopped_by_signal:
        sys.exit(128 + signal.Signals[loop.stats.stopped_by_signal].value)


def _claim_output(out_dir: Path, overwrite: bool) -> None:
    """Make ``out_dir`` ready for one run's products: writable, and holding no products of an
    earlier run (two runs mixed in one folder cannot be told apart), unless ``overwrite``."""
    try:
        ProductWriter(out_dir)
    except OSError as exc:
        raise click.ClickException(f"cannot write products to {out_dir}: {exc.strerror or exc}") from exc
    earlier = sorted([*(out_dir / "products").glob("*.obp"), *(out_dir / "frames").glob("frame_*.json")])
    if earlier and not overwrite:
        raise click.ClickException(
            f"{out_dir} already holds {len(earlier)} products and frame manifests of an earlier "
            "run; choose another --out, or add --overwrite to delete them first")
    for path in earlier:
        path.unlink()


def _check_writable(path: Path) -> None:
    """Fail now, in one line, if the JSON summary could not be written at the end."""
    existed = path.exists()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a"):
            pass
    except OSError as exc:
        raise click.ClickException(f"cannot write the JSON summary to {path}: {exc.strerror or exc}") from exc
    if not existed:
        path.unlink()


class _PlainProgress:
    """Progress as one line per frame, for logs and pipes (a bar's carriage returns would
    make one endless line there)."""

    def __init__(self, total: int) -> None:
        self.total, self.n = total, 0

    def update(self, n: int) -> None:
        self.n += n
        print(f"frame {self.n}/{self.total}", file=sys.stderr, flush=True)

    def write(self, line: str, file: TextIO = sys.stderr) -> None:
        print(line, file=file, flush=True)

    def close(self) -> None:
        pass


def _progress(total: int, quiet: bool) -> tqdm | _PlainProgress:
    """A progress bar on a terminal, plain lines elsewhere, nothing but warnings if ``quiet``."""
    if quiet or sys.stderr.isatty():
        return tqdm(total=total, desc="frames", unit="frame", disable=quiet, file=sys.stderr)
    return _PlainProgress(total)


def _serve(config: Config, session: Session, writer: ProductWriter, json_path: Path | None,
           follow: Path | None) -> None:
    """Hand the run to the payload service until SIGINT/SIGTERM."""
    import serial

    from firmware_bridge.auth import CounterStoreError, KeyFileError
    from firmware_bridge.spool import SpoolError
    from onboard.runtime.payload import PayloadService

    try:
        service = PayloadService(config, session, writer, follow)
    except (KeyFileError, CounterStoreError, SpoolError, serial.SerialException) as exc:
        raise click.ClickException(f"cannot start the payload service: {exc}") from exc
    click.echo(f"serving the flight computer on {config.link.port}", err=True)
    if config.run.workers > 1:  # captures end on a frame count kept as frames are written
        click.echo(f"note: [run] workers = {config.run.workers} applies to runs without a link; the "
                   "payload service processes one frame at a time", err=True)
    service.run()
    summary = service.summary()
    click.echo(json.dumps(summary), err=True)
    if json_path is not None:
        try:  # a full disk must not turn a clean stop into a failure: the summary is above
            json_path.write_text(json.dumps(summary, indent=2))
        except OSError as exc:
            click.echo(f"warning: summary not written to {json_path}: {exc.strerror}", err=True)


def _serve_mavlink(config: Config, session: Session, writer: ProductWriter, json_path: Path | None) -> None:
    """Be a MAVLink camera until SIGINT/SIGTERM; the summary on stderr (and in ``json_path``)."""
    from onboard.runtime.mavlink_camera import MavlinkCamera, MavlinkSetupError

    assert config.mavlink.url is not None
    try:
        camera = MavlinkCamera(config, session, writer, config.mavlink.url)
    except MavlinkSetupError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"MAVLink camera on {config.mavlink.url} (system {config.mavlink.system_id}, "
               f"component {config.mavlink.component_id})", err=True)
    camera.run()
    summary = camera.summary()
    click.echo(json.dumps(summary), err=True)
    if json_path is not None:
        json_path.write_text(json.dumps(summary, indent=2))
    if camera.stop.reason in ("SIGINT", "SIGTERM"):
        sys.exit(128 + signal.Signals[camera.stop.reason].value)


def products_of(out: Path) -> list[Product]:
    """Read back every product a run wrote (for tests and the ground tools)."""
    return [Product.from_bytes(p.read_bytes()) for p in sorted((out / "products").glob("*.obp"))]
