"""From the reconstructed signal to the quantity a product holds, and how it was obtained.

The reconstruction (and the push-broom's white-reference division) gives *lab reflectance*:
the signal over the white panel's signal in the laboratory, a reflectance only under the lab
lamp. With the calibration's absolute gain (calfile version 2) it becomes *radiance*
(W m-2 sr-1 nm-1), and from radiance each method gives a reflectance, saying which:

* ``lab``: lab reflectance, as before (no correction for the light of the day);
* ``radiance``: at-sensor radiance;
* ``panel``: empirical line (Smith and Milton 1999): reference panels of known reflectance in
  the ``panel_frames`` (each in its given region, or found: :func:`find_panel`) give, per band, radiance = gain x reflectance + offset (with one panel,
  no offset), inverted for every later frame. Right while the light stays as it was then;
* ``irradiance``: ``pi L / E`` with ``E`` the downwelling irradiance sensor's reading nearest
  the frame, cosine-corrected to a level sensor (below);
* ``panel+irradiance``: the empirical line times ``E(panel frame) / E(frame)`` per band: the
  panel sets the absolute scale, the sensor follows the light (MicaSense's panel + DLS);
* ``toa``: top-of-atmosphere reflectance ``pi L d^2 / (E0 cos(sun zenith))``, sun zenith and
  Earth-Sun distance ``d`` from the frame's time and position (onboard/physics/sun.py), ``E0``
  ASTM G173's extraterrestrial spectrum;
* ``surface-dos``: surface reflectance from TOA reflectance by a dark object: the darkest
  valid pixels (``DARK_PERCENTILE``) of the visible bands (< ``DARK_BANDS_NM``) are taken to
  have reflectance ``dark_object_reflectance`` (the darkest seen so far in the run: one farmland
  frame may hold nothing dark); the aerosol optical depth at 550 nm that makes
  the clear-sky model (onboard/physics/atmosphere.py: Rayleigh + Angstrom aerosol, single-
  scattering path reflectance, no gas absorption) read them so is chosen on a grid, then
  ``rho = (rho_toa - path) / (T_sun T_view)`` in every band; the water-vapour band at 940 nm is
  divided by its in-scene transmittance (:func:`water_band_transmittance`).

Cosine correction of the irradiance sensor: it reads ``E_dir cos(i) / mu + E_dif (1 + cos(b)) / 2``
for incidence ``i`` on its tilted face and tilt ``b``; a level sensor would read
``E_dir + E_dif``. With the clear-sky diffuse share ``f`` at the sun's zenith, the level reading is
``E_read / ((1 - f) cos(i) / mu + f (1 + cos b) / 2)``.

Nothing doubtful is applied silently: a panel with any saturated or bad pixel, one not uniform
(partly shaded) or reading under ``SHADE_RATIO`` of the light the irradiance sensor (or, without
one, the clear-sky model) says falls on it is not used; an irradiance reading farther than
``max_gap_s`` from the frame, or on a face turned from the sun, is not applied. Each says so in the
frame's flags (hence its event) and the product's ``meta["radiometry"]`` says what was applied.

Uncertainty (relative, k = 1, per band, in ``meta["radiometry"]``): the radiance gain's, with
the panel's, the irradiance sensor's or the solar spectrum's stated one in quadrature, and for
``surface-dos`` an absolute term from the dark-object assumption (``DARK_OBJECT_UNCERTAINTY``
through the fitted path); the bench (bench/bench_reflectance.py) measures what they miss.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np
from numpy.typing import NDArray

from onboard.config import REFLECTANCE_METHODS, ReflectanceConfig
from onboard.formats.calfile import RADIANCE_UNITS, Calibration
from onboard.formats.types import Cube, RawFrame
from onboard.physics import atmosphere
from onboard.physics.imspoc import band_mean
from onboard.physics.sun import (
    earth_sun_distance_au,
    incidence_cosine,
    solar_irradiance,
    sun_position,
)
from onboard.sources.irradiance import IrradianceLog, IrradianceReading

#: What a product holds for each method when the method applies.
QUANTITY = {"lab": "lab reflectance", "radiance": "radiance", "panel": "surface reflectance",
            "irradiance": "surface reflectance", "panel+irradiance": "surface reflectance",
            "toa": "toa reflectance", "surface-dos": "surface reflectance"}
#: A panel reading under this share of the light that should fall on it is shaded.
SHADE_RATIO = 0.6
#: Largest (p90 - p10) / median across a panel's pixels (each pixel's radiance relative to the
#: panel's median, averaged over bands) of a uniform panel.
PANEL_SPREAD = 0.15
#: A panel looked for (no region given) is taken where a uniform square reads within this share
#: of the radiance it should (median over bands): the light may differ from what is expected
#: by 20 % steps and the clear-sky model by some more.
FIND_TOLERANCE = 0.35
#: Below this cosine between the irradiance sensor's face and the sun, its reading is not used.
MIN_INCIDENCE_COS = 0.2
SOLAR_SPECTRUM_UNCERTAINTY = 0.02
#: Relative uncertainty of a ratio of two readings of the same irradiance sensor: its absolute
#: calibration cancels; its noise and the cosine correction remain (within 2 % at 10 deg of
#: tilt, tests/test_reflectance.py).
IRRADIANCE_RATIO_UNCERTAINTY = 0.01  # ASTM G173's stated: about 2 % (Gueymard 2004)
DARK_PERCENTILE = 0.5
DARK_BANDS_NM = 700.0
DARK_OBJECT_UNCERTAINTY = 0.01
#: RMS misfit (reflectance) of the clear-sky model to the darkest pixels beyond which they are
#: not taken for a dark object (farmland frames of bare soil: their darkest pixel is 0.09-0.17).
DARK_FIT_RMS = 0.045
#: The water-vapour absorption band (nm) corrected in the scene by its continuum.
WATER_BAND_NM = (910.0, 970.0)
AEROSOL_GRID = np.linspace(0.0, 1.5, 151)


@dataclass(frozen=True)
class Panel:
    """A reference panel: reflectance spectrum on ``wavelengths_nm`` (from its certificate),
    where it lies in the cube (row, col, rows, cols) and its reflectance's relative uncertainty."""

    name: str
    wavelengths_nm: NDArray[np.float64]
    reflectance: NDArray[np.float64]
    region: tuple[int, int, int, int] | None
    uncertainty: float = 0.02
    size: int = 0  # side (px) of the square to look for when ``region`` is None (:func:`find_panel`)


