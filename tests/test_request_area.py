"""REQUEST_AREA: the ground asks for the cubes and raw frames over a lat/lon box, and the real
payload service (``onboard run --port``, over an emulated serial link) queues exactly the
archived products whose frame's footprint meets it, from an archive whose georeferencing is
made by onboard/geo/georef.py from poses placed around the box."""

from __future__ import annotations

import json
import signal
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
from test_payload_service import command, payload, wait_for  # noqa: F401 (payload: the fixture)

from firmware_bridge.messages import EventCode, Message, MsgType, ResultCode
from onboard.formats.products import Product, ProductKind, encode_arrays
from onboard.geo.footprint import footprint_lonlat, meets_box
from onboard.geo.georef import CameraGeometry, Pose, georeference
from onboard.runtime.pipeline import FrameResult
from onboard.runtime.writer import ProductWriter

CAMERA = CameraGeometry(40.0, 30.0)
#: The box asked for (south, west, north, east): a few hundred metres near Toulouse.
BOX = (43.599, 1.399, 43.601, 1.3999)
T0 = 1_800_000_000.25  # a time.time(), as the payload stamps products


def _georef(lon: float, roll: float = 0.0, keep: tuple[str, ...] = ()) -> dict:
    """A frame's georeferencing 100 m above the terrain at (43.6, lon); ``keep``: only these
    keys of the footprint (as an older writer or another producer would leave them)."""
    g = georeference(Pose(43.6, lon, 100.0, 100.0, roll, 0.0, 0.0), CAMERA, 32, 32)
    if keep:
        g = {k: v for k, v in g.items() if k in keep or k not in ("corners_lonlat", "gcps", "corners_xy")}
    return {"georeferenced": True, **g}


#: frame counter -> (georef, created_utc, kinds made)
FRAMES = {
    0: (_georef(1.4), T0, ("event", "cube", "raw", "residue")),  # nadir in the box
    1: (_georef(1.42), T0 + 10, ("cube", "raw")),  # 1.6 km east: outside
    2: (_georef(1.4015, roll=35.0, keep=("gcps",)), T0 + 20, ("cube", "residue")),  # nadir outside, view in
    3: (_georef(1.3995), T0 + 30, ("cube", "residue")),  # in the box; its cube shed below
    4: ({"georeferenced": False, "reason": "no pose"}, T0 + 40, ("cube", "residue")),
    5: (_georef(1.3995), T0 - 1000, ("cube",)),  # in the box, before the window
    6: (_georef(1.3996, keep=("corners_xy",)), T0 + 60, ("raw",)),  # footprint in UTM only: pyproj
}


def _archive(tmp: Path) -> str:
    """The archive a payload left before this boot (products and manifests by the real
    writer; a frame's event, first in its manifest, carries no georef, as on a drone);
    frame 3's cube was shed when storage ran short."""
    writer = ProductWriter(tmp / "out")
    for counter, (georef, created, kinds) in FRAMES.items():
        products = [Product(ProductKind(k), counter, created, encode_arrays(data=np.full((2, 4, 4), counter, np.float32)),
                            "npz", meta={} if k == "event" else {"georef": georef}) for k in kinds]
        writer.write(FrameResult(counter=counter, products=products))
    (tmp / "out" / "products" / "cube_00000003.obp").unlink()
    return ""


def _answers(fc) -> list[dict]:
    return [json.loads(e.text) for _, e in fc.events if e.code == EventCode.AREA_MATCHED]


