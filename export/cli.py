"""``onboard export``: ground-side model and data tooling (needs the ``export`` extra)."""

from __future__ import annotations

from pathlib import Path

import click


@click.group()
def export() -> None:
    """Train, export, quantise and compile models; build the scene spectral library."""


@export.command()
@click.option("-o", "--out", type=click.Path(dir_okay=False, path_type=Path),
              default=Path("onboard/scene/data/spectral_library.npz"), show_default=True)
def spectra(out: Path) -> None:
    """Rebuild the farmland spectral library the simulator ships (needs prosail)."""
    from export.spectral_library import write

    path = write(out)
    click.echo(f"wrote {path} ({path.stat().st_size / 1024:.0f} KiB)")


@export.command("build", add_help_option=False,
                context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.pass_context
def build(ctx: click.Context) -> None:
    """Train, export ONNX, quantise, build TensorRT plans where possible; write the model
    bundle (onboard export build --help for the options)."""
    from export.build import build_command  # torch is imported only for this subcommand

    build_command.main(args=ctx.args, prog_name=ctx.command_path)
