"""The ImSPOC snapshot spectrometer: how a scene becomes one detector frame.

A grid of Fabry-Perot interferometers of stepped thickness sits in front of one detector;
each images the whole scene as a thumbnail, so pixel (i, j) of every thumbnail sees the same
ground point through a different optical path difference: together they sample that point's
interferogram.

Forward model, per thumbnail pixel (i, j) of interferometer k::

    DN_k(i, j) = detector( exposure * photo_rate * sum_b L_b(i, j) T_kb(opd_k + wedge_k(i, j)) )

with ``L_b`` the scene radiance averaged over the scene's band b (the scene is given as band
averages; :func:`onboard.physics.fabry_perot.band_averaged_response` integrates the response
over each band exactly, so large OPDs do not alias). The thickness wedge shifts the OPD
linearly across a thumbnail; it is applied as a second-order Taylor expansion in the shift
(three matrix products instead of one per pixel). For a wedge of 20 nm across a thumbnail the
neglected third-order term is below 1e-3 of the modulation at 450 nm.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
from numpy.typing import NDArray

from onboard.formats.types import RawFrame
from onboard.physics import fabry_perot
from onboard.physics.detector import Detector, DetectorSpec
from onboard.physics.illumination import LAB_PANEL_PEAK_RADIANCE, lab_panel_radiance
from onboard.physics.interferometers import InterferometerBank

_FD_STEP_UM = 0.002  # finite-difference step for the wedge's Taylor terms


@dataclass(frozen=True)
class ThumbnailLayout:
    """Where each interferometer's thumbnail lies on the detector.

    corners: (N, 2) int, top-left (row, col) of thumbnail k on the detector.
    thumb_shape: (h, w) pixels, the same for every thumbnail.
    detector_shape: (rows, cols) of the whole detector.
    """

    corners: tuple[tuple[int, int], ...]
    thumb_shape: tuple[int, int]
    detector_shape: tuple[int, int]

    def __post_init__(self) -> None:
        c = np.asarray(self.corners)
        h, w = self.thumb_shape
        if c.ndim != 2 or c.shape[1] != 2:
            raise ValueError(f"corners must be (N, 2), got {c.shape}")
        if c.min() < 0 or (c[:, 0] + h).max() > self.detector_shape[0] or (
            c[:, 1] + w
        ).max() > self.detector_shape[1]:
            raise ValueError(f"a {h}x{w} thumbnail falls outside the {self.detector_shape} detector")

    @classmethod
    def grid(
        cls,
        n_rows: int,
        n_cols: int,
        thumb_shape: tuple[int, int],
        gap: int = 2,
        margin: int = 4,
        order: str = "row",
    ) -> ThumbnailLayout:
        """Thumbnails on a regular grid; interferometer index runs along rows ('row') or down
        columns ('column', as ImSPOC-UV-2's "vertical" arrangement)."""
        h, w = thumb_shape
        rows, cols = np.meshgrid(np.arange(n_rows), np.arange(n_cols), indexing="ij")
        if order == "column":
            rows, cols = rows.T, cols.T
        elif order != "row":
            raise ValueError(f"order must be 'row' or 'column', got {order!r}")
        r0 = margin + rows.ravel() * (h + gap)
        c0 = margin + cols.ravel() * (w + gap)
        shape = (2 * margin + n_rows * h + (n_rows - 1) * gap, 2 * margin + n_cols * w + (n_cols - 1) * gap)
        return cls(tuple(zip(r0.tolist(), c0.tolist(), strict=False)), (h, w), shape)

    def __len__(self) -> int:
        return len(self.corners)

    @cached_property
    def _index(self) -> tuple[NDArray[np.intp], NDArray[np.intp]]:
        c = np.asarray(self.corners)
        h, w = self.thumb_shape
        rows = c[:, 0, None, None] + np.arange(h)[None, :, None]
        cols = c[:, 1, None, None] + np.arange(w)[None, None, :]
        return rows, cols

    def extract(self, image: NDArray) -> NDArray:
        """Thumbnails of a detector image: (rows, cols) -> (N, h, w)."""
        if image.shape != self.detector_shape:
            raise ValueError(f"frame is {image.shape}; this instrument's detector is {self.detector_shape}")
        return image.ravel()[self._flat_index]  # a 1-D gather: 2-D fancy indexing costs 3x

    @cached_property
    def _flat_index(self) -> NDArray[np.intp]:
        rows, cols = self._index
        return rows * self.detector_shape[1] + cols

    def place(self, thumbnails: NDArray, fill: float = 0.0) -> NDArray:
        """Inverse of :meth:`extract`: (N, h, w) -> (rows, cols), ``fill`` between thumbnails."""
        image = np.full(self.detector_shape, fill, dtype=thumbnails.dtype)
        rows, cols = self._index
        image[rows, cols] = thumbnails
        return image

    def centre_offsets(self) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """Pixel offsets (drow (h, 1), dcol (1, w)) from a thumbnail's centre."""
        h, w = self.thumb_shape
        return ((np.arange(h, dtype=np.float64) - (h - 1) / 2.0)[:, None],
                (np.arange(w, dtype=np.float64) - (w - 1) / 2.0)[None, :])


@dataclass
class ImspocInstrument:
    """An ImSPOC instrument: layout, interferometers, detector, optics, exposure.

    ``band_nm``: the optical band-pass (nm); the instrument sees nothing outside it.
    ``photo_rate_e_s``: photo-electrons per second in a pixel for a unit-reflectance scene
    under the peak of :func:`solar_illumination`, through a unit-gain response, per nm of
    band. It sets the signal level, hence the shot-noise SNR.
    """

    name: str
    layout: ThumbnailLayout
    bank: InterferometerBank
    detector_spec: DetectorSpec
    band_nm: tuple[float, float]
    photo_rate_e_s: float
    exposure_s: float
    detector: Detector = field(init=False)
    _operator_cache: tuple = field(init=False, default=(None, None), repr=False)

    def __post_init__(self) -> None:
        if len(self.bank) != len(self.layout):
            raise ValueError(f"{len(self.bank)} interferometers but {len(self.layout)} thumbnails")
        if tuple(self.detector_spec.shape) != tuple(self.layout.detector_shape):
            raise ValueError("detector shape does not match the thumbnail layout")
        self.detector = Detector(self.detector_spec)

    @property
    def thumb_shape(self) -> tuple[int, int]:
        return self.layout.thumb_shape

    def scene_grid(self, step_nm: float = 5.0) -> NDArray[np.float64]:
        """Band centres (nm) on which to give the scene to :meth:`frame` (band-pass, step)."""
        lo, hi = self.band_nm
        return np.arange(lo + step_nm / 2, hi, step_nm)

    def _band_operators(self, wavelengths_nm: NDArray) -> tuple[NDArray, NDArray, NDArray]:
        """Radiance-to-signal operators (N, B): value, first and second OPD derivative.

        Cached for the last wavelength grid: a frame loop simulates on one grid."""
        lam = np.asarray(wavelengths_nm, dtype=float)
        key = lam.tobytes()
        if self._operator_cache[0] == key:
            return self._operator_cache[1]
        h = _FD_STEP_UM
        t0, tp, tm = (transfer_matrix(self.bank, lam, self.band_nm, s) for s in (0.0, h, -h))
        ops = (t0, (tp - tm) / (2 * h), (tp - 2 * t0 + tm) / (h * h))
        self._operator_cache = (key, ops)
        return ops

    def signal_e_s(self, radiance: NDArray, wavelengths_nm: NDArray) -> NDArray[np.float64]:
        """Photo-electron rate of every thumbnail pixel: (N, h, w), from a scene radiance cube
        (B, h, w) in units of the peak solar illumination, given as band averages on
        ``wavelengths_nm`` (B,)."""
        b, h, w = radiance.shape
        if (h, w) != self.thumb_shape:
            raise ValueError(f"scene is {h}x{w}; each thumbnail is {self.thumb_shape}")
        t0, t1, t2 = self._band_operators(wavelengths_nm)
        flat = radiance.reshape(b, h * w).astype(np.float64)
        s0, s1, s2 = (t @ flat for t in (t0, t1, t2))
        drow, dcol = self.layout.centre_offsets()
        shift = self.bank.opd_shift(drow, dcol).reshape(len(self.bank), h * w)
        sig = s0 + shift * s1 + 0.5 * shift * shift * s2
        return (self.photo_rate_e_s * sig).reshape(len(self.bank), h, w)

    def frame(
        self,
        reflectance: NDArray,
        wavelengths_nm: NDArray,
        rng: np.random.Generator,
        counter: int = 0,
        timestamp: float = 0.0,
        illumination_scale: float = 1.0,
    ) -> RawFrame:
        """Simulate one raw frame of a scene given as reflectance (B, h, w) on
        ``wavelengths_nm``, lit by :func:`solar_illumination` times ``illumination_scale``."""
        radiance = reflectance * (illumination_scale * lab_panel_radiance(wavelengths_nm))[:, None, None]
        return self.frame_radiance(radiance, wavelengths_nm, rng, counter, timestamp)

    def frame_radiance(self, radiance_w: NDArray, wavelengths_nm: NDArray, rng: np.random.Generator,
                       counter: int = 0, timestamp: float = 0.0,
                       pose: tuple[float, ...] | None = None) -> RawFrame:
        """Simulate one raw frame of a scene given as at-sensor radiance (B, h, w) in
        W m-2 sr-1 nm-1 on ``wavelengths_nm`` (a sky's, onboard/scene/sky.py)."""
        relative = np.asarray(radiance_w) / LAB_PANEL_PEAK_RADIANCE
        rate = self.layout.place(self.signal_e_s(relative, wavelengths_nm))
        pixels = self.detector.expose(rate, self.exposure_s, rng)
        return RawFrame(pixels=pixels, counter=counter, timestamp=timestamp,
                        exposure_s=self.exposure_s, sensor="imspoc", pose=pose)


def band_edges_nm(wavelengths_nm: NDArray) -> NDArray[np.float64]:
    """Edges (B + 1,) of contiguous bands centred on ``wavelengths_nm`` (B,), midway between
    centres and mirrored at the ends."""
    lam = np.asarray(wavelengths_nm, dtype=float)
    if lam.ndim != 1 or lam.size < 2 or np.any(np.diff(lam) <= 0):
        raise ValueError("a wavelength grid must be 1-D, ascending, with at least two bands")
    mid = (lam[1:] + lam[:-1]) / 2
    return np.concatenate([[2 * lam[0] - mid[0]], mid, [2 * lam[-1] - mid[-1]]])


def band_mean(wavelengths_nm: NDArray, values: NDArray, grid_nm: NDArray) -> NDArray[np.float64]:
    """``values`` (on ``wavelengths_nm``) averaged over each band of ``grid_nm``, linear between samples."""
    edges = band_edges_nm(np.asarray(grid_nm, float))
    fine = np.linspace(edges[0], edges[-1], 20 * len(grid_nm) + 1)
    idx = np.clip(np.searchsorted(edges, fine, side="right") - 1, 0, len(grid_nm) - 1)
    v = np.interp(fine, wavelengths_nm, values)
    return np.bincount(idx, v, len(grid_nm)) / np.bincount(idx, None, len(grid_nm))


def transfer_matrix(
    bank: InterferometerBank,
    wavelengths_nm: NDArray,
    band_nm: tuple[float, float] = (0.0, np.inf),
    opd_shift_um: float | NDArray = 0.0,
) -> NDArray[np.float64]:
    """The linear map from band-averaged radiance to interferometer signal: (N, B).

    Entry (k, b) is interferometer k's response averaged over band b (integrated exactly in
    wavenumber) times the band's width in nm, zero outside the optical band-pass ``band_nm``.
    ``opd_shift_um`` (scalar or (N,)) adds to every OPD, e.g. the wedge at a pixel. The
    simulator (forward) and the reconstruction (inverse) both use this one operator.
    """
    lam = np.asarray(wavelengths_nm, dtype=float)
    edges = band_edges_nm(lam)
    sigma = 1000.0 / lam
    sigma_width = 1000.0 / edges[:-1] - 1000.0 / edges[1:]
    inside = (lam >= band_nm[0]) & (lam <= band_nm[1])
    shift = np.broadcast_to(np.asarray(opd_shift_um, dtype=float), (len(bank),))
    t = fabry_perot.band_averaged_response(
        sigma[None, :], sigma_width[None, :], (bank.opd_um + shift)[:, None],
        bank.reflectivity(sigma), gain=bank.gain(sigma), phase=bank.phase_rad[:, None],
        offset=bank.offset[:, None], harmonics=bank.harmonics,
    )
    return t * (np.diff(edges) * inside)[None, :]


def simulated_bank(
    n: int,
    opd_step_um: float,
    sigma_domain: tuple[float, float],
    reflectivity: tuple[float, float] = (0.15, 0.35),
    wedge_um: float = 0.01,
    thumb_width: int = 64,
    seed: int = 0,
) -> InterferometerBank:
    """A plausible manufactured bank: OPD = index x step with 1 % thickness errors, small phase
    errors, gain and reflectivity drifting smoothly with wavenumber, and a wedge of
    ``wedge_um`` OPD across each thumbnail along its columns."""
    rng = np.random.default_rng(seed)
    opd = np.arange(n) * opd_step_um
    opd = opd + rng.normal(0.0, 0.01 * opd_step_um + 0.002, n)
    r_mean = rng.uniform(*reflectivity, n)
    gain = np.stack([rng.uniform(0.9, 1.1, n), rng.normal(0, 0.05, n), rng.normal(0, 0.02, n)], axis=1)
    refl = np.stack([r_mean, rng.normal(0, 0.03, n), rng.normal(0, 0.01, n)], axis=1)
    grad = np.zeros((n, 2))
    grad[:, 1] = wedge_um / max(thumb_width - 1, 1) * rng.uniform(0.5, 1.5, n)
    return InterferometerBank(
        opd_um=opd, phase_rad=rng.normal(0, 0.05, n), gain_cheb=gain, reflectivity_cheb=refl,
        offset=np.zeros(n), sigma_domain=sigma_domain, harmonics=None, opd_gradient_um_per_px=grad,
    )


def default_instrument(seed: int = 0) -> ImspocInstrument:
    """The small default ImSPOC that keeps ``onboard run`` fast on a 2-core machine.

    8 x 12 = 96 interferometers with ImSPOC-UV-2's OPD step (0.175 µm, so 0-16.6 µm: its
    first 96 thicknesses), 64 x 64-pixel thumbnails, 450-1000 nm. The OPD step samples the
    interferogram above Nyquist up to 2.86 /µm (350 nm); the largest OPD resolves about
    0.06 /µm, i.e. 12 nm at 450 nm and 60 nm at 1000 nm — about 24 independent bands, which
    is what the output grid reconstructs. 12-bit detector, ~10 000 e- at bright pixels, so
    shot-noise SNR ~100 per sample, as on a real silicon sensor at a drone's exposure.
    """
    layout = ThumbnailLayout.grid(8, 12, (64, 64), gap=2, margin=4)
    band = (450.0, 1000.0)
    bank = simulated_bank(len(layout), 0.175, (1000.0 / band[1], 1000.0 / band[0]), seed=seed)
    spec = DetectorSpec(shape=layout.detector_shape, bit_depth=12, full_well_e=20000.0,
                        electrons_per_dn=5.0, read_noise_e=8.0, seed=seed + 1)
    return ImspocInstrument("imspoc-default", layout, bank, spec, band, photo_rate_e_s=2.0e3,
                            exposure_s=0.01)


def imspoc_uv2(seed: int = 0) -> ImspocInstrument:
    """The real ImSPOC-UV-2 layout (../shared/data/imspoc/imspoc_uv_2/device.json): 11 x 29
    interferometers of 96 x 96 pixels on a 1096 x 2808 detector, thickness step 87.5 nm from
    0 (OPD step 0.175 µm), 350-1000 nm, index running down the columns ("vertical")."""
    thumb = (96, 96)
    layout = ThumbnailLayout.grid(11, 29, thumb, gap=0, margin=0, order="column")
    layout = ThumbnailLayout(layout.corners, thumb, (1096, 2808))
    band = (350.0, 1000.0)
    bank = simulated_bank(len(layout), 0.175, (1.0, 1000.0 / band[0]), thumb_width=96, seed=seed)
    spec = DetectorSpec(shape=(1096, 2808), bit_depth=12, seed=seed + 1)
    return ImspocInstrument("imspoc-uv-2", layout, bank, spec, band, photo_rate_e_s=2.0e3,
                            exposure_s=0.01)
