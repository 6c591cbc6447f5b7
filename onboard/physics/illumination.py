"""Illumination at the ground: the spectrum a scene's reflectance is multiplied by.

A 5778 K black body (the Sun's effective temperature) times a smooth atmospheric
transmittance with the strong absorption bands of O2 (760 nm) and water vapour (940, 1140,
1380, 1870 nm). It is a stand-in for a radiative-transfer model: what matters for the
pipeline is a realistic dynamic range across the band and deep features that a
reconstruction must not smear into the reflectance, since the runtime divides by a white
reference measured through the same instrument.

In absolute units it is the laboratory's lamp: a unit-reflectance panel under it has the
radiance :func:`lab_panel_radiance` (``LAB_PANEL_PEAK_RADIANCE`` W m-2 sr-1 nm-1 at its peak,
about a white panel's under a high sun), so a simulated instrument sees radiance in physical
units, as it does under a sky (onboard/scene/sky.py).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

_H = 6.62607015e-34
_C = 2.99792458e8
_K = 1.380649e-23
SUN_TEMPERATURE_K = 5778.0

#: (centre nm, width nm 1-sigma, depth 0-1) of the atmosphere's main absorption bands.
ABSORPTION_BANDS: tuple[tuple[float, float, float], ...] = (
    (760.0, 4.0, 0.6),
    (940.0, 25.0, 0.5),
    (1140.0, 30.0, 0.45),
    (1380.0, 45.0, 0.95),
    (1870.0, 60.0, 0.95),
)


#: Radiance (W m-2 sr-1 nm-1) of a unit-reflectance panel at the peak of the lab illumination.
LAB_PANEL_PEAK_RADIANCE = 0.5


def lab_panel_radiance(wavelength_nm: ArrayLike) -> NDArray[np.float64]:
    """Radiance (W m-2 sr-1 nm-1) of a unit-reflectance Lambertian panel under the lab lamp."""
    return LAB_PANEL_PEAK_RADIANCE * solar_illumination(wavelength_nm)


def solar_illumination(wavelength_nm: ArrayLike) -> NDArray[np.float64]:
    """Relative spectral irradiance at the ground, 1.0 at its maximum over 350-2500 nm."""
    lam = np.asarray(wavelength_nm, dtype=float) * 1e-9
    planck = 1.0 / (lam**5 * (np.exp(_H * _C / (lam * _K * SUN_TEMPERATURE_K)) - 1.0))
    peak_lam = 2.897771955e-3 / SUN_TEMPERATURE_K
    peak = 1.0 / (peak_lam**5 * (np.exp(_H * _C / (peak_lam * _K * SUN_TEMPERATURE_K)) - 1.0))
    t = np.ones_like(lam)
    nm = lam * 1e9
    for centre, width, depth in ABSORPTION_BANDS:
        t *= 1.0 - depth * np.exp(-0.5 * ((nm - centre) / width) ** 2)
    # Rayleigh scattering dims the blue: optical depth ~ 0.1 (550/lambda)^4
    t *= np.exp(-0.1 * (550.0 / nm) ** 4)
    return planck / peak * t
