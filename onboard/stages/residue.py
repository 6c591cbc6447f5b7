"""Crop-residue cover by fully constrained linear unmixing, and the tillage class from it.

Each pixel's reflectance spectrum ``x`` (bands,) is modelled as a non-negative mixture of
endmember spectra ``M`` (bands, n): ``x = M a + noise``. Several endmembers may stand for one
class (dry and wet soil are both "soil"; fresh and weathered straw are both "residue"): a
class's fraction is the sum of its endmembers' abundances. With endmember variability in the
library, a single soil spectrum gets residue MAE 0.22-0.38 where dry + wet soil get
0.01-0.03 (REFERENCES.md).

Brightness. Illumination (slope, haze, exposure), soil moisture and residue age scale a
pixel's whole spectrum. Three models, all solved as least squares over ``x = s M f`` with
``f`` the class-resolved fractions on the simplex and ``s`` the pixel's brightness:

* ``"sum-to-one"`` (default): classical FCLS (Heinz and Chang 2001), ``s = 1``: right
  when the library's brightness is the pixel's.
* ``"free"``: any ``s >= 0`` (non-negative least squares, then ``f = a / sum(a)``): a pixel
  twice as bright unmixes to the same fractions, but the extra freedom costs precision.
* ``"prior"``: ``s`` near 1 with standard deviation ``brightness_sigma``, the maximum a
  posteriori estimate, i.e. NNLS with the row ``w (sum(a) - 1)`` appended,
  ``w = noise / brightness_sigma``; the noise level is the median residual of a free fit
  to 1024 of the frame's pixels. It tends to FCLS as the sigma goes to 0 and to the free
  model as it grows.

Which is best depends on where the brightness variation lives, so it was measured (residue
MAE at SNR 100, 64 x 64 tiles; FCLS / free / prior(0.1)):

* the project's farmland simulator (``onboard.scene.farmland``: soil moisture and
  brightness, residue and canopy variants, shading 0.85-1.15), eval split, with
  ``nominal_endmembers`` (dry and wet soil, mean residue, mean canopy): 450-950 nm
  0.046 / 0.118 / 0.099, 900-1700 nm 0.030 / 0.040 / 0.039; with every training variant
  as its own endmember (12): 0.024 / 0.042 / 0.025 and 0.028 / 0.029 / 0.027;
* PROSPECT-D residue and leaves with prosail soils, whole-pixel brightness spread 0, 10,
  30 %: 450-950 nm 0.017 / 0.047 / 0.024, 0.050 / 0.047 / 0.033, 0.142 / 0.047 / 0.065;
  900-1700 nm 0.019 / 0.028 / 0.026, 0.059 / 0.028 / 0.026, 0.166 / 0.028 / 0.032.

With the nominal library FCLS is best by far: the freedom the other two give is spent
fitting the library's shape mismatch (a mean residue for the scene's actual ones) more
than true brightness. Once the library spans the variants, what is left is brightness and
the prior draws level or ahead (on other fields up to 0.008 better in 900-1700 nm,
tests/test_residue_library.py); it is also the choice for scenes with whole-pixel
brightness spread beyond ~10 % (relief, cloud edges), where FCLS degrades fast.

Solver. Least squares with ``a >= 0`` (and ``sum a = 1`` for FCLS) is a small convex
quadratic programme per pixel. It is solved exactly by a primal active-set method
(Lawson and Hanson's NNLS, with the sum-to-one constraint carried as a Lagrange multiplier)
run for all pixels at once: each iteration either frees the endmember whose gradient most
wants to grow or steps back to the boundary and drops the endmember that hit zero. It starts
from the endmembers the unconstrained solution weights positively, and pixels that share a
free set share one cached KKT inverse (Van Benthem and Keenan's "fast combinatorial"
grouping), so an iteration is a few array operations whatever the pixel count. It stops when
no fixed endmember's gradient exceeds ``tolerance`` times the mean endmember energy (the KKT
conditions to that relative tolerance), or when an endmember just freed blocks at once (its
gradient was rounding noise; freeing it again would cycle). The solution is feasible at
every iteration; it agrees with scipy's NNLS to 1e-8 even for the 12 near-collinear
variants of the farmland library (condition number 1e12).

Output (a :class:`onboard.formats.types.ResidueMap`): ``fractions`` (3, rows, cols) float32 in
``ENDMEMBERS`` order, each valid pixel non-negative and summing to one; NaN where the pixel
is invalid, and ``tillage`` is then ``INVALID_CLASS``. A pixel is invalid when the cube says
so, when its spectrum is not finite, or when no endmember correlates positively with it
(the non-negative fit is then 0: a black or negative spectrum), by 1e-6 of the dimmest
endmember's energy. ``extra`` holds the per-pixel brightness ``s`` and residual RMS
(rows, cols) float32, the iteration count, the prior's weight ``w``, and how many pixels
were invalid for each reason or stopped at ``max_iterations`` (their fractions are
feasible but not optimal; never seen in tests).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from onboard.formats.types import ENDMEMBERS, INVALID_CLASS, Cube, ResidueMap, tillage_class

#: Most endmember spectra in a library: the solver tabulates one KKT inverse per subset.
MAX_ENDMEMBERS = 12
#: Brightness (relative to the dimmest endmember) below which a pixel carries no signal.
MIN_BRIGHTNESS = 1e-6
#: Atmospheric water-vapour bands (nm) no residue stage reads: an airborne or orbital sensor
#: sees the atmosphere's absorption there, and the real spectral libraries have no samples
#: there (export/spectral_library.py bridges them with a straight line).
WATER_BANDS_NM = ((1340.0, 1460.0), (1790.0, 1960.0))


def usable_bands(wavelengths_nm: NDArray[np.floating]) -> NDArray[np.bool_]:
    """(bands,) True for the bands outside ``WATER_BANDS_NM``."""
    wl = np.asarray(wavelengths_nm, dtype=float)
    return ~np.any([(wl >= lo) & (wl <= hi) for lo, hi in WATER_BANDS_NM], axis=0)


@dataclass(frozen=True)
class Endmembers:
    """A spectral library for unmixing.

    ``spectra``: (n, bands) float reflectance on ``wavelengths_nm`` (bands,) ascending.
    ``classes``: (n,) the class of each spectrum, each one of ``ENDMEMBERS``; every class
    needs at least one spectrum. ``names``: (n,) labels for reports (``"soil-wet"``).
    """

    spectra: NDArray[np.float64]
    wavelengths_nm: NDArray[np.float64]
    classes: tuple[str, ...]
    names: tuple[str, ...]

    def __post_init__(self) -> None:
        spectra = np.asarray(self.spectra, dtype=np.float64)
        object.__setattr__(self, "spectra", spectra)
        object.__setattr__(self, "wavelengths_nm", np.asarray(self.wavelengths_nm, dtype=np.float64))
        if spectra.ndim != 2 or spectra.shape[1] != self.wavelengths_nm.shape[0]:
            raise ValueError(
                f"endmember spectra are (n, bands) on the wavelength grid; got {spectra.shape} "
                f"for {self.wavelengths_nm.shape[0]} wavelengths"
            )
        if not (len(self.classes) == len(self.names) == spectra.shape[0]):
            raise ValueError(
                f"{spectra.shape[0]} endmember spectra need as many classes and names; got "
                f"{len(self.classes)} classes and {len(self.names)} names"
            )
        unknown = sorted(set(self.classes) - set(ENDMEMBERS))
        if unknown:
            raise ValueError(f"unknown endmember classes {unknown}; classes are {ENDMEMBERS}")
        missing = [c for c in ENDMEMBERS if c not in self.classes]
        if missing:
            raise ValueError(f"the library has no spectrum for {missing}; give each of {ENDMEMBERS} one or more")
        if not np.isfinite(spectra).all():
            raise ValueError("endmember spectra contain NaN or infinity")
        dark = [name for name, row in zip(self.names, spectra, strict=True) if not row.max() > 0]
        if dark:
            raise ValueError(f"endmember spectra {dark} have no positive reflectance")

    @property
    def membership(self) -> NDArray[np.float64]:
        """(3, n) 0/1 matrix: row ``k`` marks the spectra of class ``ENDMEMBERS[k]``."""
        return np.array([[c == k for c in self.classes] for k in ENDMEMBERS], dtype=np.float64)

    def on_grid(self, wavelengths_nm: NDArray[np.floating]) -> Endmembers:
        """The library linearly interpolated onto a cube's band centres (nm), which must lie
        inside the library's range (spectra are smooth at the library's 1-10 nm sampling)."""
        target = np.asarray(wavelengths_nm, dtype=np.float64)
        lo, hi = self.wavelengths_nm[0], self.wavelengths_nm[-1]
        if target.min() < lo - 1e-9 or target.max() > hi + 1e-9:
            raise ValueError(
                f"bands {target.min():.1f}-{target.max():.1f} nm fall outside the library's "
                f"{lo:.1f}-{hi:.1f} nm; use a library that covers the sensor"
            )
        spectra = np.stack([np.interp(target, self.wavelengths_nm, s) for s in self.spectra])
        return Endmembers(spectra, target, self.classes, self.names)


@dataclass(frozen=True)
class UnmixConfig:
    """Settings of :func:`unmix_fcls` (module docstring: brightness, solver)."""

    brightness: Literal["sum-to-one", "prior", "free"] = "sum-to-one"
    brightness_sigma: float = 0.1
    tolerance: float = 1e-9
    max_iterations: int = 0  # 0: 3 per endmember + 10

    def __post_init__(self) -> None:
        if self.brightness not in ("prior", "free", "sum-to-one"):
            raise ValueError(
                f"brightness must be 'prior', 'free' or 'sum-to-one', got {self.brightness!r}"
            )
        if not self.brightness_sigma > 0:
            raise ValueError(f"brightness_sigma must be > 0, got {self.brightness_sigma}")
        if not self.tolerance > 0 or self.max_iterations < 0:
            raise ValueError("tolerance must be > 0 and max_iterations >= 0")


def unmix_fcls(cube: Cube, endmembers: Endmembers, config: UnmixConfig | None = None) -> ResidueMap:
    """Residue / soil / green fractions and tillage class of every pixel of ``cube``.

    ``endmembers`` must be on the cube's band grid (``endmembers.on_grid(cube.wavelengths_nm)``)
    and in the cube's units. Returns a ResidueMap (module docstring: what invalid pixels get,
    what ``extra`` holds).
    """
    config = config or UnmixConfig()
    if cube.units != "reflectance":
        raise ValueError(f"unmixing needs a reflectance cube, got units {cube.units!r}")
    if endmembers.wavelengths_nm.shape != cube.wavelengths_nm.shape or not np.allclose(
        endmembers.wavelengths_nm, cube.wavelengths_nm, rtol=0, atol=1e-6
    ):
        raise ValueError(
            f"endmembers are on {endmembers.wavelengths_nm.shape[0]} bands that are not the "
            f"cube's {cube.bands}; resample them with endmembers.on_grid(cube.wavelengths_nm)"
        )
    bands, rows, cols = cube.data.shape
    x = cube.data.reshape(bands, -1)
    finite = np.isfinite(x).all(axis=0)
    use = cube.valid.ravel() & finite
    pixels = x[:, use].astype(np.float64)

    m = endmembers.spectra.T  # (bands, n)
    sum_to_one = config.brightness == "sum-to-one"
    max_iter = config.max_iterations or 3 * m.shape[1] + 10
    # No signal: the non-negative fit is a = 0 exactly when no endmember correlates
    # positively with the pixel (the KKT conditions at 0); judged on the data alone.
    floor = MIN_BRIGHTNESS * float(np.min(np.sum(m**2, axis=0)))
    signal = (m.T @ pixels).max(axis=0, initial=-np.inf) > floor
    prior_weight = 0.0
    if config.brightness == "prior":
        prior_weight = _prior_weight(m, pixels[:, signal], config, max_iter)
        m_fit = np.vstack([m, np.full((1, m.shape[1]), prior_weight)])
        x_fit = np.vstack([pixels, np.full((1, pixels.shape[1]), prior_weight)])
    else:
        m_fit, x_fit = m, pixels
    abundances, iterations, unconverged = solve_constrained_ls(
        m_fit, x_fit, sum_to_one=sum_to_one, tolerance=config.tolerance, max_iterations=max_iter
    )
    brightness = abundances.sum(axis=0)
    residual = np.sqrt(np.mean((pixels - m @ abundances) ** 2, axis=0))
    signal &= brightness > 0
    fractions_ok = endmembers.membership @ abundances[:, signal] / brightness[signal]

    n = rows * cols
    fractions = np.full((3, n), np.nan, dtype=np.float32)
    where = np.flatnonzero(use)[signal]
    fractions[:, where] = fractions_ok
    tillage = np.full(n, INVALID_CLASS, dtype=np.uint8)
    tillage[where] = tillage_class(fractions_ok[ENDMEMBERS.index("residue")])
    extra = {
        "brightness": _to_map(brightness, use, n, rows, cols),
        "residual_rms": _to_map(residual, use, n, rows, cols),
        "iterations": iterations,
        "invalid_flagged": int((~cube.valid).sum()),
        "invalid_nonfinite": int((cube.valid.ravel() & ~finite).sum()),
        "invalid_no_signal": int((~signal).sum()),
        "unconverged": unconverged,
        "endmembers": list(endmembers.names),
        "brightness_mode": config.brightness,
        "prior_weight": prior_weight,
    }
    return ResidueMap(
        tillage=tillage.reshape(rows, cols),
        fractions=fractions.reshape(3, rows, cols),
        counter=cube.counter,
        timestamp=cube.timestamp,
        method="fcls" if sum_to_one else f"fcls-{config.brightness}-brightness",
        extra=extra,
    )


def _prior_weight(m: NDArray[np.float64], pixels: NDArray[np.float64], config: UnmixConfig,
                  max_iterations: int, sample: int = 1024) -> float:
    """Weight ``w = noise / brightness_sigma`` of the brightness prior's row; the noise is
    the median residual of a free (NNLS) fit to an even sample of up to ``sample`` pixels,
    per band and degree of freedom."""
    if pixels.shape[1] == 0:
        return 0.0
    step = max(1, pixels.shape[1] // sample)
    part = pixels[:, ::step]
    a = solve_constrained_ls(m, part, sum_to_one=False, tolerance=config.tolerance,
                             max_iterations=max_iterations)[0]
    rss = np.sum((part - m @ a) ** 2, axis=0)
    noise = np.sqrt(np.median(rss) / max(m.shape[0] - m.shape[1], 1))
    return float(noise / config.brightness_sigma)


def _to_map(values: NDArray, use: NDArray[np.bool_], n: int, rows: int, cols: int) -> NDArray[np.float32]:
    out = np.full(n, np.nan, dtype=np.float32)
    out[use] = values
    return out.reshape(rows, cols)


def solve_constrained_ls(
    m: NDArray[np.float64],
    x: NDArray[np.float64],
    sum_to_one: bool,
    tolerance: float = 1e-9,
    max_iterations: int = 50,
) -> tuple[NDArray[np.float64], int, int]:
    """Abundances (n, P) minimising ``||x - m a||`` per column with ``a >= 0`` and, if
    ``sum_to_one``, ``sum(a) = 1``; m: (bands, n) endmembers, x: (bands, P) pixels.

    Returns the abundances, the number of iterations run and the number of pixels still
    short of the KKT tolerance when ``max_iterations`` stopped the solver."""
    n, p = m.shape[1], x.shape[1]
    if n > MAX_ENDMEMBERS:
        raise ValueError(
            f"{n} endmember spectra; unmixing takes at most {MAX_ENDMEMBERS} (each pixel's "
            "free set is one of 2**n): merge or drop variants of a class"
        )
    gram = m.T @ m
    proj = np.ascontiguousarray((m.T @ x).T)  # (P, n): pixel-major, so subsets are row slices
    tol = tolerance * float(np.trace(gram)) / n
    solver = _FreeSetSolver(gram, sum_to_one)
    # Warm start: free the endmembers the unconstrained solution gives positive weight; the
    # first iterations drop those that do not belong. The start must be feasible: a = 0
    # (NNLS), or the best single endmember, a vertex of the simplex.
    free = solver.solve(np.ones((p, n), dtype=bool), proj)[0] > 0
    a = np.zeros((p, n))
    if sum_to_one:
        start = np.argmin(0.5 * np.diag(gram)[None, :] - proj, axis=1)
        free[np.arange(p), start] = True
        a[np.arange(p), start] = 1.0
    active = np.ones(p, dtype=bool)
    added = np.full(p, -1)  # the endmember each pixel freed last, -1 after a step back
    iterations = 0
    while active.any() and iterations < max_iterations:
        iterations += 1
        idx = np.flatnonzero(active)
        f = free[idx]  # (k, n) free sets of the active pixels
        z, mu = solver.solve(f, proj[idx])
        blocked = (f & (z <= 0)).any(axis=1)

        # Feasible candidates: accept, then free the endmember that most wants to grow.
        ok = idx[~blocked]
        a[ok] = z[~blocked]
        grad = proj[ok] - a[ok] @ gram - mu[~blocked, None]
        grad[free[ok]] = -np.inf
        best = np.argmax(grad, axis=1) if ok.size else np.zeros(0, dtype=int)
        grow = grad[np.arange(ok.size), best] > tol
        free[ok[grow], best[grow]] = True
        added[ok[grow]] = best[grow]
        active[ok[~grow]] = False

        # Infeasible candidates: walk towards them until the first endmember hits zero.
        bad = idx[blocked]
        if bad.size:
            cur, cand = a[bad], z[blocked]
            hit = f[blocked] & (cand <= 0)
            gap = cur - cand
            ratio = np.where(hit, np.divide(cur, gap, out=np.zeros_like(cur), where=gap > 0), np.inf)
            first = np.argmin(ratio, axis=1)
            rows = np.arange(bad.size)
            alpha = ratio[rows, first]
            new = cur + alpha[:, None] * (cand - cur)
            drop = hit & (new <= 0)  # the blocking ones that reached zero
            drop[rows, first] = True
            new[drop] = 0.0
            a[bad] = new
            free[bad] &= ~drop
            # Lawson-Hanson safeguard: if the endmember just freed is at once the one that
            # blocks (its gradient was rounding noise, near-collinear spectra), the pixel
            # is at its optimum; freeing it again would cycle.
            stuck = (alpha == 0) & (first == added[bad])
            active[bad[stuck]] = False
            added[bad] = -1
    return a.T, iterations, int(active.sum())


class _FreeSetSolver:
    """Least squares restricted to a free set, for many pixels at once.

    The KKT matrix of a free set ``f`` is ``G`` masked to ``f`` (identity elsewhere, so
    fixed endmembers come out 0), bordered by ``f`` for the sum-to-one multiplier. Its
    inverse (pseudo-inverse if singular) is computed once per set met (batched) into a table
    indexed by the set's bit code, and each pixel's candidate is one small product with its
    set's inverse."""

    def __init__(self, gram: NDArray[np.float64], sum_to_one: bool) -> None:
        self.gram = gram
        self.sum_to_one = sum_to_one
        self.n = gram.shape[0]
        self.weights = 1 << np.arange(self.n, dtype=np.int64)
        size = self.n + 1 if sum_to_one else self.n
        self.table = np.zeros((1 << self.n, size, size))
        self.known = np.zeros(1 << self.n, dtype=bool)

    def _add(self, codes: NDArray[np.int64]) -> None:
        n = self.n
        f = ((codes[:, None] >> np.arange(n)) & 1).astype(np.float64)  # (c, n)
        kkt = np.zeros((codes.size,) + self.table.shape[1:])
        kkt[:, :n, :n] = self.gram * f[:, :, None] * f[:, None, :]
        kkt[:, np.arange(n), np.arange(n)] += 1.0 - f
        if self.sum_to_one:
            kkt[:, :n, n] = kkt[:, n, :n] = f
        try:  # LU is ten times cheaper than the SVD; collinear spectra need the latter
            self.table[codes] = np.linalg.inv(kkt)
        except np.linalg.LinAlgError:
            self.table[codes] = np.linalg.pinv(kkt)
        self.known[codes] = True

    def solve(self, free: NDArray[np.bool_], proj: NDArray[np.float64]
              ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """Candidate abundances (k, n) and sum-to-one multipliers (k,) of k pixels with free
        sets ``free`` (k, n) and projections ``proj`` (k, n) = (m^T x)^T."""
        codes = free @ self.weights
        missing = codes[~self.known[codes]]
        if missing.size:
            self._add(np.unique(missing))
        rhs = np.where(free, proj, 0.0)
        if self.sum_to_one:
            rhs = np.hstack([rhs, np.ones((rhs.shape[0], 1))])
        sol = np.einsum("kij,kj->ki", self.table[codes], rhs)
        z = np.where(free, sol[:, : self.n], 0.0)  # exact zeros, not rounding's 1e-16
        return z, (sol[:, -1] if self.sum_to_one else np.zeros(z.shape[0]))