@dataclass
class ReflectanceSettings:
    """How a run turns radiance into reflectance (``[reflectance]`` of the mission file)."""

    method: str = "lab"  # one of onboard.config.REFLECTANCE_METHODS
    panels: list[Panel] = field(default_factory=list)
    panel_frames: tuple[int, ...] = ()
    max_gap_s: float = 1.0
    irradiance_uncertainty: float = 0.03
    site: tuple[float, float] | None = None  # (lat, lon) deg when frames carry no position
    dark_object_reflectance: float = 0.02


@dataclass
class _Line:
    gain: NDArray[np.float64]
    offset: NDArray[np.float64]
    counter: int
    irradiance: NDArray[np.float64] | None
    panels: list[str]
    uncertainty: float


def settings_from(config: ReflectanceConfig, cube_shape: list[int]) -> ReflectanceSettings:
    """The stage's settings from the mission's ``[reflectance]``; a panel region outside the
    cube (bands, rows, cols) is refused, naming it."""
    panels = []
    for p in config.panels:
        region = None if p["region"] is None else tuple(p["region"])
        r, c, h, w = region or (0, 0, p["size"], p["size"])
        if r + h > cube_shape[1] or c + w > cube_shape[2]:
            raise ValueError(f"[[reflectance.panel]] {p['name']}: {'region ' + str(p['region']) if region else 'size'} "
                             f"falls outside the {cube_shape[1]} x {cube_shape[2]} cube")
        panels.append(Panel(p["name"], np.asarray(p["wavelengths_nm"], float), np.asarray(p["reflectance"], float),
                            region, p["uncertainty"], p["size"]))  # type: ignore[arg-type]
    site = None if config.site_lat_deg is None or config.site_lon_deg is None else \
        (config.site_lat_deg, config.site_lon_deg)
    return ReflectanceSettings(config.method, panels, tuple(config.panel_frames),
                               config.max_gap_s, config.irradiance_uncertainty, site, config.dark_object_reflectance)


