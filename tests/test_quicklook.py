"""The quick-look PNG (onboard/stages/package.py): its pixels are the cube's three preset bands
stretched between their 2nd and 98th percentiles, invalid pixels black, and it is deflated at
the stated zlib level (QUICKLOOK_ZLIB_LEVEL), not at Pillow's slowest (``optimize``: level 9)."""

from __future__ import annotations

import io
import struct

import numpy as np
from PIL import Image

from onboard.formats.types import Cube
from onboard.stages import package
from onboard.stages.package import quicklook_bands_nm, quicklook_png


def _cube() -> Cube:
    rng = np.random.default_rng(0)
    wl = np.linspace(450.0, 900.0, 24)
    data = (rng.uniform(0.0, 0.6, (24, 40, 50)) * np.linspace(0.5, 1.5, 24)[:, None, None]).astype(np.float32)
    valid = np.ones((40, 50), bool)
    valid[:5, :7] = False
    return Cube(data, wl, valid)


def _idat_zlib_level_flag(png: bytes) -> int:
    """FLEVEL of the first IDAT chunk's zlib header (0: level 0-1, 1: 2-5, 2: 6, 3: 7-9)."""
    at = 8
    while at < len(png):
        length, kind = struct.unpack(">I4s", png[at:at + 8])
        if kind == b"IDAT":
            return png[at + 9] >> 6
        at += 12 + length
    raise AssertionError("no IDAT chunk")


def test_the_quicklook_is_the_percentile_stretch_of_the_preset_bands() -> None:
    cube = _cube()
    png = quicklook_png(cube)
    pixels = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
    bands = [int(np.argmin(np.abs(cube.wavelengths_nm - nm))) for nm in quicklook_bands_nm(cube.wavelengths_nm)]
    assert bands == [20, 10, 5]  # nearest 850, 650, 550 nm of 450-900 nm in 24 bands
    for c, band in enumerate(bands):
        lo, hi = np.percentile(cube.data[band][cube.valid], (2, 98))
        expected = np.clip((cube.data[band].astype(np.float64) - lo) / (hi - lo) * 255, 0, 255).astype(np.uint8)
        np.testing.assert_array_equal(pixels[..., c][cube.valid], expected[cube.valid])
    assert not pixels[~cube.valid].any()


def test_the_quicklook_is_deflated_at_the_stated_level() -> None:
    assert _idat_zlib_level_flag(quicklook_png(_cube())) == 1  # zlib's "fast" levels 2-5
    assert 2 <= package.QUICKLOOK_ZLIB_LEVEL <= 5
