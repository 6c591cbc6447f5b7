"""Recorded frames replay exactly; a damaged recording is reported frame by frame."""

import numpy as np
import pytest

from onboard.formats.types import RawFrame
from onboard.sources.camera import CameraUnavailable, OpenCVCamera
from onboard.sources.replay import ReplaySource, write_frame


def test_record_and_replay_round_trip(tmp_path) -> None:
    rng = np.random.default_rng(0)
    frames = [RawFrame(rng.integers(0, 4096, (20, 30), dtype=np.uint16), i, 1.7e9 + i, 0.01,
                       21.5, (45.0, -73.0, 120.0, 0.0, 1.0, 2.0) if i else None) for i in range(4)]
    for f in frames[::-1]:
        write_frame(tmp_path, f)
    out = [f for f, _ in ReplaySource(tmp_path)]
    assert [f.counter for f in out] == [0, 1, 2, 3]
    for a, b in zip(out, frames, strict=True):
        np.testing.assert_array_equal(a.pixels, b.pixels)
        assert (a.timestamp, a.exposure_s, a.pose, a.sensor) == (b.timestamp, b.exposure_s, b.pose, b.sensor)


def test_damaged_frames_are_reported_and_skipped(tmp_path) -> None:
    for i in range(4):
        write_frame(tmp_path, RawFrame(np.zeros((4, 4), np.uint16), i, 0.0, 0.01))
    (tmp_path / "frame_00000001.npy").write_bytes(b"\x93NUMPY garbage")
    (tmp_path / "frame_00000002.json").unlink()
    src = ReplaySource(tmp_path)
    assert [f.counter for f, _ in src] == [0, 3]
    reasons = {p.stem: p.reason for p in src.problems}
    assert "not a readable .npy" in reasons["frame_00000001"]
    assert "frame_00000002.json is missing" in reasons["frame_00000002"]


def test_empty_or_missing_folder(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ReplaySource(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="no frame_"):
        ReplaySource(tmp_path)


def test_camera_without_opencv_is_refused_clearly() -> None:
    try:
        import cv2  # noqa: F401
    except ImportError:
        with pytest.raises(CameraUnavailable, match="pip install opencv-python-headless"):
            OpenCVCamera(0)
    else:
        pytest.skip("OpenCV is installed here: the refusal path cannot be exercised")
