"""How sure a residue map is, per pixel, and the rule that marks a pixel uncertain.

Soil and dry vegetation are least distinct exactly where the two sensors look (450-1000 and
900-1700 nm; docs/residue_ceiling.md), so a tillage class without a measure of its
reliability would be taken at face value where it is a guess. Every residue map carries:

* ``confidence`` (rows, cols) float32 in [0, 1], NaN where the pixel is invalid: the
  estimated probability that the pixel's tillage class is right. Learned classifier: the
  probability it gives the chosen class (the current models compute it as below, with a
  spread ``sigma`` they estimate per pixel: export/models.py). Classical unmixing: the probability that
  the true residue cover lies in the chosen class's interval if the estimate's error is
  Gaussian with standard deviation ``sigma`` (the stage's measured error),
  ``Phi((hi - f) / sigma) - Phi((lo - f) / sigma)``.
* ``uncertain`` (rows, cols) bool: ``confidence`` below the threshold chosen on the
  validation split (the lowest giving >= 92 % accuracy on the pixels kept there; withheld,
  every pixel uncertain, when that keeps under 10 % of them: ``threshold_for``), or a
  spectrum out of distribution (``Domain.out_of_distribution``), which is either of:

  - *novel shape*: the spectrum's shape (divided by its mean over the bands the residue
    stages read) lies farther from the principal subspace of the training split's pixels
    (classically denoised cubes, what the model sees) than ``novelty_limit``;
  - *too dark*: its mean reflectance over those bands is below ``dark_limit``. Char, asphalt,
    roofs and wet dark surfaces are mostly told from soil by their level, not their shape
    (docs/residue_ceiling.md, "Out of distribution"); a reflectance cube is calibrated, so the
    level is a property of the ground, and a pixel darker than all but a few in a thousand of the
    validation pixels is not ground the model knows;
  - *foreign* (only where the domain record has a ``foreign`` direction): its score along that
    direction (a linear discriminant on the shape, and for some the log of the level,
    ``fit_foreign``) is above ``foreign_limit``. The direction separates the training pixels
    from explicit "other" examples (training-split scenes whose ground is real char or built
    surfaces, export/foreign.py): bright foreign ground sits inside the soils' brightness and
    near their subspace, so neither test above sees it. It must not take unseen crop residue
    for foreign ground: the build fits it only where a grouped cross-validation over the
    train split's residues (bench/bench_residue_foreign_cv.py) shows it does not
    (``export.build.FOREIGN_TEST``: the ImSPOC's today, not the push-broom's).

  The limits are quantiles of the *validation* split's pixels (``fit_limits``:
  ``NOVELTY_QUANTILE``, ``DARK_QUANTILE`` and ``FOREIGN_QUANTILE``: 0.2 %, 1 % and 0.5 %, together
  about 1.2 % of the in-distribution validation pixels flagged, 1.7 % with a foreign test), not of the training pixels the
  subspace was fitted on (those sit closer to it than any unseen soil).

The products keep the best guess too; an uncertain pixel's tillage is ``UNCERTAIN_CLASS``
in the residue product (onboard/formats/products.py says how to read it).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
from numpy.typing import NDArray

from onboard.formats.types import ENDMEMBERS, TILLAGE_THRESHOLDS, Cube, ResidueMap
from onboard.stages.residue import usable_bands

#: Accuracy the confidence threshold is chosen for, on the validation split (the test
#: target is 90 %: the margin covers the shift from validation to unseen spectra).
TARGET_ACCURACY = 0.92
#: Least share of the validation pixels a confidence threshold must keep, else no pixel is
#: ever confident (``threshold_for``): a threshold kept by a few percent of the pixels rests on
#: a few fields. Measured: the ImSPOC threshold kept 4.5 % of the validation pixels at 92 %
#: right, and on the test split 2.0 % at 78.7 % right; the push-broom's kept 48 % and
#: held (92.9 % on test).
MIN_CONFIDENT_SHARE = 0.10
#: The threshold when none is vouched for: above any confidence, every pixel uncertain.
WITHHELD = 2.0
#: Share of validation pixels inside the novelty limit (shape).
NOVELTY_QUANTILE = 0.998
#: Share of validation pixels darker than the dark limit. With ``NOVELTY_QUANTILE``, 1.2 % of
#: the validation pixels are flagged; measured on 16 cubes per set (bench_residue_ood.py
#: scenes), share of foreign ground flagged on the push-broom at (novelty, dark) quantiles
#: (0.995, 0.005) 7 / 21 / 28 % (sand / char / built), (0.998, 0.01) 8 / 33 / 46 %,
#: (0.995, 0.02) 14 / 46 / 58 % with 2.5 % of validation flagged: darkness does the work.
DARK_QUANTILE = 0.01
#: Least mean reflectance the foreign direction's log of the level reads (an invalid pixel is 0).
LEVEL_FLOOR = 1e-3
#: Principal components of the training spectra's shapes kept by the domain model.
COMPONENTS = 8
#: Share of validation pixels at or below the foreign limit (the foreign test's features and
#: ridge are the build's, per sensor: ``export.build.FOREIGN_TEST``).
FOREIGN_QUANTILE = 0.995


def shapes(data: NDArray, wavelengths_nm: NDArray) -> NDArray[np.float64]:
    """(bands', n) brightness-free shapes of (bands, n) spectra: the usable bands (outside
    the water bands) divided by their mean (0 for a dark pixel)."""
    x = np.asarray(data, dtype=np.float64)[usable_bands(wavelengths_nm)]
    level = x.mean(axis=0, keepdims=True)
    return np.divide(x, level, out=np.zeros_like(x), where=np.abs(level) > 1e-6)


def ground_features(data: NDArray, wavelengths_nm: NDArray) -> NDArray[np.float64]:
    """(bands' + 1, n) what the foreign direction reads of (bands, n) spectra: the shape
    (``shapes``) and the log of the mean reflectance over the usable bands (floored at
    ``LEVEL_FLOOR``)."""
    x = np.asarray(data, dtype=np.float64)[usable_bands(wavelengths_nm)]
    level = x.mean(axis=0, keepdims=True)
    shape = np.divide(x, level, out=np.zeros_like(x), where=np.abs(level) > 1e-6)
    return np.vstack([shape, np.log(np.maximum(level, LEVEL_FLOOR))])


@dataclass(frozen=True)
class Domain:
    """What a classifier was trained on, as the out-of-distribution rule needs it: the mean
    (bands',) and principal components (k, bands') of the training shapes, the novelty
    limit, the dark limit (mean reflectance; 0: no darkness test, as in bundles built before
    it), the foreign direction (bands' + 1,) over ``ground_features`` and its limit (None: no
    foreign test, as in bundles built before it) and the confidence threshold. Stored in the
    bundle manifest (``to_dict``)."""

    mean: NDArray[np.float64]
    components: NDArray[np.float64]
    novelty_limit: float
    confidence_threshold: float
    dark_limit: float = 0.0
    foreign: NDArray[np.float64] | None = None
    foreign_limit: float = math.inf

    def novelty(self, cube: Cube) -> NDArray[np.float64]:
        """(rows, cols) distance of each pixel's shape from the training subspace, in double,
        each pixel on its own (``_project``)."""
        b, h, w = cube.data.shape
        z = shapes(np.nan_to_num(cube.data.reshape(b, -1)), cube.wavelengths_nm) - self.mean[:, None]
        if z.shape[0] != self.mean.size:
            raise ValueError(f"the domain model has {self.mean.size} bands; the cube gives {z.shape[0]}")
        resid = z - _project(self.components.T, _project(self.components, z))
        return np.sqrt(np.mean(resid**2, axis=0)).reshape(h, w)

    def foreign_score(self, cube: Cube) -> NDArray[np.float64]:
        """(rows, cols) each pixel's score along the foreign direction (-inf without one), in
        double, each pixel on its own (``_project``)."""
        b, h, w = cube.data.shape
        if self.foreign is None:
            return np.full((h, w), -np.inf)
        f = ground_features(np.nan_to_num(cube.data.reshape(b, -1)), cube.wavelengths_nm)
        if f.shape[0] != self.foreign.size:
            raise ValueError(f"the foreign direction has {self.foreign.size - 1} bands; the cube gives {f.shape[0] - 1}")
        return _project(self.foreign[None], f)[0].reshape(h, w)

    def out_of_distribution(self, cube: Cube) -> NDArray[np.bool_]:
        """(rows, cols) True where the pixel's shape is novel, it is too dark or it lies on
        the foreign side (module docstring); the one definition the runtime, the builder and
        the benchmarks use.

        Decided in float32 from one product of a few fixed rows with the cube (``_screen``);
        the pixels whose float32 level, novelty or score lies within a bound of its rounding
        error of a limit, or is not finite, are decided again by the double-precision
        definitions (``novelty``, ``level``, ``foreign_score``), so the mask is theirs."""
        b, h, w = cube.data.shape
        x = cube.data.reshape(b, -1)[usable_bands(cube.wavelengths_nm)].astype(np.float32, copy=False)
        if x.shape[0] != self.mean.size:
            raise ValueError(f"the domain model has {self.mean.size} bands; the cube gives {x.shape[0]}")
        flags, unsure = self._screen(x)
        if unsure.any():
            cols = np.flatnonzero(unsure)
            # at least two columns: numpy sums a single column in another order (pairwise)
            sub = cube.data.reshape(b, -1)[:, np.append(cols, cols[0])][:, None, :]
            part = Cube(sub, cube.wavelengths_nm, np.ones(sub.shape[1:], dtype=bool))
            flags[cols] = ((self.novelty(part) > self.novelty_limit) | (level(part) < self.dark_limit)
                           | (self.foreign_score(part) > self.foreign_limit)).ravel()[:-1]
        return flags.reshape(h, w)

    def _screen(self, x: NDArray[np.float32]) -> tuple[NDArray[np.bool_], NDArray[np.bool_]]:
        """(flags, unsure) of (bands', n) float32 spectra: the rule in float32 and where its
        decision could differ from the double-precision one.

        One matrix product gives each pixel's band sum, its shape's coordinates on the
        components and its foreign score's shape term (the shape is the spectrum over its
        mean, so these are products with the raw spectrum divided by the level); one more
        pass forms the residual. Each quantity's margin is four times a first-order bound on
        its float32 rounding error: ``g`` (eps times the ``bands' + k`` terms of the longest
        sum) times the sizes that carry it, the pixel's shape (rms, from its residual, its
        coordinates and the mean: the components are orthonormal), the cancellation in its
        level (sum |x| / |sum x|) and, for the components' coordinates, sqrt(k) (an error of
        ``g |shape|`` in each, Cauchy-Schwarz)."""
        nb, k = x.shape[0], self.components.shape[0]
        g = 4.0 * (nb + k + 4) * float(np.finfo(np.float32).eps)
        rows = [np.ones((1, nb)), self.components]
        if self.foreign is not None:
            rows += [self.foreign[None, :-1], np.abs(self.foreign[None, :-1])]
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):  # NaN, inf: rechecked
            y = np.vstack(rows).astype(np.float32) @ x
            lev = y[0] / np.float32(nb)
            signed = bool(np.fmin.reduce(x, axis=None) < 0)
            absolute = np.abs(x).sum(axis=0) / np.float32(nb) if signed else lev
            kappa = absolute / np.abs(lev)
            inv = np.float32(1.0) / lev
            coords = np.vstack([y[1:k + 1] * inv - (self.components @ self.mean).astype(np.float32)[:, None],
                                np.ones((1, x.shape[1]), np.float32)])
            resid = x * inv  # the shape, less the mean and its part in the subspace:
            resid -= np.hstack([self.components.T, self.mean[:, None]]).astype(np.float32) @ coords
            novelty = np.sqrt(np.einsum("ij,ij->j", resid, resid) / np.float32(nb))
            # rms of the shape: of its residual, its coordinates and the mean (first order)
            rms_mean = float(np.sqrt(np.mean(self.mean**2)))
            size = np.sqrt(novelty**2 + np.einsum("ij,ij->j", coords[:k], coords[:k]) / np.float32(nb)) + rms_mean
            shapeless = ~np.isfinite(kappa) | (np.abs(lev) < 1e-5)  # no shape float32 can trust
            tests = [(novelty > self.novelty_limit, shapeless | ~np.isfinite(novelty)
                      | (np.abs(novelty - self.novelty_limit) <= g * (size * (1 + kappa + math.sqrt(k)) + novelty))),
                     (lev < self.dark_limit, ~np.isfinite(lev) | (np.abs(lev - self.dark_limit) <= g * absolute))]
            if self.foreign is not None:
                log_level = np.log(np.maximum(lev, np.float32(LEVEL_FLOOR)))
                score = y[k + 1] * inv + np.float32(self.foreign[-1]) * log_level
                bound = np.abs(self.foreign[:-1]).astype(np.float32) @ np.abs(x) if signed else y[k + 2]
                margin = g * (bound / np.abs(lev) * (1.0 + kappa)
                              + abs(float(self.foreign[-1])) * (np.abs(log_level) + kappa) + np.abs(score))
                tests.append((score > self.foreign_limit, shapeless | ~np.isfinite(score)
                              | (np.abs(score - self.foreign_limit) <= margin)))
        # one test surely passed decides the pixel; else any test in doubt sends it to double
        sure = np.logical_or.reduce([flag & ~doubt for flag, doubt in tests])
        return sure, ~sure & np.logical_or.reduce([doubt for _, doubt in tests])

    def to_dict(self) -> dict:
        d = {"mean": [round(float(v), 6) for v in self.mean],
             "components": [[round(float(v), 6) for v in row] for row in self.components],
             "novelty_limit": self.novelty_limit, "confidence_threshold": self.confidence_threshold,
             "dark_limit": self.dark_limit}
        if self.foreign is not None:  # unrounded: the score is a sum of large, cancelling terms
            d |= {"foreign": [float(v) for v in self.foreign], "foreign_limit": self.foreign_limit}
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Domain:
        try:
            foreign = np.asarray(d["foreign"], dtype=float) if "foreign" in d else None
            return cls(np.asarray(d["mean"], dtype=float), np.asarray(d["components"], dtype=float),
                       float(d["novelty_limit"]), float(d["confidence_threshold"]),
                       float(d.get("dark_limit", 0.0)), foreign,
                       float(d["foreign_limit"]) if foreign is not None else math.inf)
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"the residue model's domain record is malformed ({exc}): rebuild the bundle") from exc


def _project(rows: NDArray, z: NDArray) -> NDArray[np.float64]:
    """(r, n) ``rows @ z`` for (r, F) rows and (F, n) columns, accumulated over F in order,
    element by element: a pixel's value is the same bits wherever it sits and however many
    pixels come with it (a BLAS product's last bit depends on both), so
    ``Domain.out_of_distribution`` can decide a few pixels again on their own."""
    acc = rows[:, :1] * z[:1]
    for j in range(1, z.shape[0]):
        acc += rows[:, j:j + 1] * z[j:j + 1]
    return acc


def level(cube: Cube) -> NDArray[np.float64]:
    """(rows, cols) mean reflectance of each pixel over the bands the residue stages read
    (NaN read as 0)."""
    b, h, w = cube.data.shape
    x = np.nan_to_num(np.asarray(cube.data, dtype=np.float64).reshape(b, -1))
    return x[usable_bands(cube.wavelengths_nm)].mean(axis=0).reshape(h, w)


def fit_limits(domain: Domain, cubes: Sequence[Cube]) -> Domain:
    """``domain`` with its novelty, dark and foreign limits at ``NOVELTY_QUANTILE``,
    ``DARK_QUANTILE`` and ``FOREIGN_QUANTILE`` of the valid pixels of ``cubes`` (the
    validation split's)."""
    novelty, lev, score = [], [], []
    for c in cubes:
        ok = c.valid & np.isfinite(c.data).all(axis=0)
        novelty.append(domain.novelty(c)[ok])
        lev.append(level(c)[ok])
        score.append(domain.foreign_score(c)[ok])
    limit = float(np.quantile(np.concatenate(score), FOREIGN_QUANTILE)) if domain.foreign is not None else math.inf
    return replace(domain, novelty_limit=float(np.quantile(np.concatenate(novelty), NOVELTY_QUANTILE)),
                   dark_limit=float(np.quantile(np.concatenate(lev), DARK_QUANTILE)), foreign_limit=limit)


def _pixels(cubes: Sequence[Cube], most: int) -> NDArray[np.float64]:
    """(n, bands' + 1) ``ground_features`` of the valid pixels of ``cubes``, an even
    subsample of at most ``most``."""
    masks = [c.valid & np.isfinite(c.data).all(axis=0) for c in cubes]
    step = max(1, sum(int(m.sum()) for m in masks) // most)
    return np.concatenate([ground_features(c.data[:, m][:, ::step], c.wavelengths_nm)
                           for c, m in zip(cubes, masks, strict=True)], axis=1).T


def fit_foreign(domain: Domain, train: Sequence[Cube], other: Sequence[Cube], ridge: float,
                with_level: bool = True, max_pixels: int = 40000) -> Domain:
    """``domain`` with the foreign direction: Fisher's linear discriminant between the
    valid pixels of the training cubes ``train`` and those of ``other`` (cubes whose valid
    mask keeps the pixels of foreign ground) over ``ground_features`` (``with_level`` False:
    the shape alone, the level's weight 0), pooled covariance with a ridge of ``ridge`` times
    its mean variance. Its limit is set by ``fit_limits``."""
    known, foreign = _pixels(train, max_pixels), _pixels(other, max_pixels)
    if with_level:
        return replace(domain, foreign=discriminant(known, foreign, ridge), foreign_limit=math.inf)
    direction = np.append(discriminant(known[:, :-1], foreign[:, :-1], ridge), 0.0)
    return replace(domain, foreign=direction, foreign_limit=math.inf)


def discriminant(known: NDArray, foreign: NDArray, ridge: float) -> NDArray[np.float64]:
    """(F,) Fisher's linear discriminant of (n, F) ``known`` and (m, F) ``foreign`` samples,
    pointing to ``foreign``: pooled covariance plus ``ridge`` times its mean variance."""
    cov = np.cov(np.concatenate([known - known.mean(axis=0), foreign - foreign.mean(axis=0)]).T)
    cov += ridge * np.trace(cov) / len(cov) * np.eye(len(cov))
    return np.linalg.solve(cov, foreign.mean(axis=0) - known.mean(axis=0))


def fit_domain(cubes: Sequence[Cube], components: int = COMPONENTS, max_pixels: int = 20000,
               confidence_threshold: float = 0.5) -> Domain:
    """The domain of training cubes: principal subspace of their valid pixels' shapes (an
    even subsample of at most ``max_pixels``), novelty limit at ``NOVELTY_QUANTILE`` of
    those pixels and no dark limit: ``fit_limits`` on validation cubes sets both for flight."""
    parts = []
    for c in cubes:
        ok = c.valid & np.isfinite(c.data).all(axis=0)
        parts.append(shapes(c.data[:, ok], c.wavelengths_nm))
    z = np.concatenate(parts, axis=1)
    z = z[:, :: max(1, z.shape[1] // max_pixels)]
    mean = z.mean(axis=1)
    _, _, vt = np.linalg.svd((z - mean[:, None]).T, full_matrices=False)
    comps = vt[:components]
    resid = (z - mean[:, None]) - comps.T @ (comps @ (z - mean[:, None]))
    limit = float(np.quantile(np.sqrt(np.mean(resid**2, axis=0)), NOVELTY_QUANTILE))
    return Domain(mean, comps, limit, confidence_threshold)


def threshold_for(confidence: NDArray, correct: NDArray[np.bool_], target: float = TARGET_ACCURACY,
                  min_share: float = MIN_CONFIDENT_SHARE) -> float:
    """The lowest confidence threshold whose kept pixels (confidence >= it) are right at
    least ``target`` of the time (the most pixels kept); ``WITHHELD`` (no pixel confident)
    when none reaches it or the best keeps less than ``min_share`` of the pixels."""
    order = np.argsort(-np.asarray(confidence, dtype=float), kind="stable")
    c = np.asarray(confidence, dtype=float)[order]
    running = np.cumsum(np.asarray(correct, dtype=float)[order]) / np.arange(1, c.size + 1)
    # a threshold keeps every pixel at or above it: only the last of equal values counts
    last = np.append(c[1:] != c[:-1], True)
    ok = np.flatnonzero((running >= target) & last)
    if not ok.size or (ok[-1] + 1) < min_share * c.size:
        return WITHHELD
    return float(c[ok[-1]])


def interval_confidence(residue: NDArray, sigma: float) -> NDArray[np.float32]:
    """Probability that the true cover lies in the class interval of ``residue`` (the
    estimated cover) when the estimate's error is N(0, sigma^2)."""
    f = np.asarray(residue, dtype=np.float64)
    edges = np.array([-np.inf, *TILLAGE_THRESHOLDS, np.inf])
    k = np.digitize(np.nan_to_num(f), TILLAGE_THRESHOLDS)
    erf = np.vectorize(math.erf, otypes=[float])

    def phi(x: NDArray) -> NDArray:
        return 0.5 * (1.0 + erf(x / math.sqrt(2.0)))

    conf = phi((edges[k + 1] - f) / sigma) - phi((edges[k] - f) / sigma)
    return np.where(np.isfinite(f), conf, np.nan).astype(np.float32)


def judged(m: ResidueMap, confidence: NDArray, threshold: float,
           out_of_distribution: NDArray[np.bool_] | None = None) -> ResidueMap:
    """``m`` with its confidence and uncertain mask (module docstring); invalid pixels are
    neither confident nor uncertain (their confidence is NaN)."""
    ok = np.isfinite(m.fractions).all(axis=0)
    conf = np.where(ok, confidence, np.nan).astype(np.float32)
    uncertain = ok & ~(conf >= threshold)
    ood = np.zeros_like(ok) if out_of_distribution is None else (ok & out_of_distribution)
    uncertain |= ood
    extra = {**m.extra, "confidence_threshold": threshold,
             "uncertain_share": float(uncertain.sum() / max(ok.sum(), 1)),
             "out_of_distribution_share": float(ood.sum() / max(ok.sum(), 1))}
    return replace(m, confidence=conf, uncertain=uncertain, extra=extra)


def judge_learned(m: ResidueMap, cube: Cube, domain: Domain | None) -> ResidueMap:
    """Confidence of a learned map (its class probability) and the rule, with the model's
    domain; without one (an older bundle) the confidence alone at 0.5."""
    if m.probabilities is None:
        raise ValueError("a learned residue map carries class probabilities")
    conf = m.probabilities.max(axis=0)
    if domain is None:
        return judged(m, conf, 0.5)
    return judged(m, conf, domain.confidence_threshold, domain.out_of_distribution(cube))


def judge_classical(m: ResidueMap, sigma: float, threshold: float) -> ResidueMap:
    """Confidence of an unmixing map from its residue cover and error ``sigma``."""
    return judged(m, interval_confidence(m.fractions[ENDMEMBERS.index("residue")], sigma), threshold)


def confident_accuracy(m: ResidueMap, truth_tillage: NDArray, valid: NDArray[np.bool_]
                       ) -> tuple[float, float]:
    """(accuracy on the confident valid pixels, their share of the valid pixels)."""
    if m.uncertain is None:
        raise ValueError("the map has no uncertain mask: judge it first")
    keep = valid & ~m.uncertain
    share = float(keep.sum() / max(valid.sum(), 1))
    acc = float(np.mean(m.tillage[keep] == truth_tillage[keep])) if keep.any() else float("nan")
    return acc, share
