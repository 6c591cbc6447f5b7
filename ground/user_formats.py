"""Products to the files users open: GeoTIFF residue maps and ENVI cubes.

GeoTIFFs are written by tifffile (the ground extra's TIFF library, no GDAL binary needed on a
ground station), with the tags GDAL reads: one multi-sample image with separate planes is
one raster of N bands (N TIFF pages would be N sub-datasets, QGIS showing the first only),
``GDAL_METADATA`` (42112) for band names and class names, ``GDAL_NODATA`` (42113), a
palette (``ColorMap``) for class maps and, when meta has a ``geotransform`` and ``epsg``,
the GeoTIFF georeferencing tags. A class map's category names also go to the
``.tif.aux.xml`` sidecar that GDAL (QGIS) shows as the legend. ENVI cubes are written by
Spectral Python.
"""

from __future__ import annotations

import datetime
import math
from collections.abc import Sequence
from pathlib import Path
from xml.sax.saxutils import escape

import numpy as np

from onboard.formats.types import ENDMEMBERS, INVALID_CLASS, TILLAGE_CLASSES, UNCERTAIN_CLASS

#: Tillage map classes by value, as in the product (onboard/formats/products.py).
TILLAGE_LEGEND: dict[int, str] = {**{i: f"{name} tillage" for i, name in enumerate(TILLAGE_CLASSES)},
                                  UNCERTAIN_CLASS: "uncertain", INVALID_CLASS: "no valid measurement"}
#: Legend colours (RGB 0-255): brown, amber, green for increasing residue; grey uncertain, black invalid.
TILLAGE_COLOURS: dict[int, tuple[int, int, int]] = {0: (166, 97, 26), 1: (253, 174, 97), 2: (26, 150, 65),
                                                    UNCERTAIN_CLASS: (190, 190, 190), INVALID_CLASS: (0, 0, 0)}
_GDAL_METADATA, _GDAL_NODATA = 42112, 42113


def georef_of(meta: dict) -> dict | None:
    """A product's georeferencing: ``meta["georef"]`` (onboard/geo/georef.py, set by the MAVLink
    camera) when it holds one, else ``meta`` itself when it has ``geotransform`` and ``epsg``
    (products of older writers); None when the product is not georeferenced."""
    geo = meta.get("georef", meta)
    if geo.get("epsg") is None or not ("geotransform" in geo or "gcps" in geo):
        return None
    return geo


def _geotiff_tags(meta: dict) -> list[tuple]:
    """GeoTIFF tags for tifffile's ``extratags`` from the product's georeferencing: a north-up
    geotransform as ModelPixelScale + ModelTiepoint, a rotated one as ModelTransformation, and
    ground control points as ModelTiepoint alone with one tie point each (GDAL reads those as
    GCPs in the CRS of the GeoKeys). Pixel corners convention (PixelIsArea)."""
    geo = georef_of(meta)
    if geo is None:
        return []
    epsg = int(geo["epsg"])
    geographic = epsg == 4326
    keys = [1, 1, 0, 3,
            1024, 0, 1, 2 if geographic else 1,  # GTModelType: geographic / projected
            1025, 0, 1, 1,  # GTRasterType: PixelIsArea
            2048 if geographic else 3072, 0, 1, epsg]
    geokeys = (34735, "H", len(keys), tuple(keys), False)
    if "gcps" in geo:
        ties = tuple(v for r, c, x, y, *_ in geo["gcps"] for v in (c, r, 0.0, x, y, 0.0))
        return [(33922, "d", len(ties), ties, False), geokeys]
    x0, dx, rx, y0, ry, dy = (float(v) for v in geo["geotransform"])
    if rx or ry:
        matrix = (dx, rx, 0.0, x0, ry, dy, 0.0, y0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0)
        return [(34264, "d", 16, matrix, False), geokeys]
    return [(33550, "d", 3, (dx, abs(dy), 0.0), False),
            (33922, "d", 6, (0.0, 0.0, 0.0, x0, y0, 0.0), False), geokeys]


