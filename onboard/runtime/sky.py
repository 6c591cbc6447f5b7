"""``onboard run`` under a simulated sky (``[sky]``): the flight the simulated sensors fly and
the drone's simulated irradiance sensor, so every reflectance method runs end to end through
the real command line (the bench and the tests build the same objects themselves).

The sky is the simulator's (onboard/scene/sky.py: pvlib, the ground extra); it is imported
only when ``[sky] platform`` is set, never by a flight with a camera.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

from onboard.config import Config
from onboard.errors import OnboardError
from onboard.sources.irradiance import IrradianceLog, IrradianceReading

if TYPE_CHECKING:
    from onboard.scene.sky import Flight

#: Bands of the simulated irradiance sensor (nm): a 400-1050 nm spectrometer at 5 nm.
SENSOR_NM = np.arange(400.0, 1051.0, 5.0)


class SkyError(OnboardError, ValueError):
    """A ``[sky]`` that cannot be flown; the message says why."""


def flight_for(config: Config, scene_grid_nm: NDArray, start: float, notes: list[str]) -> Flight | None:
    """The :class:`onboard.scene.sky.Flight` of ``[sky]`` from ``start`` (Unix s), with the
    ``[[reflectance.panel]]`` panels that have a region laid in ``[reflectance] panel_frames``
    (their spectra interpolated onto ``scene_grid_nm``); None without a sky."""
    s = config.sky
    if s.platform == "none":
        return None
    if importlib.util.find_spec("pvlib") is None:
        raise SkyError("[sky] simulates the light with pvlib, which is not installed: "
                       "pip install 'onboard[ground]' (or remove [sky])")
    from onboard.scene.sky import Flight, PanelPlacement, Sky

    sky = Sky(s.lat_deg, s.lon_deg, start, steps=tuple((a, f) for a, f in s.steps),
              clouds=tuple((a, b, tau) for a, b, tau in s.clouds), turbidity=s.turbidity,
              water_cm=s.water_cm, ozone=s.ozone)
    r = config.reflectance
    panels = tuple(PanelPlacement(np.interp(scene_grid_nm, p["wavelengths_nm"], p["reflectance"]),
                                  tuple(p["region"]))
                   for p in r.panels if p["region"] is not None and s.platform == "drone")
    flight = Flight(sky, s.platform, s.altitude_m, s.sway_deg if s.platform == "drone" else 0.0,
                    panels=panels, panel_frames=tuple(r.panel_frames) if panels else ())
    zenith, _ = sky.sun(start)
    notes.append(f"sky: simulated {s.platform} at {s.lat_deg:g}, {s.lon_deg:g} deg, sun zenith "
                 f"{zenith:.1f} deg at the start, {len(s.steps)} irradiance steps, {len(s.clouds)} "
                 f"clouds, {len(panels)} panels laid in frames {list(flight.panel_frames)} "
                 "(onboard/scene/sky.py, SPECTRL2)")
    return flight


@dataclass
class SimulatedIrradiance:
    """The drone's irradiance sensor under the flight's sky, read up to just past the newest
    frame the source made (``clock()``): a live sensor's readings as the stage polls them."""

    flight: Flight
    clock: Callable[[], float | None]
    rate_hz: float
    noise: float
    seed: int = 0
    log: IrradianceLog = field(default_factory=lambda: IrradianceLog(SENSOR_NM))
    _next: float | None = None
    _rng: np.random.Generator = field(init=False)

    def __post_init__(self) -> None:
        self._rng = np.random.default_rng(self.seed)

    def poll(self) -> int:
        """Add the readings up to one second past the newest frame; returns how many."""
        newest = self.clock()
        if newest is None:
            return 0
        start = self._next if self._next is not None else newest - 1.0
        end = newest + 1.0
        if end <= start:
            return 0
        times = np.arange(start, end, 1.0 / self.rate_hz)
        for t in times:
            att = self.flight.attitude(float(t))
            e = self.flight.sky.irradiance_sensor(float(t), SENSOR_NM, att, self._rng, self.noise)
            self.log.add(IrradianceReading(float(t), e, att))
        if times.size:
            self._next = float(times[-1]) + 1.0 / self.rate_hz
        return int(times.size)