class ReflectanceStage:
    """Converts each frame's cube as ``settings.method`` says, with ``irradiance`` the
    downwelling sensor's readings (a log that may grow during the run)."""

    def __init__(self, calibration: Calibration, settings: ReflectanceSettings,
                 irradiance: IrradianceLog | None = None, poll: Callable[[], int] | None = None) -> None:
        self.calibration = calibration
        self.settings = settings
        self.irradiance = irradiance
        self.poll = poll  # reads what a live sensor sent since the last frame (SerialIrradiance.poll)
        self.line: _Line | None = None
        self._dark: NDArray | None = None  # darkest TOA reflectance per band seen in the run
        if settings.method not in REFLECTANCE_METHODS:
            raise ValueError(f"reflectance method {settings.method!r} is not one of {REFLECTANCE_METHODS}")
        if settings.method in ("irradiance", "panel+irradiance") and irradiance is None:
            raise ValueError(f"reflectance method {settings.method!r} needs an irradiance sensor "
                             "([reflectance] irradiance_file or irradiance_port)")
        if settings.method in ("panel", "panel+irradiance") and not (settings.panels and settings.panel_frames):
            raise ValueError(f"reflectance method {settings.method!r} needs panels and panel_frames")

    def apply(self, cube: Cube, frame: RawFrame) -> tuple[Cube, dict, list[str]]:
        """(converted cube, ``meta["radiometry"]``, flags) of one frame's lab-reflectance cube."""
        flags: list[str] = []
        method = self.settings.method
        cal = self.calibration
        if method == "lab" or cal.radiance_gain_uncertainty is None:
            if method != "lab":
                flags.append(f"frame {cube.counter}: reflectance: the calibration has no radiance gain "
                             f"(version 1): lab reflectance, not {method}")
            return cube, self._meta(
                "lab reflectance", "signal / (white reference x exposure): reflectance under the lab lamp only",
                np.zeros(0)), flags  # no uncertainty: under another light it is not a reflectance at all
        radiance = cube.data * cal.lab_radiance().astype(np.float32)[:, None, None]
        u_gain = np.asarray(cal.radiance_gain_uncertainty, float)
        if method == "radiance":
            return self._out(cube, radiance, "radiance", "absolute gain of the calibration", u_gain, flags)
        if method in ("toa", "surface-dos"):
            return self._orbital(cube, frame, radiance, u_gain, flags)
        return self._field(cube, frame, radiance, u_gain, flags)

    # -- drone: panels and the irradiance sensor ---------------------------------------------

    def _field(self, cube: Cube, frame: RawFrame, radiance: NDArray, u_gain: NDArray,
               flags: list[str]) -> tuple[Cube, dict, list[str]]:
        method = self.settings.method
        e_now = None
        if method in ("irradiance", "panel+irradiance"):
            e_now, why = self._level_irradiance(cube, frame)
            if e_now is None:
                flags.append(f"frame {cube.counter}: irradiance not applied: {why}")
        if frame.counter in self.settings.panel_frames and method != "irradiance":
            self._fit_line(cube, frame, radiance, e_now, flags)
        u_irr = self.settings.irradiance_uncertainty
        if method == "irradiance":
            if e_now is None:
                return self._out(cube, radiance, "radiance", "irradiance sensor unusable: radiance", u_gain, flags)
            rho = math.pi * radiance / e_now[:, None, None]
            return self._out(cube, rho, "surface reflectance",
                             "pi L / E, E the irradiance sensor's reading, cosine-corrected",
                             np.hypot(u_gain, u_irr), flags)
        line = self.line
        if line is None:
            flags.append(f"frame {cube.counter}: no usable reference panel yet: radiance, not reflectance")
            return self._out(cube, radiance, "radiance", "no usable panel line: radiance", u_gain, flags)
        rho = (radiance - line.offset[:, None, None]) / line.gain[:, None, None]
        how = f"empirical line from panels {', '.join(line.panels)} in frame {line.counter}"
        u = np.full(cube.bands, line.uncertainty)
        if method == "panel+irradiance":
            if e_now is not None and line.irradiance is not None:
                rho = rho * (line.irradiance / e_now)[:, None, None]
                how += " x irradiance ratio (panel frame / this frame), cosine-corrected"
                u = np.hypot(u, IRRADIANCE_RATIO_UNCERTAINTY)
            else:
                flags.append(f"frame {cube.counter}: panel line applied without the irradiance ratio")
                how += " (without the irradiance ratio: sensor unusable)"
        return self._out(cube, rho, "surface reflectance", how, u, flags)

    def _level_irradiance(self, cube: Cube, frame: RawFrame) -> tuple[NDArray | None, str]:
        """The irradiance sensor's reading nearest the frame, cosine-corrected and band-averaged
        onto the cube's bands (through its response), or None and why not."""
        assert self.irradiance is not None
        if self.poll is not None:
            self.poll()
        reading, gap = self.irradiance.nearest(frame.timestamp)
        if reading is None or gap > self.settings.max_gap_s:
            return None, (f"nearest reading {gap:.1f} s from the frame (limit {self.settings.max_gap_s} s): "
                          "sensor stopped or clocks apart")
        if not np.all(reading.irradiance > 0):
            return None, "reading holds non-positive irradiance"
        latlon = self._position(frame)
        if latlon is None:
            return None, "no position for the sun's angle (frame pose or [reflectance] site)"
        e, why = level_irradiance(reading, self.irradiance.wavelengths_nm, frame.timestamp, *latlon)
        if e is None:
            return None, why
        return self._seen_light(band_mean(self.irradiance.wavelengths_nm, e, cube.wavelengths_nm), cube), ""

    def _fit_line(self, cube: Cube, frame: RawFrame, radiance: NDArray, e_now: NDArray | None,
                  flags: list[str]) -> None:
        """Fit the empirical line from this frame's usable panels; a refused panel is flagged."""
        expected = e_now
        if expected is None:
            latlon = self._position(frame)
            if latlon is not None:
                expected = self._seen(clear_sky_irradiance(cube.wavelengths_nm, frame.timestamp, *latlon), cube)
        levels, refl, names, u = [], [], [], []
        taken: list[tuple[int, int, int, int]] = []
        for panel in self.settings.panels:
            rho = self._seen(band_mean(panel.wavelengths_nm, panel.reflectance, cube.wavelengths_nm), cube)
            region = panel.region
            if region is None:
                region = None if expected is None else find_panel(radiance, cube.valid, rho * expected / math.pi,
                                                                  panel.size, taken)
                if region is None:
                    flags.append(f"frame {cube.counter}: panel {panel.name}: not found (no uniform "
                                 f"{panel.size} x {panel.size} square reading its reflectance"
                                 + ("" if expected is not None else ": no light level to look for it with") + ")")
                    continue
            taken.append(region)
            r0, c0, h, w = region
            valid = cube.valid[r0:r0 + h, c0:c0 + w]
            if valid.size == 0 or not valid.all():
                flags.append(f"frame {cube.counter}: panel {panel.name}: {valid.size - int(valid.sum())} of "
                             f"{valid.size} pixels saturated or bad: not used")
                continue
            pix = radiance[:, r0:r0 + h, c0:c0 + w].reshape(cube.bands, -1)
            med = np.median(pix, axis=1)
            spread = panel_spread(pix)
            if spread > PANEL_SPREAD:
                flags.append(f"frame {cube.counter}: panel {panel.name}: not uniform (spread {spread:.2f} > "
                             f"{PANEL_SPREAD}): partly shaded or off the panel: not used")
                continue
            if expected is not None:
                ratio = float(np.median(math.pi * med / (rho * expected)))
                if ratio < SHADE_RATIO:
                    flags.append(f"frame {cube.counter}: panel {panel.name}: reads {ratio:.2f} of the light "
                                 f"expected on it (< {SHADE_RATIO}): shaded: not used")
                    continue
            levels.append(med)
            refl.append(rho)
            names.append(f"{panel.name} {list(region)}" + (" (found)" if panel.region is None else ""))
            u.append(panel.uncertainty)
        if not levels:
            flags.append(f"frame {cube.counter}: no usable panel: the panel line is "
                         + (f"kept from frame {self.line.counter}" if self.line else "not set"))
            return
        y, x = np.array(levels), np.array(refl)
        if len(levels) == 1:
            gain, offset = y[0] / x[0], np.zeros(cube.bands)
        else:
            xm, ym = x.mean(0), y.mean(0)
            gain = ((x - xm) * (y - ym)).sum(0) / ((x - xm) ** 2).sum(0)
            offset = ym - gain * xm
        if not np.all(gain > 0):
            flags.append(f"frame {cube.counter}: panels {', '.join(names)} give a non-positive gain in "
                         f"{int(np.sum(gain <= 0))} bands (panels too alike?): the panel line is "
                         + (f"kept from frame {self.line.counter}" if self.line else "not set"))
            return
        self.line = _Line(gain, offset, cube.counter, e_now, names, float(np.sqrt(np.mean(np.square(u)))))

    # -- orbit: TOA and dark object ----------------------------------------------------------

    def _orbital(self, cube: Cube, frame: RawFrame, radiance: NDArray, u_gain: NDArray,
                 flags: list[str]) -> tuple[Cube, dict, list[str]]:
        latlon = self._position(frame)
        if latlon is None:
            flags.append(f"frame {cube.counter}: no position (frame pose or [reflectance] site): radiance")
            return self._out(cube, radiance, "radiance", "no position for the sun: radiance", u_gain, flags)
        zen = float(sun_position(frame.timestamp, *latlon)[0])
        if zen >= 85.0:
            flags.append(f"frame {cube.counter}: sun {zen:.1f} deg from the zenith: radiance")
            return self._out(cube, radiance, "radiance", "sun too low: radiance", u_gain, flags)
        d = float(earth_sun_distance_au(frame.timestamp))
        mu = math.cos(math.radians(zen))
        e0 = self._seen(solar_irradiance(cube.wavelengths_nm), cube)
        toa = math.pi * radiance * d * d / (e0 * mu)[:, None, None]
        u_toa = np.hypot(u_gain, SOLAR_SPECTRUM_UNCERTAINTY)
        if self.settings.method == "toa":
            return self._out(cube, toa, "toa reflectance", "pi L d^2 / (E0 cos sun zenith), E0 ASTM G173",
                             u_toa, flags, sun_zenith_deg=zen, earth_sun_au=d)
        pix = toa[:, cube.valid]
        if pix.shape[1]:
            frame_dark = np.percentile(pix, DARK_PERCENTILE, axis=1)
            self._dark = frame_dark if self._dark is None else np.minimum(self._dark, frame_dark)
        if self._dark is None:
            flags.append(f"frame {cube.counter}: no valid pixel for a dark object yet: TOA reflectance")
            return self._out(cube, toa, "toa reflectance", "no dark object yet: TOA reflectance", u_toa, flags,
                             sun_zenith_deg=zen, earth_sun_au=d)
        tau, path, t2, u_abs, found = dark_object(self._dark, cube.wavelengths_nm, zen,
                                                  self.settings.dark_object_reflectance)
        if not found:
            flags.append(f"frame {cube.counter}: no dark object in the run yet: climatological aerosol "
                         f"optical depth {tau} at 550 nm assumed")
        rho = (toa - path[:, None, None]) / t2[:, None, None]
        water = water_band_transmittance(rho, cube.valid, cube.wavelengths_nm)
        if water is not None:
            band, t_w = water
            rho[band] /= t_w
        how = (f"dark object: the {DARK_PERCENTILE} % darkest pixels below {DARK_BANDS_NM:.0f} nm (darkest seen so far "
               f"in the run) taken as {self.settings.dark_object_reflectance} reflectance: aerosol optical depth "
               f"{tau:.2f} at 550 nm; clear-sky model (Rayleigh + Angstrom aerosol, single scattering); water band "
               + ("not in the cube" if water is None else f"{cube.wavelengths_nm[water[0]]:.0f} nm divided by its "
                  f"in-scene transmittance {water[1]:.2f} (continuum of the bands beside it); O2 and ozone not corrected"))
        return self._out(cube, rho, "surface reflectance", how, u_toa, flags, absolute=u_abs,
                         aerosol_550=tau, sun_zenith_deg=zen, earth_sun_au=d)

    # -- shared --------------------------------------------------------------------------------

    def _position(self, frame: RawFrame) -> tuple[float, float] | None:
        if frame.pose is not None and len(frame.pose) >= 2:
            return float(frame.pose[0]), float(frame.pose[1])
        return self.settings.site

    @staticmethod
    def _seen(spectrum: NDArray, cube: Cube) -> NDArray[np.float64]:
        """A band-averaged smooth spectrum (a reflectance, the extraterrestrial or the clear-sky
        model's irradiance) as the cube's bands see it (its response, where it has one)."""
        return spectrum if cube.response is None else cube.response @ spectrum

    def _seen_light(self, irradiance: NDArray, cube: Cube) -> NDArray[np.float64]:
        """A measured irradiance, with the atmosphere's absorption lines, as the cube reads a
        white surface under it: the response acts on the signal over the lab panel's (lab
        reflectance), so the lamp's spectrum, with its own lines, is divided out before and put
        back after (plain ``_seen`` leaves 0.045 of error at the O2 band and 0.086 at the
        water band, bench/bench_reflectance.py)."""
        lab = self.calibration.lab_radiance()
        return lab * self._seen(irradiance / lab, cube)

    def _out(self, cube: Cube, data: NDArray, quantity: str, how: str, u_rel: NDArray, flags: list[str],
             absolute: NDArray | None = None, **extra: float) -> tuple[Cube, dict, list[str]]:
        meta = self._meta(quantity, how, u_rel, **extra)
        if absolute is not None:
            meta["uncertainty_absolute"] = [round(float(v), 5) for v in absolute]
        units = "radiance" if quantity == "radiance" else "reflectance"
        return replace(cube, data=np.asarray(data, np.float32), units=units), meta, flags

    def _meta(self, quantity: str, how: str, u_rel: NDArray, **extra: float) -> dict:
        return {"quantity": quantity, "units": RADIANCE_UNITS if quantity == "radiance" else "1",
                "requested_method": self.settings.method, "how": how,
                "uncertainty_relative": [round(float(v), 5) for v in u_rel], **extra}


