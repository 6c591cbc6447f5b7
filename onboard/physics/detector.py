"""A detector: photo-electrons to digital numbers, with its fixed pattern and its noise.

One definition serves both instruments (the ImSPOC's silicon area sensor and the push-broom's
InGaAs array). The fixed pattern (response non-uniformity, dark signal, dead and hot pixels)
is drawn once from the detector's seed, as a real sensor's is fixed at manufacture; it is
what the radiometric calibration (dark, flat, bad pixels) estimates. Temporal noise (shot,
dark shot, read) is drawn per exposure.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray


@dataclass(frozen=True)
class DetectorSpec:
    """Detector parameters. Electron counts in e-, rates in e-/s.

    ``electrons_per_dn``: conversion gain. ``bias_dn``: the offset added before digitising so
    read noise below zero is not clipped. ``prnu``: relative pixel response non-uniformity
    (1-sigma). ``dead_fraction`` / ``hot_fraction``: pixels stuck at 0 / near saturation.
    """

    shape: tuple[int, int]
    bit_depth: int = 12
    full_well_e: float = 20000.0
    electrons_per_dn: float = 5.0
    read_noise_e: float = 8.0
    dark_current_e_s: float = 50.0
    bias_dn: float = 100.0
    prnu: float = 0.01
    dead_fraction: float = 0.0005
    hot_fraction: float = 0.0005
    seed: int = 7

    @property
    def max_dn(self) -> int:
        return (1 << self.bit_depth) - 1


@dataclass
class Detector:
    """A detector with its fixed pattern, drawn from ``spec.seed``.

    gain_map: (rows, cols) relative response (mean 1). dark_map: (rows, cols) dark current
    e-/s. dead / hot: (rows, cols) bool.
    """

    spec: DetectorSpec
    gain_map: NDArray[np.float64] = field(init=False)
    dark_map: NDArray[np.float64] = field(init=False)
    dead: NDArray[np.bool_] = field(init=False)
    hot: NDArray[np.bool_] = field(init=False)

    def __post_init__(self) -> None:
        rng = np.random.default_rng(self.spec.seed)
        shape = self.spec.shape
        self.gain_map = 1.0 + self.spec.prnu * rng.standard_normal(shape)
        # dark current: log-normal spread around the nominal rate, as measured sensors show
        self.dark_map = self.spec.dark_current_e_s * rng.lognormal(0.0, 0.3, shape)
        u = rng.random(shape)
        self.dead = u < self.spec.dead_fraction
        self.hot = (u >= self.spec.dead_fraction) & (u < self.spec.dead_fraction + self.spec.hot_fraction)

    def expose(
        self, photo_rate_e_s: NDArray[np.floating], exposure_s: float, rng: np.random.Generator
    ) -> NDArray[np.uint16]:
        """Digitise one exposure. ``photo_rate_e_s``: (rows, cols) photo-electrons per second
        reaching each pixel. Returns (rows, cols) uint16 DN, clipped at ``max_dn``."""
        if photo_rate_e_s.shape != self.spec.shape:
            raise ValueError(f"illumination {photo_rate_e_s.shape} != detector {self.spec.shape}")
        signal = photo_rate_e_s * self.gain_map * exposure_s + self.dark_map * exposure_s
        signal = np.clip(signal, 0.0, None)
        # shot noise: Poisson, in its Gaussian limit (signals here are hundreds of e- and up)
        noisy = signal + np.sqrt(signal) * rng.standard_normal(signal.shape)
        noisy = np.minimum(noisy, self.spec.full_well_e)
        noisy = noisy + self.spec.read_noise_e * rng.standard_normal(signal.shape)
        dn = noisy / self.spec.electrons_per_dn + self.spec.bias_dn
        dn[self.dead] = 0.0
        dn[self.hot] = self.spec.max_dn * 0.95
        return np.clip(np.rint(dn), 0, self.spec.max_dn).astype(np.uint16)

    def expected_dn(self, photo_rate_e_s: NDArray[np.floating], exposure_s: float) -> NDArray[np.float64]:
        """Noise-free DN of an exposure (no clipping), for tests and calibration truth."""
        e = photo_rate_e_s * self.gain_map * exposure_s + self.dark_map * exposure_s
        return e / self.spec.electrons_per_dn + self.spec.bias_dn
