"""A CubeSat push-broom imager in the FINCH style: how a ground line becomes a detector frame.

FINCH (University of Toronto Aerospace Team, 3U) images 900-1700 nm at 10 nm on an InGaAs
array: each readout is one cross-track line, dispersed along the other detector axis, so a
frame is (cross-track, bands). The swath is built up line by line as the satellite moves.

Noise, as FINCH's data show it: shot and read noise (band-dependent through the InGaAs
quantum efficiency and the atmosphere's water bands), column stripes (each detector pixel's
response drifts from its ground flat-field by ``stripe_sigma``, so every cross-track position
leaves a line along track in every band) and dead pixels.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from onboard.formats.types import RawFrame
from onboard.physics.detector import Detector, DetectorSpec
from onboard.physics.illumination import LAB_PANEL_PEAK_RADIANCE, lab_panel_radiance


def ingaas_quantum_efficiency(wavelength_nm: NDArray) -> NDArray[np.float64]:
    """Quantum efficiency of a standard InGaAs array: ~0.8 from 1000 to 1600 nm, rising
    from the InP substrate cut-on near 900 nm and falling at the 1.7 µm cut-off."""
    lam = np.asarray(wavelength_nm, dtype=float)
    rise = 1.0 / (1.0 + np.exp(-(lam - 920.0) / 20.0))
    fall = 1.0 / (1.0 + np.exp((lam - 1680.0) / 15.0))
    return 0.8 * rise * fall


@dataclass
class PushbroomInstrument:
    """A push-broom instrument. Detector frames are (cross_track, bands).

    ``photo_rate_e_s``: photo-electrons per second per nm of band for a unit-reflectance
    target under the peak of the lab illumination (onboard/physics/illumination.py) at unit quantum efficiency.
    """

    name: str
    wavelengths_nm: NDArray[np.float64]
    detector_spec: DetectorSpec
    photo_rate_e_s: float
    exposure_s: float
    stripe_sigma: float = 0.01
    stripe_seed: int = 11
    detector: Detector = field(init=False)
    stripe_gain: NDArray[np.float64] = field(init=False)

    def __post_init__(self) -> None:
        if self.detector_spec.shape[1] != len(self.wavelengths_nm):
            raise ValueError("detector's spectral axis does not match the band count")
        self.detector = Detector(self.detector_spec)
        rng = np.random.default_rng(self.stripe_seed)
        self.stripe_gain = 1.0 + self.stripe_sigma * rng.standard_normal(self.detector_spec.shape)

    @property
    def cross_track(self) -> int:
        return int(self.detector_spec.shape[0])

    def band_width_nm(self) -> NDArray[np.float64]:
        return np.gradient(self.wavelengths_nm)

    def line(
        self,
        reflectance: NDArray,
        rng: np.random.Generator,
        counter: int = 0,
        timestamp: float = 0.0,
        illumination_scale: float = 1.0,
        drift: bool = True,
    ) -> RawFrame:
        """One readout of a ground line given as reflectance (bands, cross_track).

        ``drift=False`` reads out as on the day of the ground calibration, before the pixel
        responses drifted into stripes."""
        if reflectance.shape != (len(self.wavelengths_nm), self.cross_track):
            raise ValueError(
                f"a line is (bands, cross_track) = {(len(self.wavelengths_nm), self.cross_track)}, "
                f"got {reflectance.shape}"
            )
        radiance = reflectance * (illumination_scale * lab_panel_radiance(self.wavelengths_nm))[:, None]
        return self.line_radiance(radiance, rng, counter, timestamp, drift)

    def line_radiance(self, radiance_w: NDArray, rng: np.random.Generator, counter: int = 0,
                      timestamp: float = 0.0, drift: bool = True,
                      pose: tuple[float, ...] | None = None) -> RawFrame:
        """One readout of a ground line given as at-sensor radiance (bands, cross_track) in
        W m-2 sr-1 nm-1 (a sky's, onboard/scene/sky.py)."""
        lam = self.wavelengths_nm
        per_radiance = self.photo_rate_e_s * ingaas_quantum_efficiency(lam) * self.band_width_nm()
        rate = (np.asarray(radiance_w) * (per_radiance / LAB_PANEL_PEAK_RADIANCE)[:, None]).T
        if drift:
            rate = rate * self.stripe_gain
        pixels = self.detector.expose(rate, self.exposure_s, rng)
        return RawFrame(pixels=pixels, counter=counter, timestamp=timestamp,
                        exposure_s=self.exposure_s, sensor="pushbroom", pose=pose)


def finch_like(cross_track: int = 128, seed: int = 0) -> PushbroomInstrument:
    """FINCH-like: 900-1700 nm at 10 nm (81 bands), 14-bit InGaAs. The signal level gives an
    SNR of about 100 on a 0.3-reflectance field in the best bands (FINCH's stated SNR ~100),
    falling at the band edges and in the water bands."""
    wl = np.arange(900.0, 1700.0 + 1, 10.0)
    spec = DetectorSpec(shape=(cross_track, len(wl)), bit_depth=14, full_well_e=120000.0,
                        electrons_per_dn=8.0, read_noise_e=60.0, dark_current_e_s=2000.0,
                        prnu=0.02, dead_fraction=0.002, hot_fraction=0.0005, seed=seed + 3)
    return PushbroomInstrument("finch-like", wl, spec, photo_rate_e_s=6.0e5, exposure_s=0.02,
                               stripe_seed=seed + 11)
