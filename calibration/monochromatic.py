"""Monochromatic check: reconstruct each recorded line from its interferogram.

Each line j of a sweep gives an interferogram ``y[:, j]`` (N interferometers). With the
characterised bank, the transfer matrix ``A`` (N, B) on an output grid is
:func:`onboard.physics.imspoc.transfer_matrix` (the runtime's own operator), and the spectrum
is the Tikhonov estimate ``x = (A^T A + lam P)^-1 A^T y`` with ``P`` the identity (ridge) or
the second-difference roughness of :mod:`onboard.stages.reconstruct`. The weight ``lam`` is
chosen per line by generalised cross-validation (GCV), which needs neither the answer nor
the noise level. A line counts as found when the reconstructed spectrum's maximum is the
band nearest to the line's true wavenumber.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from onboard.physics.imspoc import transfer_matrix
from onboard.physics.interferometers import InterferometerBank
from onboard.stages.reconstruct import LAMBDA_GRID, output_grid, second_difference


def gcv_per_column(a: NDArray, p: NDArray, y: NDArray, lambdas: NDArray
                   ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Tikhonov solutions with each column's own GCV weight.

    a: (N, B); p: (B, B) penalty matrix; y: (N, C) columns. Returns x (B, C) and the chosen
    weights (C,). GCV(lam) = ||(I - H) y||^2 / (N - tr H)^2 per column, H = A (A^T A +
    lam P)^-1 A^T, evaluated in the B-dimensional space for all columns at once.
    """
    n = a.shape[0]
    m = a.T @ a
    z = a.T @ y  # (B, C)
    yy = np.einsum("nc,nc->c", y, y)
    scores = np.empty((len(lambdas), y.shape[1]))
    sols = []
    for i, lam in enumerate(lambdas):
        s = np.linalg.inv(m + lam * p)
        x = s @ z
        resid = yy - 2 * np.einsum("bc,bc->c", z, x) + np.einsum("bc,bc->c", x, m @ x)
        scores[i] = np.maximum(resid, 0.0) / (n - np.trace(s @ m)) ** 2
        sols.append(x)
    best = np.argmin(scores, axis=0)
    x = np.stack(sols)[best, :, np.arange(y.shape[1])].T
    return x, lambdas[best]


@dataclass
class LineCheck:
    """Result of the monochromatic check."""

    found: int
    within_one_band: int
    lines: int
    bands: int
    prior: str
    lambda_median: float


def check_lines(bank: InterferometerBank, sigma: NDArray, y: NDArray, n_bands: int,
                prior: str = "ridge") -> LineCheck:
    """Reconstruct every line (columns of ``y`` (N, S), at wavenumbers ``sigma`` (S,)) on
    ``n_bands`` bands uniform in wavenumber over the sweep; count peaks on the true band."""
    lo, hi = float(np.min(sigma)), float(np.max(sigma))
    lam_nm = output_grid((1000.0 / hi, 1000.0 / lo), n_bands)  # ascending wavelength
    a = transfer_matrix(bank, lam_nm)
    if prior == "ridge":
        p = np.eye(n_bands)
    elif prior == "smooth":
        d = second_difference(n_bands)
        p = d.T @ d
    else:
        raise ValueError(f"prior must be 'ridge' or 'smooth', got {prior!r}")
    scale = float(np.trace(a.T @ a) / np.trace(p))
    x, lams = gcv_per_column(a, p, y, LAMBDA_GRID * scale)
    band_sigma = 1000.0 / lam_nm
    truth = np.argmin(np.abs(band_sigma[:, None] - np.asarray(sigma)[None, :]), axis=0)
    peak = np.argmax(x, axis=0)
    return LineCheck(
        found=int((peak == truth).sum()),
        within_one_band=int((np.abs(peak - truth) <= 1).sum()),
        lines=int(y.shape[1]),
        bands=n_bands,
        prior=prior,
        lambda_median=float(np.median(lams / scale)),
    )
