"""The sky over the simulated ground: at-sensor radiance from the sun's position, a published
clear-sky spectral model and light that changes within a flight, so each way of getting
reflectance is measured against truth (bench/bench_reflectance.py).

**Sun.** NREL's solar position algorithm (pvlib's ``spa_python``) at the frame's time and
place: not the runtime's own algorithm (onboard/physics/sun.py), so the two are checked
against each other rather than agreeing by construction.

**Clear sky.** Bird and Riordan's SPECTRL2 (1986, pvlib.spectrum.spectrl2): direct normal and
diffuse horizontal spectral irradiance (W m-2 nm-1, 300-4000 nm on 122 wavelengths, absorption
by ozone, O2 and water vapour included) and its own extraterrestrial spectrum, for a given
aerosol turbidity, water vapour, ozone and pressure. Interpolated onto the scene's grid.

**Changing light.** ``steps``: from each time (s after the flight's start) the whole irradiance
is multiplied by a factor (thin high cloud or haze over the whole sky: wavelength-flat);
``clouds``: a cloud crossing the sun between two times with an optical depth ``tau``
removes ``1 - exp(-tau / mu)`` of the direct beam, ``CLOUD_FORWARD`` of which reaches the
ground as diffuse light (the rest goes back to space).

**Radiance.** From a drone (low, no air between it and the ground that matters): a Lambertian
surface of reflectance ``rho`` reads ``rho E / pi`` with ``E`` the global horizontal irradiance;
a shaded surface gets the diffuse part only. From orbit, looking down at nadir: the sky's own
path radiance (single scattering, onboard/physics/atmosphere.py, with SPECTRL2's aerosol
parameters) plus the surface's radiance through the total upward transmittance of the
SPECTRL2 atmosphere at nadir (direct and diffuse: a uniform surface around the pixel; the
surface-sky multiple reflections are left out).

**Irradiance sensor.** A cosine receptor on the drone's back, tilted with the drone: the
direct beam at its incidence angle and the diffuse light over its tilted hemisphere
(isotropic sky), with a relative noise.

pvlib (scipy, pandas) is imported when a sky is first computed, never by a flight image:
the sky is the simulator's (``pip install onboard[ground]``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
from numpy.typing import ArrayLike, NDArray

from onboard.physics import atmosphere
from onboard.physics.sun import incidence_cosine

#: Share of the direct beam a cloud removes that reaches the ground as diffuse light.
CLOUD_FORWARD = 0.6


@dataclass(frozen=True)
class SkyLight:
    """The light at one time: ``direct`` horizontal and ``diffuse`` horizontal irradiance and the
    extraterrestrial normal irradiance ``e0`` (W m-2 nm-1, on ``wavelengths_nm``), the sun's
    ``zenith_deg`` and ``azimuth_deg``, and SPECTRL2's total transmittance to the zenith
    ``t_up``."""

    wavelengths_nm: NDArray[np.float64]
    direct: NDArray[np.float64]
    diffuse: NDArray[np.float64]
    e0: NDArray[np.float64]
    t_up: NDArray[np.float64]
    zenith_deg: float
    azimuth_deg: float

    @property
    def global_(self) -> NDArray[np.float64]:
        return self.direct + self.diffuse


@lru_cache(maxsize=4096)
def _spectrl2(zenith_deg: float, dayofyear: int, turbidity: float, water_cm: float, ozone: float,
              pressure_pa: float) -> tuple[NDArray, NDArray, NDArray, NDArray, NDArray]:
    import pvlib

    def run(z: float) -> dict:
        return pvlib.spectrum.spectrl2(
            apparent_zenith=z, aoi=z, surface_tilt=0.0, ground_albedo=0.0, surface_pressure=pressure_pa,
            relative_airmass=pvlib.atmosphere.get_relative_airmass(z), precipitable_water=water_cm,
            ozone=ozone, aerosol_turbidity_500nm=turbidity, dayofyear=dayofyear)

    s, up = run(zenith_deg), run(0.0)
    wl = np.asarray(s["wavelength"], float)
    e0 = np.ravel(s["dni_extra"])
    # up: the total (direct + diffuse) transmittance of a path to the zenith, by reciprocity the
    # global irradiance under an overhead sun over its extraterrestrial value (a uniform surface)
    t_up = (np.ravel(up["dni"]) + np.ravel(up["dhi"])) / np.maximum(np.ravel(up["dni_extra"]), 1e-12)
    return wl, np.ravel(s["dni"]), np.ravel(s["dhi"]), e0, t_up


@dataclass
class Sky:
    """A clear sky over a site from ``start_utc`` (Unix s), with light that changes.

    ``steps``: ((seconds after start, factor), ...): the irradiance factor from that time on.
    ``clouds``: ((start s, end s, optical depth), ...) clouds crossing the sun. Aerosol
    turbidity at 500 nm, precipitable water (cm), ozone (atm-cm), pressure (Pa): SPECTRL2's.
    """

    lat_deg: float
    lon_deg: float
    start_utc: float
    steps: tuple[tuple[float, float], ...] = ()
    clouds: tuple[tuple[float, float, float], ...] = ()
    turbidity: float = 0.1
    water_cm: float = 1.4
    ozone: float = 0.3
    pressure_pa: float = 101325.0
    _pos: dict = field(default_factory=dict, repr=False)

    def sun(self, t: float) -> tuple[float, float]:
        """(zenith, azimuth) deg by NREL SPA (pvlib) at UTC ``t``."""
        key = round(t, 1)
        if key not in self._pos:
            import pandas as pd
            import pvlib

            pos = pvlib.solarposition.spa_python(pd.DatetimeIndex([pd.Timestamp(t, unit="s", tz="UTC")]),
                                                 self.lat_deg, self.lon_deg)
            self._pos[key] = (float(pos["zenith"].iloc[0]), float(pos["azimuth"].iloc[0]))
        return self._pos[key]

    def factor(self, t: float) -> float:
        """The irradiance factor of ``steps`` at ``t``."""
        f = 1.0
        for start, value in sorted(self.steps):
            if t - self.start_utc >= start:
                f = value
        return f

    def light(self, t: float, wavelengths_nm: ArrayLike) -> SkyLight:
        """The light at UTC ``t`` on ``wavelengths_nm``."""
        zen, az = self.sun(t)
        if zen >= 85.0:
            raise ValueError(f"the sun is {zen:.1f} deg from the zenith at {t}: too low for this sky model")
        doy = _day_of_year(t)
        wl, dni, dhi, e0, t_up = _spectrl2(round(zen, 2), doy, self.turbidity, self.water_cm, self.ozone,
                                           self.pressure_pa)
        lam = np.asarray(wavelengths_nm, float)
        mu = math.cos(math.radians(zen))
        direct = np.interp(lam, wl, dni) * mu
        diffuse = np.interp(lam, wl, dhi)
        for start, end, tau in self.clouds:
            if start <= t - self.start_utc < end:
                removed = direct * (1.0 - math.exp(-tau / mu))
                direct = direct - removed
                diffuse = diffuse + CLOUD_FORWARD * removed
        k = self.factor(t)
        return SkyLight(lam, k * direct, k * diffuse, np.interp(lam, wl, e0), np.interp(lam, wl, t_up), zen, az)

    def drone_radiance(self, reflectance: NDArray, wavelengths_nm: ArrayLike, t: float,
                       shade: NDArray[np.bool_] | None = None) -> NDArray[np.float64]:
        """At-sensor radiance (W m-2 sr-1 nm-1) of a Lambertian scene (B, h, w) seen from a
        drone; ``shade`` (h, w) True where the direct beam is blocked (a person by a panel)."""
        light = self.light(t, wavelengths_nm)
        e = np.broadcast_to(light.global_[:, None, None], reflectance.shape)
        if shade is not None:
            e = np.where(shade[None], light.diffuse[:, None, None], e)
        return reflectance * e / math.pi

    def toa_radiance(self, reflectance: NDArray, wavelengths_nm: ArrayLike, t: float) -> NDArray[np.float64]:
        """At-sensor radiance (W m-2 sr-1 nm-1) of a Lambertian scene (B, h, w) seen from orbit
        at nadir (module docstring)."""
        light = self.light(t, wavelengths_nm)
        mu = math.cos(math.radians(light.zenith_deg))
        path = atmosphere.path_reflectance(light.wavelengths_nm, light.zenith_deg, 0.0, tau_550=self.tau_550,
                                           angstrom=SPECTRL2_ANGSTROM, single_albedo=SPECTRL2_ALBEDO,
                                           asymmetry=SPECTRL2_ASYMMETRY)
        l_path = path * light.e0 * mu / math.pi
        return (l_path[:, None, None] + reflectance * (light.global_ * light.t_up)[:, None, None] / math.pi)

    def toa_reflectance(self, radiance: NDArray, t: float, wavelengths_nm: ArrayLike) -> NDArray[np.float64]:
        """The truth a top-of-atmosphere reflectance estimates: ``pi L / (E0 mu)`` with this
        sky's own extraterrestrial irradiance (distance included); radiance (B, ...)."""
        light = self.light(t, wavelengths_nm)
        mu = math.cos(math.radians(light.zenith_deg))
        shape = (-1,) + (1,) * (np.ndim(radiance) - 1)
        return math.pi * radiance / (light.e0 * mu).reshape(shape)

    @property
    def tau_550(self) -> float:
        """SPECTRL2's aerosol optical depth at 550 nm from its turbidity at 500 nm."""
        return self.turbidity * (550.0 / 500.0) ** -SPECTRL2_ANGSTROM

    def irradiance_sensor(self, t: float, wavelengths_nm: ArrayLike, attitude_deg: tuple[float, float, float],
                          rng: np.random.Generator, noise: float = 0.005) -> NDArray[np.float64]:
        """What a cosine irradiance sensor on the drone's back reads (W m-2 nm-1) at ``t`` with
        the drone at (roll, pitch, yaw) deg."""
        light = self.light(t, wavelengths_nm)
        cos_inc, cos_tilt = incidence_cosine(light.zenith_deg, light.azimuth_deg, *attitude_deg)
        mu = math.cos(math.radians(light.zenith_deg))
        e = light.direct / mu * max(cos_inc, 0.0) + light.diffuse * (1 + cos_tilt) / 2
        return e * (1.0 + noise * rng.standard_normal(e.shape))


