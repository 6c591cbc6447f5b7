"""Radiometric maps estimated from simulated acquisitions, and the correction."""

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
