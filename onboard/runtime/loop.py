"""The frame loop: deadlines, graceful degradation, health, and a clean stop.

Degradation order (one step per frame over its deadline, one step back after
``RECOVER_AFTER`` frames comfortably inside it):

    level 0  nominal
    level 1  no quick-look product
    level 2  faster inference (the next engine or precision down, where the session has one)
    level 3  no cube product
    level 4  no denoising (residue from the reconstructed cube)

The residue product is never skipped. Each change of level is reported as an event (and an
event product for the ground). Memory is bounded: the loop keeps only fixed-length windows of
timings and at most ``workers`` frames in flight, never a queue of frames. SIGINT/SIGTERM set
a flag: the frames in flight are finished and their products written before the loop returns.

**Frames in flight** (``[run] workers`` > 1). The caller's thread acquires each frame and runs
the stages that carry state from frame to frame (radiometric correction, reconstruction: its
regularisation follows the scene) in frame order, then hands the rest of the frame (denoise,
screen, classify, package) to a pool of ``workers`` threads and, while they compute, takes
the oldest finished frame, paces the deadline on it and yields it, so its products are written
while the next frames compute. Results come out in frame order; each frame keeps the stage
options of the moment it was handed over, so a degradation applies from the next frame handed
over (up to ``workers`` frames after the one that missed its deadline). numpy's large
operations, zlib and ONNX Runtime release the GIL, so threads use the cores. Products are
byte-identical to one frame at a time (tests/test_loop_workers.py), degradation aside.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import TypeVar

import numpy as np

from firmware_bridge.stopping import StopRequest, stop_on_signals
from onboard.formats.products import ProductKind, event_product, json_product
from onboard.formats.types import Frame
from onboard.runtime.pipeline import FrameResult, Pipeline

LEVELS = ("nominal", "no quick-look", "faster inference", "no cube product", "no denoising")
RECOVER_AFTER = 5
RECOVER_MARGIN = 0.6  # a frame under 60 % of its deadline counts towards recovery

#: What travels with each frame, untouched by the loop (the simulator's truth, or None).
T = TypeVar("T")


@dataclass
class LoopEvent:
    frame: int
    level: int
    reason: str

    def describe(self) -> str:
        return f"frame {self.frame}: degrade level {self.level} ({LEVELS[self.level]}): {self.reason}"


@dataclass
class LoopStats:
    frames: int = 0
    deadline_misses: int = 0
    events: list[LoopEvent] = field(default_factory=list)
    window: dict[str, deque] = field(default_factory=dict)
    stopped_by_signal: str | None = None

    def record(self, result: FrameResult, window: int = 256) -> None:
        for stage, s in {**result.seconds, "total": sum(result.seconds.values())}.items():
            self.window.setdefault(stage, deque(maxlen=window)).append(s)

    def percentiles(self) -> dict[str, dict[str, float]]:
        return {stage: {f"p{q}": float(np.percentile(list(v), q)) for q in (50, 95, 99)}
                for stage, v in self.window.items() if v}


class FrameLoop:
    """Runs a pipeline over a frame source under a per-frame deadline."""

    def __init__(
        self,
        pipeline: Pipeline,
        deadline_s: float,
        faster_inference: Callable[[bool], bool] | None = None,
        health_period_s: float = 10.0,
        health: Callable[[LoopStats, int], dict] | None = None,
        clock: Callable[[], float] = time.monotonic,
        workers: int = 1,
    ) -> None:
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self.pipeline = pipeline
        self.workers = workers
        self.deadline_s = deadline_s
        self.faster_inference = faster_inference
        self.health_period_s = health_period_s
        self.health = health
        self.clock = clock
        self.level = 0
        self.stats = LoopStats()
        self._comfortable = 0
        self._stop = StopRequest()
        self._last_health = clock()
        opts = pipeline.options
        # what the mission asked for: degradation only ever turns work off, never on
        self._configured = (opts.quicklook, opts.cube, opts.denoise)

    def request_stop(self, reason: str) -> None:
        self._stop.request(reason)

    @contextmanager
    def signals(self) -> Iterator[None]:
        """SIGINT and SIGTERM finish the frame in flight, then stop the loop."""
        with stop_on_signals(self._stop):
            yield

    def _apply_level(self) -> None:
        opts = self.pipeline.options
        quicklook, cube, denoise = self._configured
        opts.quicklook = quicklook and self.level < 1
        opts.cube = cube and self.level < 3
        opts.denoise = denoise and self.level < 4

    def _change(self, result: FrameResult, new_level: int, reason: str) -> None:
        if self.level < 2 <= new_level and self.faster_inference is not None:
            if not self.faster_inference(True):
                reason += "; no faster inference available"
        if new_level < 2 <= self.level and self.faster_inference is not None:
            self.faster_inference(False)
        self.level = new_level
        self._apply_level()
        event = LoopEvent(result.counter, new_level, reason)
        self.stats.events.append(event)
        result.products.append(event_product(
            result.counter, time.time(), self.pipeline.calibration.instrument, "degrade level", reason,
            level=new_level, name=LEVELS[new_level]))

    def _pace(self, result: FrameResult) -> None:
        took = sum(result.seconds.values())
        if took > self.deadline_s:
            self.stats.deadline_misses += 1
            self._comfortable = 0
            if self.level < len(LEVELS) - 1:
                self._change(result, self.level + 1,
                             f"frame took {took * 1000:.0f} ms, deadline {self.deadline_s * 1000:.0f} ms")
        elif took < RECOVER_MARGIN * self.deadline_s:
            self._comfortable += 1
            if self.level > 0 and self._comfortable >= RECOVER_AFTER:
                self._comfortable = 0
                self._change(result, self.level - 1, f"{RECOVER_AFTER} frames inside {RECOVER_MARGIN:.0%} of the deadline")
        else:
            self._comfortable = 0

    def run(self, frames: Iterable[tuple[Frame, T]]) -> Iterator[tuple[FrameResult, T]]:
        """Process frames; yields (result, truth) in frame order so the caller can write
        products at once (with ``workers`` > 1, while the next frames compute)."""
        self._apply_level()
        if self.workers == 1:
            for frame, truth in frames:
                if self._stop:
                    break
                yield self._done(self.pipeline.process(frame)), truth
        else:
            in_flight: deque[tuple[Future[FrameResult], T]] = deque()
            with ThreadPoolExecutor(self.workers, thread_name_prefix="frame") as pool:
                for frame, truth in frames:
                    if self._stop:
                        break
                    result, cube = self.pipeline.start(frame)
                    in_flight.append((pool.submit(self.pipeline.finish, frame, result, cube,
                                                  replace(self.pipeline.options)), truth))
                    if len(in_flight) >= self.workers:
                        future, oldest = in_flight.popleft()
                        yield self._done(future.result()), oldest
                while in_flight:  # also after a stop: the frames in flight are finished
                    future, oldest = in_flight.popleft()
                    yield self._done(future.result()), oldest
        self.stats.stopped_by_signal = self._stop.reason

    def _done(self, result: FrameResult) -> FrameResult:
        """Pace the deadline on a finished frame, count it, add the health product when due."""
        self._pace(result)
        self.stats.frames += 1
        self.stats.record(result)
        if self.health is not None and self.clock() - self._last_health >= self.health_period_s:
            self._last_health = self.clock()
            result.products.append(json_product(
                ProductKind.HEALTH, result.counter, time.time(), self.health(self.stats, self.level),
                self.pipeline.calibration.instrument))
        return result
