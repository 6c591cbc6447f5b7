"""A run's wiring: which instrument, calibration, frame source and stages, built from config.

Kept apart from the command line so benchmarks, the HIL harness and tests build exactly what
``onboard run`` builds.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import ArrayLike

from onboard import sysinfo, threads
from onboard.compress.ccsds123 import COMPILED as ccsds123_compiled
from onboard.compress.cube_coding import CubeCoding
from onboard.config import Config, ResidueConfig
from onboard.engines.select import EngineOptions
from onboard.formats.bundle import find_bundle
from onboard.formats.calfile import Calibration
from onboard.formats.types import Cube, Frame, ResidueMap
from onboard.runtime.loop import LEVELS, LoopStats
from onboard.runtime.pipeline import Pipeline, StageOptions
from onboard.runtime.sensors import SENSORS, SessionError
from onboard.scene.farmland import nominal_endmembers
from onboard.scene.library import SpectralLibrary
from onboard.scene.library import load as load_library
from onboard.sources.base import FrameSource, Truth
from onboard.sources.irradiance import (
    IrradianceError,
    IrradianceLog,
    SerialIrradiance,
    read_irradiance_file,
)
from onboard.sources.replay import write_frame
from onboard.stages.classify import classify_classical
from onboard.stages.denoise import SubspaceDenoiseConfig, denoise_subspace
from onboard.stages.learned import LearnedStages, learned_stages
from onboard.stages.reflectance import QUANTITY, ReflectanceStage, settings_from
from onboard.stages.residue import UnmixConfig
from onboard.stages.screen import ScreenRule


@dataclass
class Session:
    sensor: str
    instrument: str
    simulated: bool
    frame_shape: tuple[int, ...]
    cube_shape: list[int]
    pipeline: Pipeline
    source: FrameSource
    notes: list[str] = field(default_factory=list)
    engine_description: str = "classical stages"

    def health(self, stats: LoopStats, level: int) -> dict:
        """The housekeeping product's body: counters, latency percentiles, degrade level,
        engine, memory and temperatures."""
        return {
            "frames": stats.frames,
            "deadline_misses": stats.deadline_misses,
            "degrade_level": level,
            "degrade_name": LEVELS[level],
            "latency_s": stats.percentiles(),
            "engine": self.engine_description,
            "system": sysinfo.snapshot(),
        }

    record: str | None = None
    faster: Callable[[], tuple[Callable, Callable] | None] | None = None
    _nominal: tuple[Callable, Callable] | None = None

    def faster_inference(self, enable: bool) -> bool:
        """Deadline step 2: swap the learned stages for their INT8 variants (and back).
        Returns False when there is nothing faster to switch to."""
        if enable:
            fast = self.faster() if self.faster is not None else None
            if fast is None:
                return False
            self._nominal = (self.pipeline.denoise, self.pipeline.classify)
            self.pipeline.denoise, self.pipeline.classify = fast
            return True
        if self._nominal is not None:
            self.pipeline.denoise, self.pipeline.classify = self._nominal
            self._nominal = None
        return True

    def frames(self, n: int) -> Iterator[tuple[Frame, Truth | None]]:
        for i, item in enumerate(self.source):
            if i >= n:
                return
            if self.record is not None:
                for f in item[0] if isinstance(item[0], list) else [item[0]]:
                    write_frame(self.record, f)
            yield item


def classical_classifier(sensor: str, wavelengths_nm: ArrayLike, residue: ResidueConfig,
                         library: SpectralLibrary | None = None) -> Callable[[Cube], ResidueMap]:
    """The classical residue stage as a mission's ``[residue]`` configures it for ``sensor``:
    FCLS against the endmember bundles of ``library``'s train split (default: the shipped
    library) seen through the cube's response, the sensor's brightness mode, the configured
    context (also what a learned classifier is measured against: ``export.build``,
    ``bench/bench_residue.py``)."""
    endmembers = nominal_endmembers(np.asarray(wavelengths_nm, dtype=float), library)
    unmix = UnmixConfig(brightness=residue.for_sensor(sensor))
    return lambda cube: classify_classical(cube, endmembers, unmix, residue.context_px)


def reflectance_stage(config: Config, cal: Calibration, cube_shape: list[int],
                      notes: list[str], simulated: tuple[IrradianceLog, Callable[[], int]] | None = None
                      ) -> ReflectanceStage:
    """The mission's ``[reflectance]`` stage with its irradiance sensor (a file read now, or a
    serial port read at each frame, or ``simulated``: the sensor under a drone's [sky]); a
    setting that cannot work is refused here, by name."""
    r = config.reflectance
    log, poll = None, None
    try:
        if r.irradiance_file:
            log = read_irradiance_file(r.irradiance_file)
            notes.append(f"irradiance: {len(log.readings)} readings from {r.irradiance_file}")
        elif r.irradiance_port:
            serial = SerialIrradiance(r.irradiance_port, np.asarray(r.irradiance_wavelengths_nm, float))
            log, poll = serial.log, serial.poll
            notes.append(f"irradiance: sensor on {r.irradiance_port}")
        elif simulated is not None:
            log, poll = simulated
            notes.append("irradiance: the simulated sensor on the drone's back, under [sky]")
        stage = ReflectanceStage(cal, settings_from(r, cube_shape), log, poll)
    except (IrradianceError, ValueError, OSError) as exc:
        raise SessionError(str(exc)) from exc
    if r.method != "lab":
        have = "with" if cal.radiance_gain is not None else "WITHOUT (products stay lab reflectance)"
        notes.append(f"reflectance: {r.method} ({QUANTITY[r.method]}), calibration {have} a radiance gain")
    return stage


def build_session(config: Config) -> Session:
    """Everything ``onboard run`` needs, from a validated Config. Sets the process's thread
    pools first (``[run] threads``, :mod:`onboard.threads`): a library caller gets them too."""
    threads.configure(config.run.threads)
    sensor = SENSORS[config.run.sensor]
    setup = sensor.setup(config)
    if config.run.replay:
        setup = sensor.replay(config.run.replay, setup)
    cal, notes = setup.calibration, setup.notes
    denoise_config = SubspaceDenoiseConfig.for_sensor(sensor.name)

    def denoise(cube):
        return denoise_subspace(cube, denoise_config)

    classify = classical_classifier(config.run.sensor, cal.wavelengths_nm, config.residue,
                                    load_library().only(config.scene.sources))

    engine_description = "classical stages"
    model_versions: dict = {}
    faster = None
    if config.engine.engine != "classical":
        bundle, why = find_bundle(config.run.bundle)
        if bundle is None:
            notes.append(f"models: {why}")
        engine_options = EngineOptions(**dataclasses.asdict(config.engine))
        stages = learned_stages(bundle, cal.wavelengths_nm, denoise, classify, engine_options, denoise_config)
        classical = (denoise, classify)
        learned = {"denoise": config.denoise.for_sensor(config.run.sensor) == "learned",
                   "classify": config.residue.method == "learned"}

        def chosen(s: LearnedStages) -> tuple[Callable, Callable]:
            """The learned stages the mission asks for, the classical ones for the others."""
            return (s.denoise if learned["denoise"] else classical[0],
                    s.classify if learned["classify"] else classical[1])

        if any(sel.engine is not None and sel.artifact is not None and sel.artifact.precision != "int8"
               for sel in stages.selections):
            def faster() -> tuple[Callable, Callable] | None:
                fast = learned_stages(bundle, cal.wavelengths_nm, *classical,
                                      dataclasses.replace(engine_options, precision="int8"), denoise_config)
                return chosen(fast) if any(s.engine for s in fast.selections) else None
        denoise, classify = chosen(stages)
        for stage, section, method in (("denoise", "denoise", config.denoise.method),
                                       ("classify", "residue", config.residue.method)):
            if not learned[stage]:
                stages.notes = [n for n in stages.notes if not n.startswith(f"{stage}:")]
                stages.notes.append(f"{stage}: classical stage ([{section}] method = {method!r} "
                                    f"for {config.run.sensor})")
        notes.extend(stages.notes)
        engine_description = "; ".join(stages.notes)
        if bundle is not None:
            # the bundle's name and manifest hash, not this machine's path to it (issue 19)
            model_versions = {"bundle": bundle.root.name, "manifest_sha256": bundle.manifest_sha256,
                              "producer": bundle.manifest.producer}
    p = config.products
    if "ccsds123" in (p.cube_coding, p.residue_coding) and not ccsds123_compiled:
        notes.append("products: CCSDS 123 runs as plain Python (about 0.05 Msamples/s, seconds a frame): "
                     "install onboard[compress] (numba) for about 14 Msamples/s")
    options = StageOptions(quicklook=p.quicklook, cube=p.cube, cube_float16=p.cube_float16,
                           cube_coding=CubeCoding(p.cube_coding, p.cube_step, p.cube_max_error),
                           residue_coding=p.residue_coding, raw=p.raw)
    pipeline = Pipeline(cal, denoise, classify, setup.saturation, options, model_versions=model_versions,
                        screen_rule=ScreenRule(config.screen.max_cloud_share, config.screen.min_valid_share,
                                               config.screen.cloudy_frames, config.screen.max_blur_px),
                        reflectance=reflectance_stage(config, cal, setup.cube_shape, notes,
                                                     setup.irradiance),
                        value_rule=config.value.rule)
    return Session(sensor.name, cal.instrument, setup.simulated, setup.frame_shape, setup.cube_shape, pipeline,
                   setup.source, notes, engine_description=engine_description, record=config.run.record,
                   faster=faster)
