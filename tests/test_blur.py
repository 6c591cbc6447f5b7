"""Motion blur per frame (issue 18, drone): the estimate from the pose at the exposure against
a hand computation, and a blurred frame held back as a cloudy one is, its event saying blur;
a frame without a pose judged on its spectra alone, its blur null with the reason."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from conftest import smooth_reflectance

from onboard.config import ConfigError, from_dict
from onboard.formats.products import ProductKind
from onboard.geo.blur import frame_blur, motion_blur_px
from onboard.geo.georef import CameraGeometry
from onboard.geo.pose import AttitudeSample, PoseBuffer, PositionSample
from onboard.runtime.pipeline import FrameResult, Pipeline
from onboard.stages.denoise import denoise_subspace
from onboard.stages.residue import Endmembers, unmix_fcls
from onboard.stages.screen import NO_POSE, ScreenRule

CAMERA = CameraGeometry(20.0, 20.0)


def test_the_estimate_is_the_hand_computation() -> None:
    # 10 m/s for 10 ms over 0.5 m pixels: 0.2 px; a 20 deg/s roll for 10 ms is 0.2 deg, and a
    # pixel of a 20 deg view over 64 columns is 0.3125 deg: 0.64 px
    assert motion_blur_px(10.0, 0.0, 0.0, 0.01, 0.5, CAMERA, 64, 64) == pytest.approx(0.2, rel=1e-9)
    assert motion_blur_px(0.0, 20.0, 0.0, 0.01, 0.5, CAMERA, 64, 64) == pytest.approx(0.64, rel=1e-9)
    assert motion_blur_px(0.0, 0.0, -20.0, 0.01, 0.5, CAMERA, 32, 64) == pytest.approx(0.32, rel=1e-9)
    assert motion_blur_px(10.0, 20.0, 0.0, 0.01, 0.5, CAMERA, 64, 64) == pytest.approx(0.84, rel=1e-9)
    with pytest.raises(ValueError, match="gsd > 0"):
        motion_blur_px(10.0, 0.0, 0.0, 0.01, 0.0, CAMERA, 64, 64)


def test_straight_flight_with_a_roll_rate_through_the_pose_buffer() -> None:
    pytest.importorskip("pyproj")
    from onboard.geo.frame import frame_georef

    poses = PoseBuffer()
    for t, roll in ((0.0, -1.0), (0.1, 1.0)):  # north at 12 m/s, rolling at 20 deg/s through level
        poses.add_position(PositionSample(t, 44.8 + 12 * t / 111_132.0, 0.6, 150.0, 100.0, (12.0, 0.0, 0.0)), 1.0, 0.0)
        poses.add_attitude(AttitudeSample(t, roll, 0.0, 0.0, (20.0, 0.0, 0.0)), 1.0, 0.0)
    geo = frame_georef(poses, 0.05, CAMERA, 64, 64, 0.5, 0.1, 0.0)
    assert geo["georeferenced"], geo
    gsd = 2 * 100 * math.tan(math.radians(10)) / 64  # nadir, 100 m up: 0.551 m
    assert geo["gsd_m"] == pytest.approx(gsd, rel=1e-3)
    blur, why = frame_blur(geo, 0.01, CAMERA, 64, 64)
    # 12 m/s x 10 ms / 0.551 m = 0.218 px, + 0.2 deg / 0.3125 deg = 0.64 px
    assert why is None and blur == pytest.approx(12 * 0.01 / gsd + 0.64, rel=1e-3)


def test_without_a_pose_the_blur_is_null_with_the_reason() -> None:
    assert frame_blur({"georeferenced": False, "reason": "position gap of 1.50 s"}, 0.01, CAMERA, 64, 64) == \
        (None, "no pose at the exposure (position gap of 1.50 s)")
    assert frame_blur({"georeferenced": True, "swath": True}, 0.01, CAMERA, 1, 64)[1].startswith("push-broom")


@pytest.fixture(scope="module")
def pipeline(imspoc_calibration):
    wl = imspoc_calibration.wavelengths_nm
    x = (wl - wl[0]) / np.ptp(wl)
    em = Endmembers(np.stack([0.15 + 0.25 * x, 0.25 + 0.1 * x, 0.05 + 0.45 * (x > 0.5)]), wl,
                    ("residue", "soil", "green"), ("r", "s", "g"))
    return Pipeline(imspoc_calibration, denoise_subspace, lambda c: unmix_fcls(c, em), saturation_dn=4094,
                    screen_rule=ScreenRule(max_blur_px=1.0))


def _clear_frame(imspoc, pipeline: Pipeline, counter: int) -> FrameResult:
    grid = imspoc.scene_grid()
    frame = imspoc.frame(smooth_reflectance(grid, imspoc.thumb_shape), grid, np.random.default_rng(counter),
                         counter=counter)
    r = pipeline.process(frame)
    assert r.exposure_s == frame.exposure_s and r.screening is not None and r.screening.worth_sending
    return r


def _summary(r: FrameResult) -> dict:
    return json.loads(next(p for p in r.products if p.kind == ProductKind.SUMMARY).payload)["screen"]


def test_a_blurred_frame_is_held_and_its_event_says_blur(imspoc, pipeline) -> None:
    r = _clear_frame(imspoc, pipeline, 5)
    assert r.held == [] and not any(p.kind == ProductKind.EVENT for p in r.products)
    pipeline.judge_motion(r, 2.5, None)
    for p in r.products:
        if p.kind in (ProductKind.RESIDUE, ProductKind.QUICKLOOK, ProductKind.CUBE):
            assert p.meta["screen"]["blur_px"] == 2.5 and not p.meta["screen"]["worth_sending"]
    kinds = {p.name: p.kind for p in r.products}
    assert {kinds[n] for n in r.held} == {ProductKind.QUICKLOOK, ProductKind.CUBE}  # as a cloudy frame's
    residue = next(p for p in r.products if p.kind == ProductKind.RESIDUE)
    assert residue.priority == pipeline.value_rule.priority(ProductKind.RESIDUE, False)
    events = [json.loads(p.payload) for p in r.products if p.kind == ProductKind.EVENT]
    assert len(events) == 1 and "motion blur 2.50 px over 1 px" in events[0]["detail"]
    assert _summary(r)["worth_sending"] is False and _summary(r)["blur_px"] == 2.5


def test_a_frame_under_the_limit_or_without_a_pose_is_not_held(imspoc, pipeline) -> None:
    r = _clear_frame(imspoc, pipeline, 6)
    assert r.products[0].meta["screen"]["blur_px"] is None
    assert r.products[0].meta["screen"]["blur_reason"] == NO_POSE  # until a pose says otherwise
    pipeline.judge_motion(r, *frame_blur({"georeferenced": False, "reason": "no position received"},
                                         r.exposure_s, CAMERA, 64, 64))
    screen = r.products[0].meta["screen"]
    assert screen["worth_sending"] and screen["blur_px"] is None
    assert screen["blur_reason"] == "no pose at the exposure (no position received)"
    assert r.held == [] and not any(p.kind == ProductKind.EVENT for p in r.products)
    r = _clear_frame(imspoc, pipeline, 7)
    pipeline.judge_motion(r, 0.4, None)
    assert r.products[0].meta["screen"]["worth_sending"] and r.products[0].meta["screen"]["blur_px"] == 0.4
    assert "blur_reason" not in r.products[0].meta["screen"] and r.held == []


def test_the_limit_is_in_the_mission_file() -> None:
    assert from_dict({"screen": {"max_blur_px": 2.0}}).screen.max_blur_px == 2.0
    with pytest.raises(ConfigError, match="max_blur_px"):
        from_dict({"screen": {"max_blur_px": 0.0}})