def panel_spread(pix: NDArray) -> float:
    """(p90 - p10) / median across pixels (B, n) of each pixel's radiance relative to the
    median spectrum, averaged over bands (so noise averages out and a shadow does not)."""
    med = np.median(pix, axis=1)
    level = (pix / np.maximum(np.abs(med), 1e-12)[:, None]).mean(0)
    return float((np.percentile(level, 90) - np.percentile(level, 10)) / np.median(level))


def find_panel(radiance: NDArray, valid: NDArray, expected: NDArray, size: int,
               taken: list[tuple[int, int, int, int]]) -> tuple[int, int, int, int] | None:
    """The ``size`` x ``size`` square (row, col, rows, cols; every other position) of valid,
    uniform pixels (:func:`panel_spread` within ``PANEL_SPREAD``) whose mean radiance is nearest
    ``expected`` (B,), the radiance the panel should read, overlapping no square in ``taken``;
    None when none is within ``FIND_TOLERANCE`` of it (median relative difference over bands)."""
    bands, rows, cols = radiance.shape
    best, best_score = None, FIND_TOLERANCE
    for r in range(0, rows - size + 1, 2):
        for c in range(0, cols - size + 1, 2):
            if any(r < tr + th and tr < r + size and c < tc + tw and tc < c + size for tr, tc, th, tw in taken):
                continue
            if not valid[r:r + size, c:c + size].all():
                continue
            pix = radiance[:, r:r + size, c:c + size].reshape(bands, -1)
            score = float(np.median(np.abs(pix.mean(1) / expected - 1)))
            if score < best_score and panel_spread(pix) <= PANEL_SPREAD:
                best, best_score = (r, c, size, size), score
    return best


