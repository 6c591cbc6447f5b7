"""A clear-sky atmosphere in a few lines: optical depths, transmittances, diffuse share and
the sky's own reflectance, for the flight runtime's corrections and the cloud simulator.

Rayleigh optical depth ``0.0088 lambda^-4.05`` (lambda in um, Hansen and Travis 1974, sea
level); aerosol optical depth ``tau_550 (lambda / 0.55 um)^-alpha`` (Angstrom). Down-going
transmittance at cosine ``mu``: the direct beam ``exp(-(tau_r + tau_a) / mu)`` plus the diffuse
light, half of the Rayleigh and ``FORWARD_AEROSOL`` of the aerosol scattering going down.
The sky's reflectance seen from above (path reflectance) in single scattering (the first term of
6S's, Vermote et al. 1997): ``(tau_r P_r + w tau_a P_a) / (4 mu_s mu_v)`` with the Rayleigh phase
function and a Henyey-Greenstein aerosol one. No gas absorption (ozone, O2, water vapour): the
bands it leaves out are where a correction by this model errs, which the bench measures.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

#: Share of the aerosol scattering that goes down (forward-peaked phase function).
FORWARD_AEROSOL = 0.8
AEROSOL_550 = 0.1
ANGSTROM = 1.3


def rayleigh_depth(wavelengths_nm: ArrayLike) -> NDArray[np.float64]:
    return 0.0088 * (np.asarray(wavelengths_nm, float) / 1000.0) ** -4.05


def aerosol_depth(wavelengths_nm: ArrayLike, tau_550: float = AEROSOL_550,
                  angstrom: float = ANGSTROM) -> NDArray[np.float64]:
    return tau_550 * (np.asarray(wavelengths_nm, float) / 550.0) ** -angstrom


def down_irradiance(wavelengths_nm: ArrayLike, mu: float, tau_550: float = AEROSOL_550
                    ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """(direct, diffuse) shares of the top-of-atmosphere irradiance ``E0 mu`` that reach a
    horizontal ground at sun cosine ``mu``."""
    tr, ta = rayleigh_depth(wavelengths_nm), aerosol_depth(wavelengths_nm, tau_550)
    direct = np.exp(-(tr + ta) / mu)
    diffuse = 0.5 * (1.0 - np.exp(-tr / mu)) + FORWARD_AEROSOL * (1.0 - np.exp(-ta / mu))
    return direct, diffuse


def transmittance(wavelengths_nm: ArrayLike, mu: float, tau_550: float = AEROSOL_550) -> NDArray[np.float64]:
    """Total (direct + diffuse) transmittance along a path of cosine ``mu``."""
    direct, diffuse = down_irradiance(wavelengths_nm, mu, tau_550)
    return direct + diffuse


def diffuse_fraction(wavelengths_nm: ArrayLike, sun_zenith_deg: float,
                     tau_550: float = AEROSOL_550) -> NDArray[np.float64]:
    """Share of the ground irradiance that is diffuse skylight."""
    direct, diffuse = down_irradiance(wavelengths_nm, float(np.cos(np.radians(sun_zenith_deg))), tau_550)
    return diffuse / (direct + diffuse)


def path_reflectance(wavelengths_nm: ArrayLike, sun_zenith_deg: float, view_zenith_deg: float = 0.0,
                     tau_550: float = AEROSOL_550, angstrom: float = ANGSTROM,
                     single_albedo: float = 1.0, asymmetry: float = 0.7) -> NDArray[np.float64]:
    """The atmosphere's own reflectance seen from above (single scattering), for a view
    ``view_zenith_deg`` in the sun's principal plane, opposite the sun."""
    mu_s, mu_v = np.cos(np.radians(sun_zenith_deg)), np.cos(np.radians(view_zenith_deg))
    cos_scatter = -mu_s * mu_v + np.sqrt(1 - mu_s**2) * np.sqrt(1 - mu_v**2)
    p_r = 0.75 * (1 + cos_scatter**2)
    g = asymmetry
    p_a = (1 - g * g) / (1 + g * g - 2 * g * cos_scatter) ** 1.5
    tr = rayleigh_depth(wavelengths_nm)
    ta = aerosol_depth(wavelengths_nm, tau_550, angstrom)
    return (tr * p_r + single_albedo * ta * p_a) / (4 * mu_s * mu_v)
