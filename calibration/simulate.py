"""Synthetic monochromatic sweeps with a known truth, in the real acquisitions' layout.

A bank is drawn by :func:`onboard.physics.imspoc.simulated_bank` (OPD = index x step with
manufacturing errors, smoothly varying gain and reflectivity, small phases), its response to
each monochromatic line comes from the one forward model (:meth:`InterferometerBank.response`,
the line's width averaged by :func:`onboard.physics.fabry_perot.band_averaged_response`),
times a smooth source spectrum (``norm``), plus detector noise. Optional faults: dead
pixels / outlier lines (a fraction of the entries read 0 or a random wrong value) and one
saturated line (clipped for every interferometer). The truth is written beside the data as
``truth.npz`` (the bank's ``arrays()``), which the loader ignores.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from calibration.acquisitions import Acquisition, write_acquisition
from onboard.physics import fabry_perot
from onboard.physics.imspoc import simulated_bank
from onboard.physics.interferometers import InterferometerBank


@dataclass(frozen=True)
class SweepSpec:
    """What to simulate. ``snr``: mean recorded level over the noise's standard deviation,
    per interferometer. ``line_width``: FWHM-like box width of each line (1/µm)."""

    n_interferometers: int = 96
    n_lines: int = 300
    sigma_range: tuple[float, float] = (1.0, 2.5)
    opd_step_um: float = 0.175
    first_opd_um: float = 3.0
    reflectivity: tuple[float, float] = (0.05, 0.2)
    snr: float = 100.0
    line_width: float = 0.0005
    dead_fraction: float = 0.0
    saturated_line: bool = False
    irregular: bool = False
    seed: int = 0


def source_spectrum(sigma: NDArray, a: float, b: float) -> NDArray[np.float64]:
    """A smooth bench source at ``sigma`` for a sweep over [a, b] (1/µm), peak 1: a
    tungsten-like hump times the monochromator's efficiency, weakest at the sweep's ends."""
    return np.exp(-0.5 * ((sigma - (a + b) / 2) / (0.6 * (b - a))) ** 2)


def simulate_sweep(spec: SweepSpec) -> tuple[Acquisition, InterferometerBank]:
    """An acquisition and the bank it was simulated from."""
    rng = np.random.default_rng(spec.seed)
    a, b = spec.sigma_range
    if spec.irregular:
        sigma = np.sort(rng.uniform(a, b, spec.n_lines))
    else:
        sigma = np.linspace(a, b, spec.n_lines)
    bank = simulated_bank(spec.n_interferometers, spec.opd_step_um, (a, b),
                          reflectivity=spec.reflectivity, wedge_um=0.0, seed=spec.seed)
    bank.opd_um = bank.opd_um + spec.first_opd_um
    bank.harmonics = None
    response = fabry_perot.band_averaged_response(
        sigma[None, :], spec.line_width, bank.opd_um[:, None], bank.reflectivity(sigma),
        gain=bank.gain(sigma), phase=bank.phase_rad[:, None], offset=0.0,
    )
    source = 1000.0 * source_spectrum(sigma, a, b)
    norm = np.broadcast_to(source, response.shape).copy()
    clean = response * norm
    noise = clean.mean(axis=1, keepdims=True) / spec.snr
    data = clean + noise * rng.standard_normal(clean.shape)
    if spec.dead_fraction > 0:
        bad = rng.random(data.shape) < spec.dead_fraction
        wrong = np.where(rng.random(data.shape) < 0.5, 0.0, rng.uniform(0.0, 3.0, data.shape) * clean)
        data = np.where(bad, wrong, data)
    if spec.saturated_line:
        j = int(np.argmax(source))
        data[:, j] = np.minimum(data[:, j], 0.5 * clean[:, j].mean())
    acq = Acquisition(
        name="simulated", sigma=sigma, data=data, norm=norm, opd_step_um=spec.opd_step_um,
        is_normalized=False,
        options={"simulated": True, "snr": spec.snr, "seed": spec.seed,
                 "reflectivity": list(spec.reflectivity), "dead_fraction": spec.dead_fraction,
                 "saturated_line": spec.saturated_line},
    )
    return acq, bank


def write_sweep(folder: str | Path, spec: SweepSpec) -> tuple[Acquisition, InterferometerBank]:
    """Simulate and write ``folder`` (the real layout plus ``truth.npz``)."""
    acq, bank = simulate_sweep(spec)
    write_acquisition(folder, acq)
    np.savez(Path(folder) / "truth.npz", **bank.arrays())  # type: ignore[arg-type]
    return acq, bank


def truth_errors(fitted: InterferometerBank, truth: InterferometerBank, sigma: NDArray) -> dict:
    """Per-interferometer errors of a fitted bank against the truth, each (N,).

    opd_abs_um / opd_rel: |OPD error| in µm and relative to the true OPD. reflectivity_abs:
    RMS over the lines of the reflectivity error. gain_rel: RMS over the lines of the gain
    error relative to the true gain. fringes: true OPD x wavenumber span, the number of
    fringes across the sweep (below about 4, gain, R and OPD are not separable)."""
    d_opd = np.abs(fitted.opd_um - truth.opd_um)
    d_r = np.sqrt(((fitted.reflectivity(sigma) - truth.reflectivity(sigma)) ** 2).mean(axis=1))
    rel_g = (fitted.gain(sigma) - truth.gain(sigma)) / np.abs(truth.gain(sigma))
    return {
        "opd_abs_um": d_opd,
        "opd_rel": d_opd / np.maximum(np.abs(truth.opd_um), 1e-9),
        "reflectivity_abs": d_r,
        "gain_rel": np.sqrt((rel_g**2).mean(axis=1)),
        "fringes": truth.opd_um * (np.max(sigma) - np.min(sigma)),
    }
