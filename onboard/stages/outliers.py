"""Sparse corruption of single bands: impulses and line defects, found against the other bands.

Gaussian noise touches every pixel of every band a little; some corruption touches few
values a lot: impulses (salt and pepper, a cosmic-ray hit, a bit flip on the link), and line
defects of one band (a detector column of one band dead, stuck or offset: the striping of
only some bands). A least-squares subspace fit spreads such values over everything: an
impulse band raises the rank and leaks into its neighbours. They are instead *found* here,
as values that the other bands cannot explain, and *imputed* from them (the sparse term of
the robust low-rank models, HyMiNoR, L1HyMixDe), iterating a few times:

1. ``fit``: the cube's low-rank (signal subspace) estimate with the values flagged so far
   replaced by their last fit (the caller's projection, :func:`onboard.stages.denoise.decompose`);
2. residual ``r = x - fit`` and its robust spread per band ``s`` (median absolute
   deviation: the corrupted values are a minority of each band, so they do not move it);
3. a **line** is a (band, column) whose residual median over the rows is off zero by more
   than :data:`LINE_SIGMAS` times that median's standard error ``1.2533 s / sqrt(rows)``:
   a scene feature along the track is in every band and so in the fit, a column defect of
   one band is not; the whole column of that band is flagged;
4. an **impulse** is a value whose residual exceeds :data:`IMPULSE_SIGMAS` ``s``.

Flagged values are replaced by the fit, so the spatial and spectral steps that follow see
a cube without them. A false alarm costs little: the value is replaced by the subspace
estimate that the stage returns anyway, less its own noise.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from onboard.stages.robust import median

#: Fit-and-flag rounds: the first fit is pulled by the corruption, the second mostly not.
#: Four cost the real mixed-noise cubes 0.25-0.8 dB (bench/bench_denoise.py, 6 cubes a set;
#: the simulated sets within 0.01 dB), so five stay.
ITERATIONS = 5
#: Standard errors a column's residual median must be off zero to be a line defect.
LINE_SIGMAS = 6.0
#: Robust standard deviations a residual must exceed to be an impulse.
IMPULSE_SIGMAS = 3.5
#: Residuals per band the robust spread is measured on (sampling error about 2 %).
SPREAD_SAMPLES = 4096
#: Median absolute deviation of a unit Gaussian.
_MAD_GAUSS = 0.6744897501960817
#: Standard error of a median of n Gaussian samples, times sqrt(n) / sigma.
_MEDIAN_SE = 1.2533141373155001


@dataclass
class Outliers:
    """What :func:`impute_outliers` found: ``flagged`` (B, H, W) values replaced,
    ``lines`` (B, W) line defects, ``impulses`` number of single values replaced."""

    flagged: NDArray[np.bool_]
    lines: NDArray[np.bool_]
    impulses: int

    def fraction(self, valid: NDArray[np.bool_]) -> NDArray[np.float64]:
        """Fraction (B,) of each band's valid pixels that were replaced."""
        return self.flagged[:, valid].mean(axis=1) if valid.any() else np.zeros(len(self.flagged))


def regression_precision(x: NDArray[np.floating]) -> NDArray[np.float64] | None:
    """``R^-1`` (B, B), ``R = x x^T`` of mean-removed pixels ``x`` (B, N), with a tiny ridge
    (1e-9 of the mean band energy) that keeps it invertible for noise-free data; None when
    every band is constant. Regressing band ``i`` on all the others (HySime) leaves the
    residual ``(R^-1 x)_i / (R^-1)_ii``, of energy ``1 / (R^-1)_ii``."""
    bands = x.shape[0]
    x64 = x.astype(np.float64, copy=False)  # double: the bands' energies span decades
    r = x64 @ x64.T
    energy = float(np.trace(r)) / bands
    if not energy > 0:
        return None
    inv: NDArray[np.float64] = np.linalg.inv(r + 1e-9 * energy * np.eye(bands))
    return inv


