"""The CubeSat path as flown: ``python -m onboard run --port PTY`` in a subprocess, the flight
computer (hil's emulator) on the other end of an emulated serial link sending the simulated
spacecraft's state (hil/orbit.py, 500 km) as authenticated POSE telecommands at 1 Hz. The
ImSPOC products carry ``meta["georef"]`` whose corners fall within a ground pixel of the
independent truth (nadir, then rolled 25 degrees); a frame with no pose around it is made
and flagged; malformed, non-finite, forged, out-of-order and future poses are refused with
the reason and never used."""

from __future__ import annotations

import json
import math
import signal
import struct
import time
from dataclasses import dataclass

import numpy as np
import pytest
from test_payload_service import command, payload, running_payload, wait_for  # noqa: F401 (payload: the fixture)
from test_spacecraft_pose import truth_corners, truth_points

from firmware_bridge.messages import EventCode, PoseState, ResultCode
from hil.orbit import Orbit
from hil.sensor import make_frames
from onboard.formats.products import Product, ProductKind
from onboard.geo.georef import CameraGeometry, corners_rc, pixel_to_xy
from onboard.sources.replay import write_frame

pytest.importorskip("pyproj")

CAMERA = CameraGeometry(2.0, 2.0)
MISSION = "[camera]\nfov_across_deg = 2.0\nfov_along_deg = 2.0\nterrain_alt_m = 0.0\n"


@dataclass(frozen=True)
class UncheckedPose(PoseState):
    """A POSE packed without the sender's checks: what a broken flight computer might send."""

    def pack(self) -> bytes:
        return struct.pack(self.LAYOUT, self.time_us, *self._values())


def pose_args(msg: PoseState) -> dict:
    return {"time_us": msg.time_us, "position_m": msg.position_m, "velocity_m_s": msg.velocity_m_s,
            "quaternion": msg.quaternion, "rates_rad_s": msg.rates_rad_s}


@pytest.mark.parametrize("payload", [MISSION], indirect=True)
def test_flight_computer_poses_georeference_imspoc_products(payload) -> None:  # noqa: F811 (the fixture)
    fc, proc, tmp = payload
    assert command(fc, "SET_MODE", {"mode": "OPERATE"}) == ResultCode.OK
    start = math.floor(time.time()) - 20.0  # every state sent below is in the past
    orbit = Orbit(start - 900.0, node_lon_deg=20.0, roll_deg=lambda t: 0.0 if t < start + 8 else 25.0)
    for k in range(16):
        assert command(fc, "POSE", pose_args(orbit.pose(start + k))) == ResultCode.OK, k

    # refused, each with its reason, none used
    assert command(fc, "POSE", pose_args(orbit.pose(start + 3.5))) == ResultCode.BAD_ARGUMENT  # out of order
    assert command(fc, "POSE", pose_args(orbit.pose(time.time() + 60))) == ResultCode.BAD_ARGUMENT  # future
    assert command(fc, "POSE", pose_args(orbit.pose(start + 16)), kind="forged") == ResultCode.BAD_AUTH
    assert command(fc, "POSE", pose_args(orbit.pose(start + 16)), kind="none") == ResultCode.NOT_AUTHENTICATED
    good = orbit.pose(start + 16)
    nan = UncheckedPose(good.time_us, (math.nan, *good.position_m[1:]), good.velocity_m_s, good.quaternion)
    sent = fc.send_message("POSE", nan, "valid")
    wait_for(fc, lambda: sent.result is not None)
    assert sent.result == ResultCode.BAD_ARGUMENT
    # the reason goes down in an event (one per second per code: the next ones are counted)
    texts = [e.text for _, e in fc.events if e.code == EventCode.BAD_ARGUMENT]
    assert any("time stamp not after the previous one" in t for t in texts), texts

    frames = make_frames({}, 3)
    exposures = [start + 4.3, start + 11.6, start + 300.0]  # nadir, rolled, no pose near
    for frame, t in zip(frames, exposures, strict=True):
        frame.timestamp = t
        write_frame(tmp / "drop", frame)
    assert command(fc, "START_CAPTURE", {"frame_count": 3}) == ResultCode.OK
    wait_for(fc, lambda: (tmp / "out" / "frames" / "frame_00000002.json").is_file(), timeout=120)

    for counter, t in enumerate(exposures):
        products = [Product.from_bytes((tmp / "out" / "products" / f"{kind}_{counter:08d}.obp").read_bytes())
                    for kind in ("residue", "quicklook")]
        geo = products[0].meta["georef"]
        assert all(p.meta["georef"] == geo for p in products)
        assert geo["exposure_utc"] == pytest.approx(t) and geo["time_base"] == "UTC"
        if counter == 2:
            assert not geo["georeferenced"]
            assert "no position within" in geo["reason"], geo["reason"]
            continue
        assert geo["georeferenced"], geo
        assert products[0].kind == ProductKind.RESIDUE
        rows, cols = np.asarray(products[0].arrays()["tillage"]).shape
        truth = truth_corners(orbit, t, CAMERA, geo["epsg"], rows, cols)
        got = pixel_to_xy(geo, corners_rc(rows, cols))
        rms_px = float(np.sqrt(np.sum((got - truth) ** 2, axis=1).mean())) / geo["gsd_m"]
        assert rms_px <= 1.0, rms_px
        assert rms_px < 0.1, rms_px  # a perfect pose: 1 Hz interpolation is metres, a pixel 270 m
        assert ("geotransform" in geo) == (counter == 0)  # rolled: GCPs
        assert 0 < geo["pose_age_s"] <= 0.5 and geo["expected_error_m"] > 10.0
    manifest = json.loads((tmp / "out" / "frames" / "frame_00000002.json").read_text())
    assert any("not georeferenced" in f for f in manifest["flags"]), manifest

    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0, proc.stdout.read().decode()
    summary = json.loads((tmp / "summary.json").read_text())
    assert summary["georeferenced"] == 2
    assert summary["pose_refused"] == {"position: time stamp not after the previous one": 1,
                       "position: time stamp from the future": 1}, summary["pose_refused"]


