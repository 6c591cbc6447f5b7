"""The Sun seen from a point on Earth: zenith and azimuth angles, Earth-Sun distance and the
extraterrestrial solar spectrum, all from the time and the position alone.

Position: NOAA's solar calculator algorithm (Meeus, *Astronomical Algorithms*, 2nd ed. 1998,
chapters 22 and 25, low-precision solar coordinates, as the NOAA Global Monitoring Laboratory
spreadsheet writes it), about 0.01 deg for 1800-2100 without refraction, and the Earth-Sun
distance from the same orbital elements (radius vector, AU). Written here once because the
flight runtime takes no library beside numpy for it: the libraries that compute it (pvlib,
astropy) bring pandas or scipy. tests/test_sun.py checks it against pvlib's NREL SPA.

Spectrum: the ASTM G173-03 extraterrestrial spectrum (Gueymard 2004, W m-2 nm-1 at 1 AU) as
pvlib ships it, averaged over 5 nm bins from 300 to 2500 nm into ``data/solar_g173.npz`` by
:func:`export.solar.write_solar_spectrum`; the runtime reads that file with numpy.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import numpy as np
from numpy.typing import ArrayLike, NDArray

from onboard.physics.imspoc import band_mean

SOLAR_SPECTRUM_FILE = Path(__file__).parent / "data" / "solar_g173.npz"


def _julian_century(unix_s: ArrayLike) -> NDArray[np.float64]:
    jd = np.asarray(unix_s, float) / 86400.0 + 2440587.5
    return (jd - 2451545.0) / 36525.0


def _orbit(t: NDArray) -> tuple[NDArray, NDArray, NDArray, NDArray]:
    """Geometric mean longitude L0 (deg), mean anomaly M (deg), eccentricity e, equation of centre C (deg)."""
    l0 = np.mod(280.46646 + t * (36000.76983 + t * 0.0003032), 360.0)
    m = 357.52911 + t * (35999.05029 - 0.0001537 * t)
    e = 0.016708634 - t * (0.000042037 + 0.0000001267 * t)
    mr = np.radians(m)
    c = (np.sin(mr) * (1.914602 - t * (0.004817 + 0.000014 * t)) + np.sin(2 * mr) * (0.019993 - 0.000101 * t)
         + np.sin(3 * mr) * 0.000289)
    return l0, m, e, c


def earth_sun_distance_au(unix_s: ArrayLike) -> NDArray[np.float64]:
    """Earth-Sun distance (AU) at UTC ``unix_s`` (seconds since the Unix epoch)."""
    t = _julian_century(unix_s)
    _, m, e, c = _orbit(t)
    return 1.000001018 * (1 - e * e) / (1 + e * np.cos(np.radians(m + c)))


def sun_position(unix_s: ArrayLike, lat_deg: ArrayLike, lon_deg: ArrayLike) -> tuple[NDArray, NDArray]:
    """(zenith, azimuth) in degrees of the Sun's centre, no refraction, at UTC ``unix_s`` seen
    from latitude/longitude (deg, east positive); azimuth clockwise from north."""
    t = _julian_century(unix_s)
    l0, m, e, c = _orbit(t)
    omega = np.radians(125.04 - 1934.136 * t)
    lam = np.radians(l0 + c - 0.00569 - 0.00478 * np.sin(omega))
    eps0 = 23.0 + (26.0 + (21.448 - t * (46.815 + t * (0.00059 - t * 0.001813))) / 60.0) / 60.0
    eps = np.radians(eps0 + 0.00256 * np.cos(omega))
    decl = np.arcsin(np.sin(eps) * np.sin(lam))
    y = np.tan(eps / 2) ** 2
    l0r, mr = np.radians(l0), np.radians(m)
    eot_min = 4 * np.degrees(y * np.sin(2 * l0r) - 2 * e * np.sin(mr) + 4 * e * y * np.sin(mr) * np.cos(2 * l0r)
                             - 0.5 * y * y * np.sin(4 * l0r) - 1.25 * e * e * np.sin(2 * mr))
    minutes = np.mod(np.asarray(unix_s, float), 86400.0) / 60.0
    hour_angle = np.radians(np.mod(minutes + eot_min + 4 * np.asarray(lon_deg, float), 1440.0) / 4 - 180.0)
    lat = np.radians(np.asarray(lat_deg, float))
    cos_z = np.clip(np.sin(lat) * np.sin(decl) + np.cos(lat) * np.cos(decl) * np.cos(hour_angle), -1, 1)
    zen = np.arccos(cos_z)
    az = np.degrees(np.arctan2(np.sin(hour_angle), np.cos(hour_angle) * np.sin(lat) - np.tan(decl) * np.cos(lat)))
    return np.degrees(zen), np.mod(az + 180.0, 360.0)


@cache
def _solar_table() -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    with np.load(SOLAR_SPECTRUM_FILE) as f:
        return f["wavelengths_nm"].astype(float), f["irradiance_w_m2_nm"].astype(float)


def solar_irradiance(wavelengths_nm: ArrayLike) -> NDArray[np.float64]:
    """Extraterrestrial solar spectral irradiance (W m-2 nm-1) at 1 AU on ``wavelengths_nm``,
    each value the average over the band around it (bands midway between the centres)."""
    wl, e0 = _solar_table()
    return band_mean(wl, e0, np.asarray(wavelengths_nm, float))


def incidence_cosine(zenith_deg: float, azimuth_deg: float, roll_deg: float = 0.0,
                     pitch_deg: float = 0.0, yaw_deg: float = 0.0) -> tuple[float, float]:
    """(cosine of the Sun's angle to the normal of a sensor facing up on a body at roll,
    pitch, yaw (deg; aerospace order yaw-pitch-roll, north-east-down), cosine of that normal's
    tilt from the vertical): what a downwelling irradiance sensor on a drone's back sees."""
    r, p, y = np.radians([roll_deg, pitch_deg, yaw_deg])
    # body "up" (0, 0, -1) rotated into north-east-down by Rz(yaw) Ry(pitch) Rx(roll)
    up_body = np.array([-np.cos(r) * np.sin(p), np.sin(r), -np.cos(r) * np.cos(p)])
    cy, sy = np.cos(y), np.sin(y)
    normal = np.array([cy * up_body[0] - sy * up_body[1], sy * up_body[0] + cy * up_body[1], up_body[2]])
    z, a = np.radians(zenith_deg), np.radians(azimuth_deg)
    sun = np.array([np.sin(z) * np.cos(a), np.sin(z) * np.sin(a), -np.cos(z)])
    return float(normal @ sun), float(-normal[2])