def clear_sky_irradiance(wavelengths_nm: NDArray, t: float, lat: float, lon: float) -> NDArray[np.float64]:
    """Global horizontal irradiance (W m-2 nm-1) of the clear-sky model at ``t`` and a place."""
    zen = float(sun_position(t, lat, lon)[0])
    mu = max(math.cos(math.radians(zen)), 0.0)
    d = float(earth_sun_distance_au(t))
    return solar_irradiance(wavelengths_nm) * mu / (d * d) * atmosphere.transmittance(wavelengths_nm, max(mu, 1e-3))


def level_irradiance(reading: IrradianceReading, wavelengths_nm: NDArray, t: float, lat: float,
                     lon: float) -> tuple[NDArray | None, str]:
    """A tilted cosine sensor's reading as a level one would read it (module docstring)."""
    zen, az = sun_position(t, lat, lon)
    cos_inc, cos_tilt = incidence_cosine(float(zen), float(az), *reading.attitude_deg)
    if cos_inc < MIN_INCIDENCE_COS:
        return None, f"sensor face {math.degrees(math.acos(max(min(cos_inc, 1), -1))):.0f} deg from the sun"
    mu = math.cos(math.radians(float(zen)))
    f = atmosphere.diffuse_fraction(wavelengths_nm, float(zen))
    return reading.irradiance / ((1 - f) * cos_inc / mu + f * (1 + cos_tilt) / 2), ""


