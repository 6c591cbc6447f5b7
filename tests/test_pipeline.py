"""The pipeline's wiring and its handling of bad frames: nothing is dropped silently."""

import json

import numpy as np
import pytest
from conftest import smooth_reflectance

from onboard.formats.products import Product, ProductKind, decode_arrays
from onboard.formats.types import INVALID_CLASS, RawFrame
from onboard.runtime.pipeline import Pipeline
from onboard.stages.denoise import denoise_subspace
from onboard.stages.residue import Endmembers, unmix_fcls


@pytest.fixture(scope="module")
def pipeline(imspoc_calibration):
    wl = imspoc_calibration.wavelengths_nm
    x = (wl - wl[0]) / np.ptp(wl)
    spectra = np.stack([0.15 + 0.25 * x, 0.25 + 0.1 * x, 0.05 + 0.45 * (x > 0.5)])
    em = Endmembers(spectra, wl, ("residue", "soil", "green"), ("r", "s", "g"))
    return Pipeline(imspoc_calibration, denoise_subspace, lambda c: unmix_fcls(c, em), saturation_dn=4094)


def test_good_frame_gives_every_product(imspoc, pipeline) -> None:
    grid = imspoc.scene_grid()
    frame = imspoc.frame(smooth_reflectance(grid, imspoc.thumb_shape), grid, np.random.default_rng(0), counter=4)
    r = pipeline.process(frame)
    assert not r.flags
    assert [p.kind for p in r.products] == [ProductKind.RESIDUE, ProductKind.QUICKLOOK, ProductKind.CUBE,
                                            ProductKind.SUMMARY]
    for p in r.products:
        back = Product.from_bytes(p.to_bytes())
        assert back.frame_counter == 4 and back.sha256 == p.sha256
    arrays = decode_arrays(r.products[0].payload)
    assert arrays["tillage"].shape == (64, 64) and arrays["fractions"].shape == (3, 64, 64)
    assert set(r.seconds) == {"radiometric", "reconstruct", "reflectance", "denoise", "screen", "classify", "package"}
    assert r.regularisation is not None and r.regularisation > 0


@pytest.mark.parametrize(
    "pixels, reason",
    [
        (np.zeros((10, 10), np.uint16), "shape"),
        (np.full((534, 798), np.nan), "dtype"),
    ],
)
def test_refused_frame_becomes_an_event_product(pipeline, pixels, reason) -> None:
    r = pipeline.process(RawFrame(pixels, 9, 0.0, 0.01))
    assert r.cube is None and reason in r.flags[0]
    assert [p.kind for p in r.products] == [ProductKind.EVENT]
    body = json.loads(r.products[0].payload)
    assert body["event"] == "frame refused" and reason in body["detail"]


def test_all_saturated_frame_is_flagged_and_still_produces_a_residue_map(imspoc, pipeline) -> None:
    sat = np.full(imspoc.layout.detector_shape, imspoc.detector_spec.max_dn, np.uint16)
    r = pipeline.process(RawFrame(sat, 3, 0.0, 0.01))
    assert any("no valid pixel" in f for f in r.flags)
    kinds = [p.kind for p in r.products]
    assert ProductKind.RESIDUE in kinds and ProductKind.EVENT in kinds
    arrays = decode_arrays(r.products[0].payload)
    assert (arrays["tillage"] == INVALID_CLASS).all() and np.isnan(arrays["fractions"]).all()


def test_a_frame_the_denoiser_refuses_is_classified_undenoised(imspoc, pipeline) -> None:
    grid = imspoc.scene_grid()
    frame = imspoc.frame(smooth_reflectance(grid, imspoc.thumb_shape), grid, np.random.default_rng(1))
    thumbs = imspoc.layout.extract(frame.pixels)
    keep = thumbs[:, 0, :10].copy()
    thumbs[:] = imspoc.detector_spec.max_dn  # saturated everywhere...
    thumbs[:, 0, :10] = keep  # ...but 10 pixels: fewer than bands, too few to estimate noise from
    frame.pixels = imspoc.layout.place(thumbs)
    r = pipeline.process(frame)
    assert r.cube.valid.sum() <= 10
    assert r.denoised is r.cube and any("not denoised" in f for f in r.flags)
    kinds = [p.kind for p in r.products]
    assert ProductKind.RESIDUE in kinds and ProductKind.EVENT in kinds
