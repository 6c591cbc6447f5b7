"""Damaged recordings (issue 11 section 5): every damaged sidecar or image is reported with a
reason and skipped; nothing else escapes the reader, the run, or the follow-mode payload."""

from __future__ import annotations

import io
import json
import os
import random
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from fuzzing import mutate

from onboard.formats.products import ProductKind
from onboard.formats.types import RawFrame
from onboard.runtime.payload import FollowFolder
from onboard.runtime.run import products_of
from onboard.sources.replay import ReplaySource, write_frame

GOOD = {"counter": 0, "timestamp": 1.7e9, "exposure_s": 0.01, "temperature_c": 20.0,
        "pose": [45.0, -73.0, 120.0, 0.0, 1.0, 2.0], "sensor": "imspoc"}


def _npy_header(shape: tuple[int, ...], descr: str = "<u2") -> bytes:
    """A version-1.0 .npy header declaring ``shape`` (and no data after it)."""
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": descr, "fortran_order": False, "shape": shape})
    return buf.getvalue()


def _side(**change: object) -> Callable[[Path], None]:
    def damage(stem: Path) -> None:
        side = json.loads(stem.with_suffix(".json").read_text())
        side.update(change)
        stem.with_suffix(".json").write_text(json.dumps(side))
    return damage


def _raw_side(text: str) -> Callable[[Path], None]:
    return lambda stem: stem.with_suffix(".json").write_text(text)


def _npy(blob: bytes) -> Callable[[Path], None]:
    return lambda stem: stem.with_suffix(".npy").write_bytes(blob)


def _array(arr: np.ndarray, allow_pickle: bool = False) -> Callable[[Path], None]:
    def damage(stem: Path) -> None:
        with open(stem.with_suffix(".npy"), "wb") as fh:
            np.save(fh, arr, allow_pickle=allow_pickle)
    return damage


def _nested(depth: int) -> str:
    return "[" * depth + "]" * depth


#: 24 damaged frames: the 7 of issue 11 that crashed the run first, then the rest.
DAMAGE: dict[str, tuple[Callable[[Path], None], str]] = {
    "null_timestamp": (_side(timestamp=None), "timestamp is None"),
    "null_exposure": (_side(exposure_s=None), "exposure_s is None"),
    "pose_is_a_number": (_side(pose=5), "pose is 5"),
    "counter_1e400": (_raw_side(json.dumps(GOOD).replace('"counter": 0', '"counter": 1e400')), "counter is inf"),
    "sidecar_is_a_list": (_raw_side("[1, 2, 3]"), "not an object"),
    "npy_declares_2_TiB": (_npy(_npy_header((1 << 20, 1 << 20))), "over the limit"),
    "npy_declares_more_than_it_holds": (_npy(_npy_header((534, 798))), "holds 0 bytes"),
    "temperature_is_text": (_side(temperature_c="hot"), "temperature_c is 'hot'"),
    "timestamp_nan": (_raw_side(json.dumps(GOOD).replace('"timestamp": 1700000000.0', '"timestamp": NaN')),
                      "timestamp is nan"),
    "counter_negative": (_side(counter=-1), "counter is -1"),
    "counter_text": (_side(counter="0"), "counter is '0'"),
    "counter_bool": (_side(counter=False), "counter is False"),
    "counter_other_frame": (_side(counter=7), "does not match the file name"),
    "exposure_zero": (_side(exposure_s=0), "must be > 0"),
    "pose_too_short": (_side(pose=[1.0, 2.0, 3.0]), "pose is [1.0, 2.0, 3.0]"),
    "pose_of_text": (_side(pose=["a"] * 6), "pose is 'a'"),
    "sensor_not_text": (_side(sensor=5), "sensor is 5"),
    "key_missing": (_raw_side(json.dumps({k: v for k, v in GOOD.items() if k != "sensor"})), "lacks sensor"),
    "sidecar_not_json": (_raw_side("{"), "not valid JSON"),
    "sidecar_nested_too_deep": (_raw_side(_nested(100_000)), "sidecar"),
    "npy_of_objects": (_array(np.array([{"a": 1}], dtype=object), allow_pickle=True), "objects"),
    "npy_three_dimensional": (_array(np.zeros((2, 3, 4), np.uint16)), "not a (rows, cols) uint16"),
    "npy_float_image": (_array(np.zeros((3, 4), np.float64)), "not a (rows, cols) uint16"),
    "npy_truncated": (_npy(b"\x93NUMPY"), "not a readable .npy"),
}


def _good(folder: Path, counter: int) -> Path:
    write_frame(folder, RawFrame(np.full((3, 4), counter, np.uint16), counter, GOOD["timestamp"],
                                 GOOD["exposure_s"], GOOD["temperature_c"], tuple(GOOD["pose"])))
    return folder / f"frame_{counter:08d}"


