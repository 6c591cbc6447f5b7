"""Packaging: a frame's results become products (docs/design.md, "Product").

Per frame: the residue map (tillage class and fractions), a false-colour quick-look PNG and
the denoised cube. Every product carries the frame counter, time, instrument, software and
model versions and its checksum (:mod:`onboard.formats.products`).
"""

from __future__ import annotations

import io

import numpy as np
from numpy.typing import ArrayLike, NDArray
from PIL import Image

from onboard.compress import residue_coding as residue_coding_mod
from onboard.compress.ccsds123 import encode
from onboard.compress.cube_coding import RAW_FRAME_PARAMS, CubeCoding, encode_cube
from onboard.formats.products import Product, ProductKind, encode_arrays
from onboard.formats.types import INVALID_CLASS, UNCERTAIN_CLASS, Cube, RawFrame, ResidueMap

#: Quick-look bands (nm) as (red, green, blue): colour-infrared for the visible/NIR ImSPOC,
#: SWIR false colour for a 900-1700 nm push-broom.
QUICKLOOK_BANDS = {"vnir": (850.0, 650.0, 550.0), "swir": (1650.0, 1250.0, 1050.0)}

#: zlib level of the quick-look PNG (was 9: Pillow's ``optimize``). Measured on the run's
#: simulated quick-looks (one thread): ImSPOC 1.00 -> 0.61 ms for 5492 -> 5494 bytes,
#: push-broom 3.68 -> 1.07 ms for 9587 -> 9689 bytes (+1.1 %; level 6: 2.2 ms, +0.3 %;
#: level 3: 0.85 ms, +10 %); on 6 frames of ``onboard run --seed 3`` -0.01 % (ImSPOC) and
#: -0.04 % (push-broom) in all. The pixels are the same; the quick-look ranks last in the
#: value order (onboard/stages/value.py).
QUICKLOOK_ZLIB_LEVEL = 4


def _quicklook_idx(wl: NDArray) -> list[int]:
    preset = QUICKLOOK_BANDS["vnir"] if wl[0] < 800 else QUICKLOOK_BANDS["swir"]
    return [int(np.argmin(np.abs(wl - target))) for target in preset]


def quicklook_bands_nm(wl: NDArray) -> list[float]:
    """The cube's bands a quick-look shows as red, green, blue (nm; in its header's meta)."""
    return [float(wl[i]) for i in _quicklook_idx(wl)]


def quicklook_png(cube: Cube) -> bytes:
    """A false-colour 8-bit PNG of the cube: the bands nearest QUICKLOOK_BANDS, each stretched
    between its 2nd and 98th percentile over valid pixels; invalid pixels are black."""
    idx = _quicklook_idx(cube.wavelengths_nm)
    rgb = cube.data[idx].astype(np.float32)
    valid = cube.valid & np.isfinite(rgb).all(0)
    out = np.zeros(rgb.shape[1:] + (3,), dtype=np.uint8)
    if valid.any():
        for c in range(3):
            lo, hi = np.percentile(rgb[c][valid], (2, 98))
            scaled = (rgb[c] - lo) / max(hi - lo, 1e-6)
            out[..., c] = np.where(valid, np.clip(scaled * 255, 0, 255), 0).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(out, mode="RGB").save(buf, format="PNG", compress_level=QUICKLOOK_ZLIB_LEVEL)
    return buf.getvalue()


#: Residue-map measures written in the residue product's header (onboard/formats/products.py).
RESIDUE_META = ("confidence_threshold", "uncertain_share", "out_of_distribution_share")


