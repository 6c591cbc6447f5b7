"""Cubes as Cloud-Optimised GeoTIFF, and quick-looks with a caption.

The COG is written by GDAL's own COG driver through rasterio: the layout the COG
specification defines (every IFD before the data, tiles in order, each with its size before
it, overviews above 512 pixels) is GDAL's, and a hand-made imitation would pass readers that
do not check it and fail those that do (the residue maps stay tifffile's plain GeoTIFFs:
tiny single rasters that GDAL reads as well). One band per cube band, described by its
wavelength in nm, float32, NaN nodata, DEFLATE with the floating-point predictor; the CRS
and geotransform or GCPs of the product's georeferencing (onboard/geo/georef.py). rasterio
is in the ``ground`` extra.

The captioned quick-look is the payload's false-colour PNG enlarged (nearest neighbour, so
every pixel stays one) over a caption: product, frame, acquisition time, the bands shown as
red/green/blue, and the ground pixel size with a scale bar when the product is
georeferenced, "not georeferenced" (with the reason) otherwise.
"""

from __future__ import annotations

import io
import math
import warnings
from pathlib import Path

import numpy as np

from ground.user_formats import georef_of

#: Quick-look enlargement and the caption's height per line (pixels).
QUICKLOOK_ZOOM, LINE_PX = 4, 14


def write_cog(path: Path, cube: np.ndarray, wavelengths_nm: np.ndarray, meta: dict) -> list[str]:
    """(bands, rows, cols) float cube as a COG at ``path``; returns the file names written."""
    import rasterio
    from rasterio.control import GroundControlPoint
    from rasterio.crs import CRS
    from rasterio.errors import NotGeoreferencedWarning
    from rasterio.io import MemoryFile
    from rasterio.shutil import copy as rio_copy
    from rasterio.transform import Affine

    bands, rows, cols = cube.shape
    profile = {"driver": "GTiff", "width": cols, "height": rows, "count": bands, "dtype": "float32",
               "nodata": float("nan")}
    geo = georef_of(meta)
    gcps = None
    if geo is not None:
        profile["crs"] = CRS.from_epsg(int(geo["epsg"]))
        if "geotransform" in geo:
            profile["transform"] = Affine.from_gdal(*geo["geotransform"])
        else:
            gcps = [GroundControlPoint(row=r, col=c, x=x, y=y) for r, c, x, y, *_ in geo["gcps"]]
    with MemoryFile() as mem, warnings.catch_warnings():
        # an ungeoreferenced cube is said so by its product; GDAL need not warn about it
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with mem.open(**profile) as ds:
            ds.write(cube.astype(np.float32))
            for b, nm in enumerate(wavelengths_nm, start=1):
                ds.set_band_description(b, f"{float(nm):.2f} nm")
                ds.update_tags(b, wavelength_nm=f"{float(nm):.3f}")
            if gcps is not None:
                ds.gcps = (gcps, profile["crs"])
            ds.update_tags(**{k.upper().replace(" ", "_"): str(v) for k, v in meta.items()
                              if isinstance(v, str | int | float) and not isinstance(v, bool)})
        with mem.open() as src, rasterio.Env():
            rio_copy(src, str(path), driver="COG", COMPRESS="DEFLATE", PREDICTOR="FLOATING_POINT")
    return [path.name]


def _scale_bar_m(gsd_m: float, width_px: int) -> float:
    """A round length (1, 2 or 5 x 10^k m) at most a third of the image's ground width."""
    most = gsd_m * width_px / 3
    k = 10 ** math.floor(math.log10(most))
    return max(s * k for s in (1, 2, 5) if s * k <= most)


def captioned_quicklook(png: bytes, lines: list[str], meta: dict) -> bytes:
    """The quick-look PNG enlarged over its caption ``lines`` (and a scale bar when ``meta``
    holds a georeferencing); PNG bytes."""
    from PIL import Image, ImageDraw

    image = Image.open(io.BytesIO(png)).convert("RGB")
    w, h = image.size
    big = image.resize((w * QUICKLOOK_ZOOM, h * QUICKLOOK_ZOOM), Image.Resampling.NEAREST)
    geo = georef_of(meta)
    text = list(lines)
    bar_px = 0
    if geo is not None:
        gsd = float(geo["gsd_m"])
        bar_m = _scale_bar_m(gsd, w)
        bar_px = round(bar_m / gsd * QUICKLOOK_ZOOM)
        text.append(f"ground pixel {gsd:.2f} m, EPSG:{geo['epsg']}; bar {bar_m:g} m")
    else:
        reason = meta.get("georef", {}).get("reason")
        text.append("not georeferenced" + (f": {reason}" if reason else ""))
    width = max(big.width, 6 * max(len(t) for t in text) + 8)
    canvas = Image.new("RGB", (width, big.height + LINE_PX * len(text) + (12 if bar_px else 4)), "white")
    canvas.paste(big, (0, 0))
    draw = ImageDraw.Draw(canvas)
    for i, t in enumerate(text):
        draw.text((4, big.height + 2 + i * LINE_PX), t, fill="black")
    if bar_px:
        y = canvas.height - 6
        draw.line([(4, y), (4 + bar_px, y)], fill="black", width=3)
    out = io.BytesIO()
    canvas.save(out, format="PNG", optimize=True)
    return out.getvalue()
