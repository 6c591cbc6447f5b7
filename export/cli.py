"""``onboard export``: ground-side model and data tooling (needs the ``export`` extra).

Each subcommand imports its heavy libraries inside its body, so ``onboard export --help``
works everywhere and a missing library is named when the subcommand that needs it runs.
Add a subcommand with ``@export.command()`` below.
"""

from __future__ import annotations

from pathlib import Path

import click

from onboard.cli import require_packages
from onboard.sources.scene import write_scene


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


@export.command()
@click.argument("cube")
@click.option("-o", "--out", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Scene file to write (.npz, for onboard run --scene).")
@click.option("--window", type=click.IntRange(min=0), nargs=4, metavar="ROW COL HEIGHT WIDTH",
              help="Keep only this window of pixels.")
def scene(cube: str, out: Path, window: tuple[int, int, int, int] | None) -> None:
    """Write a benchmark cube of shared/data/real_cubes (CUBE: samson, jasper, urban, beach or
    the path of its .mat) as a scene file for 'onboard run --scene', scaled as the denoiser's
    benchmarks scale it (export/real_cubes.py)."""
    require_packages("export scene", "ground", "scipy")
    from export import real_cubes

    by_file = {f: n for n, f in real_cubes.FILES.items()}
    path = Path(cube)
    name = by_file.get(path.name, cube)
    if name not in real_cubes.FILES:
        raise click.ClickException(f"{cube}: not one of the benchmark cubes "
                                   f"({', '.join(real_cubes.FILES)} or their files {', '.join(by_file)})")
    root = path.parent if path.name in by_file else None
    try:
        rc = real_cubes.load(name, root)
    except (FileNotFoundError, OSError, ValueError) as exc:
        raise click.ClickException(f"{cube}: {exc}") from exc
    data = rc.data
    if window:
        r, c, h, w = window
        if h < 1 or w < 1 or r + h > data.shape[1] or c + w > data.shape[2]:
            raise click.ClickException(f"window {window} does not fit the {data.shape[1]} x {data.shape[2]} cube")
        data = data[:, r:r + h, c:c + w]
    written = write_scene(out, data.transpose(1, 2, 0), rc.wavelengths_nm)
    click.echo(f"wrote {written}: {rc.name} ({rc.sensor}), {data.shape[1]} x {data.shape[2]} px x "
               f"{len(data)} bands, {rc.wavelengths_nm[0]:.0f}-{rc.wavelengths_nm[-1]:.0f} nm")


@export.command("build", add_help_option=False,
                context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.pass_context
def build(ctx: click.Context) -> None:
    """Train, export ONNX, quantise, build TensorRT plans where possible; write the model
    bundle (onboard export build --help for the options)."""
    require_packages("export build", "export", "torch", "onnx")
    from export.build import build_command  # torch is imported only for this subcommand

    build_command.main(args=ctx.args, prog_name=ctx.command_path)
