"""Radiometric maps estimated from simulated acquisitions, and the correction."""

from dataclasses import replace

import numpy as np
import pytest

from onboard.formats.types import RawFrame
from onboard.stages import radiometric
from onboard.stages.radiometric import UnusableFrameError


def test_estimated_maps_match_the_detector_truth(imspoc, imspoc_calibration) -> None:
    det, maps = imspoc.detector, imspoc_calibration.radiometric
    spec = imspoc.detector_spec
    good = ~(det.dead | det.hot)
    true_rate_dn = det.dark_map / spec.electrons_per_dn
    # dark rate from 8 frames at 5 and 50 ms: read noise 1.6 DN/frame -> ~13 DN/s per pixel
    err = maps.dark_dn_s[good] - true_rate_dn[good]
    assert abs(np.mean(err)) < 1.0 and np.std(err) < 20.0
    assert np.median(maps.bias_dn[good]) == pytest.approx(spec.bias_dn, abs=0.5)
    # flat: estimated PRNU correlates with the truth inside the thumbnails
    inside = imspoc.layout.place(np.ones((len(imspoc.layout), *imspoc.thumb_shape), bool), False)
    sel = inside & good
    corr = np.corrcoef(maps.flat[sel], det.gain_map[sel])[0, 1]
    assert corr > 0.5
    # every hot pixel, and every dead pixel 3 px or more inside a thumbnail (nearer the edge
    # too few neighbours are lit to judge it), is flagged; few false alarms
    assert maps.bad[det.hot].all()
    interior = np.zeros((len(imspoc.layout), *imspoc.thumb_shape), bool)
    interior[:, 3:-3, 3:-3] = True
    interior = imspoc.layout.place(interior, False)
    assert maps.bad[det.dead & interior].all()
    assert (maps.bad & good).sum() < 0.001 * good.size


def test_correct_repairs_bad_pixels_and_flags_saturation(imspoc, imspoc_calibration) -> None:
    maps = imspoc_calibration.radiometric
    rng = np.random.default_rng(3)
    grid = imspoc.scene_grid()
    frame = imspoc.frame(np.full((len(grid), *imspoc.thumb_shape), 0.3), grid, rng)
    frame.pixels[10:12, 10:12] = imspoc.detector_spec.max_dn
    out = radiometric.correct(frame, maps, saturation_dn=imspoc.detector_spec.max_dn - 1)
    assert out.pixels.dtype == np.float32 and np.isfinite(out.pixels).all()
    assert not out.valid[10:12, 10:12].any()
    dead = imspoc.detector.dead & (maps.bad)
    # repaired dead pixels are close to their neighbours, not 0
    assert np.all(out.pixels[dead & out.valid] > -50)


@pytest.mark.parametrize(
    "pixels, message",
    [
        (np.zeros((10, 10), np.uint16), "shape"),
        (None, "dtype"),
    ],
)
def test_bad_frames_are_refused_with_the_reason(imspoc_calibration, pixels, message) -> None:
    maps = imspoc_calibration.radiometric
    if pixels is None:
        pixels = np.zeros(maps.shape, np.float64)
    with pytest.raises(UnusableFrameError, match=message):
        radiometric.correct(RawFrame(pixels, 7, 0.0, 0.01), maps, 4000)
    with pytest.raises(UnusableFrameError, match="exposure"):
        radiometric.correct(RawFrame(np.zeros(maps.shape, np.uint16), 7, 0.0, float("nan")), maps, 4000)


