"""The instruments a session can fly, one object each: what differs between an ImSPOC snapshot
spectrometer and a push-broom is said here, once, instead of in tests of the sensor's name
across the session.

A :class:`Sensor` builds its calibration (the mission's file, or the simulated instrument's
ground calibration), its frame source, the shapes of its frames and cubes and its saturation
level. ``SENSORS[name]`` is the one for ``[run] sensor``.
"""

from __future__ import annotations

import hashlib
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Literal

import numpy as np
from numpy.typing import ArrayLike

from onboard.config import Config
from onboard.errors import OnboardError
from onboard.formats import calfile
from onboard.formats.calfile import Calibration, CalibrationFileError
from onboard.physics.imspoc import ImspocInstrument, default_instrument, imspoc_uv2
from onboard.physics.pushbroom import finch_like
from onboard.runtime.sky import SimulatedIrradiance, SkyError, flight_for
from onboard.scene.clouds import CloudGeometry, cloudy
from onboard.scene.farmland import FarmlandScene
from onboard.scene.library import load as load_library
from onboard.sources.base import FrameSource, SimulatedImspoc, SimulatedPushbroom, Tile
from onboard.sources.irradiance import IrradianceLog
from onboard.sources.replay import ReplaySource
from onboard.sources.scene import SceneTrack, read_scene
from onboard.sources.simulated import calibrate_imspoc, calibrate_pushbroom
from onboard.sysinfo import cache_root

if TYPE_CHECKING:
    from onboard.scene.sky import Flight


class SessionError(OnboardError, RuntimeError):
    """The run cannot be set up; the message says what to change."""


@dataclass
class SensorSetup:
    """What a sensor brings to a session."""

    calibration: Calibration
    source: FrameSource
    frame_shape: tuple[int, ...]
    cube_shape: list[int]
    saturation: int
    simulated: bool = True
    notes: list[str] = field(default_factory=list)
    #: (log, poll) of the simulated irradiance sensor under a drone's ``[sky]``, else None
    irradiance: tuple[IrradianceLog, Callable[[], int]] | None = None


class Sensor(ABC):
    """One kind of instrument."""

    name: ClassVar[Literal["imspoc", "pushbroom"]]

    @abstractmethod
    def setup(self, config: Config) -> SensorSetup:
        """Calibration, frame source and shapes for the mission ``config``."""

    def replay(self, folder: str, setup: SensorSetup) -> SensorSetup:
        """``setup`` with its frames read from recorded ``folder`` instead of simulated."""
        raise SessionError(f"replay reads ImSPOC frames; {self.name} replay is not supported yet")


