"""The ``onboard`` command line.

Every subcommand lives in its own module and is imported only when it is invoked, so
``onboard run`` on the flight image never touches the ground-side packages; a ground-side
subcommand whose heavy libraries are missing says which extra to install.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
import sys
from typing import Any

import click

from onboard import threads
from onboard.errors import OnboardError

# name -> (module, attribute, extra that provides its dependencies, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str, str | None, str]] = {
    "run": ("onboard.runtime.run", "run", None, "Ingest frames, process them and downlink products."),
    "info": ("onboard.info", "info", None, "Engines, versions, calibration and models in use."),
    "bench": ("onboard.bench", "bench", None, "Per-stage latency, throughput and memory here."),
    "downlink": ("onboard.downlink", "downlink", None, "Contact plan: what goes down in which pass."),
    "doctor": ("onboard.doctor", "doctor", None, "This device: what will run, what to fix before flight."),
    "ground": ("ground.cli", "ground", "ground", "Ground segment: receive and decode downlinks."),
    "calibrate": ("calibration.cli", "calibrate", "ground", "Characterise the instrument."),
    "export": ("export.cli", "export", "export", "Train, export, quantise and compile models."),
    "hil": ("hil.cli", "hil", "dev", "Hardware-in-the-loop scenarios."),
}


def require_packages(command: str, extra: str, *modules: str) -> None:
    """Stop before any work if a ground-side subcommand's libraries are missing, naming the
    extra that installs them (instead of a ModuleNotFoundError traceback half-way through)."""
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise click.ClickException(
            f"'onboard {command}' needs the Python package{'s' if len(missing) > 1 else ''} "
            f"{', '.join(repr(m) for m in missing)}, not installed here: pip install 'onboard[{extra}]'")


class LazyGroup(click.Group):
    """A click group whose subcommands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(SUBCOMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in SUBCOMMANDS:
            return None
        module_name, attr, extra, _ = SUBCOMMANDS[cmd_name]
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            missing = exc.name or "?"
            if missing.split(".")[0] in {module_name.split(".")[0], "onboard"}:
                raise click.ClickException(
                    f"'onboard {cmd_name}' is not available in this installation ({exc})"
                ) from exc
            hint = f": pip install 'onboard[{extra}]'" if extra else ""
            raise click.ClickException(
                f"'onboard {cmd_name}' needs the Python package '{missing}', which is not "
                f"installed{hint}"
            ) from exc
        return getattr(module, attr)

    def invoke(self, ctx: click.Context) -> Any:
        """The one place where an :class:`OnboardError` from any subcommand becomes a one-line
        message and exit status 1; any other exception is a bug and keeps its traceback."""
        try:
            return super().invoke(ctx)
        except OnboardError as exc:
            raise click.ClickException(str(exc)) from exc

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, SUBCOMMANDS[name][3]) for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup)
@click.version_option(package_name="onboard")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]),
              default="info", show_default=True, envvar="ONBOARD_LOG_LEVEL",
              help="Least severe log record printed to stderr (env ONBOARD_LOG_LEVEL).")
def cli(log_level: str) -> None:
    """Hyperspectral processing aboard a drone or CubeSat."""
    # the link, the downlink and the engines report through logging; without a handler their
    # INFO records (a transfer restarted, a product set aside) would be lost
    logging.basicConfig(level=log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def main() -> None:
    # The runtime's linear algebra is many small products (24 x 96 operators): BLAS threads
    # cost more in wake-ups than they save, and ONNX Runtime keeps its own pool. One thread,
    # unless the user says otherwise; this must happen before numpy is first imported.
    # ([run] threads sets the pools again when a session is built: onboard/threads.py)
    for var in threads.ENVIRONMENT:
        os.environ.setdefault(var, "1")
    cli()