def _correct_by_whole_frame_shifts(frame: RawFrame, maps, saturation_dn: int) -> tuple[np.ndarray, np.ndarray]:
    """The definition the vectorised correction must match: each pixel's 4-neighbour sum
    from whole-frame shifts (wrapping), in float32, for every pixel (the code before issue 17)."""
    raw = frame.pixels
    saturated = raw >= saturation_dn
    signal = (raw.astype(np.float32) - maps.bias_dn - maps.dark_dn_s * np.float32(frame.exposure_s)) / maps.flat
    good = ~(maps.bad | saturated)
    total = np.zeros_like(signal)
    count = np.zeros(signal.shape, np.float32)
    for axis in (0, 1):
        for step in (1, -1):
            total += np.roll(np.where(good, signal, np.float32(0.0)), step, axis=axis)
            count += np.roll(good, step, axis=axis)
    repairable = maps.bad & ~saturated & (count > 0)
    return np.where(repairable, total / np.maximum(count, 1), signal), ~saturated & ~(maps.bad & ~repairable)


def test_correct_equals_the_whole_frame_definition_bit_for_bit(imspoc, imspoc_calibration) -> None:
    maps = replace(imspoc_calibration.radiometric, bad=imspoc_calibration.radiometric.bad.copy())
    rng = np.random.default_rng(5)
    grid = imspoc.scene_grid()
    frame = imspoc.frame(np.full((len(grid), *imspoc.thumb_shape), 0.4), grid, rng)
    bad_r, bad_c = np.nonzero(maps.bad)
    # saturate a bad pixel's neighbour, a bad pixel itself, and the frame's corners (wrap-around)
    frame.pixels[bad_r[0] + 1, bad_c[0]] = frame.pixels[bad_r[1], bad_c[1]] = 4095
    frame.pixels[0, 0] = frame.pixels[-1, -1] = 4095
    maps.bad[0, 1] = maps.bad[-1, 0] = True  # bad pixels on the edges repair from across it
    want_pixels, want_valid = _correct_by_whole_frame_shifts(frame, maps, 4094)
    out = radiometric.correct(frame, maps, 4094)
    assert out.pixels.dtype == np.float32
    np.testing.assert_array_equal(out.pixels, want_pixels)
    np.testing.assert_array_equal(out.valid, want_valid)
    assert not out.valid[bad_r[1], bad_c[1]] and not out.valid[0, 0]


def test_a_block_of_lines_is_corrected_as_each_line_on_its_own() -> None:
    from onboard.physics.pushbroom import finch_like
    from onboard.sources.simulated import calibrate_pushbroom

    inst = finch_like(cross_track=64, seed=2)
    maps = calibrate_pushbroom(inst).radiometric
    assert maps.bad.any()
    rng = np.random.default_rng(1)
    sat = inst.detector_spec.max_dn - 1
    lines = [inst.line(np.full((81, 64), r), rng) for r in np.linspace(0.1, 0.9, 12)]
    lines[3].pixels[5, 7] = lines[3].pixels[20, 40] = sat + 1
    lines[4] = RawFrame(lines[4].pixels, lines[4].counter, lines[4].timestamp, 2 * lines[4].exposure_s)
    signal, valid = radiometric.correct_lines(lines, maps, sat)
    for i, ln in enumerate(lines):
        one = radiometric.correct(ln, maps, sat)
        np.testing.assert_array_equal(signal[i], one.pixels)
        np.testing.assert_array_equal(valid[i], one.valid)
    assert not valid[3, 5, 7] and valid[2, 5, 7]


def test_a_bad_line_in_a_block_is_refused_with_its_counter() -> None:
    from onboard.physics.pushbroom import finch_like
    from onboard.sources.simulated import calibrate_pushbroom

    inst = finch_like(cross_track=16, seed=2)
    maps = calibrate_pushbroom(inst).radiometric
    good = RawFrame(np.zeros(maps.shape, np.uint16), 1, 0.0, 0.01)
    with pytest.raises(UnusableFrameError, match="frame 2: dtype"):
        radiometric.correct_lines([good, RawFrame(np.zeros(maps.shape), 2, 0.0, 0.01)], maps, 4000)
    with pytest.raises(UnusableFrameError, match="empty"):
        radiometric.correct_lines([], maps, 4000)