def water_band_transmittance(rho: NDArray, valid: NDArray, wavelengths_nm: NDArray
                             ) -> tuple[int, float] | None:
    """(band, transmittance) of the water-vapour band at 940 nm estimated in the scene: the
    median over valid pixels of the band's value over the straight line between the nearest
    bands outside ``WATER_BAND_NM`` (continuum-interpolated band ratio, Green et al. 1989);
    None when the cube has no band inside it with one on each side."""
    wl = np.asarray(wavelengths_nm, float)
    lo, hi = WATER_BAND_NM
    inside = np.flatnonzero((wl > lo) & (wl < hi))
    below, above = np.flatnonzero(wl <= lo - 10), np.flatnonzero(wl >= hi)
    if inside.size != 1 or not below.size or not above.size or not valid.any():
        return None
    b, left, right = int(inside[0]), int(below[-1]), int(above[0])
    w = (wl[b] - wl[left]) / (wl[right] - wl[left])
    continuum = (1 - w) * rho[left][valid] + w * rho[right][valid]
    ratio = float(np.median(rho[b][valid] / np.maximum(continuum, 1e-6)))
    return (b, ratio) if 0.2 < ratio < 1.0 else None


def dark_object(dark: NDArray, wavelengths_nm: NDArray, sun_zenith_deg: float,
                dark_reflectance: float) -> tuple[float, NDArray, NDArray, NDArray, bool]:
    """(aerosol optical depth at 550 nm, path reflectance (B,), two-way transmittance (B,),
    absolute uncertainty (B,), whether a dark object was found) from the TOA reflectance
    ``dark`` (B,) of the darkest pixels (module docstring). When the darkest pixels do not
    look like a dark object under a clear sky (the model misses them by more than
    ``DARK_FIT_RMS``, or needs the grid's largest optical depth), the climatological aerosol
    (``atmosphere.AEROSOL_550``) is used and ``found`` is False."""
    wl = np.asarray(wavelengths_nm, float)
    mu = math.cos(math.radians(sun_zenith_deg))
    use = wl < DARK_BANDS_NM

    def model(tau: float, rho: float) -> tuple[NDArray, NDArray, NDArray]:
        path = atmosphere.path_reflectance(wl, sun_zenith_deg, 0.0, tau_550=tau)
        t2 = atmosphere.transmittance(wl, mu, tau) * atmosphere.transmittance(wl, 1.0, tau)
        return path, t2, path + t2 * rho

    def fit(rho: float) -> float:
        cost = [np.sum((model(tau, rho)[2][use] - dark[use]) ** 2) for tau in AEROSOL_GRID]
        return float(AEROSOL_GRID[int(np.argmin(cost))])

    tau = fit(dark_reflectance)
    path, t2, pred = model(tau, dark_reflectance)
    found = tau < AEROSOL_GRID[-1] and float(np.sqrt(np.mean((pred[use] - dark[use]) ** 2))) <= DARK_FIT_RMS
    if not found:  # the darkest pixels are not a dark object: the climatological aerosol instead
        tau = atmosphere.AEROSOL_550
        path, t2, _ = model(tau, dark_reflectance)
    # the dark object's reflectance is an assumption: its uncertainty moves the fitted path
    alt = [model(fit(max(dark_reflectance + s * DARK_OBJECT_UNCERTAINTY, 0.0)), 0.0)[0] for s in (-1, 1)]
    u_abs = np.abs(alt[1] - alt[0]) / 2 / t2
    return tau, path, t2, u_abs, found
