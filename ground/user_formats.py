"""Products to the files users open: GeoTIFF residue maps and ENVI cubes."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _geotiff_tags(meta: dict) -> list[tuple]:
    """GeoTIFF tags for tifffile's ``extratags`` from meta's geotransform and EPSG code."""
    gt, epsg = meta.get("geotransform"), meta.get("epsg")
    if gt is None or epsg is None:
        return []
    x0, dx, _, y0, _, dy = (float(v) for v in gt)
    geographic = int(epsg) == 4326
    keys = [1, 1, 0, 3,
            1024, 0, 1, 2 if geographic else 1,  # GTModelType: geographic / projected
            1025, 0, 1, 1,  # GTRasterType: PixelIsArea
            2048 if geographic else 3072, 0, 1, int(epsg)]
    return [(33550, "d", 3, (dx, abs(dy), 0.0), False),
            (33922, "d", 6, (0.0, 0.0, 0.0, x0, y0, 0.0), False),
            (34735, "H", len(keys), tuple(keys), False)]


def write_tiff(path: Path, array: np.ndarray, meta: dict) -> None:
    import tifffile

    tifffile.imwrite(path, array, photometric="minisblack", extratags=_geotiff_tags(meta),
                     metadata=None)


def write_envi(path: Path, array: np.ndarray, header: dict) -> list[str]:
    """(bands, rows, cols) array as ENVI BSQ; returns the file names written."""
    from spectral.io import envi

    hdr = path.with_suffix(".hdr")
    envi.save_image(str(hdr), np.ascontiguousarray(np.moveaxis(array, 0, -1)),
                    interleave="bsq", ext=".img", force=True, metadata=header)
    return [hdr.name, path.with_suffix(".img").name]