class Imspoc(Sensor):
    """A multi-aperture Fabry-Perot snapshot spectrometer: one detector, a grid of thumbnails.
    What its cubes need from the denoiser: ``SubspaceDenoiseConfig.for_sensor``."""

    name = "imspoc"

    def setup(self, config: Config) -> SensorSetup:
        make = default_instrument if config.imspoc.preset == "default" else imspoc_uv2
        inst: ImspocInstrument = make(seed=config.run.seed)
        if config.imspoc.exposure_s is not None:
            inst.exposure_s = config.imspoc.exposure_s
        notes = []
        if config.run.calibration:
            cal = _read_calibration(config.run.calibration, self.name)
            problem = cal.flight_problem()
            if problem is None and cal.layout is not None \
                    and tuple(cal.layout.detector_shape) != tuple(inst.layout.detector_shape):
                problem = (f"its detector is {tuple(cal.layout.detector_shape)}, the simulated "
                           f"{inst.name}'s is {tuple(inst.layout.detector_shape)}")
            if problem:
                raise SessionError(f"{config.run.calibration}: {problem}")
            notes.append(f"calibration: {config.run.calibration}")
            if len(cal.wavelengths_nm) != config.imspoc.n_bands:
                notes.append(f"bands: the calibration file sets {len(cal.wavelengths_nm)} bands; "
                             f"[imspoc] n_bands ({config.imspoc.n_bands}) applies only to a "
                             "simulated calibration")
        else:
            cal, path = simulated_calibration(
                self.name, f"{config.imspoc.preset}:{config.run.seed}:{config.imspoc.n_bands}",
                lambda: calibrate_imspoc(inst, n_bands=config.imspoc.n_bands))
            notes.append(f"calibration: simulated ground calibration of the simulated instrument ({path})")
        notes.append(f"sensor: simulated {inst.name} (no camera configured), "
                     f"{len(inst.layout)} interferometers, detector {inst.layout.detector_shape}")
        tiles = _tiles(config, inst.scene_grid(), inst.thumb_shape, inst.name, inst.band_nm, notes)
        # the simulated frames are taken now (a product dated 1970 is wrong); a replay keeps its
        # recorded times and a test that builds the source itself its fixed ones
        start = config.sky.start_unix() or time.time()
        flight = _flight(config, inst.scene_grid(), start, notes)
        source = SimulatedImspoc(inst, tiles, cal.wavelengths_nm, seed=config.run.seed, start_time=start,
                                 flight=flight)
        return SensorSetup(cal, source, inst.layout.detector_shape,
                           [len(cal.wavelengths_nm), *inst.thumb_shape],
                           inst.detector_spec.max_dn - 1, notes=notes,
                           irradiance=_irradiance(config, flight, source))

    def replay(self, folder: str, setup: SensorSetup) -> SensorSetup:
        try:
            source = ReplaySource(folder)
        except FileNotFoundError as exc:
            raise SessionError(str(exc)) from exc
        notes = [n for n in setup.notes if not n.startswith(("sensor:", "sky:"))]  # a replay has its own light
        notes.append(f"sensor: replay of {len(source.stems)} recorded frames from {folder}")
        return SensorSetup(setup.calibration, source, setup.frame_shape, setup.cube_shape,
                           setup.saturation, simulated=False, notes=notes)


class Pushbroom(Sensor):
    """A push-broom imaging spectrometer: one detector row per cross-track pixel, one column per
    band; a column's gain error stripes the whole image column."""

    name = "pushbroom"

    def setup(self, config: Config) -> SensorSetup:
        pb = finch_like(cross_track=config.pushbroom.cross_track, seed=config.run.seed)
        cal, path = simulated_calibration(
            self.name, f"{config.pushbroom.cross_track}:{config.run.seed}", lambda: calibrate_pushbroom(pb))
        notes = [f"sensor: simulated {pb.name} push-broom (no camera configured), "
                 f"{pb.cross_track} cross-track x {len(pb.wavelengths_nm)} bands",
                 f"calibration: simulated ground calibration ({path})"]
        lines = config.pushbroom.lines_per_frame
        sees = (float(pb.wavelengths_nm[0]), float(pb.wavelengths_nm[-1]))
        start = config.sky.start_unix() or time.time()
        flight = _flight(config, pb.wavelengths_nm, start, notes)
        source = SimulatedPushbroom(pb, _tiles(config, pb.wavelengths_nm, (lines, pb.cross_track), pb.name,
                                               sees, notes), seed=config.run.seed,
                                    start_time=start, flight=flight)
        return SensorSetup(cal, source, tuple(pb.detector_spec.shape),
                           [len(pb.wavelengths_nm), lines, pb.cross_track],
                           pb.detector_spec.max_dn - 1, notes=notes,
                           irradiance=_irradiance(config, flight, source))


#: ``[run] sensor`` -> the sensor.
SENSORS: dict[str, Sensor] = {s.name: s for s in (Imspoc(), Pushbroom())}


def _flight(config: Config, grid: ArrayLike, start: float, notes: list[str]) -> Flight | None:
    """The ``[sky]`` flight the simulated sensor flies (None: the lab lamp)."""
    try:
        return flight_for(config, np.asarray(grid, dtype=float), start, notes)
    except SkyError as exc:
        raise SessionError(str(exc)) from exc