#: SPECTRL2's aerosol defaults in pvlib (Angstrom exponent, single-scattering albedo at 400 nm,
#: asymmetry factor), used for the sky's path radiance so that it matches its transmittances.
SPECTRL2_ANGSTROM = 1.14
SPECTRL2_ALBEDO = 0.945
SPECTRL2_ASYMMETRY = 0.65


def _day_of_year(t: float) -> int:
    import datetime

    return datetime.datetime.fromtimestamp(t, datetime.timezone.utc).timetuple().tm_yday


@dataclass(frozen=True)
class PanelPlacement:
    """A reference panel laid in the scene: reflectance (B,) on the scene's grid, its region
    (row, col, rows, cols) in the frame, and whether someone's shadow lies on it."""

    reflectance: NDArray[np.float64]
    region: tuple[int, int, int, int]
    shaded: bool = False


@dataclass
class Flight:
    """A simulated flight under ``sky``: a drone at ``altitude_m`` whose body sways by up to
    ``sway_deg`` in roll and pitch, heading ``yaw_deg`` (the camera on a nadir gimbal), or a
    satellite (``platform="satellite"``: TOA radiance, no sway). In ``panel_frames`` the frame
    holds ``panels`` instead of the ground under them."""

    sky: Sky
    platform: str = "drone"
    altitude_m: float = 120.0
    sway_deg: float = 5.0
    yaw_deg: float = 0.0
    panels: tuple[PanelPlacement, ...] = ()
    panel_frames: tuple[int, ...] = ()

    def attitude(self, t: float) -> tuple[float, float, float]:
        """(roll, pitch, yaw) deg of the body at UTC ``t`` (a smooth sway)."""
        s = t - self.sky.start_utc
        if self.platform != "drone":
            return 0.0, 0.0, self.yaw_deg
        return (self.sway_deg * math.sin(0.9 * s), self.sway_deg * math.cos(0.63 * s + 1.0), self.yaw_deg)

    def pose(self, t: float) -> tuple[float, ...]:
        return (self.sky.lat_deg, self.sky.lon_deg, self.altitude_m, *self.attitude(t))

    def scene(self, reflectance: NDArray, counter: int) -> tuple[NDArray, NDArray[np.bool_] | None]:
        """The ground the frame sees (panels laid in a panel frame) and where it is shaded."""
        if counter not in self.panel_frames or not self.panels:
            return reflectance, None
        out = np.array(reflectance, dtype=np.float64)
        shade = np.zeros(out.shape[1:], bool)
        for p in self.panels:
            r, c, h, w = p.region
            out[:, r:r + h, c:c + w] = np.asarray(p.reflectance)[:, None, None]
            shade[r:r + h, c:c + w] = p.shaded
        return out, shade

    def radiance(self, reflectance: NDArray, wavelengths_nm: ArrayLike, t: float,
                 shade: NDArray[np.bool_] | None = None) -> NDArray[np.float64]:
        if self.platform == "drone":
            return self.sky.drone_radiance(reflectance, wavelengths_nm, t, shade)
        return self.sky.toa_radiance(reflectance, wavelengths_nm, t)

    def irradiance_readings(self, start: float, end: float, rate_hz: float, wavelengths_nm: ArrayLike,
                            rng: np.random.Generator) -> list[tuple[float, NDArray, tuple[float, float, float]]]:
        """(time, reading, attitude) of the drone's irradiance sensor from ``start`` to ``end``."""
        out = []
        for t in np.arange(start, end, 1.0 / rate_hz):
            att = self.attitude(float(t))
            out.append((float(t), self.sky.irradiance_sensor(float(t), wavelengths_nm, att, rng), att))
        return out
