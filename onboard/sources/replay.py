"""Recorded frames: write them, and replay them as a frame source.

Format: a folder of frames, each two files sharing a stem ``frame_<counter:08d>``:

* ``.npy``: the detector image, (rows, cols) uint16 (NumPy format, no pickles);
* ``.json``: its sidecar, ``{"counter", "timestamp", "exposure_s", "temperature_c", "pose",
  "sensor"}`` (timestamp in seconds since the Unix epoch, UTC; pose as (lat deg, lon deg,
  alt m, roll, pitch, yaw deg) or null).

Replay yields frames in counter order. A frame whose files are missing, truncated or
inconsistent is reported (``ReplayProblem``) and skipped; the rest of the folder plays on.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from firmware_bridge.storage import atomic_write
from onboard.formats.types import RawFrame

SIDECAR_KEYS = ("counter", "timestamp", "exposure_s", "temperature_c", "pose", "sensor")


@dataclass
class ReplayProblem:
    """A recorded frame that could not be replayed, and why."""

    stem: str
    reason: str


def write_frame(folder: str | os.PathLike, frame: RawFrame) -> Path:
    """Record one frame (each file atomically, the sidecar last: a reader takes a frame once
    its sidecar exists)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    stem = folder / f"frame_{frame.counter:08d}"
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(frame.pixels), allow_pickle=False)
    atomic_write(stem.with_suffix(".npy"), buf.getvalue(), mode=0o644)
    side = {k: getattr(frame, k) for k in SIDECAR_KEYS}
    side["pose"] = list(frame.pose) if frame.pose is not None else None
    atomic_write(stem.with_suffix(".json"), json.dumps(side).encode(), mode=0o644)
    return stem.with_suffix(".npy")


class ReplaySource:
    """Frames recorded in ``folder``, in counter order, with no truth."""

    def __init__(self, folder: str | os.PathLike, loop: bool = False) -> None:
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise FileNotFoundError(f"replay folder {self.folder} does not exist")
        self.stems = sorted({p.stem for p in self.folder.glob("frame_*.npy")} |
                            {p.stem for p in self.folder.glob("frame_*.json")})
        if not self.stems:
            raise FileNotFoundError(f"replay folder {self.folder} holds no frame_*.npy / .json pairs")
        self.loop = loop
        self.problems: list[ReplayProblem] = []

    def read(self, stem: str) -> RawFrame:
        """One recorded frame; ``ValueError`` says what is wrong with it."""
        npy, side = self.folder / f"{stem}.npy", self.folder / f"{stem}.json"
        for p in (npy, side):
            if not p.is_file():
                raise ValueError(f"{p.name} is missing")
        try:
            meta = json.loads(side.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ValueError(f"{side.name} is not valid JSON: {exc}") from exc
        missing = [k for k in SIDECAR_KEYS if k not in meta]
        if missing:
            raise ValueError(f"{side.name} lacks {', '.join(missing)}")
        try:
            pixels = np.load(npy, allow_pickle=False)
        except (ValueError, OSError, EOFError) as exc:
            raise ValueError(f"{npy.name} is not a readable .npy array ({exc})") from exc
        return RawFrame(pixels=pixels, counter=int(meta["counter"]), timestamp=float(meta["timestamp"]),
                        exposure_s=float(meta["exposure_s"]), temperature_c=float(meta["temperature_c"]),
                        pose=tuple(meta["pose"]) if meta["pose"] is not None else None,
                        sensor=str(meta["sensor"]))

    def __iter__(self) -> Iterator[tuple[RawFrame, None]]:
        while True:
            for stem in self.stems:
                try:
                    yield self.read(stem), None
                except ValueError as exc:
                    self.problems.append(ReplayProblem(stem, str(exc)))
            if not self.loop:
                return
