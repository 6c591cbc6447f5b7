"""Where a product lies in longitude and latitude, and whether that meets a ground request's box.

A product's footprint comes from its ``meta["georef"]`` (onboard/geo/georef.py), in the order
that costs least on board: ``corners_lonlat`` (written with the georeferencing, from points it
computes anyway), else the lon/lat columns of its ground control points, else its
``corners_xy`` taken from its ``epsg`` to WGS 84 with pyproj (the ``drone`` extra; without it
the product is said unlocatable, never guessed). The footprint of a frame camera over flat
terrain is a convex quadrilateral (a projective image of the frame), so the test against a
lat/lon box is the separating-axis test of two convex polygons, in degrees: exact for
footprints of a few kilometres away from the poles, where a degree of longitude is straight.
"""

from __future__ import annotations

from collections.abc import Sequence

#: (lon, lat) points, degrees.
Polygon = list[tuple[float, float]]


def footprint_lonlat(georef: object) -> Polygon | str:
    """The footprint's (lon, lat) corners, or why there is none (a sentence)."""
    if not isinstance(georef, dict) or georef.get("georeferenced") is False:
        reason = georef.get("reason") if isinstance(georef, dict) else None
        return f"not georeferenced ({reason})" if reason else "not georeferenced"
    try:
        if "corners_lonlat" in georef:
            return [(float(lon), float(lat)) for lon, lat in georef["corners_lonlat"]]
        if "gcps" in georef:  # [row, col, x, y, lon, lat]: the grid's hull is the footprint
            return _hull([(float(g[4]), float(g[5])) for g in georef["gcps"]])
        if "corners_xy" in georef and "epsg" in georef:
            return _from_projected(georef["corners_xy"], int(georef["epsg"]))
    except (TypeError, ValueError, IndexError, KeyError) as exc:
        return f"georeferencing unreadable ({exc})"
    return "georeferencing has no footprint (corners_lonlat, gcps or corners_xy)"


def _from_projected(corners_xy: Sequence[Sequence[float]], epsg: int) -> Polygon | str:
    try:
        from pyproj import Transformer
    except ImportError:
        return f"footprint in EPSG:{epsg} needs pyproj (pip install 'onboard[drone]')"
    lon, lat = Transformer.from_crs(epsg, 4326, always_xy=True).transform(
        [float(c[0]) for c in corners_xy], [float(c[1]) for c in corners_xy])
    return list(zip(map(float, lon), map(float, lat), strict=True))


def _hull(points: Polygon) -> Polygon:
    """Convex hull (Andrew's monotone chain), counter-clockwise."""
    pts = sorted(set(points))
    if len(pts) < 3:
        return pts

    def half(seq: Polygon) -> Polygon:
        out: Polygon = []
        for p in seq:
            while len(out) >= 2 and _cross(out[-2], out[-1], p) <= 0:
                out.pop()
            out.append(p)
        return out[:-1]

    return half(pts) + half(pts[::-1])


def _cross(o: tuple[float, float], a: tuple[float, float], b: tuple[float, float]) -> float:
    return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])


def meets_box(footprint: Polygon, box: tuple[float, float, float, float]) -> bool:
    """Whether the convex ``footprint`` (lon, lat) and the box (south, west, north, east)
    share a point (touching counts): no separating axis among the box's two and the
    footprint's edge normals."""
    south, west, north, east = box
    lons = [p[0] for p in footprint]
    lats = [p[1] for p in footprint]
    if max(lons) < west or min(lons) > east or max(lats) < south or min(lats) > north:
        return False
    rect = [(west, south), (east, south), (east, north), (west, north)]
    n = len(footprint)
    for i in range(n):
        (x0, y0), (x1, y1) = footprint[i], footprint[(i + 1) % n]
        axis = (y0 - y1, x1 - x0)
        if axis == (0.0, 0.0):
            continue
        a = [axis[0] * x + axis[1] * y for x, y in footprint]
        b = [axis[0] * x + axis[1] * y for x, y in rect]
        if max(a) < min(b) or max(b) < min(a):
            return False
    return True