def impute_outliers(x: NDArray[np.floating], valid: NDArray[np.bool_]
                    ) -> tuple[NDArray[np.floating], Outliers]:
    """The cube (B, H, W) with its impulses and line defects replaced by what the other
    bands predict, and what was replaced (module docstring). ``valid`` (H, W): the pixels
    to judge and to fit on (others, already in-painted, are left as they are). Runs in
    double whatever ``x``'s precision (and gives the cube back in it): each value is judged
    against a threshold, and single-precision residuals flip a few of those decisions (611
    against 608 impulses on a push-broom block), which moves the noise estimate by 1 %.
    """
    given = x.dtype
    x = x.astype(np.float64, copy=False)
    b, h, w = x.shape
    flagged = np.zeros(x.shape, dtype=bool)
    lines = np.zeros((b, w), dtype=bool)
    current = x
    every = bool(valid.all())  # the usual frame: the valid pixels are the whole cube, no copy
    stride = max(1, int(valid.sum()) // SPREAD_SAMPLES)
    # an even sample for the spread (a strided view where every pixel is valid)
    sample: slice | NDArray[np.intp] = slice(None, None, stride) if every else np.flatnonzero(valid.ravel())[::stride]
    for _ in range(ITERATIONS):
        pixels = current.reshape(b, -1) if every else current[:, valid]
        mean = pixels.mean(axis=1, keepdims=True)
        centred = pixels - mean
        inv = regression_precision(centred)
        if inv is None:
            break
        if not every:  # the fit from the valid pixels, applied to all
            centred = current.reshape(b, -1) - mean
        # each band predicted from the others' current values (HySime's regression)
        step = inv @ centred
        step /= np.diag(inv)[:, None]
        predicted = np.subtract(current, step.reshape(b, h, w), out=step.reshape(b, h, w))
        r = x - predicted
        spread = _spread(r.reshape(b, -1)[:, sample], flagged.reshape(b, -1)[:, sample])
        # (B, W); in-painted pixels count, they are few
        lines = _median_off_zero(r, LINE_SIGMAS * _MEDIAN_SE * spread / np.sqrt(h))
        new = np.abs(r) > IMPULSE_SIGMAS * spread[:, None, None]
        new |= lines[:, None, :]
        if not (every and (spread > 0).all()):  # only valid pixels are judged, and
            # a band the others predict exactly (no noise) has nothing to flag
            new &= valid[None] & (spread > 0)[:, None, None]
        if np.array_equal(new, flagged):
            break
        flagged = new
        current = np.where(flagged, predicted, x)
    return current.astype(given, copy=False), Outliers(flagged, lines, int((flagged & ~lines[:, None, :]).sum()))


def _median_off_zero(r: NDArray[np.float64], limit: NDArray[np.float64]) -> NDArray[np.bool_]:
    """``abs(median(r, axis=1)) > limit[:, None]`` for ``r`` (B, H, W), decided as that
    median would decide it, from counts: more than half of a column's H values above the
    limit puts its median above it, at most half below; only a column with exactly half
    above (even H: the middle pair straddles the limit) needs its median (a median of every
    column cost twice the counts)."""
    h = r.shape[1]
    out = np.zeros((r.shape[0], r.shape[2]), dtype=bool)
    for sign in (1.0, -1.0):
        side = r > limit[:, None, None] if sign > 0 else r < -limit[:, None, None]
        beyond = side.view(np.uint8).sum(axis=1, dtype=np.int32)  # (B, W)
        out |= beyond > h // 2
        tied = np.nonzero(beyond == h // 2) if h % 2 == 0 else ()
        if h % 2 == 0 and tied[0].size:
            lanes = r[tied[0], :, tied[1]]  # (n, H)
            out[tied] |= median(lanes, axis=1) * sign > limit[tied[0]]
    return out


def _spread(r: NDArray[np.floating], flagged: NDArray[np.bool_]) -> NDArray[np.float64]:
    """Robust standard deviation (B,) of the residuals ``r`` (B, n) not flagged yet: a band
    with many impulses would otherwise hide them behind its own inflated spread."""
    # One selection for all bands at the same position: half of each band's m flagged
    # values become -inf, the other half +inf, so the middle pair of its n = N - m kept
    # values sits at positions N//2 - 1 or N//2 of the whole lane whatever m is; numpy's
    # vectorised selection at one position, then the largest value below it (a sort of all
    # bands cost 1.5 times this, a median call per band 6 times).
    if r.shape[1] == 0:
        return np.zeros(len(r))
    size = r.shape[1]
    m = np.count_nonzero(flagged, axis=1)
    n = size - m
    a = np.abs(r)
    if m.any():
        rows, cols = np.nonzero(flagged)  # row by row, few
        low = np.arange(rows.size) - (np.cumsum(m) - m)[rows] < (m // 2)[rows]  # each row's first m // 2
        a[rows, cols] = np.inf
        a[rows[low], cols[low]] = -np.inf
        a[n == 0] = 0.0  # no kept value: no middle (0 below)
    k = size // 2
    a.partition(k, axis=1)
    upper, lower = a[:, k], a[:, :k].max(axis=1) if k else a[:, k]
    first, second = m // 2 + (n - 1) // 2, m // 2 + n // 2  # the middle pair's positions, k - 1 or k
    middle = (np.where(first < k, lower, upper) + np.where(second < k, lower, upper)) * 0.5
    out: NDArray[np.float64] = np.where(n > 0, middle / _MAD_GAUSS, 0.0).astype(np.float64)
    return out
