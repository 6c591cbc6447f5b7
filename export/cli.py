"""``onboard export``: ground-side model and data tooling (needs the ``export`` extra).

Each subcommand imports its heavy libraries inside its body, so ``onboard export --help``
works everywhere and a missing library is named when the subcommand that needs it runs.
Add a subcommand with ``@export.command()`` below.
"""

from __future__ import annotations

from pathlib import Path

import click

from onboard.cli import require_packages


@click.group()
def export() -> None:
    """Train, export, quantise and compile models; build the scene spectral library."""


@export.command()
@click.option("-o", "--out", type=click.Path(dir_okay=False, path_type=Path),
              default=Path("onboard/scene/data/spectral_library.npz"), show_default=True,
              help="Where to write the library (.npz).")
def spectra(out: Path) -> None:
    """Rebuild the farmland spectral library the simulator ships (needs prosail, earthlib)."""
    require_packages("export spectra", "ground", "prosail", "earthlib")
    import numpy as np

    from export.spectral_library import write

    try:
        path = write(out)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    with np.load(path) as arrays:
        pairs = list(zip(arrays["kinds"].tolist(), arrays["splits"].tolist(), strict=True))
        counts = ", ".join(f"{k} {'/'.join(str(pairs.count((k, s))) for s in ('train', 'val', 'test'))}"
                           for k in ("soil", "residue", "green"))
        wl = arrays["wavelengths_nm"]
    click.echo(f"wrote {path} ({path.stat().st_size / 1024:.0f} KiB): {counts} spectra, "
               f"{wl[0]:.0f}-{wl[-1]:.0f} nm, {len(wl)} samples (train/val/test; "
               f"shared ones not counted)")


@export.command("build", add_help_option=False,
                context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.pass_context
def build(ctx: click.Context) -> None:
    """Train, export ONNX, quantise, build TensorRT plans where possible; write the model
    bundle (onboard export build --help for the options)."""
    require_packages("export build", "export", "torch", "onnx")
    from export.build import build_command  # torch is imported only for this subcommand

    build_command.main(args=ctx.args, prog_name=ctx.command_path)
