"""The sensor feeder: raw frames into the payload's drop folder at the scenario's rate.

Frames come from the same simulated instrument and farmland the payload's configuration
describes (``onboard.runtime.session.build_session``, so the physics is defined once), or from a
folder of recorded frames (``onboard/sources/replay.py`` format). They are made before the scenario
starts, so the feeder's own CPU use does not disturb the payload's timing, and written at
``start_s + i / rate_hz`` in the replay format: the image first, then the sidecar, each by
an atomic rename, so the payload never sees half a frame unless the scenario asks for one.

Faults: a counter in ``corrupt`` gets its image truncated to half (the payload must report
it and go on); one in ``saturate`` has every pixel at full scale (no valid pixel).
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import numpy as np

from hil.scenario import SensorSpec
from onboard.config import from_dict
from onboard.formats.types import RawFrame
from onboard.runtime.session import build_session
from onboard.sources.replay import ReplaySource, write_frame


def make_frames(payload_config: dict, n: int, recorded: Path | None = None) -> list[RawFrame]:
    """``n`` raw frames: recorded ones (cycled) or simulated by the payload's configuration."""
    if recorded is not None:
        source = ReplaySource(recorded, loop=True)
        frames = []
        for i, (frame, _) in enumerate(source):
            if i >= n:
                break
            frames.append(frame)
        return frames
    # only the instrument and scene matter here: no models, no link
    doc = {k: v for k, v in payload_config.items() if k not in ("link", "engine")}
    config = from_dict({**doc, "engine": {"engine": "classical"}})
    session = build_session(config)
    return [frame for frame, _truth in session.frames(n)]  # type: ignore[misc]


class SensorFeeder:
    """Writes ``frames`` into ``drop`` on the scenario's schedule; ``written[counter]`` is
    the time (time.monotonic()) each frame became visible to the payload."""

    def __init__(self, frames: list[RawFrame], spec: SensorSpec, drop: Path, staging: Path,
                 t0: float) -> None:
        self.frames = frames
        self.spec = spec
        self.drop = drop
        self.staging = staging
        self.t0 = t0
        self.written: dict[int, float] = {}
        self.damaged: set[int] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sensor", daemon=True)
        drop.mkdir(parents=True, exist_ok=True)
        staging.mkdir(parents=True, exist_ok=True)

    @property
    def done(self) -> bool:
        return len(self.written) == len(self.frames)

    def start(self) -> SensorFeeder:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        for i, frame in enumerate(self.frames):
            due = self.t0 + (self.spec.at_s[i] if self.spec.at_s else self.spec.start_s + i / self.spec.rate_hz)
            if self._stop.wait(max(0.0, due - time.monotonic())):
                return
            self._deliver(frame)

    def _deliver(self, frame: RawFrame) -> None:
        if frame.counter in self.spec.saturate:
            frame = RawFrame(pixels=np.full_like(frame.pixels, np.iinfo(frame.pixels.dtype).max),
                             counter=frame.counter, timestamp=frame.timestamp,
                             exposure_s=frame.exposure_s, temperature_c=frame.temperature_c,
                             pose=frame.pose, sensor=frame.sensor)
            self.damaged.add(frame.counter)
        npy = write_frame(self.staging, frame)
        side = npy.with_suffix(".json")
        if frame.counter in self.spec.corrupt:
            data = npy.read_bytes()
            npy.write_bytes(data[: len(data) // 2])
            self.damaged.add(frame.counter)
        os.replace(npy, self.drop / npy.name)
        os.replace(side, self.drop / side.name)
        self.written[frame.counter] = time.monotonic()
