"""``onboard calibrate``: characterise an instrument, or simulate a sweep to try it on."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import click
import numpy as np

from calibration.acquisitions import AcquisitionError, load_acquisition
from calibration.model_selection import DEFAULT_MODELS, MODELS
from onboard.cli import require_packages

if TYPE_CHECKING:
    from calibration.certificate import Certificate
    from calibration.characterise import Characterisation
    from calibration.sphere import SphereAcquisition, SphereGain
    from onboard.formats.calfile import Calibration


#: The ground-side packages ``characterize`` imports, all in the ``ground`` extra (matplotlib
#: only for the plots).
CHARACTERIZE_NEEDS = ("threadpoolctl", "matplotlib")


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
@click.option("--regions", type=(int, int), default=(4, 4), show_default=True,
              help="Full-frame sweeps: regions per thumbnail (rows, cols) characterised apart.")
@click.option("--no-plots", is_flag=True, help="Write report.json only.")
@click.option("--sphere", type=click.Path(path_type=Path), default=None,
              help="Frames of an integrating sphere and darks (calibration.sphere): the file gets "
                   "the absolute radiance gain (version 2), as 'onboard calibrate radiance' adds it.")
@click.option("--certificate", type=click.Path(path_type=Path), default=None,
              help="The sphere's radiance certificate (CSV; calibration.certificate).")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def characterize(acquisition: Path, output: Path, report_dir: Path | None, models: tuple[str, ...],
                 degrees: tuple[int, ...], device: Path | None, bands: int | None,
                 regions: tuple[int, int], no_plots: bool, sphere: Path | None,
                 certificate: Path | None, as_json: bool) -> None:
    """Characterise every interferometer of the sweep in ACQUISITION and write the
    calibration file and the fit report.

    ACQUISITION is a folder of per-interferometer responses (data.npy, the real prototypes'
    layout) or a full-frame sweep of detector images (frames.npy; see calibration.fullframe),
    whose darks, flat and thumbnail layout go into the calibration file too."""
    require_packages("calibrate characterize", "ground",
                     *(m for m in CHARACTERIZE_NEEDS if not (no_plots and m == "matplotlib")))
    from calibration.calfile_writer import DeviceFileError, build_calibration
    from calibration.characterise import characterise
    from calibration.fullframe import is_full_frame
    from calibration.report import write_json, write_plots

    if any(d < 0 or d > 12 for d in degrees):
        raise click.BadParameter("degrees must be between 0 and 12", param_hint="--degree")
    standard = _sphere_inputs(sphere, certificate)
    if is_full_frame(acquisition):
        if device is not None:
            raise click.BadParameter("a full-frame sweep's layout is found on its flat frame",
                                     param_hint="--device")
        _characterize_full_frame(acquisition, output, report_dir, models, degrees, bands, regions,
                                 no_plots, as_json, standard)
        return
    try:
        acq = load_acquisition(acquisition)
    except AcquisitionError as exc:
        raise click.ClickException(str(exc)) from exc
    c = characterise(acq, models=models or DEFAULT_MODELS, degrees=degrees or (5, 8),
                     progress=lambda m: click.echo(m, err=True))
    try:
        cal = build_calibration(c, device=device, n_bands=bands)
    except DeviceFileError as exc:
        raise click.ClickException(str(exc)) from exc
    cal, measured = _with_sphere(cal, standard, output)
    sha = cal.write(output)
    report_dir = report_dir or output.with_name(output.stem + "_report")
    report_dir.mkdir(parents=True, exist_ok=True)
    write_json(c, report_dir / "report.json")
    plots = [] if no_plots else write_plots(c, report_dir)
    s = c.summary()
    if as_json:
        click.echo(json.dumps({**s, "calibration": str(output), "sha256": sha,
                               "report": str(report_dir), "flight_problem": cal.flight_problem(),
                               "radiance_gain": None if measured is None else measured.summary()}))
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
        + _ambiguous_line(c) + _gain_line(measured) + _flight_line(cal)
    )


def _sphere_inputs(sphere: Path | None, certificate: Path | None
                   ) -> tuple[SphereAcquisition, Certificate] | None:
    """The sphere acquisition and its certificate, read and checked before any work (both or
    neither)."""
    if (sphere is None) != (certificate is None):
        raise click.UsageError("--sphere and --certificate go together (the frames of a radiance "
                               "standard and its certificate)")
    if sphere is None or certificate is None:
        return None
    from calibration.certificate import CertificateError, read_certificate
    from calibration.sphere import load_sphere

    try:
        return load_sphere(sphere), read_certificate(certificate)
    except (CertificateError, AcquisitionError) as exc:
        raise click.ClickException(str(exc)) from exc


def _with_sphere(cal: Calibration, inputs: tuple[SphereAcquisition, Certificate] | None,
                 keep: Path | None = None) -> tuple[Calibration, SphereGain | None]:
    """``cal`` with the sphere's radiance gain (a version-2 file), or as it is without one.
    Where the gain cannot be measured, ``cal`` is first written to ``keep`` (a
    characterisation is not thrown away for a bad sphere) and the error says so."""
    if inputs is None:
        return cal, None
    from calibration.certificate import CertificateError
    from calibration.sphere import measure_gain, with_radiance_gain

    acq, cert = inputs
    try:
        measured = measure_gain(cal, acq, cert)
    except (CertificateError, AcquisitionError) as exc:
        if keep is None:
            raise click.ClickException(str(exc)) from exc
        cal.write(keep)
        raise click.ClickException(
            f"{exc}\n  wrote {keep} WITHOUT a radiance gain (version 1); once the sphere is "
            f"fixed: onboard calibrate radiance {keep} SPHERE --certificate CERT -o NEW.cal") from exc
    return with_radiance_gain(cal, measured, acq, cert), measured


def _gain_line(measured: SphereGain | None) -> str:
    if measured is None:
        return ""
    s = measured.summary()
    check = (f"; interferometers over the bank's prediction: median {s['interferometer_ratio_median']:.4g}, "
             f"p95/p5 - 1 = {100 * s['interferometer_ratio_spread']:.1f} %"
             if "interferometer_ratio_median" in s else "")
    return (f"\n  radiance gain per band (DN/s per W m-2 sr-1 nm-1): median {s['gain_median']:.4g}, "
            f"relative uncertainty (k = 1) median {100 * s['uncertainty_median']:.2f} %, max "
            f"{100 * s['uncertainty_max']:.2f} % (frames up to {100 * s['frames_noise_max']:.2f} %, "
            f"darks {100 * s['dark_noise_max']:.2f} %, certificate {100 * s['certificate_max']:.2f} %; "
            f"signal {s['signal_over_dark_noise']:.0f} x the dark noise){check}")


def _ambiguous_line(c: Characterisation) -> str:
    """The interferometers whose best two OPD minima the data do not tell apart."""
    found = c.search
    if found is None or not found.ambiguous.any():
        return ""
    rows = np.flatnonzero(found.ambiguous)
    pairs = ", ".join(f"{i}: {c.bank.opd_um[i]:.3f} or {found.alternative_opd_um[i]:.3f} µm"
                      for i in rows[:8])
    return (f"\n  {rows.size} interferometers ambiguous in OPD (two minima within the noise; "
            f"both in report.json): {pairs}" + (" ..." if rows.size > 8 else ""))


def _flight_line(cal: Calibration) -> str:
    problem = cal.flight_problem()
    radiance = ("" if cal.radiance_gain is not None else
                "\n  no absolute radiance gain (version 1: lab reflectance only); add one from an "
                "integrating sphere with 'onboard calibrate radiance'")
    return radiance + ("" if problem is None else f"\n  WARNING: this file {problem}")


def _characterize_full_frame(acquisition: Path, output: Path, report_dir: Path | None,
                             models: tuple[str, ...], degrees: tuple[int, ...], bands: int | None,
                             regions: tuple[int, int], no_plots: bool, as_json: bool,
                             standard: tuple[SphereAcquisition, Certificate] | None) -> None:
    """``characterize`` for a full-frame sweep: maps, layout, per-region fits, wedge."""
    from calibration.fullframe import characterise_full_frame, load_full_frame
    from calibration.report import to_json, write_plots

    try:
        acq = load_full_frame(acquisition)
        ff = characterise_full_frame(acq, regions, models=models or DEFAULT_MODELS,
                                     degrees=degrees or (5, 8),
                                     progress=lambda m: click.echo(m, err=True))
    except AcquisitionError as exc:
        raise click.ClickException(str(exc)) from exc
    cal, measured = _with_sphere(ff.calibration(n_bands=bands), standard, output)
    sha = cal.write(output)
    report_dir = report_dir or output.with_name(output.stem + "_report")
    report_dir.mkdir(parents=True, exist_ok=True)
    g = ff.bank.opd_gradient_um_per_px
    doc = {**to_json(ff.thumbnails), "full_frame": ff.summary(),
           "wedge": [{"index": i, "opd_centre_um": float(ff.bank.opd_um[i]),
                      "gradient_um_per_px": g[i].tolist(), "plane_rms_um": float(ff.plane_rms_um[i]),
                      "wedge_measured": bool(ff.wedge_measured[i]),
                      "region_opd_um": ff.region_opd_um[i].tolist()} for i in range(len(ff.bank))]}
    (report_dir / "report.json").write_text(json.dumps(doc, indent=1))
    plots = [] if no_plots else write_plots(ff.thumbnails, report_dir)
    s, f = ff.thumbnails.summary(), ff.summary()
    if as_json:
        click.echo(json.dumps({**s, "full_frame": f, "calibration": str(output), "sha256": sha,
                               "report": str(report_dir),
                               "radiance_gain": None if measured is None else measured.summary()}))
        return
    click.echo(
        f"{s['acquisition']}: {f['thumbnails']} thumbnails of {f['thumb_shape'][0]} x "
        f"{f['thumb_shape'][1]} found on the flat, {s['lines']} lines, model {s['model']} "
        f"(degree {s['degree']})\n"
        f"  {f['bad_pixels']} bad pixels; {f['saturated_thumbnail_lines']} thumbnail-lines saturated\n"
        f"  {f['regions'][0]} x {f['regions'][1]} regions per thumbnail: residual RMS/mean median "
        f"{f['region_rms_median']:.4f}, p95 {f['region_rms_p95']:.4f}\n"
        f"  wedge across a thumbnail: median {1000 * f['wedge_um_across_median']:.1f} nm OPD; "
        f"region OPDs off the plane by {1000 * f['plane_rms_um_median']:.2f} nm RMS (median); "
        f"{f['wedge_not_measured']} wedges not measurable (too few fringes)\n"
        f"  wrote {output} (sha256 {sha[:12]}), report in {report_dir}"
        + (f" ({len(plots)} plots)" if plots else "") + _gain_line(measured) + _flight_line(cal)
    )


#: ``simulate`` options that only one kind of acquisition takes.
SWEEP_ONLY = ("interferometers", "sigma_range", "first_opd", "snr", "irregular")
FULL_FRAME_ONLY = ("preset", "grid", "thumb", "wedge", "first_index")
#: ``simulate`` options a full-frame sweep of the "default" preset (the runtime's simulated
#: instrument, fixed by its seed) cannot take.
SMALL_PRESET_ONLY = ("grid", "thumb", "wedge", "first_index", "opd_step", "reflectivity")


@calibrate.command()
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True,
              help="Acquisition folder to write.")
@click.option("--full-frame", is_flag=True,
              help="Detector frames of the whole ImSPOC per line, with darks and a white flat "
                   "(calibration.fullframe), instead of per-interferometer responses.")
@click.option("--interferometers", type=int, default=None, help="[sweep, 96]")
@click.option("--lines", type=int, default=None, help="[sweep 300, full frame 150]")
@click.option("--sigma-range", type=(float, float), default=None,
              help="[sweep, 1.0 2.5] Wavenumber range of the sweep (1/µm).")
@click.option("--opd-step", type=float, default=None, help="[0.175] µm")
@click.option("--first-opd", type=float, default=None, help="[sweep, 3.0] µm")
@click.option("--reflectivity", type=(float, float), default=None,
              help="[sweep 0.05 0.2, full frame 0.15 0.35]")
@click.option("--snr", type=float, default=None, help="[sweep, 100]")
@click.option("--dead-fraction", type=float, default=None,
              help="[sweep: fraction of entries that read 0 or a wrong value, 0; full frame: "
                   "the detector's dead pixels, the preset's]")
@click.option("--saturated-line", is_flag=True, help="Clip the brightest line.")
@click.option("--irregular", is_flag=True, default=None, help="[sweep] Random (irregular) line positions.")
@click.option("--preset", type=click.Choice(["small", "default"]), default=None,
              help="[full frame, small] 'default': the instrument 'onboard run --sensor imspoc' "
                   "simulates with the same --seed, so the calibration file can be flown.")
@click.option("--grid", type=(int, int), default=None, help="[full frame small, 4 6] thumbnails (rows, cols)")
@click.option("--thumb", type=int, default=None, help="[full frame small, 32] thumbnail side (pixels)")
@click.option("--wedge", type=float, default=None,
              help="[full frame small, 0.02] largest OPD change across a thumbnail (µm)")
@click.option("--first-index", type=int, default=None,
              help="[full frame small, 14] design index of the first interferometer")
@click.option("--seed", type=int, default=0, show_default=True)
def simulate(output: Path, full_frame: bool, seed: int, saturated_line: bool, **given) -> None:
    """Write a synthetic monochromatic sweep with its truth (truth.npz): per-interferometer
    responses in the real acquisitions' layout, or, with --full-frame, detector frames.
    Defaults in brackets; an option of the other kind of acquisition is refused."""
    given = {k: v for k, v in given.items() if v is not None}
    wrong = [k for k in (SWEEP_ONLY if full_frame else FULL_FRAME_ONLY) if k in given]
    if full_frame and given.get("preset") == "default":
        wrong += [k for k in SMALL_PRESET_ONLY if k in given]
    if wrong:
        kind = ("a full-frame sweep of the default preset" if full_frame and given.get("preset") == "default"
                else "a full-frame sweep" if full_frame else "a response sweep (add --full-frame?)")
        raise click.UsageError(f"not options of {kind}: "
                               f"{', '.join('--' + k.replace('_', '-') for k in wrong)}")
    lo, hi = given.get("reflectivity", (0.0, 0.0))
    if not 0 <= lo <= hi < 1:
        raise click.BadParameter("need 0 <= low <= high < 1", param_hint="--reflectivity")
    if not 0 <= given.get("dead_fraction", 0.0) < 0.5:
        raise click.BadParameter("must be in [0, 0.5)", param_hint="--dead-fraction")
    if full_frame:
        _simulate_full_frame(output, seed, saturated_line, given)
        return
    from calibration.simulate import SweepSpec, write_sweep

    spec = SweepSpec(**{k: v for k, v in (("n_interferometers", given.get("interferometers")),
                                          ("n_lines", given.get("lines")),
                                          ("sigma_range", given.get("sigma_range")),
                                          ("opd_step_um", given.get("opd_step")),
                                          ("first_opd_um", given.get("first_opd")),
                                          ("reflectivity", given.get("reflectivity")),
                                          ("snr", given.get("snr")),
                                          ("dead_fraction", given.get("dead_fraction")),
                                          ("irregular", given.get("irregular"))) if v is not None},
                     saturated_line=saturated_line, seed=seed)
    acq, bank = write_sweep(output, spec)
    click.echo(f"wrote {output}: {acq.n_interferometers} interferometers x {acq.n_lines} lines, "
               f"OPD {bank.opd_um.min():.2f}-{bank.opd_um.max():.2f} µm, "
               f"R {np.min(bank.reflectivity(acq.sigma)):.2f}-"
               f"{np.max(bank.reflectivity(acq.sigma)):.2f}, SNR {spec.snr:g}")


def _simulate_full_frame(output: Path, seed: int, saturated_line: bool, given: dict) -> None:
    from calibration.fullframe import FullFrameSpec, write_simulated

    names = {"preset": "preset", "grid": "grid", "thumb": "thumb", "lines": "n_lines",
             "first_index": "first_index", "opd_step": "opd_step_um", "reflectivity": "reflectivity",
             "wedge": "wedge_um", "dead_fraction": "dead_fraction"}
    spec = FullFrameSpec(**{names[k]: v for k, v in given.items()}, saturated_line=saturated_line,
                         seed=seed)
    if spec.n_lines < 8 or spec.thumb < 8 or min(spec.grid) < 1:
        raise click.BadParameter("need >= 8 lines, thumbnails of >= 8 pixels and >= 1 x 1 of them")
    acq, inst = write_simulated(output, spec, progress=lambda m: click.echo(m, err=True))
    g = inst.bank.opd_gradient_um_per_px
    h, w = inst.thumb_shape
    click.echo(f"wrote {output}: {len(inst.layout)} thumbnails of {h} x {w} on a "
               f"{inst.layout.detector_shape[0]} x {inst.layout.detector_shape[1]} detector, "
               f"{acq.sigma.size} lines ({1000 / acq.sigma[-1]:.0f}-{1000 / acq.sigma[0]:.0f} nm), "
               f"{acq.dark.shape[1]} darks per exposure, {acq.flat.shape[0]} flats; OPD "
               f"{inst.bank.opd_um.min():.2f}-{inst.bank.opd_um.max():.2f} µm, wedge up to "
               f"{1000 * (np.abs(g[:, 0]) * (h - 1) + np.abs(g[:, 1]) * (w - 1)).max():.0f} nm, "
               f"{int(inst.detector.dead.sum())} dead pixels")


@calibrate.command()
@click.argument("calibration", type=click.Path(path_type=Path))
@click.argument("sphere", type=click.Path(path_type=Path))
@click.option("--certificate", type=click.Path(path_type=Path), required=True,
              help="The radiance standard's certificate (CSV; calibration.certificate).")
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True,
              help="Calibration file to write (version 2, with the radiance gain).")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def radiance(calibration: Path, sphere: Path, certificate: Path, output: Path, as_json: bool) -> None:
    """Measure the absolute radiance gain of CALIBRATION (a .cal file, e.g. from
    'characterize') from SPHERE, frames of an integrating sphere (or lamp-panel) and darks
    at one exposure (calibration.sphere), and write it as a version-2 calibration file.

    The gain is per reconstructed band, its uncertainty (k = 1) the frames', the darks' and
    the certificate's in quadrature. CALIBRATION itself is not changed."""
    from onboard.formats.calfile import CalibrationFileError, read

    if output.resolve() == calibration.resolve():
        raise click.BadParameter("write the new file beside the old one, not over it", param_hint="-o")
    inputs = _sphere_inputs(sphere, certificate)
    try:
        cal = read(calibration)
    except CalibrationFileError as exc:
        raise click.ClickException(str(exc)) from exc
    cal, measured = _with_sphere(cal, inputs)
    assert measured is not None and inputs is not None
    sha = cal.write(output)
    if as_json:
        click.echo(json.dumps({**measured.summary(), "calibration": str(output), "sha256": sha,
                               "wavelengths_nm": cal.wavelengths_nm.tolist(),
                               "gain": measured.gain.tolist(),
                               "uncertainty": measured.uncertainty.tolist()}))
        return
    acq = inputs[0]
    click.echo(f"{acq.name}: {len(acq.frames)} sphere frames and {len(acq.dark)} darks at "
               f"{acq.exposure_s:g} s" + _gain_line(measured)
               + f"\n  wrote {output} (version 2, sha256 {sha[:12]})")


