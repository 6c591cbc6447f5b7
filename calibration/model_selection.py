"""Which response model, and which polynomial degree, an instrument's data support.

Candidates: the K-harmonic series for K = 1 (two-wave, low finesse), 2 and 3 (three- and
four-wave), and the exact Airy function. They have the same number of parameters, so the
criterion, the Bayesian information criterion ``BIC = S ln(RSS/S) + P ln S`` summed over the
interferometers (of least-squares fits, as the criterion's Gaussian likelihood and the final
fit assume), ranks them by fit; it matters for the degree of the gain and reflectivity
series, where each extra coefficient must pay ``2 ln S`` per interferometer.

One model serves the whole bank (an ``InterferometerBank`` has one ``harmonics``), so the
choice is made on a systematic subset of interferometers spread over the whole OPD range
(every k-th): the BIC sums converge long before the whole bank is fitted, and the chosen
model is then fitted once to all interferometers.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from numpy.typing import NDArray

from calibration.initialise import InitialGuess, flat_field_gain
from calibration.regression import fit

#: name -> harmonics (None: exact Airy function)
MODELS: dict[str, int | None] = {"two-wave": 1, "three-wave": 2, "four-wave": 3, "airy": None}
#: Candidates tried by default (four-wave on request: it never separated from Airy by more
#: than the subset's noise on the real prototypes).
DEFAULT_MODELS = ("two-wave", "three-wave", "airy")
DEGREES = (5, 8)
SUBSET = 24
#: Ranking candidates needs their costs to 1e-5, not the final fit's 1e-6, and 20 iterations
#: (measured on the four prototypes and the simulated sweeps: the ranking of the clearly
#: separated candidates is the same at 20 and 40 iterations, 24 and 48 interferometers;
#: three-wave and Airy trade places with the subset on the real prototypes, where their
#: BIC differ by less than the subset's scatter).
SELECTION_ITERATIONS, SELECTION_TOLERANCE = 20, 1e-5


@dataclass
class Selection:
    """The chosen model and degree, and the BIC (summed over the subset) of every candidate."""

    model: str
    degree: int
    bic: dict[str, float]
    subset: NDArray[np.intp]

    @property
    def harmonics(self) -> int | None:
        return MODELS[self.model]


def with_degree(guess: InitialGuess, y: NDArray, sigma: NDArray, degree: int) -> InitialGuess:
    """The same starting values with the gain series refitted at another degree."""
    return replace(guess, gain_cheb=flat_field_gain(y, sigma, guess.sigma_domain, degree))


def subset_of(n: int, size: int = SUBSET) -> NDArray[np.intp]:
    """Every k-th interferometer, about ``size`` of them, spanning the whole bank."""
    return np.unique(np.linspace(0, n - 1, min(size, n)).round().astype(int))


def select(
    y: NDArray,
    sigma: NDArray,
    guess: InitialGuess,
    models: tuple[str, ...] = DEFAULT_MODELS,
    degrees: tuple[int, ...] = DEGREES,
    line_weights: NDArray | None = None,
) -> Selection:
    """Choose the model (at the first degree) then the degree (for that model) by BIC."""
    unknown = [m for m in models if m not in MODELS]
    if unknown:
        raise ValueError(f"unknown model(s) {unknown}; choose from {list(MODELS)}")
    idx = subset_of(y.shape[0])
    ys = y[idx]
    lws = None if line_weights is None else np.broadcast_to(line_weights, y.shape)[idx]
    base = guess.rows(idx)
    bic: dict[str, float] = {}
    d0 = degrees[0]
    g0 = with_degree(base, ys, sigma, d0)
    for m in models:
        res = fit(ys, sigma, g0, harmonics=MODELS[m], reflectivity_degree=d0, line_weights=lws,
                  robust=False, max_iterations=SELECTION_ITERATIONS, tolerance=SELECTION_TOLERANCE,
                  uncertainty=False)
        bic[f"{m}/{d0}"] = float(res.bic().sum())
    model = min(models, key=lambda m: bic[f"{m}/{d0}"])
    for d in degrees[1:]:
        res = fit(ys, sigma, with_degree(base, ys, sigma, d), harmonics=MODELS[model],
                  reflectivity_degree=d, line_weights=lws, robust=False,
                  max_iterations=SELECTION_ITERATIONS,
                  tolerance=SELECTION_TOLERANCE, uncertainty=False)
        bic[f"{model}/{d}"] = float(res.bic().sum())
    degree = min(degrees, key=lambda d: bic.get(f"{model}/{d}", np.inf))
    return Selection(model=model, degree=degree, bic=bic, subset=idx)
