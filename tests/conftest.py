"""Shared fixtures: the default simulated instrument and its calibration are built once."""

from __future__ import annotations

import os

# as the CLI does (onboard/cli.py): single-threaded BLAS for the runtime's small products
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from onboard.physics.imspoc import ImspocInstrument, default_instrument  # noqa: E402


@pytest.fixture(scope="session")
def imspoc() -> ImspocInstrument:
    return default_instrument(seed=0)


@pytest.fixture(scope="session")
def imspoc_calibration(imspoc: ImspocInstrument):
    from onboard.sources.simulated import calibrate_imspoc

    return calibrate_imspoc(imspoc)


def smooth_reflectance(wavelengths_nm: np.ndarray, shape: tuple[int, int], seed: int = 0) -> np.ndarray:
    """A field of smooth, varied reflectance spectra (B, h, w) in [0.05, 0.7]: a few broad
    Gaussian features whose weights vary smoothly across the field."""
    rng = np.random.default_rng(seed)
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    lam = wavelengths_nm[:, None, None]
    out = 0.15 + 0.25 * ((lam - lam.min()) / np.ptp(lam)) * (0.5 + xx[None])
    for _ in range(3):
        c, s = rng.uniform(lam.min(), lam.max()), rng.uniform(60, 150)
        weight = 0.1 * np.sin(2 * np.pi * (rng.uniform(0.5, 2) * yy + rng.uniform()))[None]
        out = out + weight * np.exp(-0.5 * ((lam - c) / s) ** 2)
    return np.clip(out, 0.05, 0.7)