@calibrate.command("simulate-sphere")
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True,
              help="Sphere acquisition folder to write (with its certificate.csv).")
@click.option("--sensor", type=click.Choice(["imspoc", "pushbroom"]), default="imspoc",
              show_default=True, help="Which simulated instrument ('onboard run --sensor').")
@click.option("--seed", type=int, default=0, show_default=True,
              help="The simulated instrument's ('onboard run' with this seed).")
@click.option("--peak-radiance", type=float, default=0.3, show_default=True,
              help="The sphere's radiance at its maximum, near 1 µm (W m-2 sr-1 nm-1).")
@click.option("--exposure", type=float, default=None, help="[the instrument's, 0.01] s")
@click.option("--frames", type=int, default=8, show_default=True)
@click.option("--darks", type=int, default=8, show_default=True)
@click.option("--certificate-uncertainty", type=float, default=0.01, show_default=True,
              help="Relative standard uncertainty the certificate states (k = 1).")
def simulate_sphere(output: Path, sensor: str, seed: int, peak_radiance: float, exposure: float | None,
                    frames: int, darks: int, certificate_uncertainty: float) -> None:
    """Write a simulated sphere acquisition of the instrument 'onboard run' simulates (the
    default ImSPOC, or the FINCH-like push-broom of 128 pixels) and its certificate: a
    quartz-tungsten-halogen sphere (2900 K) of known radiance, for 'onboard calibrate radiance'."""
    from calibration.certificate import write_certificate
    from calibration.sphere import simulate_sphere as simulate
    from calibration.sphere import tungsten_certificate, write_sphere
    from onboard.physics.imspoc import default_instrument
    from onboard.physics.pushbroom import finch_like

    if peak_radiance <= 0 or (exposure is not None and exposure <= 0) or frames < 2 or darks < 2:
        raise click.UsageError("need --peak-radiance > 0, --exposure > 0, >= 2 frames and darks")
    if not 0 <= certificate_uncertainty < 0.5:
        raise click.BadParameter("must be in [0, 0.5)", param_hint="--certificate-uncertainty")
    cert = tungsten_certificate(peak_radiance, relative_uncertainty=certificate_uncertainty)
    inst = default_instrument(seed) if sensor == "imspoc" else finch_like(seed=seed)
    acq = simulate(inst, cert, exposure, frames, darks, seed)
    write_sphere(output, acq)
    write_certificate(output / "certificate.csv", cert)
    click.echo(f"wrote {output}: {frames} frames and {darks} darks of a {cert.source} at "
               f"{acq.exposure_s:g} s, raw {int(acq.frames.min())}-{int(acq.frames.max())} DN; "
               f"certificate {output / 'certificate.csv'}")
