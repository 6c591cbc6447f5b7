"""The absolute radiance gain from an integrating sphere against the simulator's truth.

    python bench/bench_sphere.py [--seeds 8] [--json out.json]

The simulated default ImSPOC (``onboard run``'s instrument) and its simulated ground
calibration without its radiance gain (a version-1 file, as ``characterize`` writes) see a
quartz-tungsten-halogen sphere (2900 K black body, certificate at 5 nm, 1 % standard
uncertainty) through :func:`calibration.sphere.simulate_sphere`: 8 frames and 8 darks per
acquisition, each seed a new acquisition (new detector noise). The truth is the simulator's
gain, ``photo_rate / electrons_per_dn / LAB_PANEL_PEAK_RADIANCE`` DN/s per W m-2 sr-1 nm-1,
flat in wavelength. Per band: the mean and standard deviation over seeds of the relative
gain error, and the mean stated relative uncertainty (k = 1); for comparison, the simulated
lab-panel calibration's own gain error (``calibrate_imspoc``, one acquisition). Cases: the
sphere at 0.3 W m-2 sr-1 nm-1 peak and 0.01 s (brightest pixels near 95 % of full scale),
and at 0.1 peak and 0.01 s (a third of the signal).
"""

from __future__ import annotations

import json
from dataclasses import replace

import click
import numpy as np

from calibration.sphere import measure_gain, simulate_sphere, tungsten_certificate
from onboard.physics.illumination import LAB_PANEL_PEAK_RADIANCE
from onboard.physics.imspoc import default_instrument
from onboard.sources.simulated import calibrate_imspoc

CASES = ((0.3, 0.01), (0.1, 0.01))


@click.command()
@click.option("--seeds", type=int, default=8, show_default=True)
@click.option("--json", "json_path", type=click.Path(), default=None)
def main(seeds: int, json_path: str | None) -> None:
    inst = default_instrument(0)
    lab = calibrate_imspoc(inst)
    cal = replace(lab, radiance_gain=None, radiance_gain_uncertainty=None)
    truth = inst.photo_rate_e_s / inst.detector_spec.electrons_per_dn / LAB_PANEL_PEAK_RADIANCE
    assert lab.radiance_gain is not None
    out: dict = {"truth": truth, "wavelengths_nm": cal.wavelengths_nm.tolist(),
                 "lab_panel_error": (lab.radiance_gain / truth - 1).tolist(), "cases": []}
    for peak, exposure in CASES:
        cert = tungsten_certificate(peak, relative_uncertainty=0.01)
        err, u, ratio = [], [], []
        for seed in range(seeds):
            m = measure_gain(cal, simulate_sphere(inst, cert, exposure, seed=seed), cert)
            err.append(m.gain / truth - 1)
            u.append(m.uncertainty)
            ratio.append(np.median(m.interferometer_ratio) / truth - 1)
        e, s = np.array(err), np.array(u)
        out["cases"].append({"peak_radiance": peak, "exposure_s": exposure, "seeds": seeds,
                             "error_mean": e.mean(0).tolist(), "error_std": e.std(0).tolist(),
                             "uncertainty_mean": s.mean(0).tolist(),
                             "interferometer_ratio_error_mean": float(np.mean(ratio))})
    head = " | ".join(f"{p:g} W peak, {t:g} s: err mean / std / u" for p, t in CASES)
    click.echo(f"| band nm | {head} | lab panel err |")
    click.echo("|---|" + "---|" * (len(CASES) + 1))
    for b, lam in enumerate(cal.wavelengths_nm):
        cells = " | ".join(f"{100 * c['error_mean'][b]:+.1f} / {100 * c['error_std'][b]:.1f} / "
                           f"{100 * c['uncertainty_mean'][b]:.1f} %" for c in out["cases"])
        click.echo(f"| {lam:.0f} | {cells} | {100 * out['lab_panel_error'][b]:+.1f} % |")
    for c in out["cases"]:
        click.echo(f"{c['peak_radiance']:g} W peak: interferometers' median ratio off the truth by "
                   f"{100 * c['interferometer_ratio_error_mean']:+.2f} %")
    if json_path:
        with open(json_path, "w") as fh:
            json.dump(out, fh, indent=1)


if __name__ == "__main__":
    main()