def test_footprints_and_the_box_premises() -> None:
    """The scene is what the test says: frame 2's nadir is outside the box but its oblique view
    (GCPs only) meets it; a footprint whose bounding box meets a box but which does not (a
    diamond's corner region) is told apart."""
    fp2 = footprint_lonlat(FRAMES[2][0])
    assert isinstance(fp2, list) and not BOX[1] <= 1.4015 <= BOX[3] and meets_box(fp2, BOX)
    assert not meets_box(footprint_lonlat(FRAMES[1][0]), BOX)  # type: ignore[arg-type]
    diamond = [(0.0, -1.0), (1.0, 0.0), (0.0, 1.0), (-1.0, 0.0)]
    assert meets_box(diamond, (-0.1, -0.1, 0.1, 0.1)) and meets_box(diamond, (0.5, 0.5, 2.0, 2.0))
    assert not meets_box(diamond, (0.6, 0.6, 2.0, 2.0))  # inside the bounding box, off the diamond
    assert footprint_lonlat(FRAMES[4][0]) == "not georeferenced (no pose)"


@pytest.mark.parametrize("payload", [_archive], indirect=True)
def test_a_box_queues_exactly_the_products_over_it_in_value_order(payload) -> None:  # noqa: F811
    fc, proc, tmp = payload
    request = {"box": list(BOX), "kinds": ["cube", "raw"], "since_utc": int(T0) - 100}
    assert command(fc, "REQUEST_AREA", request) == ResultCode.OK
    (answer,) = wait_for(fc, lambda: _answers(fc))
    # cubes before raw frames (value rank), newest first within a rank
    expected = ["cube_00000002", "cube_00000000", "raw_00000006", "raw_00000000"]
    assert answer["names"] == expected and answer["queued"] == 4
    assert answer["gone_names"] == ["cube_00000003"] and answer["gone"] == 1
    assert answer["matched"] == 5 and answer["over_max"] == 0
    assert answer["not_located"] == 1 and answer["why_not_located"] == ["not georeferenced (no pose)"]
    wait_for(fc, lambda: len(fc.arrivals) >= 4, timeout=60)
    assert [a.name for a in fc.arrivals] == expected  # nothing else, in that order
    for a in fc.arrivals:
        assert a.error is None
        assert a.product.to_bytes() == (tmp / "out" / "products" / f"{a.name}.obp").read_bytes()

    # the same request with a max count: the two most valuable, the rest counted
    assert command(fc, "REQUEST_AREA", {**request, "max_count": 2}) == ResultCode.OK
    second = wait_for(fc, lambda: _answers(fc)[1:])[0]
    assert second["names"] == expected[:2] and second["over_max"] == 2 and second["matched"] == 5

    # a box nowhere near: none, and it says so
    assert command(fc, "REQUEST_AREA", {"box": [10.0, 10.0, 10.1, 10.1], "kinds": ["cube"]}) == ResultCode.OK
    third = wait_for(fc, lambda: _answers(fc)[2:])[0]
    assert third["matched"] == third["queued"] == 0 and "no archived product" in third["none"]
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0, proc.stdout.read().decode()


@dataclass(frozen=True)
class _RawArea(Message):
    """A REQUEST_AREA body no builder would make (the flight computer's software gone wrong)."""

    body: bytes
    TYPE: ClassVar[MsgType] = MsgType.REQUEST_AREA

    def pack(self) -> bytes:
        return self.body


@pytest.mark.parametrize("payload", [_archive], indirect=True)
def test_a_malformed_box_or_an_unknown_kind_is_refused_with_an_event(payload) -> None:  # noqa: F811
    fc, proc, tmp = payload
    south_above_north = struct.pack(">iiiiIIH", 436_010_000, 13_990_000, 435_990_000, 13_999_000, 0, 0, 0) + b"cube"
    assert command(fc, "REQUEST_AREA", _RawArea(south_above_north)) == ResultCode.BAD_ARGUMENT
    wait_for(fc, lambda: [e for _, e in fc.events
                          if e.code == EventCode.BAD_ARGUMENT and "south <= north" in e.text])
    assert command(fc, "REQUEST_AREA", {"box": list(BOX), "kinds": ["cubes"]}) == ResultCode.BAD_ARGUMENT
    wait_for(fc, lambda: [e for _, e in fc.events
                          if e.code == EventCode.BAD_ARGUMENT and "no product kind cubes" in e.text])
    assert not _answers(fc) and fc.arrivals == []
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0, proc.stdout.read().decode()