PUSHBROOM = (MISSION.replace("fov_along_deg = 2.0", "fov_along_deg = 0.0113")  # one line's
             + '[run]\nsensor = "pushbroom"\n')


def test_push_broom_blocks_get_a_pose_per_line(tmp_path) -> None:
    """The simulated push-broom (its clock: the payload's) captures two blocks of 64 lines
    while the flight computer streams its state live, as it would in orbit; each line is
    placed by the pose at its own exposure."""
    camera = CameraGeometry(2.0, 0.0113)
    with running_payload(tmp_path, PUSHBROOM, replay=False) as (fc, proc, tmp):
        assert command(fc, "SET_MODE", {"mode": "OPERATE"}) == ResultCode.OK
        now = time.time()
        orbit = Orbit(now - 1200.0, node_lon_deg=-60.0)
        t = now - 90.0  # 1 Hz over the last 90 s (the simulator's clock started in them), caught up
        while t < time.time() - 0.2:
            assert command(fc, "POSE", pose_args(orbit.pose(t))) == ResultCode.OK
            t += 1.0
        assert command(fc, "START_CAPTURE", {"frame_count": 2}) == ResultCode.OK
        sent = [t - 1.0]

        def streamed_until_done() -> bool:
            """The flight computer's 5 Hz state stream, until the second block (its first line:
            64, push-broom products are numbered by line) is archived."""
            if time.time() - sent[-1] >= 0.2:
                sent.append(time.time())
                fc.send("POSE", pose_args(orbit.pose(sent[-1])), "valid")
            return (tmp / "out" / "frames" / "frame_00000064.json").is_file()

        wait_for(fc, streamed_until_done, timeout=120)
        assert all(c.result in (None, ResultCode.OK) for c in fc.commands), [c.result for c in fc.commands]
        for counter in (0, 64):
            product = Product.from_bytes((tmp / "out" / "products" / f"residue_{counter:08d}.obp").read_bytes())
            geo = product.meta["georef"]
            assert geo["georeferenced"] and geo["swath"], geo.get("reason")
            lines, cols = np.asarray(product.arrays()["tillage"]).shape
            assert (lines, cols) == (64, 128) and geo["lines"] == 64
            t0 = geo["exposure_utc"]
            times = [t0 + 0.014 * i for i in range(lines)]  # the simulator's line period
            a = truth_corners(orbit, times[0], camera, geo["epsg"], 1, cols)
            b = truth_corners(orbit, times[-1], camera, geo["epsg"], 1, cols)
            mid = truth_points(orbit, times[31], camera, geo["epsg"], np.array([[0.5, 64.0]]), 1, cols)
            got = pixel_to_xy(geo, np.vstack([corners_rc(lines, cols), [[31.5, 64.0]]]))
            err = np.hypot(*(got - np.vstack([a[0], a[1], b[2], b[3], mid])).T) / geo["gsd_m"]
            assert float(np.sqrt((err[:4] ** 2).mean())) <= 1.0 and err[4] <= 1.0, err
            assert err.max() < 0.1, err
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, proc.stdout.read().decode()
