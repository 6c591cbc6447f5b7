"""``onboard calibrate``: characterise an instrument, or simulate a sweep to try it on."""

from __future__ import annotations

import json
from pathlib import Path

import click
import numpy as np

from calibration.acquisitions import AcquisitionError, load_acquisition
from calibration.model_selection import DEFAULT_MODELS, MODELS


@click.group()
def calibrate() -> None:
    """Characterise an ImSPOC instrument from monochromatic sweeps (ground side)."""


@calibrate.command()
@click.argument("acquisition", type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True,
              help="Calibration file to write (.cal).")
@click.option("--report", "report_dir", type=click.Path(path_type=Path), default=None,
              help="Folder for report.json and the PNG plots (default: OUTPUT's stem + _report).")
@click.option("--model", "models", type=click.Choice(list(MODELS)), multiple=True,
              help="Candidate response model(s); default two-wave, three-wave and airy, chosen by BIC.")
@click.option("--degree", "degrees", type=int, multiple=True,
              help="Candidate Chebyshev degree(s) of gain and reflectivity; default 5 and 8.")
@click.option("--device", type=click.Path(exists=True, path_type=Path), default=None,
              help="device.json with the thumbnail layout (default: the acquisition's own).")
@click.option("--bands", type=int, default=None, help="Bands of the output wavelength grid.")
@click.option("--no-plots", is_flag=True, help="Write report.json only.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def characterize(acquisition: Path, output: Path, report_dir: Path | None, models: tuple[str, ...],
                 degrees: tuple[int, ...], device: Path | None, bands: int | None, no_plots: bool,
                 as_json: bool) -> None:
    """Characterise every interferometer of the sweep in ACQUISITION and write the
    calibration file and the fit report."""
    from calibration.calfile_writer import DeviceFileError, build_calibration
    from calibration.characterise import characterise
    from calibration.report import write_json, write_plots

    try:
        acq = load_acquisition(acquisition)
    except AcquisitionError as exc:
        raise click.ClickException(str(exc)) from exc
    if any(d < 0 or d > 12 for d in degrees):
        raise click.BadParameter("degrees must be between 0 and 12", param_hint="--degree")
    c = characterise(acq, models=models or DEFAULT_MODELS, degrees=degrees or (5, 8),
                     progress=lambda m: click.echo(m, err=True))
    try:
        cal = build_calibration(c, device=device, n_bands=bands)
    except DeviceFileError as exc:
        raise click.ClickException(str(exc)) from exc
    sha = cal.write(output)
    report_dir = report_dir or output.with_name(output.stem + "_report")
    report_dir.mkdir(parents=True, exist_ok=True)
    write_json(c, report_dir / "report.json")
    plots = [] if no_plots else write_plots(c, report_dir)
    s = c.summary()
    if as_json:
        click.echo(json.dumps({**s, "calibration": str(output), "sha256": sha,
                               "report": str(report_dir)}))
        return
    click.echo(
        f"{s['acquisition']}: {s['interferometers']} interferometers, {s['lines']} lines, "
        f"model {s['model']} (degree {s['degree']}) in {s['time_s']:.2f} s\n"
        f"  residual RMS/mean: median {s['rms_median']:.4f}, p95 {s['rms_p95']:.4f} "
        f"(on the recorded data {s['rms_recorded_median']:.4f}, {s['rms_recorded_p95']:.4f})\n"
        f"  reflectivity in [{s['r_min']:.4f}, {s['r_max']:.4f}]; OPD trend outliers "
        f"{s['opd_trend_outliers']}, low periodogram margins {s['low_margin']}\n"
        f"  wrote {output} (sha256 {sha[:12]}), report in {report_dir}"
        + (f" ({len(plots)} plots)" if plots else "")
    )


@calibrate.command()
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True,
              help="Acquisition folder to write.")
@click.option("--interferometers", type=int, default=96, show_default=True)
@click.option("--lines", type=int, default=300, show_default=True)
@click.option("--sigma-range", type=(float, float), default=(1.0, 2.5), show_default=True,
              help="Wavenumber range of the sweep (1/µm).")
@click.option("--opd-step", type=float, default=0.175, show_default=True, help="µm")
@click.option("--first-opd", type=float, default=3.0, show_default=True, help="µm")
@click.option("--reflectivity", type=(float, float), default=(0.05, 0.2), show_default=True)
@click.option("--snr", type=float, default=100.0, show_default=True)
@click.option("--dead-fraction", type=float, default=0.0, show_default=True,
              help="Fraction of entries that read 0 or a wrong value.")
@click.option("--saturated-line", is_flag=True, help="Clip the brightest line.")
@click.option("--irregular", is_flag=True, help="Random (irregular) line positions.")
@click.option("--seed", type=int, default=0, show_default=True)
def simulate(output: Path, interferometers: int, lines: int, sigma_range: tuple[float, float],
             opd_step: float, first_opd: float, reflectivity: tuple[float, float], snr: float,
             dead_fraction: float, saturated_line: bool, irregular: bool, seed: int) -> None:
    """Write a synthetic monochromatic sweep (the real acquisitions' layout, plus truth.npz)."""
    from calibration.simulate import SweepSpec, write_sweep

    if not 0 <= reflectivity[0] <= reflectivity[1] < 1:
        raise click.BadParameter("need 0 <= low <= high < 1", param_hint="--reflectivity")
    spec = SweepSpec(interferometers, lines, sigma_range, opd_step, first_opd, reflectivity, snr,
                     dead_fraction=dead_fraction, saturated_line=saturated_line,
                     irregular=irregular, seed=seed)
    acq, bank = write_sweep(output, spec)
    click.echo(f"wrote {output}: {acq.n_interferometers} interferometers x {acq.n_lines} lines, "
               f"OPD {bank.opd_um.min():.2f}-{bank.opd_um.max():.2f} µm, "
               f"R {np.min(bank.reflectivity(acq.sigma)):.2f}-"
               f"{np.max(bank.reflectivity(acq.sigma)):.2f}, SNR {snr:g}")