def envi_map_info(meta: dict) -> dict[str, object]:
    """ENVI header fields of the product's georeferencing: ``map info`` (UTM zone, pixel size
    and, for a heading not north, ``rotation``: the angle, degrees counter-clockwise, by which
    the image's axes are turned from the map's) for a geotransform, ``geo points`` (pixel x, y
    1-based at the corner, latitude, longitude) for ground control points; {} otherwise."""
    geo = georef_of(meta)
    if geo is None or not 32601 <= int(geo["epsg"]) <= 32760:
        return {}
    zone, hemisphere = int(geo["epsg"]) % 100, "North" if int(geo["epsg"]) < 32700 else "South"
    if "gcps" in geo:
        if any(len(g) < 6 for g in geo["gcps"]):
            return {}
        return {"geo points": [f"{v:.9f}" for _r, _c, _x, _y, lon, lat in geo["gcps"]
                               for v in (_c + 1.0, _r + 1.0, lat, lon)]}
    x0, dx, rx, y0, ry, dy = (float(v) for v in geo["geotransform"])
    size_x, size_y = math.hypot(dx, ry), math.hypot(rx, dy)
    info = ["UTM", "1", "1", f"{x0:.4f}", f"{y0:.4f}", f"{size_x:.6f}", f"{size_y:.6f}", str(zone),
            hemisphere, "WGS-84", "units=Meters"]
    rotation = math.degrees(math.atan2(ry, dx))
    if abs(rotation) > 1e-9:
        info.append(f"rotation={rotation:.9f}")
    return {"map info": info}


def _gdal_metadata(names: Sequence[str], items: dict[str, str]) -> str:
    """GDAL's XML metadata: dataset items and each band's description (its name)."""
    rows = [f'<Item name="{escape(k)}">{escape(v)}</Item>' for k, v in items.items()]
    rows += [f'<Item name="DESCRIPTION" sample="{i}" role="description">{escape(n)}</Item>'
             for i, n in enumerate(names)]
    return "<GDALMetadata>" + "".join(rows) + "</GDALMetadata>"


def write_tiff(path: Path, array: np.ndarray, meta: dict, band_names: Sequence[str] = (),
               nodata: float | None = None, items: dict[str, str] | None = None) -> list[str]:
    """(rows, cols) or (bands, rows, cols) as one GeoTIFF raster of that many bands."""
    import tifffile

    tags = _geotiff_tags(meta) + [(_GDAL_METADATA, "s", 0, _gdal_metadata(band_names, items or {}), True)]
    if nodata is not None:
        tags.append((_GDAL_NODATA, "s", 0, "nan" if np.isnan(nodata) else f"{nodata:g}", True))
    multi = array.ndim == 3
    tifffile.imwrite(path, array, photometric="minisblack", planarconfig="separate" if multi else None,
                     extrasamples=[0] * (array.shape[0] - 1) if multi else None,
                     extratags=tags, metadata=None)
    return [path.name]


def write_class_map(path: Path, classes: np.ndarray, meta: dict, name: str) -> list[str]:
    """A uint8 tillage map as a palette GeoTIFF (the legend's colours) with the class names
    in its metadata and in the ``.aux.xml`` GDAL shows as the legend; 255 is nodata."""
    import tifffile

    cmap = np.zeros((3, 256), dtype=np.uint16)
    for value, rgb in TILLAGE_COLOURS.items():
        cmap[:, value] = np.asarray(rgb, dtype=np.uint16) * 257
    items = {f"CLASS_{v}": label for v, label in TILLAGE_LEGEND.items()}
    tags = _geotiff_tags(meta) + [(_GDAL_METADATA, "s", 0, _gdal_metadata([name], items), True),
                                  (_GDAL_NODATA, "s", 0, str(INVALID_CLASS), True)]
    tifffile.imwrite(path, classes.astype(np.uint8), photometric="palette", colormap=cmap,
                     extratags=tags, metadata=None)
    categories = "".join(f"<Category>{escape(TILLAGE_LEGEND.get(v, ''))}</Category>" for v in range(256))
    aux = path.with_name(path.name + ".aux.xml")
    aux.write_text(f'<PAMDataset><PAMRasterBand band="1"><CategoryNames>{categories}</CategoryNames>'
                   "</PAMRasterBand></PAMDataset>\n")
    return [path.name, aux.name]


