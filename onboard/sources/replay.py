"""Recorded frames: write them, and replay them as a frame source.

Format: a folder of frames, each two files sharing a stem ``frame_<counter:08d>``:

* ``.npy``: the detector image, (rows, cols) uint16 (NumPy format, no pickles);
* ``.json``: its sidecar, ``{"counter", "timestamp", "exposure_s", "temperature_c", "pose",
  "sensor"}`` (timestamp in seconds since the Unix epoch, UTC; pose as (lat deg, lon deg,
  alt m, roll, pitch, yaw deg) or null).

Replay yields frames in counter order. A frame whose files are missing, truncated or
inconsistent is reported (``ReplayProblem``) and skipped; the rest of the folder plays on.
Every sidecar value is checked for type and range (finite numbers, a positive exposure, a
counter matching the file name) and the image's declared size before it is allocated, so a
damaged frame is a ``ValueError`` saying why, never another exception.
"""

from __future__ import annotations

import io
import json
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from firmware_bridge.storage import atomic_write
from onboard.formats.npyio import load_npy
from onboard.formats.types import RawFrame

SIDECAR_KEYS = ("counter", "timestamp", "exposure_s", "temperature_c", "pose", "sensor")
#: Largest image a recorded frame may declare (an 8192 x 8192 uint16 detector is 128 MiB):
#: checked from the ``.npy`` header before allocating, so a header declaring TiB is refused.
MAX_FRAME_BYTES = 256 << 20
#: Largest sidecar read (a few hundred bytes in practice).
MAX_SIDECAR_BYTES = 64 << 10
POSE_LEN = 6


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
        meta = _sidecar(side)
        tail = stem.rsplit("_", 1)[-1]
        if not tail.isdigit() or int(tail) != meta["counter"]:
            raise ValueError(f"{side.name}: counter {meta['counter']} does not match the file name")
        try:
            with open(npy, "rb") as fh:
                pixels = load_npy(fh, os.fstat(fh.fileno()).st_size, MAX_FRAME_BYTES,
                                  f"{npy.name} is not a readable .npy array", ValueError)
        except OSError as exc:
            raise ValueError(f"{npy.name} cannot be read ({exc})") from exc
        if pixels.ndim != 2 or pixels.dtype.kind != "u" or pixels.dtype.itemsize != 2:
            raise ValueError(f"{npy.name} is {pixels.dtype} {pixels.shape}, not a (rows, cols) uint16 image")
        return RawFrame(pixels=pixels.astype(np.uint16, copy=False), counter=meta["counter"],
                        timestamp=meta["timestamp"], exposure_s=meta["exposure_s"],
                        temperature_c=meta["temperature_c"], pose=meta["pose"], sensor=meta["sensor"])

    def __iter__(self) -> Iterator[tuple[RawFrame, None]]:
        while True:
            for stem in self.stems:
                try:
                    yield self.read(stem), None
                except ValueError as exc:
                    self.problems.append(ReplayProblem(stem, str(exc)))
            if not self.loop:
                return


def _number(name: str, value: Any, where: str) -> float:
    """``value`` as a finite float (an int is one; a bool, a string, NaN or infinity are not)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{where}: {name} is {value!r}, not a finite number")
    return float(value)


def _sidecar(side: Path) -> dict[str, Any]:
    """The checked sidecar of a frame: every key present and of its type, in range."""
    try:
        with open(side, "rb") as fh:
            raw = fh.read(MAX_SIDECAR_BYTES + 1)
    except OSError as exc:
        raise ValueError(f"{side.name} cannot be read ({exc})") from exc
    if len(raw) > MAX_SIDECAR_BYTES:
        raise ValueError(f"{side.name} is over {MAX_SIDECAR_BYTES} bytes: not a sidecar")
    try:
        meta = json.loads(raw.decode())
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise ValueError(f"{side.name} is not valid JSON: {exc}") from exc
    if not isinstance(meta, dict):
        raise ValueError(f"{side.name} is a JSON {type(meta).__name__}, not an object")
    missing = [k for k in SIDECAR_KEYS if k not in meta]
    if missing:
        raise ValueError(f"{side.name} lacks {', '.join(missing)}")
    counter = meta["counter"]
    if isinstance(counter, bool) or not isinstance(counter, int) or counter < 0:
        raise ValueError(f"{side.name}: counter is {counter!r}, not an int >= 0")
    out: dict[str, Any] = {"counter": counter}
    for key in ("timestamp", "exposure_s", "temperature_c"):
        out[key] = _number(key, meta[key], side.name)
    if out["exposure_s"] <= 0:
        raise ValueError(f"{side.name}: exposure_s is {out['exposure_s']}, must be > 0")
    pose = meta["pose"]
    if pose is not None:
        if not isinstance(pose, list) or len(pose) != POSE_LEN:
            raise ValueError(f"{side.name}: pose is {pose!r}, not null or {POSE_LEN} numbers "
                             "(lat, lon, alt, roll, pitch, yaw)")
        pose = tuple(_number("pose", v, side.name) for v in pose)
    out["pose"] = pose
    if not isinstance(meta["sensor"], str):
        raise ValueError(f"{side.name}: sensor is {meta['sensor']!r}, not a string")
    out["sensor"] = meta["sensor"]
    return out