@pytest.mark.parametrize("name", list(DAMAGE))
def test_each_damaged_frame_is_reported_and_the_next_plays(tmp_path: Path, name: str) -> None:
    damage, reason = DAMAGE[name]
    _good(tmp_path, 0)
    damage(_good(tmp_path, 1))
    _good(tmp_path, 2)
    src = ReplaySource(tmp_path)
    assert [f.counter for f, _ in src] == [0, 2]
    assert [p.stem for p in src.problems] == ["frame_00000001"]
    assert reason in src.problems[0].reason


def test_frame_limit_is_checked_before_allocating(tmp_path: Path) -> None:
    from onboard.sources.replay import MAX_FRAME_BYTES

    _good(tmp_path, 0)
    side = max(1, int((MAX_FRAME_BYTES // 2) ** 0.5) + 1)
    _npy(_npy_header((side, side)))(tmp_path / "frame_00000000")
    with pytest.raises(ValueError, match="over the limit"):
        ReplaySource(tmp_path).read("frame_00000000")


def test_values_read_back_are_typed(tmp_path: Path) -> None:
    _good(tmp_path, 3)
    frame = ReplaySource(tmp_path).read("frame_00000003")
    assert frame.pixels.dtype == np.uint16 and frame.pixels.flags.writeable
    assert isinstance(frame.counter, int) and frame.pose == tuple(GOOD["pose"])


def test_fuzzed_sidecars_and_images_only_ever_raise_value_error(tmp_path: Path) -> None:
    """2 000 seeded random mutations (byte flips, insertions, truncations) of a good sidecar
    and a good image: read() returns a frame or raises ValueError, nothing else."""
    rng = random.Random(11)
    stem = _good(tmp_path, 0)
    side0, npy0 = stem.with_suffix(".json").read_bytes(), stem.with_suffix(".npy").read_bytes()
    src = ReplaySource(tmp_path)
    outcomes = {"ok": 0, "refused": 0}
    for i in range(2000):
        side, npy = side0, npy0
        if i % 2:
            side = mutate(side0, rng, edits=4, insert_max=8, delete_max=None)  # None: truncations
        else:
            npy = mutate(npy0, rng, edits=4, insert_max=8, delete_max=None)
        stem.with_suffix(".json").write_bytes(side)
        stem.with_suffix(".npy").write_bytes(npy)
        try:
            src.read("frame_00000000")
            outcomes["ok"] += 1
        except ValueError:
            outcomes["refused"] += 1
    assert outcomes["refused"] > 500 and outcomes["ok"] > 0  # the mutations did reach both paths


def test_follow_mode_reports_damaged_frames_and_keeps_polling(tmp_path: Path) -> None:
    """The payload's drop-folder reader (``onboard run --port --replay``) yields every damaged
    frame as (None, reason) instead of raising out of the service."""
    for i, (damage, _) in enumerate(DAMAGE.values()):
        damage(_good(tmp_path, i))
    last = len(DAMAGE)
    _good(tmp_path, last)
    got = list(FollowFolder(tmp_path, lambda counter: False).poll())
    assert [stem for _, _, stem in got] == [f"frame_{i:08d}" for i in range(last + 1)]
    assert all(frame is None and reason for frame, reason, _ in got[:-1])
    assert got[-1][0] is not None and got[-1][0].counter == last


@pytest.mark.slow
def test_run_replays_good_frames_around_every_damaged_one(tmp_path: Path) -> None:
    """The real CLI: record 2 frames, add the damaged variants between copies of them; the run
    processes the good frames, writes one event per damaged frame and exits 0."""
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "onboard", "run", "--quiet", *args],
                              capture_output=True, text=True, env=env, timeout=600)
    rec = tmp_path / "rec"
    proc = run("--frames", "2", "--out", str(tmp_path / "a"), "--record", str(rec))
    assert proc.returncode == 0, proc.stderr
    good = rec / "frame_00000001"
    side = json.loads(good.with_suffix(".json").read_text())
    for i, (damage, _) in enumerate(DAMAGE.values(), start=2):
        stem = rec / f"frame_{i:08d}"
        stem.with_suffix(".npy").write_bytes(good.with_suffix(".npy").read_bytes())
        stem.with_suffix(".json").write_text(json.dumps({**side, "counter": i}))
        damage(stem)
    last = rec / f"frame_{len(DAMAGE) + 2:08d}"
    last.with_suffix(".npy").write_bytes(good.with_suffix(".npy").read_bytes())
    last.with_suffix(".json").write_text(json.dumps({**side, "counter": len(DAMAGE) + 2}))
    proc = run("--frames", "100", "--out", str(tmp_path / "b"), "--replay", str(rec),
               "--json", str(tmp_path / "s.json"))
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert json.loads((tmp_path / "s.json").read_text())["frames"] == 3
    events = [json.loads(p.payload) for p in products_of(tmp_path / "b") if p.kind == ProductKind.EVENT]
    assert sorted(e["frame"] for e in events) == list(range(2, len(DAMAGE) + 2))
