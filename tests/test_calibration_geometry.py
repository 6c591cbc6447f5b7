"""Finding the thumbnails on a simulated flat frame of the default ImSPOC (onboard.physics):
the layout found must be the simulator's own, with no box given."""

import numpy as np
import pytest

from calibration.geometry import GeometryError, find_thumbnails
from onboard.physics.imspoc import ThumbnailLayout, default_instrument


def test_finds_the_simulators_layout_on_a_flat_frame() -> None:
    inst = default_instrument(seed=3)
    grid = inst.scene_grid()
    h, w = inst.thumb_shape
    frame = inst.frame(np.ones((len(grid), h, w)), grid, np.random.default_rng(0))
    # a uint16 detector frame with noise, dark signal, dead and hot pixels
    layout = find_thumbnails(frame.pixels, expected=len(inst.layout))
    assert layout.thumb_shape == inst.layout.thumb_shape
    assert layout.corners == inst.layout.corners
    assert layout.detector_shape == inst.layout.detector_shape


def test_column_order() -> None:
    truth = ThumbnailLayout.grid(3, 4, (10, 12), gap=3, margin=5, order="column")
    flat = truth.place(np.full((12, 10, 12), 1000.0))
    assert find_thumbnails(flat, order="column").corners == truth.corners


def test_touching_thumbnails_are_refused_with_a_reason() -> None:
    truth = ThumbnailLayout.grid(2, 3, (10, 10), gap=0, margin=4)
    flat = truth.place(np.full((6, 10, 10), 1000.0))
    with pytest.raises(GeometryError, match="touch"):
        find_thumbnails(flat, expected=6)


def test_dark_frame_is_refused() -> None:
    with pytest.raises(GeometryError, match="uniform"):
        find_thumbnails(np.zeros((50, 60)))