def _irradiance(config: Config, flight: Flight | None, source: SimulatedImspoc | SimulatedPushbroom
                ) -> tuple[IrradianceLog, Callable[[], int]] | None:
    """A drone's simulated irradiance sensor, read as far as ``source`` has flown."""
    if flight is None or config.sky.platform != "drone":
        return None
    sensor = SimulatedIrradiance(flight, lambda: source.last_timestamp, config.sky.irradiance_hz,
                                 config.sky.irradiance_noise, seed=config.run.seed)
    return sensor.log, sensor.poll


def _read_calibration(path: str, kind: str) -> Calibration:
    try:
        cal = calfile.read(path)
    except CalibrationFileError as exc:
        raise SessionError(str(exc)) from exc
    if cal.kind != kind:
        raise SessionError(f"{path} calibrates a {cal.kind}, not an {kind}")
    return cal


def _tiles(config: Config, grid: ArrayLike, shape: tuple[int, int], instrument: str,
           sees_nm: tuple[float, float], notes: list[str]) -> Iterator[Tile]:
    """The footprints the simulated instrument flies over: the mission's real cube
    (``[run] scene``, its notes added to ``notes``), else the simulated farmland; under the
    ``[clouds]`` of the mission when it sets a cover."""
    tiles: Iterator[Tile]
    if config.run.scene:
        track = SceneTrack(read_scene(config.run.scene), np.asarray(grid, dtype=float), shape,
                           instrument, sees_nm)
        notes.extend(track.notes)
        tiles = iter(track)
    else:
        scene = FarmlandScene.generate(size=config.scene.size, seed=config.scene.seed, split=config.scene.split,
                                       library=load_library().only(config.scene.sources))
        tiles = scene.track(grid, shape)
    c = config.clouds
    if c.cover is None:
        return tiles
    cover = c.cover if c.cover_max is None else (c.cover, c.cover_max)
    notes.append(f"clouds: {c.kind} clouds over {100 * c.cover:.0f}"
                 + (f"-{100 * c.cover_max:.0f}" if c.cover_max is not None else "")
                 + " % of each frame, with their shadows (onboard/scene/clouds.py)")
    geometry = CloudGeometry(c.cloud_height_m, c.gsd_m, c.sun_zenith_deg, c.sun_azimuth_deg)
    return cloudy(tiles, cover, c.kind, seed=c.seed, geometry=geometry)


#: The modules a simulated calibration is computed by: their source is part of its cache key.
_CALIBRATION_SOURCES = ("physics", "sources/simulated.py", "formats/calfile.py", "stages/radiometric.py",
                        "stages/reconstruct.py")


def _source_digest() -> str:
    """Digest of the code that makes a simulated calibration, so that a cached file made by
    other code (an upgrade, a local change) is never taken for this code's."""
    root = Path(__file__).parents[1]  # onboard/
    h = hashlib.sha256()
    for name in _CALIBRATION_SOURCES:
        p = root / name
        for f in sorted(p.rglob("*.py")) if p.is_dir() else [p]:
            h.update(f.relative_to(root).as_posix().encode() + b"\0" + f.read_bytes())
    return h.hexdigest()


def simulated_calibration(kind: str, key: str, make: Callable[[], Calibration]) -> tuple[Calibration, str]:
    """The simulated instrument's calibration, made once and cached on disk (it takes ~1 s),
    under a key of the code that made it."""
    digest = hashlib.sha256(f"{_source_digest()}:{kind}:{key}".encode()).hexdigest()[:16]
    path = cache_root() / f"simulated-{kind}-{digest}.cal"
    if path.is_file():
        try:
            return calfile.read(path), str(path)
        except CalibrationFileError:
            path.unlink()
    cal = make()
    path.parent.mkdir(parents=True, exist_ok=True)
    cal.write(path)
    return cal, str(path)
