"""Classical subspace denoising of a hyperspectral cube (the FastHyDe / HyRes family).

A reflectance cube of a farmland scene is spectrally low-rank: a handful of materials mix
in every pixel, so the clean spectra lie close to a subspace of a few dimensions, while
noise fills all bands. The stage exploits that, then cleans what noise is left inside the
subspace spatially:

1. **Dead pixels** (``valid`` False, or a non-finite value) are filled by normalised
   convolution from their valid neighbours so that no later step sees them; the output
   keeps them flagged invalid (their values are in-painted, not measured).
2. **Impulses and line defects of single bands** (a column of one band dead, stuck or
   offset since calibration; the striping of only some bands; salt and pepper) are found
   as values that the other bands cannot predict and imputed from them
   (:mod:`onboard.stages.outliers`, ``outliers=True``; off for the ImSPOC, whose
   reconstruction spreads a detector defect over every band and its neighbours).
   **Column stripes common to the bands** (a push-broom detector pixel whose response
   drifts from its flat field the same way in every band) are estimated per band and column from the
   median over rows of the step between neighbouring columns, which a scene feature that
   does not run the whole frame cannot move, integrated into a pattern by a Wiener (MAP)
   estimate whose variances come from the frame itself (:func:`estimate_stripes`), and
   divided out (``gain``) or subtracted (``offset``). ``none`` for snapshot sensors (on an ImSPOC cube the
   stripe estimate shrinks to 0 anyway, measured; ``none`` saves the time).
3. **Noise covariance.** ``noise="spatial"`` measures it on the second
   differences across columns, ``(x[r,c-1] - 2 x[r,c] + x[r,c+1]) / sqrt(6)``, which carry
   white-in-space noise at its full covariance, however correlated across bands (ImSPOC's
   regularised reconstruction correlates neighbouring bands strongly), and what is left of
   the stripes; the scene's edges are outliers, rejected by a reweighted, median-consistent
   estimate (:func:`noise_covariance_spatial`). ``noise="regression"`` is HySime's
   (Bioucas-Dias and Nascimento 2008): each band regressed on all the others, what they
   cannot predict is noise; in closed form the residual energy of band ``i`` is
   ``1 / (R^-1)_ii``. It is the default: texture that the other bands share is predicted,
   so it is not counted as noise (on the clean real cubes the spatial estimate finds a
   median "noise" of 0.002-0.010, the regression 0.0002-0.0015). It assumes noise
   independent across bands and fails on reconstructed
   cubes: on the default ImSPOC frame it finds 1-3 % of the noise standard deviation where
   the spatial estimate is within 5 % (tests/test_denoise_imspoc.py).
4. The cube is **whitened** by the noise covariance and its **signal subspace** is the leading
   eigenvectors of the whitened covariance. In whitened units the noise floor is 1 in every
   direction, and pure noise over ``N`` pixels and ``B`` bands spreads eigenvalues up to the
   Marchenko-Pastur edge ``(1 + sqrt(B/N))^2``. ``rank_rule="noise-floor"`` keeps the
   directions above ``edge * (1 + rank_margin)``; ``rank_rule="hysime"`` keeps those whose
   signal power exceeds their noise power (eigenvalue > 2), HySime's minimum-MSE rule for a
   projection alone. The noise-floor rule keeps weaker directions, which the spatial step
   then cleans: measured 0-2.5 dB better on synthetic parcels, within 0.25 dB on ImSPOC
   reconstructions, where HySime keeps 3 dimensions and the noise floor 7-11.
5. The **eigen-images** are denoised spatially with an undecimated (translation-invariant)
   Haar wavelet transform and a local empirical Wiener gain per coefficient
   (:func:`denoise_eigenimages`), the noise level 1 that the whitening gives (checked
   against each image's own fine-scale deviation). Haar suits fields made of parcels: it
   keeps their straight borders sharp, where a Gaussian or Fourier (Wiener) filter would
   blur them; the local gain keeps real texture where one threshold per sub-band
   (BayesShrink, used before) removed it.
6. Back-projection and un-whitening give the cube again.

Steps 1-4 are :func:`decompose`, so a learned eigen-image denoiser can reuse them.

numpy only; the cost is a few array passes over the cube plus ``B x B`` linear algebra,
once per outlier round (step 2, at most 5): on one core about 60 ms for 45 x 64 x 64,
150 ms for the push-broom's 81 x 64 x 64, 0.4-0.9 s for a 198 x 100 x 100 AVIRIS cube
(``bench/bench_denoise.py``; FastHyDe takes 4-6 s there).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from onboard.errors import OnboardError
from onboard.formats.types import Cube
from onboard.stages.filters import box_sum
from onboard.stages.outliers import impute_outliers, regression_precision
from onboard.stages.robust import median

#: Fewest bands the subspace denoiser accepts: below this there is no room for a signal
#: subspace smaller than the band count, and the band-noise regression has too few regressors.
MIN_BANDS = 5
#: Columns over which the scene's slow gradients are measured (and removed) before the
#: column-to-column steps are integrated into a stripe pattern; odd.
STRIPE_TREND = 15
#: Most pixel triples the noise covariance is measured on (sampling error ~2 % in sigma).
NOISE_SAMPLES = 4096
#: Half side of the window over which a wavelet coefficient's local signal energy is measured.
WIENER_RADIUS = 2
#: Median absolute deviation of a unit Gaussian.
_MAD_GAUSS = 0.6744897501960817


@dataclass(frozen=True)
class SubspaceDenoiseConfig:
    """Settings of :func:`denoise_subspace`.

    ``destripe``: the stripe model of the sensor: ``gain`` (response drift, push-broom
    InGaAs), ``offset`` (dark-signal drift) or ``none`` (a snapshot sensor such as ImSPOC
    has no column structure). ``rank_rule`` / ``rank_margin`` / ``max_rank``: how the
    signal-subspace dimension is chosen (module docstring, step 4). ``wavelet_levels``:
    depth of the spatial Haar transform (each level doubles the scale). ``threshold_scale``
    multiplies the noise level the eigen-image shrinkage assumes (1: as measured; 0 keeps
    every coefficient). ``precision``: the dtype of the passes over the cube (filling,
    destriping, noise differences, projection, the eigen-images' wavelet); "float32"
    (default) halves the bytes each pass moves and doubles the matmul rate. What a rounding
    could tip stays in float64: the ``B x B`` algebra (inverses, eigen-decompositions), the
    signal covariance, the noise samples and the outlier rounds, whose threshold decisions
    set the noise estimate. "float64" is the reference, equal to float32 within the float16
    quantisation of the cube product, classical or learned (tests/test_denoise_precision.py).
    """

    destripe: Literal["gain", "offset", "none"] = "gain"
    noise: Literal["spatial", "regression"] = "regression"
    rank_rule: Literal["noise-floor", "hysime"] = "noise-floor"
    rank_margin: float = 0.1
    max_rank: int = 16
    wavelet_levels: int = 3
    outliers: bool = True
    threshold_scale: float = 1.0
    precision: Literal["float32", "float64"] = "float32"

    def __post_init__(self) -> None:
        if self.destripe not in ("gain", "offset", "none"):
            raise ValueError(f"destripe must be 'gain', 'offset' or 'none', got {self.destripe!r}")
        if self.noise not in ("spatial", "regression"):
            raise ValueError(f"noise must be 'spatial' or 'regression', got {self.noise!r}")
        if self.rank_rule not in ("noise-floor", "hysime"):
            raise ValueError(f"rank_rule must be 'noise-floor' or 'hysime', got {self.rank_rule!r}")
        if self.max_rank < 1:
            raise ValueError(f"max_rank must be >= 1, got {self.max_rank}")
        if not 1 <= self.wavelet_levels <= 6:
            raise ValueError(f"wavelet_levels must be 1-6, got {self.wavelet_levels}")
        if self.precision not in ("float32", "float64"):
            raise ValueError(f"precision must be 'float32' or 'float64', got {self.precision!r}")
        if self.rank_margin < 0 or self.threshold_scale < 0:
            raise ValueError("rank_margin and threshold_scale must be >= 0")

    @classmethod
    def for_sensor(cls, sensor: str) -> SubspaceDenoiseConfig:
        """The settings for a sensor's cubes. The ImSPOC reconstructs each pixel from many
        detector pixels: no column stripes survive, and the regularised reconstruction
        correlates the noise of neighbouring bands, which the band regression cannot see
        (module docstring, step 3), so its noise is measured spatially. A push-broom (or any
        sensor measuring each band directly) has gain stripes and band-independent noise:
        the regression, which scene texture does not fool."""
        if sensor == "imspoc":
            return cls(destripe="none", noise="spatial", outliers=False)
        return cls(destripe="gain", noise="regression")


@dataclass
class SubspaceReport:
    """What :func:`denoise_subspace` estimated, for telemetry and tests.

    ``band_noise``: (bands,) noise standard deviation per band, in the cube's units, after
    destriping. ``eigenvalues``: (bands,) whitened covariance eigenvalues, descending.
    ``rank``: the signal-subspace dimension kept. ``stripes``: (bands, cols) the removed
    stripe pattern (gains, or offsets in the cube's units), None when not destriped.
    ``filled``: number of invalid pixels in-painted. ``line_defects``: (band, column) line
    defects and ``impulses``: single values, imputed from the other bands (step 2).
    """

    band_noise: NDArray[np.float64]
    eigenvalues: NDArray[np.float64]
    rank: int
    stripes: NDArray[np.float64] | None
    filled: int
    line_defects: int = 0
    impulses: int = 0


def denoise_subspace(cube: Cube, config: SubspaceDenoiseConfig | None = None) -> Cube:
    """Denoised copy of ``cube``: same shape (bands, rows, cols) float32, wavelengths,
    units, counter and time.

    The output ``valid`` is the input's, also False wherever the input held a non-finite
    value; data under invalid pixels are in-painted from their neighbours (finite, but not
    measurements). A cube with no measurable noise (synthetic) comes back filled and
    destriped but otherwise unchanged, and so do its constant bands. Raises
    :class:`NotDenoised` (a ValueError), saying why, for a cube it cannot denoise: fewer
    than :data:`MIN_BANDS` (varying) bands, a band of NaNs, too few valid pixels to estimate
    the noise and the subspace (the pipeline passes it on undenoised, with an event).
    """
    return denoise_subspace_report(cube, config)[0]


def denoise_subspace_report(
    cube: Cube, config: SubspaceDenoiseConfig | None = None
) -> tuple[Cube, SubspaceReport]:
    """:func:`denoise_subspace` and what it estimated on the way (:class:`SubspaceReport`)."""
    config = config or SubspaceDenoiseConfig()
    parts = decompose(cube, config)
    z = parts.z
    if parts.report.band_noise.any():  # a noise-free cube has nothing to clean spatially
        z = denoise_eigenimages(z, config.wavelet_levels, config.threshold_scale)
    result = Cube(parts.compose(z), cube.wavelengths_nm, parts.valid.copy(),
                  counter=cube.counter, timestamp=cube.timestamp, units=cube.units)
    return result, parts.report


@dataclass
class SubspaceDecomposition:
    """A cube after steps 1-4 (module docstring): in-painted, destriped, and expressed in
    its signal subspace, ``x = back @ z + mean`` per pixel. A spatial denoiser of the
    eigen-images (this module's, or a learned one) takes ``z`` and gives it back.

    ``mean``: (B,) mean spectrum of the valid pixels, in the cube's units. ``project``:
    (k, B), ``z = project @ (x - mean)``. ``back``: (B, k). ``z``: (k, H, W) eigen-images
    in whitened units (noise about 1 in each). ``valid``: (H, W) the output mask. For a cube
    with no measurable noise, ``k = B`` and the basis is the identity.
    """

    mean: NDArray[np.float64]
    project: NDArray[np.float64]
    back: NDArray[np.float64]
    z: NDArray[np.floating]
    valid: NDArray[np.bool_]
    report: SubspaceReport

    def compose(self, z: NDArray[np.floating]) -> NDArray[np.float32]:
        """The cube (B, H, W) float32 from eigen-images ``z`` (k, H, W), in ``z``'s precision."""
        k, h, w = z.shape
        out = self.back.astype(z.dtype) @ z.reshape(k, -1) + self.mean.astype(z.dtype)[:, None]
        return out.reshape(-1, h, w).astype(np.float32)


class NotDenoised(OnboardError, ValueError):
    """A cube the stage cannot denoise, with the reason in words; the caller passes the
    cube on undenoised (the pipeline flags the frame and sends an event product)."""


def decompose(cube: Cube, config: SubspaceDenoiseConfig | None = None) -> SubspaceDecomposition:
    """Steps 1-4 of the stage: fill, destripe, measure the noise, find the signal subspace,
    project. Bands constant over the valid pixels (a dead or saturated channel) carry
    neither signal nor noise: they are left out of the subspace and come back as they are.
    Raises :class:`NotDenoised` (a ValueError) with the reason for a cube it cannot
    denoise (:func:`check_input`)."""
    config = config or SubspaceDenoiseConfig()
    varying = check_input(cube)
    if varying.all():
        return _decompose(cube, config)
    inner = _decompose(Cube(cube.data[varying], cube.wavelengths_nm[varying], cube.valid), config)
    return _embed(inner, varying, cube.data, config)


def check_input(cube: Cube) -> NDArray[np.bool_]:
    """Which bands (B,) vary over the valid pixels, or :class:`NotDenoised` with the reason:
    fewer than :data:`MIN_BANDS` bands (or varying bands), a band without a finite value,
    no more valid (finite) pixels than bands."""
    b = cube.data.shape[0]
    lam = cube.wavelengths_nm
    if b < MIN_BANDS:
        raise NotDenoised(
            f"the subspace denoiser needs at least {MIN_BANDS} bands, the cube has {b}: "
            "skip denoising for this sensor or reconstruct more bands")
    finite = np.isfinite(cube.data)
    empty = np.flatnonzero(~finite.reshape(b, -1).any(axis=1))
    if empty.size:
        raise NotDenoised(
            f"{empty.size} of {b} bands hold no finite value (NaN or inf everywhere; first: "
            f"band {empty[0]} at {lam[empty[0]]:.0f} nm): the cube is passed on undenoised")
    valid = cube.valid & finite.all(axis=0)
    n_valid = int(valid.sum())
    if n_valid <= b:
        bad = int((cube.valid & ~finite.all(axis=0)).sum())
        raise NotDenoised(
            f"the cube has {n_valid} valid pixels for {b} bands ({bad} more hold NaN or inf); "
            "the subspace denoiser needs more valid pixels than bands: skip denoising for this frame")
    pixels = valid_pixels(cube.data, valid)
    varying = pixels.max(axis=1) > pixels.min(axis=1)
    if varying.sum() < MIN_BANDS:
        what = "every band is" if not varying.any() else f"{b - int(varying.sum())} of {b} bands are"
        raise NotDenoised(
            f"{what} constant over the valid pixels (a blank, saturated or dead channel): "
            f"{int(varying.sum())} varying bands, the subspace denoiser needs {MIN_BANDS}")
    return varying


def valid_pixels(x: NDArray[np.floating], valid: NDArray[np.bool_]) -> NDArray[np.floating]:
    """The valid pixels (B, N) of a cube ``x`` (B, H, W), in row-major order: a view where
    every pixel is valid (the usual frame), a copy otherwise."""
    return x.reshape(x.shape[0], -1) if valid.all() else x[:, valid]


def _embed(inner: SubspaceDecomposition, varying: NDArray[np.bool_], data: NDArray,
           config: SubspaceDenoiseConfig) -> SubspaceDecomposition:
    """A decomposition of the varying bands extended to the whole cube: the constant bands
    keep their value (mean), take no part in the projection and come back unchanged."""
    b = len(varying)
    k = inner.z.shape[0]
    mean = np.asarray(data[:, inner.valid].mean(axis=1), dtype=np.float64)
    mean[varying] = inner.mean
    project = np.zeros((k, b))
    project[:, varying] = inner.project
    back = np.zeros((b, k))
    back[varying] = inner.back
    r = inner.report
    noise = np.zeros(b)
    noise[varying] = r.band_noise
    eig = np.zeros(b)
    eig[: len(r.eigenvalues)] = r.eigenvalues
    stripes = None
    if r.stripes is not None:
        stripes = np.full((b, r.stripes.shape[1]), 1.0 if config.destripe == "gain" else 0.0)
        stripes[varying] = r.stripes
    report = replace(r, band_noise=noise, eigenvalues=eig, stripes=stripes)
    return SubspaceDecomposition(mean, project, back, inner.z, inner.valid, report)


def _decompose(cube: Cube, config: SubspaceDenoiseConfig) -> SubspaceDecomposition:
    """:func:`decompose` of a cube that :func:`check_input` accepted, every band varying."""
    b, h, w = cube.data.shape
    dtype = np.dtype(config.precision)
    x = cube.data.astype(dtype)
    valid = cube.valid & np.isfinite(x).all(axis=0)
    filled = fill_invalid(x, valid)

    outliers = None
    if config.outliers:
        filled, outliers = impute_outliers(filled, valid)
    stripes = None
    if config.destripe != "none" and w >= 3:
        stripes = estimate_stripes(filled, config.destripe)
        pattern = stripes.astype(dtype)[:, None, :]
        filled = filled / pattern if config.destripe == "gain" else filled - pattern
    replaced = outliers.fraction(valid) if outliers is not None else np.zeros(b)
    sub = _signal_subspace(filled, valid, config, replaced)
    flat = filled.reshape(b, -1) - sub.mean.astype(dtype)[:, None]
    counts = dict(filled=int((~valid).sum()), line_defects=int(outliers.lines.sum()) if outliers is not None else 0,
                  impulses=outliers.impulses if outliers is not None else 0)
    if sub.whiten is None:  # a noise-free (e.g. constant) cube: keep it all
        report = SubspaceReport(np.zeros(b), np.zeros(b), b, stripes, **counts)
        return SubspaceDecomposition(sub.mean, np.eye(b), np.eye(b), flat.reshape(b, h, w), valid, report)
    basis = sub.eigvec[:, :sub.rank]  # (B, k), whitened units
    project = (sub.whiten @ basis).T
    report = SubspaceReport(np.sqrt(np.diag(sub.noise_cov)), sub.eigval, sub.rank, stripes, **counts)
    return SubspaceDecomposition(sub.mean, project, sub.unwhiten @ basis,
                                 (project.astype(dtype) @ flat).reshape(sub.rank, h, w), valid, report)


@dataclass
class _Subspace:
    """Noise covariance and signal subspace of a cube (step 3-4); ``whiten`` None for a
    cube without measurable noise."""

    mean: NDArray[np.float64]
    noise_cov: NDArray[np.float64]
    whiten: NDArray[np.float64] | None
    unwhiten: NDArray[np.float64]
    eigval: NDArray[np.float64]
    eigvec: NDArray[np.float64]
    rank: int


def _signal_subspace(x: NDArray[np.floating], valid: NDArray[np.bool_], config: SubspaceDenoiseConfig,
                     replaced: NDArray[np.float64]) -> _Subspace:
    """Steps 3-4 on a filled cube (B, H, W). ``replaced`` (B,): fraction of each band's
    valid pixels imputed by :func:`impute_outliers`; they carry no noise, so the band's
    regression residual energy is spread over the others only."""
    b = x.shape[0]
    pixels = valid_pixels(x, valid)  # (B, N) valid pixels only: in-painted ones would look noise-free
    n_valid = pixels.shape[1]
    mean = pixels.mean(axis=1, dtype=np.float64)
    centred = pixels - mean.astype(pixels.dtype)[:, None]
    if config.noise == "spatial":
        noise_cov = noise_covariance_spatial(x, valid)
    else:
        sigma = band_noise_regression(centred) / np.sqrt(np.maximum(1.0 - replaced, 0.05))
        noise_cov = np.diag(sigma**2)
    if not np.diag(noise_cov).max() > 0:
        return _Subspace(mean, noise_cov, None, np.eye(b), np.zeros(b), np.eye(b), b)
    whiten, unwhiten = _whitening(noise_cov)
    # the signal covariance in double whatever the precision: its leading eigenvalue is
    # thousands of times the noise's, whose directions a float32 sum would rotate
    c64 = centred.astype(np.float64, copy=False)
    eigval, eigvec = np.linalg.eigh(whiten @ (c64 @ c64.T / n_valid) @ whiten)
    eigval, eigvec = eigval[::-1], eigvec[:, ::-1]
    return _Subspace(mean, noise_cov, whiten, unwhiten, eigval, eigvec,
                     subspace_rank(eigval, n_valid, config))


def _whitening(cov: NDArray[np.float64]) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """``cov^-1/2`` and ``cov^1/2`` (symmetric), eigenvalues floored at 1e-10 of the largest."""
    s, u = np.linalg.eigh(cov)
    s = np.maximum(s, 1e-10 * max(float(s.max()), 1e-300))
    return (u / np.sqrt(s)) @ u.T, (u * np.sqrt(s)) @ u.T


def fill_invalid(x: NDArray[np.floating], valid: NDArray[np.bool_]) -> NDArray[np.floating]:
    """Copy of ``x`` (B, H, W) with pixels where ``valid`` (H, W) is False replaced by the
    mean of their valid 3 x 3 neighbours, growing into larger holes one ring per pass
    (normalised convolution)."""
    out = np.where(valid[None], x, x.dtype.type(0))
    known = valid.astype(x.dtype)
    while not known.all():
        total = _box3(out * known[None])
        count = _box3(known[None])[0]
        grow = (count > 0) & (known == 0)
        out[:, grow] = total[:, grow] / count[grow]
        known[grow] = 1.0
    return out


def _box3(a: NDArray[np.float64]) -> NDArray[np.float64]:
    """3 x 3 box sum over the last two axes, zero outside the image."""
    p = np.pad(a, ((0, 0), (1, 1), (1, 1)))
    rows = p[:, :-2] + p[:, 1:-1] + p[:, 2:]
    return rows[:, :, :-2] + rows[:, :, 1:-1] + rows[:, :, 2:]


def estimate_stripes(x: NDArray[np.floating], model: Literal["gain", "offset"]) -> NDArray[np.float64]:
    """Per-band, per-column stripe pattern (B, W) of a cube (B, H, W) with stripes along
    the rows (each column one detector pixel): a gain (mean 1) or an offset (mean 0).

    A stripe is constant along its column, the scene is not: the median over rows of the
    step between neighbouring columns (relative step for ``gain``, i.e. a step of the log)
    measures the step between their stripes, whatever the scene does in fewer than half
    of the rows (a parcel border, texture); it is taken on the top and bottom halves of the
    frame separately and averaged. The pattern is then the Wiener (MAP) estimate
    from those noisy steps ``m``, taking the stripes as independent per column with
    variance ``S`` and the step medians' errors as independent with variance ``E``::

        s = argmin ||D s - m||^2 / E + ||s||^2 / S,   D = column difference

    solved in the cosine basis, which diagonalises ``D^T D``. Both variances come from the
    frame, robustly (median absolute deviations, so one border does not count as stripes):
    the steps' spread is ``2 S + E``, and the two halves' medians have independent errors,
    so a quarter of the spread of their difference is ``E``. The scene's slow brightness gradients also make steps; measured as
    the steps' running median over :data:`STRIPE_TREND` columns, they are kept out of the
    variances, and the pattern's cosine modes slower than that window are dropped: slow
    stripe components, which no single frame can tell from a gradient, are left alone.
    Steps more than four standard deviations from the trend (a border crossing the whole
    frame) are not stripes: they are replaced by the trend.
    """
    step = x[..., 1:] - x[..., :-1]
    if model == "gain":
        level = np.abs(x[..., 1:] + x[..., :-1]) * 0.5
        step = step / np.maximum(level, 1e-12)
    step = step.transpose(0, 2, 1)  # (B, W - 1, H): medians along the last axis are faster
    half = step.shape[-1] // 2
    top = median(step[..., :half], axis=2)
    bottom = median(step[..., half:], axis=2)
    full = (top + bottom) * 0.5  # about as precise as the median of all rows, half the cost
    trend = _running_median(full, STRIPE_TREND)
    step_var = _robust_var(full - trend)  # 2 S + E per band
    error_var = _robust_var(top - bottom) / 4.0  # E per band, full frame
    # S: a drift common to the bands is what this step removes (a column defect of some
    # bands only was imputed before, step 2), and one band's 60-odd steps measure it
    # poorly where noise dominates, so the bands' estimates are pooled.
    stripe_var = np.full_like(step_var, median(np.maximum(step_var - error_var, 0.0)) / 2.0)
    limit = 4.0 * np.sqrt(step_var)[:, None]
    steps = np.where(np.abs(full - trend) > limit, trend, full)

    width = x.shape[-1]
    basis, eig = _cosine_basis(width)
    div = np.zeros((x.shape[0], width))  # D^T m
    div[:, :-1] -= steps
    div[:, 1:] += steps
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(stripe_var > 0, error_var / stripe_var, np.inf)[:, None]
        coef = (div @ basis.T) / (eig[None, :] + ratio)
    coef[:, : -(-width // STRIPE_TREND)] = 0.0  # the mean and the slow modes are the scene's
    coef[~np.isfinite(coef)] = 0.0
    pattern = coef @ basis
    if model == "gain":
        gain = np.exp(pattern)
        return gain / gain.mean(axis=1, keepdims=True)
    return pattern


def _robust_var(a: NDArray[np.float64]) -> NDArray[np.float64]:
    """Variance per row of ``a`` (B, n) from the median absolute deviation (Gaussian)."""
    mad = median(np.abs(a - median(a, axis=1, keepdims=True)), axis=1)
    return (mad / _MAD_GAUSS) ** 2


def _running_median(a: NDArray[np.float64], window: int) -> NDArray[np.float64]:
    """Running median (B, n) over ``window`` (odd) samples of the last axis, mirrored at the
    ends; the window shrinks to fit short rows."""
    n = a.shape[1]
    r = min(window, n - (1 - n % 2)) // 2
    if r == 0:
        return a.copy()
    padded = np.pad(a, ((0, 0), (r, r)), mode="reflect")
    return median(np.lib.stride_tricks.sliding_window_view(padded, 2 * r + 1, axis=1), axis=2)


@functools.lru_cache(maxsize=8)
def _cosine_basis(n: int) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Orthonormal DCT-II basis (n, n), rows the modes, and the eigenvalues
    ``2 - 2 cos(pi k / n)`` of ``D^T D`` (D the (n-1, n) difference) that it diagonalises."""
    k = np.arange(n)[:, None]
    basis = np.cos(np.pi * k * (np.arange(n)[None, :] + 0.5) / n) * np.sqrt(2.0 / n)
    basis[0] /= np.sqrt(2.0)
    return basis, 2.0 - 2.0 * np.cos(np.pi * np.arange(n) / n)


def noise_covariance_spatial(x: NDArray[np.floating], valid: NDArray[np.bool_]) -> NDArray[np.float64]:
    """Noise covariance (B, B) of a cube (B, H, W) from its second differences across columns.

    ``d = (x[r, c-1] - 2 x[r, c] + x[r, c+1]) / sqrt(6)`` over triples of valid pixels has
    exactly the noise's covariance when the noise is white in space, however it is
    correlated across bands (a regularised reconstruction, such as ImSPOC's, correlates
    neighbouring bands strongly). It is blind to the scene's brightness gradients but not
    to what is left of column stripes, which is thus counted as noise and kept out of the
    signal subspace. The scene's edges and fine texture are outliers: starting from the half
    of the triples with the least energy, the estimate keeps those whose Mahalanobis
    distance is under the 97.5 % point of a chi-square with B degrees of freedom, and is
    scaled so that the median distance is the chi-square's median (Wilson-Hilferty
    approximation for both), so it is consistent for Gaussian noise. At most
    :data:`NOISE_SAMPLES` triples, evenly spread, are used."""
    b = x.shape[0]
    rows, cols = np.nonzero(valid[:, :-2] & valid[:, 1:-1] & valid[:, 2:])  # triple starts
    if rows.size > NOISE_SAMPLES:  # an even sample: the cost stays flat as frames grow
        step = rows.size // NOISE_SAMPLES
        rows, cols = rows[::step], cols[::step]
    def at(shift: int) -> NDArray[np.float64]:  # a sample, in double whatever x's precision
        return x[:, rows, cols + shift].astype(np.float64)

    d = (at(0) - 2.0 * at(1) + at(2)) / np.sqrt(6.0)
    d = d.astype(np.float32)  # single precision halves the B x B x N products' cost
    if d.shape[1] <= 2 * b:
        raise ValueError(
            f"only {d.shape[1]} runs of 3 valid pixels along a row for {b} bands: too few to "
            "measure the noise; use noise='regression' or skip denoising for this frame"
        )
    median_chi2 = b * (1 - 2 / (9 * b)) ** 3
    cut_chi2 = b * (1 - 2 / (9 * b) + 1.959964 * np.sqrt(2 / (9 * b))) ** 3
    # Start from the half of the triples with the least energy (band-normalised).
    scale = median(np.abs(d), axis=1).astype(np.float64) / _MAD_GAUSS + 1e-30
    energy = np.sum((d / scale[:, None]) ** 2, axis=0)
    cov = _second_moment(d[:, energy <= median(energy)])
    cov, dist = _median_consistent(cov, d, median_chi2)
    cov = _second_moment(d[:, dist <= cut_chi2])
    return _median_consistent(cov, d, median_chi2)[0]


def _second_moment(d: NDArray[np.float32]) -> NDArray[np.float64]:
    """``d d^T / N`` (B, B) in double precision of zero-mean samples ``d`` (B, N)."""
    return (d @ d.T).astype(np.float64) / max(d.shape[1], 1)


def _median_consistent(cov: NDArray[np.float64], d: NDArray[np.float32], median_chi2: float
                       ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """``cov`` scaled so the median Mahalanobis distance of the samples ``d`` (B, N) is
    ``median_chi2``, and those distances (N,)."""
    s, u = np.linalg.eigh(cov)
    inv = (u / np.where(s > 1e-12 * max(float(s.max()), 1e-300), s, np.inf)) @ u.T
    dist: NDArray[np.float64] = np.sum(d * (inv.astype(np.float32) @ d), axis=0, dtype=np.float64)
    ratio = float(median(dist)) / median_chi2
    if not ratio > 0:  # more than half the samples noise-free: nothing to rescale
        return cov, dist
    return cov * ratio, dist / ratio


def band_noise_regression(x: NDArray[np.float64]) -> NDArray[np.float64]:
    """Noise standard deviation per band (B,) of mean-removed pixels ``x`` (B, N) by
    multiple regression of each band on all the others (HySime): residual energy
    ``1 / (R^-1)_ii`` (:func:`~onboard.stages.outliers.regression_precision`) over
    ``N - B`` degrees of freedom; floored at 1e-6 of the band's own spread (0 for a
    constant band)."""
    bands, n = x.shape
    rinv = regression_precision(x)
    if rinv is None:  # every band constant: no noise at all
        return np.zeros(bands)
    var = 1.0 / np.diag(rinv) / max(n - bands, 1)
    return np.sqrt(np.maximum(var, 1e-12 * np.sum(x * x, axis=1) / n))


def subspace_rank(eigval: NDArray[np.float64], n_pixels: int, config: SubspaceDenoiseConfig) -> int:
    """Signal-subspace dimension from whitened covariance eigenvalues (descending), by
    ``config.rank_rule`` (module docstring, step 4); at least 1, at most ``max_rank``."""
    bands = len(eigval)
    if config.rank_rule == "hysime":
        threshold = 2.0
    else:
        threshold = (1.0 + np.sqrt(bands / n_pixels)) ** 2 * (1.0 + config.rank_margin)
    return int(np.clip(np.count_nonzero(eigval > threshold), 1, min(config.max_rank, bands)))


def denoise_eigenimages(z: NDArray[np.floating], levels: int, threshold_scale: float = 1.0
                        ) -> NDArray[np.floating]:
    """Spatially denoised eigen-images (k, H, W): undecimated Haar transform with ``levels``
    levels, each detail coefficient scaled by its local empirical Wiener gain
    (:func:`_local_wiener`); ``threshold_scale`` multiplies the noise level assumed (0 keeps
    every coefficient).

    The noise level: the whitening made it 1 in every eigen-image, if the band noise was
    measured right. The fine-scale (finest diagonal detail) deviation of an image also
    counts its texture, so it is trusted downwards only (noise overstated); upwards, only
    what the weakest eigen-image shows (least signal, so least texture) raises the level
    of all, for a cube whose noise was understated.

    The images are mirrored by ``2**levels`` pixels on each side so the transform's
    circular shifts do not wrap one border onto the other."""
    k, h, w = z.shape
    pad = min(2**levels, h - 1, w - 1)
    a = np.pad(z, ((0, 0), (pad, pad), (pad, pad)), mode="reflect") if pad > 0 else z.copy()
    sigma = None
    coarse = []
    for j in range(levels):
        s = 2**j
        lo_r, hi_r = _haar_split(a, s, axis=1)
        ll, lh = _haar_split(lo_r, s, axis=2)
        hl, hh = _haar_split(hi_r, s, axis=2)
        if sigma is None:
            # Finest diagonal detail of white noise sigma has std sigma / 2 (see below).
            measured = 2.0 * median(np.abs(hh.reshape(k, -1)), axis=1) / _MAD_GAUSS
            sigma = threshold_scale * np.minimum(measured, max(1.0, float(measured.min())))
        # With 1/2 filters each level-j detail sums 4**(j+1) noise samples with weights
        # of size 4**-(j+1): white noise sigma gives std sigma / 2**(j + 1).
        noise = sigma / 2.0 ** (j + 1)
        # the three sub-bands in one call: every step is per image, so this only saves calls
        coarse.append(_local_wiener(np.concatenate((lh, hl, hh)), np.tile(noise, 3)))
        a = ll
    for j in reversed(range(levels)):
        s = 2**j
        lh, hl, hh = np.split(coarse[j], 3)
        a = _haar_merge(_haar_merge(a, lh, s, axis=2), _haar_merge(hl, hh, s, axis=2), s, axis=1)
    return a[:, pad : pad + h, pad : pad + w] if pad > 0 else a


def _haar_split(a: NDArray, s: int, axis: int) -> tuple[NDArray, NDArray]:
    shifted = np.roll(a, -s, axis=axis)
    return (a + shifted) * 0.5, (a - shifted) * 0.5


def _haar_merge(lo: NDArray, hi: NDArray, s: int, axis: int) -> NDArray:
    """Inverse of :func:`_haar_split`: the average of the two copies of each sample."""
    return ((lo + hi) + np.roll(lo - hi, s, axis=axis)) * 0.5


def _local_wiener(d: NDArray, noise: NDArray) -> NDArray:
    """Detail images d (k, H, W) times an empirical Wiener gain ``e / (e + n^2)``, ``n`` (k,)
    the detail noise std and ``e`` the signal energy around each coefficient: that of a
    pilot estimate (BayesShrink's soft threshold per sub-band, Chang, Yu and Vetterli 2000)
    averaged over a :data:`WIENER_RADIUS` window (Ghael, Sayeed and Baraniuk 1997). A
    textured neighbourhood keeps its detail and a flat one loses its noise, where the one
    threshold per sub-band of the pilot must trade the two. Measured against the pilot
    alone: +0.8-1.4 dB on synthetic and push-broom cubes, +0.1-0.5 dB on the real cubes,
    -0.07 dB on ImSPOC reconstructions."""
    k = d.shape[0]
    flat = d.reshape(k, -1)
    power = np.einsum("ij,ij->i", flat, flat) / flat.shape[1]
    pilot = np.abs(d)
    largest = pilot.reshape(k, -1).max(axis=1)
    signal = np.sqrt(np.maximum(power - noise**2, 0.0))
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(signal > 0, noise**2 / signal, largest).astype(d.dtype)[:, None, None]
    pilot -= t  # the pilot's square, in place: |d| - t, floored at 0, squared
    np.maximum(pilot, 0, out=pilot)
    pilot *= pilot
    energy = box_sum(pilot, WIENER_RADIUS)  # the window's mean times its area
    n2 = (noise**2 * (2 * WIENER_RADIUS + 1) ** 2)[:, None, None]
    gain = np.divide(energy, energy + n2, out=np.zeros_like(energy), where=energy > 0)
    return d * gain.astype(d.dtype)
