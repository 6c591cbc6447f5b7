"""Accuracy measures against ground truth, defined once for runs, benchmarks and export.

Cubes are (bands, rows, cols); ``valid`` (rows, cols) selects the pixels that count.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray


def _pixels(a: NDArray, valid: NDArray) -> NDArray[np.float64]:
    return a[:, valid].astype(np.float64)


def rmse(estimate: NDArray, truth: NDArray, valid: NDArray) -> float:
    """Root-mean-square error over bands and valid pixels."""
    return float(np.sqrt(np.mean((_pixels(estimate, valid) - _pixels(truth, valid)) ** 2)))


def spectral_angle_deg(estimate: NDArray, truth: NDArray, valid: NDArray) -> float:
    """Mean spectral angle (degrees) between estimated and true spectra over valid pixels."""
    e, t = _pixels(estimate, valid), _pixels(truth, valid)
    cos = np.sum(e * t, 0) / np.maximum(np.linalg.norm(e, axis=0) * np.linalg.norm(t, axis=0), 1e-12)
    return float(np.degrees(np.arccos(np.clip(cos, -1.0, 1.0))).mean())


def psnr_db(estimate: NDArray, truth: NDArray, valid: NDArray, peak: float | None = None) -> float:
    """Peak signal-to-noise ratio (dB); the peak defaults to the truth's maximum."""
    t = _pixels(truth, valid)
    peak = float(t.max()) if peak is None else peak
    mse = float(np.mean((_pixels(estimate, valid) - t) ** 2))
    return float(10.0 * np.log10(peak**2 / max(mse, 1e-20)))


def fraction_mae(estimate: NDArray, truth: NDArray, valid: NDArray) -> float:
    """Mean absolute error of the residue fraction (channel 0) over valid pixels."""
    return float(np.mean(np.abs(estimate[0][valid] - truth[0][valid])))


def class_accuracy(estimate: NDArray, truth: NDArray, valid: NDArray) -> float:
    """Share of valid pixels whose class is right."""
    return float(np.mean(estimate[valid] == truth[valid]))