def residue_arrays(residue: ResidueMap) -> dict[str, NDArray]:
    """The residue product's arrays (format in onboard/formats/products.py): uncertain pixels get
    UNCERTAIN_CLASS in ``tillage``, the stage's choice stays in ``guess``."""
    tillage = residue.tillage.copy()
    if residue.uncertain is not None:
        tillage[residue.uncertain & (tillage != INVALID_CLASS)] = UNCERTAIN_CLASS
    confidence = (np.full(tillage.shape, np.nan, np.float32) if residue.confidence is None
                  else residue.confidence.astype(np.float32))
    return {"tillage": tillage, "guess": residue.tillage, "fractions": residue.fractions.astype(np.float32),
            "confidence": confidence}


def cube_arrays(cube: Cube, float16: bool) -> dict[str, NDArray]:
    data = cube.data.astype(np.float16 if float16 else np.float32)
    return {"data": data, "wavelengths_nm": cube.wavelengths_nm, "valid": cube.valid}


def raw_product(frame: RawFrame, thumbnails: NDArray, corners: ArrayLike, instrument: str,
                model_versions: dict | None = None) -> Product:
    """The raw-frame product: the thumbnails (N, h, w) uint16 DN as read out, CCSDS 123
    lossless (format in onboard/formats/products.py)."""
    stream = encode(np.asarray(thumbnails, dtype=np.uint16), RAW_FRAME_PARAMS)
    meta = {"coding": "ccsds123", "exposure_s": frame.exposure_s, "temperature_c": frame.temperature_c}
    return Product(kind=ProductKind.RAW, payload=encode_arrays(ccsds123=np.frombuffer(stream, np.uint8),
                                                               corners=np.asarray(corners)),
                   encoding="npz", meta=meta, frame_counter=frame.counter, created_utc=frame.timestamp,
                   instrument=instrument, model_versions=model_versions or {})


def frame_products(
    cube: Cube,
    residue: ResidueMap,
    instrument: str,
    meta: dict,
    quicklook: bool = True,
    with_cube: bool = True,
    cube_float16: bool = True,
    model_versions: dict | None = None,
    cube_coding: CubeCoding | None = None,
    residue_coding: str = "npz",
    screen_mask: NDArray[np.uint8] | None = None,
) -> list[Product]:
    """Products of one frame, highest downlink priority first; the cube coded as
    ``cube_coding`` says (default npz), the residue map as ``residue_coding`` says ("npz" or
    the compact "ccsds123"); each header's ``meta["coding"]`` says how. The residue payload also
    holds ``screen``, the screening mask, where one is given (either coding)."""
    versions = model_versions or {}

    def product(kind: ProductKind, payload: bytes, encoding: str, product_meta: dict) -> Product:
        """One of the frame's products, with what every product of the frame shares."""
        return Product(kind=kind, payload=payload, encoding=encoding, meta=product_meta,
                       frame_counter=cube.counter, created_utc=cube.timestamp,
                       instrument=instrument, model_versions=versions)

    res_arrays, res_meta = residue_arrays(residue), {}
    if residue_coding == "ccsds123":
        res_arrays, res_meta = residue_coding_mod.encode_residue(res_arrays), residue_coding_mod.meta()
    if screen_mask is not None:
        res_arrays["screen"] = screen_mask.astype(np.uint8)
    out = [
        product(ProductKind.RESIDUE, encode_arrays(**res_arrays), "npz",
                {**meta, "method": residue.method,
                 **{k: residue.extra[k] for k in RESIDUE_META if k in residue.extra}, **res_meta})
    ]
    if quicklook:
        out.append(product(ProductKind.QUICKLOOK, quicklook_png(cube), "png",
                           {**meta, "bands_nm": quicklook_bands_nm(cube.wavelengths_nm)}))
    if with_cube:
        coding = cube_coding or CubeCoding()
        if coding.kind == "npz":
            arrays = cube_arrays(cube, cube_float16)
        else:
            arrays = {**encode_cube(cube.data, cube.valid, coding), "wavelengths_nm": cube.wavelengths_nm,
                      "valid": cube.valid}
        out.append(product(ProductKind.CUBE, encode_arrays(**arrays), "npz", {**meta, **coding.meta()}))
    return out
