"""A run's wiring: which instrument, calibration, frame source and stages, built from config.

Kept apart from the command line so benchmarks, the HIL harness and tests build exactly what
``onboard run`` builds.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from numpy.typing import ArrayLike

from onboard import calfile, sysinfo
from onboard.bundle import find_bundle
from onboard.calfile import Calibration, CalibrationFileError
from onboard.config import Config, ResidueConfig
from onboard.engines.select import EngineOptions
from onboard.loop import LEVELS, LoopStats
from onboard.physics.imspoc import ImspocInstrument, default_instrument, imspoc_uv2
from onboard.physics.pushbroom import finch_like
from onboard.pipeline import Pipeline, StageOptions
from onboard.replay import ReplaySource, write_frame
from onboard.scene.farmland import FarmlandScene, nominal_endmembers
from onboard.scene.library import SpectralLibrary
from onboard.scene.library import load as load_library
from onboard.simulated import calibrate_imspoc, calibrate_pushbroom
from onboard.sources import FrameSource, SimulatedImspoc, SimulatedPushbroom, Tile, Truth
from onboard.stages.classify import classify_classical
from onboard.stages.denoise import SubspaceDenoiseConfig, denoise_subspace
from onboard.stages.learned import LearnedStages, learned_stages
from onboard.stages.residue import UnmixConfig
from onboard.types import Cube, Frame, ResidueMap


class SessionError(RuntimeError):
    """The run cannot be set up; the message says what to change."""


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


def _cache_dir() -> Path:
    root = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(root) / "onboard"


#: The modules a simulated calibration is computed by: their source is part of its cache key.
_CALIBRATION_SOURCES = ("physics", "simulated.py", "calfile.py", "stages/radiometric.py",
                        "stages/reconstruct.py")


def _source_digest() -> str:
    """Digest of the code that makes a simulated calibration, so that a cached file made by
    other code (an upgrade, a local change) is never taken for this code's."""
    root = Path(__file__).parent
    h = hashlib.sha256()
    for name in _CALIBRATION_SOURCES:
        p = root / name
        for f in sorted(p.rglob("*.py")) if p.is_dir() else [p]:
            h.update(f.relative_to(root).as_posix().encode() + b"\0" + f.read_bytes())
    return h.hexdigest()


def _simulated_calibration(kind: str, key: str, make) -> tuple[Calibration, str]:
    """The simulated instrument's calibration, made once and cached on disk (it takes ~1 s),
    under a key of the code that made it."""
    digest = hashlib.sha256(f"{_source_digest()}:{kind}:{key}".encode()).hexdigest()[:16]
    path = _cache_dir() / f"simulated-{kind}-{digest}.cal"
    if path.is_file():
        try:
            return calfile.read(path), str(path)
        except CalibrationFileError:
            path.unlink()
    cal = make()
    path.parent.mkdir(parents=True, exist_ok=True)
    cal.write(path)
    return cal, str(path)


def _tiles(config: Config, grid, shape: tuple[int, int]) -> Iterator[Tile]:
    scene = FarmlandScene.generate(size=config.scene.size, seed=config.scene.seed, split=config.scene.split,
                                   library=load_library().only(config.scene.sources))
    return scene.track(grid, shape)


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


def build_session(config: Config) -> Session:
    """Everything ``onboard run`` needs, from a validated Config."""
    notes: list[str] = []
    # the ImSPOC reconstructs each pixel from many detector pixels: no column stripes survive
    denoise_config = SubspaceDenoiseConfig(destripe="none" if config.run.sensor == "imspoc" else "gain")

    def denoise(cube):
        return denoise_subspace(cube, denoise_config)

    if config.run.sensor == "imspoc":
        inst: ImspocInstrument = (default_instrument if config.imspoc.preset == "default" else imspoc_uv2)(
            seed=config.run.seed)
        if config.imspoc.exposure_s is not None:
            inst.exposure_s = config.imspoc.exposure_s
        if config.run.calibration:
            try:
                cal = calfile.read(config.run.calibration)
            except CalibrationFileError as exc:
                raise SessionError(str(exc)) from exc
            if cal.kind != "imspoc":
                raise SessionError(f"{config.run.calibration} calibrates a {cal.kind}, not an imspoc")
            notes.append(f"calibration: {config.run.calibration}")
        else:
            cal, path = _simulated_calibration(
                "imspoc", f"{config.imspoc.preset}:{config.run.seed}:{config.imspoc.n_bands}",
                lambda: calibrate_imspoc(inst, n_bands=config.imspoc.n_bands))
            notes.append(f"calibration: simulated ground calibration of the simulated instrument ({path})")
        notes.append(f"sensor: simulated {inst.name} (no camera configured), "
                     f"{len(inst.layout)} interferometers, detector {inst.layout.detector_shape}")
        source: FrameSource = SimulatedImspoc(inst, _tiles(config, inst.scene_grid(), inst.thumb_shape), cal.wavelengths_nm,
                                 seed=config.run.seed)
        frame_shape: tuple[int, ...] = inst.layout.detector_shape
        cube_shape = [len(cal.wavelengths_nm), *inst.thumb_shape]
        saturation = inst.detector_spec.max_dn - 1
    else:
        pb = finch_like(cross_track=config.pushbroom.cross_track, seed=config.run.seed)
        cal, path = _simulated_calibration(
            "pushbroom", f"{config.pushbroom.cross_track}:{config.run.seed}", lambda: calibrate_pushbroom(pb))
        notes.append(f"sensor: simulated {pb.name} push-broom (no camera configured), "
                     f"{pb.cross_track} cross-track x {len(pb.wavelengths_nm)} bands")
        notes.append(f"calibration: simulated ground calibration ({path})")
        fine = pb.wavelengths_nm
        source = SimulatedPushbroom(pb, _tiles(config, fine, (config.pushbroom.lines_per_frame, pb.cross_track)),
                                    seed=config.run.seed)
        frame_shape = tuple(pb.detector_spec.shape)
        cube_shape = [len(pb.wavelengths_nm), config.pushbroom.lines_per_frame, pb.cross_track]
        saturation = pb.detector_spec.max_dn - 1

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
            model_versions = {"bundle": str(bundle.root), "producer": bundle.manifest.producer}
    options = StageOptions(quicklook=config.products.quicklook, cube=config.products.cube,
                           cube_float16=config.products.cube_float16)
    pipeline = Pipeline(cal, denoise, classify, saturation, options, model_versions=model_versions)
    simulated = True
    if config.run.replay:
        if config.run.sensor != "imspoc":
            raise SessionError("replay reads ImSPOC frames; push-broom replay is not supported yet")
        try:
            source = ReplaySource(config.run.replay)
        except FileNotFoundError as exc:
            raise SessionError(str(exc)) from exc
        simulated = False
        notes = [n for n in notes if not n.startswith("sensor:")]
        notes.append(f"sensor: replay of {len(source.stems)} recorded frames from {config.run.replay}")
    return Session(config.run.sensor, cal.instrument, simulated, frame_shape, cube_shape, pipeline, source,
                   notes, engine_description=engine_description, record=config.run.record, faster=faster)