def residue_geotiffs(out: Path, stem: str, arrays: dict[str, np.ndarray], meta: dict) -> list[str]:
    """A residue product's maps: tillage and (format 2) guess as class maps, the fractions as
    one 3-band raster (residue, soil, green; NaN nodata), the confidence as one band."""
    files = write_class_map(out / f"{stem}_tillage.tif", arrays["tillage"], meta, "tillage")
    if "guess" in arrays:  # format 2: the class the stage chose where the map says "uncertain"
        files += write_class_map(out / f"{stem}_guess.tif", arrays["guess"], meta, "tillage guess")
    files += write_tiff(out / f"{stem}_fractions.tif", arrays["fractions"].astype(np.float32), meta,
                        ENDMEMBERS, np.nan, {"UNITS": "fraction of the pixel's cover, 0-1"})
    if "confidence" in arrays:
        files += write_tiff(out / f"{stem}_confidence.tif", arrays["confidence"].astype(np.float32), meta,
                            ["confidence"], np.nan, {"UNITS": "probability that the guess is right, 0-1"})
    return files


def write_envi(path: Path, array: np.ndarray, header: dict) -> list[str]:
    """(bands, rows, cols) array as ENVI BSQ; returns the file names written."""
    from spectral.io import envi

    hdr = path.with_suffix(".hdr")
    envi.save_image(str(hdr), np.ascontiguousarray(np.moveaxis(array, 0, -1)),
                    interleave="bsq", ext=".img", force=True, metadata=header)
    return [hdr.name, path.with_suffix(".img").name]


def cube_envi(path: Path, cube: np.ndarray, wavelengths_nm: np.ndarray, header: dict) -> list[str]:
    """A reflectance cube as ENVI with what ENVI, QGIS and Spectral Python look for:
    wavelengths, FWHM, default bands (true colour when the cube covers 460-640 nm, else three
    bands across its range), NaN as data ignore value, acquisition time.

    The FWHM written is the width of the band the cube's value is defined over (contiguous
    bands between midpoints, :func:`onboard.physics.imspoc.band_edges_nm`, as the simulator's
    truth and the accuracy figures use), unless the product carries its own ``fwhm_nm``."""
    from onboard.physics.imspoc import band_edges_nm

    lam = np.asarray(wavelengths_nm, dtype=float)
    fwhm = header.pop("fwhm_nm", None)
    fwhm = np.diff(band_edges_nm(lam)) if fwhm is None else np.asarray(fwhm, dtype=float)
    visible = lam[0] <= 460.0 and lam[-1] >= 640.0
    targets = (640.0, 550.0, 460.0) if visible else np.quantile(lam, (0.9, 0.5, 0.1))  # else false colour
    rgb = [int(np.argmin(np.abs(lam - nm))) for nm in targets]
    full = {"wavelength": [f"{w:.3f}" for w in lam], "fwhm": [f"{w:.3f}" for w in fwhm],
            "wavelength units": "Nanometers", "default bands": [str(b + 1) for b in rgb],
            "data ignore value": "nan", "data units": "reflectance (0-1)", **header}
    return write_envi(path, cube.astype(np.float32), full)


def utc_iso(t: float) -> str:
    """Seconds since 1970 UTC as ISO 8601 (ENVI's ``acquisition time``)."""
    return datetime.datetime.fromtimestamp(t, datetime.timezone.utc).isoformat().replace("+00:00", "Z")
