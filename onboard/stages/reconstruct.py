"""ImSPOC spectral reconstruction: thumbnails (interferograms) to a reflectance cube.

Every scene pixel's interferogram ``y`` (N interferometers) is modelled as
``y = A diag(w) rho``: ``A`` (N, B) the transfer matrix of the calibrated bank on the output
grid (:func:`onboard.physics.imspoc.transfer_matrix`), ``w`` the white reference times the
exposure, ``rho`` the reflectance. The estimate is Tikhonov-regularised with a smoothness
prior on the reflectance::

    rho = argmin ||A' rho - y||^2 + lam ||D rho||^2,   A' = A diag(w),  D = 2nd difference

i.e. ``rho = W(lam) y`` with ``W = (A'^T A' + lam D^T D)^-1 A'^T``: one matrix product per
frame. The cube carries the resolution matrix ``W A'`` as its spectral ``response``: what the
regularisation does to any spectrum, so later stages can compare like with like. The weight ``lam`` is chosen by generalised cross-validation (GCV) on a sample of the
frame's own pixels, a rule that needs neither the answer nor the noise level. The OPD wedge
across a thumbnail is handled by one operator per block of pixels, each built at its block's
centre.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise

import numpy as np
from numpy.typing import NDArray

from onboard.formats.calfile import Calibration
from onboard.formats.types import Cube, RawFrame
from onboard.physics.imspoc import transfer_matrix

#: Candidate regularisation weights, relative to trace(A'^T A') / trace(D^T D).
LAMBDA_GRID = np.logspace(-7, 1, 33)

#: Relative change of the GCV score at the kept weight beyond which the grid is scored again.
GCV_DRIFT = 0.1

#: Regularisation weights whose block operators stay built (about 150 kB each for 96
#: interferometers, 24 bands and 16 blocks).
KEPT_OPERATORS = 4


def second_difference(n: int) -> NDArray[np.float64]:
    """(n - 2, n) second-difference matrix: the roughness of a spectrum."""
    d = np.zeros((n - 2, n))
    for i in range(n - 2):
        d[i, i : i + 3] = (1.0, -2.0, 1.0)
    return d


def output_grid(band_nm: tuple[float, float], n_bands: int) -> NDArray[np.float64]:
    """Band centres (nm, ascending) uniform in wavenumber across ``band_nm``: the natural
    grid of an interferometer, whose resolution is constant in wavenumber."""
    s = np.linspace(1000.0 / band_nm[1], 1000.0 / band_nm[0], n_bands + 1)
    centres = (s[1:] + s[:-1]) / 2
    return np.sort(1000.0 / centres)


def gcv_curve(a: NDArray, d: NDArray, y: NDArray, lambdas: NDArray) -> NDArray[np.float64]:
    """GCV score for each weight: mean over pixels of ||(I - H) y||^2 / (N - tr H)^2.

    a: (N, B) forward operator, d: (M, B) prior, y: (N, P) interferograms of P pixels.
    ``m = a^T a`` and ``r = d^T d`` are diagonalised together (:class:`GcvBasis`), and every
    weight's score comes from the same B numbers ``e = mean_p (V^T a^T y)^2``
    (:meth:`GcvBasis.scores`). The whole curve costs one (B, N) x (N, P) product, where a loop
    over the weights cost a B x B inverse and three (B, B) x (B, P) products each (about 8 ms
    a frame for 33 weights, issue 17). Raises ValueError when no weight makes the problem
    well posed (``m + r`` singular).
    """
    return GcvBasis.of(a, d).scores(y, lambdas)


@dataclass(frozen=True)
class GcvBasis:
    """What the GCV scores of an operator ``a`` (N, B) and a prior ``d`` (M, B) share whatever
    the pixels: ``m = a^T a`` and ``r = d^T d`` diagonalised together, ``V^T (m + r) V = I``,
    ``V^T r V = diag(nu)``, so ``V^T m V = I - diag(nu)`` and ``(m + lambda r)^-1 = V diag(g) V^T``
    with ``g = 1 / (1 - nu + lambda nu)``. Built once per operator (two B x B
    eigen-decompositions: most of a curve's cost on a frame's 1024 pixels)."""

    a: NDArray[np.float64]
    vt: NDArray[np.float64]  # V^T (B, B)
    nu: NDArray[np.float64]  # (B,) in [0, 1]

    @classmethod
    def of(cls, a: NDArray, d: NDArray) -> GcvBasis:
        m = a.T @ a
        r = d.T @ d
        q, qv = np.linalg.eigh(m + r)
        if not q.min() > 1e-12 * q.max():
            raise ValueError("the operator and the prior leave some spectrum undetermined "
                             "(a^T a + d^T d is singular): cannot score the regularisation")
        root = (qv / np.sqrt(q)) @ qv.T  # (m + r)^-1/2
        nu, u = np.linalg.eigh(root @ r @ root)
        return cls(a, (root @ u).T, np.clip(nu, 0.0, 1.0))

    def scores(self, y: NDArray, lambdas: NDArray) -> NDArray[np.float64]:
        """The GCV score of each weight on interferograms ``y`` (N, P): ``||H y||^2 = sum e g^2
        (1 - nu)``, ``y^T H y = sum e g``, ``tr H = sum g (1 - nu)``, ``e = mean_p (V^T a^T y)^2``."""
        w = self.vt @ (self.a.T @ y)  # V^T a^T y, (B, P)
        e = np.mean(w * w, axis=1)
        yy = float(np.mean(np.einsum("np,np->p", y, y)))
        lam = np.asarray(lambdas, dtype=np.float64)[:, None]
        g = 1.0 / (1.0 - self.nu + lam * self.nu)  # (L, B)
        kept = 1.0 - self.nu
        resid = yy - 2.0 * (g @ e) + (g * g * kept) @ e
        dof = self.a.shape[0] - (g * kept).sum(axis=1)
        scores: NDArray[np.float64] = resid / dof**2
        return scores


@dataclass
class Reconstructor:
    """Reconstruction operators of one calibration, built once at start-up.

    operators: (nby, nbx, N, B) transfer matrices ``A'`` at block centres; the inverse for a
    chosen ``lam`` is cached, so a frame costs one (B, N) x (N, pixels) product per block.
    """

    calibration: Calibration
    block: int = 16
    #: Frames in a row that may keep the previous weight before the whole grid is scored again.
    reuse_frames: int = 10

    def __post_init__(self) -> None:
        cal = self.calibration
        if cal.kind != "imspoc" or cal.bank is None or cal.layout is None:
            raise ValueError("reconstruction needs an imspoc calibration (bank and layout)")
        self.wavelengths_nm = cal.wavelengths_nm
        h, w = cal.layout.thumb_shape
        self.row_edges = np.arange(0, h + self.block, self.block).clip(max=h)
        self.col_edges = np.arange(0, w + self.block, self.block).clip(max=w)
        self.row_edges = np.unique(self.row_edges)
        self.col_edges = np.unique(self.col_edges)
        cy, cx = (h - 1) / 2.0, (w - 1) / 2.0
        self._a = []
        for r0, r1 in pairwise(self.row_edges):
            row = []
            for c0, c1 in pairwise(self.col_edges):
                shift = cal.bank.opd_shift((r0 + r1 - 1) / 2 - cy, (c0 + c1 - 1) / 2 - cx)
                row.append(transfer_matrix(cal.bank, cal.wavelengths_nm, opd_shift_um=shift.ravel()))
            self._a.append(row)
        self.d = second_difference(len(self.wavelengths_nm))
        self._response: NDArray | None = None
        #: (weight, exposure) -> (block operators, response), the most recent last
        self._built: dict[tuple[float, float], tuple[list[list[NDArray]], NDArray]] = {}
        self._gcv_at: tuple[float, GcvBasis, NDArray] | None = None  # exposure, basis, weights
        self._choice: int | None = None  # grid index of the last GCV choice
        self._kept = 0  # frames since the whole grid was last scored
        self._score = 0.0  # GCV score of the choice when the whole grid made it
        self.last_choice = ""

    def _scaled(self, a: NDArray, exposure_s: float) -> NDArray:
        return a * (self.calibration.white_reference * exposure_s)[None, :]

    def lambda_scale(self, exposure_s: float) -> float:
        a = self._scaled(self._centre_a(), exposure_s)
        return float(np.trace(a.T @ a) / np.trace(self.d.T @ self.d))

    def _centre_a(self) -> NDArray:
        return self._a[len(self._a) // 2][len(self._a[0]) // 2]

    def choose_lambda(self, thumbs: NDArray, valid: NDArray, exposure_s: float,
                      sample: int = 1024, seed: int = 0) -> float:
        """GCV weight from up to ``sample`` valid pixels of the central block's operator.

        The previous frame's grid point is kept while (a) its GCV score is no higher than at
        the grid points either side of it and (b) that score is within ``GCV_DRIFT`` of its
        value when the whole grid last chose it, for at most ``reuse_frames`` frames in a row;
        otherwise, and on the first frame, the whole grid is scored. (a) alone misses a scene
        change when the curve has two minima (a choice at the grid's end stays a local minimum
        while the global one moves 11 points, tests/test_reconstruct.py); (b) sees it, since the
        score is the residual power per degree of freedom: new noise on the same scene moves it
        by ~1 %, that scene change by 4x. 3 points cost 0.54 ms where the grid costs 3.9 (the
        choice was the same in 29 of 30 frames, issue 17). ``last_choice`` says which rule
        decided ("kept" or "grid").

        thumbs: (N, h, w) corrected DN; valid: (h, w) bool."""
        idx = np.flatnonzero(valid.ravel())
        if idx.size == 0:
            raise ValueError("no valid pixel to choose the regularisation weight from")
        rng = np.random.default_rng(seed)
        idx = rng.choice(idx, size=min(sample, idx.size), replace=False)
        y = thumbs.reshape(thumbs.shape[0], -1)[:, idx].astype(np.float64)
        basis, lambdas = self._gcv(exposure_s)
        prev = self._choice
        if prev is not None and self._kept < self.reuse_frames:
            lo, hi = max(prev - 1, 0), min(prev + 2, len(lambdas))
            near = basis.scores(y, lambdas[lo:hi])
            score = near[prev - lo]
            if score <= near.min() and abs(score - self._score) <= GCV_DRIFT * self._score:
                self._kept += 1
                self.last_choice = "kept"
                return float(lambdas[prev])
        scores = basis.scores(y, lambdas)
        self._choice = int(np.argmin(scores))
        self._score = float(scores[self._choice])
        self._kept = 0
        self.last_choice = "grid"
        return float(lambdas[self._choice])

    def _gcv(self, exposure_s: float) -> tuple[GcvBasis, NDArray]:
        """The GCV basis of the central block's operator and the weights' grid at
        ``exposure_s``, built again only when the exposure changes."""
        if self._gcv_at is None or self._gcv_at[0] != exposure_s:
            a = self._scaled(self._centre_a(), exposure_s)
            self._gcv_at = (exposure_s, GcvBasis.of(a, self.d), LAMBDA_GRID * self.lambda_scale(exposure_s))
        return self._gcv_at[1], self._gcv_at[2]

    def _operators(self, lam: float, exposure_s: float) -> list[list[NDArray]]:
        """The blocks' operators ``W(lam)`` (float32) at ``exposure_s``, and the response in
        ``self._response``. The last :data:`KEPT_OPERATORS` are kept: the choice moves between
        neighbouring grid points and back (issue 17: 4 rebuilds in 11 frames, 1 ms each)."""
        key = (lam, exposure_s)
        if key not in self._built:
            r = lam * (self.d.T @ self.d)
            ops = []
            for row in self._a:
                out = []
                for a in row:
                    a2 = self._scaled(a, exposure_s)
                    out.append(np.linalg.solve(a2.T @ a2 + r, a2.T).astype(np.float32))
                ops.append(out)
            centre = self._scaled(self._centre_a(), exposure_s)
            self._built[key] = (ops, np.linalg.solve(centre.T @ centre + r, centre.T @ centre))
            while len(self._built) > KEPT_OPERATORS:
                del self._built[next(iter(self._built))]
        else:
            self._built[key] = self._built.pop(key)  # the most recently used last
        ops, self._response = self._built[key]
        return ops

    def reconstruct(self, frame: RawFrame, lam: float | None = None) -> tuple[Cube, float]:
        """Reflectance cube (B, h, w) of a radiometrically corrected frame, and the weight used.

        A scene pixel is valid only if its sample is valid in every thumbnail."""
        if frame.valid is None or frame.pixels.dtype != np.float32:
            raise ValueError("reconstruct takes a radiometrically corrected frame")
        layout = self.calibration.layout
        assert layout is not None
        thumbs = layout.extract(frame.pixels)
        valid = np.asarray(layout.extract(frame.valid).all(axis=0))  # (h, w), never a scalar
        if lam is None:
            lam = self.choose_lambda(thumbs, valid, frame.exposure_s) if valid.any() else 1.0
        ops = self._operators(lam, frame.exposure_s)
        n, h, w = thumbs.shape
        out = np.empty((len(self.wavelengths_nm), h, w), dtype=np.float32)
        for i, (r0, r1) in enumerate(pairwise(self.row_edges)):
            for j, (c0, c1) in enumerate(pairwise(self.col_edges)):
                y = thumbs[:, r0:r1, c0:c1].reshape(n, -1)
                out[:, r0:r1, c0:c1] = (ops[i][j] @ y).reshape(-1, r1 - r0, c1 - c0)
        cube = Cube(out, self.wavelengths_nm, valid, counter=frame.counter, timestamp=frame.timestamp,
                    response=self._response)
        return cube, lam


def white_reference(a: NDArray, panel: NDArray, exposure_s: float) -> NDArray[np.float64]:
    """The white reference (B,) from a unit-reflectance panel's interferogram ``panel`` (N,)
    (corrected DN, averaged over panel pixels and frames) at ``exposure_s``: the smooth
    spectrum ``w`` whose prediction ``A w exposure`` fits the panel, weight chosen by GCV."""
    d = second_difference(a.shape[1])
    at = a * exposure_s
    y = panel.reshape(-1, 1).astype(np.float64)
    lambdas = LAMBDA_GRID * float(np.trace(at.T @ at) / np.trace(d.T @ d))
    lam = lambdas[int(np.argmin(gcv_curve(at, d, y, lambdas)))]
    return np.linalg.solve(at.T @ at + lam * d.T @ d, at.T @ y).ravel()
