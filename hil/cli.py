"""``onboard hil``: run HIL scenarios against the payload, emulated or on real hardware."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click
from rich.console import Console

from hil.report import table
from hil.runner import Runner
from hil.scenario import ScenarioError, load


@click.group()
def hil() -> None:
    """Hardware-in-the-loop: the payload against an emulated flight computer, sensor and link."""


@hil.command()
@click.argument("scenarios", nargs=-1, required=True,
                type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--port", help="Real hardware: the flight computer emulator talks to the payload "
              "computer on this serial device (e.g. /dev/ttyUSB0); no emulated link, sensor or power.")
@click.option("--key-file", type=click.Path(dir_okay=False, path_type=Path),
              help="With --port: the uplink key file (mode 0600, owned by you): telecommands "
              "and the ground's CFDP PDUs are signed with it.")
@click.option("--counter-file", type=click.Path(dir_okay=False, path_type=Path),
              help="With --port: the flight computer's counter file, made with the key (python -m "
              "firmware_bridge.keytool provision).")
@click.option("--work", type=click.Path(file_okay=False, path_type=Path),
              help="Keep the run's files (payload log, archive, spool) in this folder.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the report(s) as JSON.")
def run(scenarios: tuple[Path, ...], port: str | None, key_file: Path | None,
        counter_file: Path | None, work: Path | None, json_path: Path | None) -> None:
    """Run SCENARIO.toml files; exits 1 if any criterion fails."""
    console = Console(stderr=True)
    from hil import drone

    try:
        drones = [p for p in scenarios if drone.is_drone(p)]  # MAVLink scenarios (hil/drone.py)
        loaded = [load(p) for p in scenarios if p not in drones]
    except ScenarioError as exc:
        raise click.ClickException(str(exc)) from exc
    if port is not None and (key_file is None or counter_file is None):
        raise click.UsageError("with --port, give --key-file and --counter-file (the flight computer's)")
    reports = []
    for p in drones:
        if port is not None:
            raise click.UsageError(f"{p}: a drone scenario runs emulated only (no --port)")
        try:
            report = drone.run_file(p, work, progress=lambda line: console.print(f"[dim]{line}[/]"))
        except ScenarioError as exc:
            raise click.ClickException(str(exc)) from exc
        reports.append(report)
        Console().print(drone.table(report))
    for s in loaded:
        try:
            runner = Runner(s, work / s.name if work else None, port, key_file, counter_file,
                            progress=lambda line: console.print(f"[dim]{line}[/]"))
        except ValueError as exc:
            raise click.ClickException(str(exc)) from exc
        report = runner.run()
        reports.append(report)
        Console().print(table(report))
    if json_path is not None:
        json_path.write_text(json.dumps(reports[0] if len(reports) == 1 else reports, indent=2))
    failed = [r["scenario"] for r in reports if not r["passed"]]
    if failed:
        click.echo(f"FAILED: {', '.join(failed)}", err=True)
        sys.exit(1)
