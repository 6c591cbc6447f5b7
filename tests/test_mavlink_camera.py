"""``onboard run --mavlink``: the real payload process as a MAVLink camera over UDP on the
loopback, against the autopilot emulator (hil/autopilot.py) hovering 100 m above the fields.
Each test sends what an autopilot or a ground station sends and waits for the camera's
answer (no sleeps: every wait ends on a message or a state, with a timeout as a failure).
Then the products: georeferenced from the pose at their exposure, or flagged when there was
none, and exported by ``onboard ground export`` as GeoTIFFs GDAL puts in the right place."""

from __future__ import annotations

import json
import math
import queue
import signal
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("pymavlink")
pytest.importorskip("pyproj")

from hil.autopilot import AutopilotEmulator, Faults, Lawnmower  # noqa: E402
from hil.drone import _free_udp_port  # noqa: E402
from onboard.formats.products import Product  # noqa: E402
from onboard.geo.georef import CameraGeometry, corners_rc, ground_points, pixel_to_xy  # noqa: E402

WAIT_S = 60.0  # a failure, not a pace: every wait ends as soon as its message comes


class Camera:
    """The payload process and the emulator talking to it."""

    def __init__(self, tmp: Path) -> None:
        port = _free_udp_port()
        self.out, self.summary = tmp / "out", tmp / "summary.json"
        (tmp / "mission.toml").write_text("[products]\ncube = false\n[mavlink]\nposition_sigma_m = 0.5\nattitude_sigma_deg = 0.0\n")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "onboard", "run", "--mavlink", f"udpin:127.0.0.1:{port}", "--out", str(self.out),
             "--config", str(tmp / "mission.toml"), "--json", str(self.summary), "--quiet"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.ap = AutopilotEmulator(f"udpout:127.0.0.1:{port}", Lawnmower(), Faults(), seed=3).start(survey_in_s=1e9)
        self.m = self.ap.m
        assert self.ap.camera_seen.wait(WAIT_S), "no HEARTBEAT from the camera"
        # synced: its clock answered (the first request) before its third request, and the
        # positions sent since (10 Hz) were kept
        for _ in range(3):
            self.expect("TIMESYNC", lambda t: t.tc1 == 0)

    def expect(self, kind: str, pred: Callable[[Any], bool] = lambda _m: True) -> Any:
        deadline = time.monotonic() + WAIT_S
        while (left := deadline - time.monotonic()) > 0:
            try:
                msg = self.ap.inbox.get(timeout=left)
            except queue.Empty:
                break
            if msg.get_type() == kind and pred(msg):
                return msg
        raise AssertionError(f"no {kind} from the camera within {WAIT_S} s")

    def command(self, cmd: int, *params: float, mav: Any = None) -> int:
        p = [*params, 0, 0, 0, 0, 0, 0, 0][:7]
        (mav or self.ap.conn.mav).command_long_send(1, 100, cmd, 0, *p)
        return self.expect("COMMAND_ACK", lambda a: a.command == cmd).result

    def capture_one(self, sequence: int) -> Any:
        assert self.command(self.m.MAV_CMD_IMAGE_START_CAPTURE, 0, 0, 1, sequence) == self.m.MAV_RESULT_ACCEPTED
        return self.expect("CAMERA_IMAGE_CAPTURED")

    def product(self, name: str) -> Product:
        return Product.from_bytes((self.out / "products" / f"{name}.obp").read_bytes())

    def stop(self) -> tuple[int, str]:
        self.proc.send_signal(signal.SIGTERM)
        out, _ = self.proc.communicate(timeout=WAIT_S)
        self.ap.stop()
        return self.proc.returncode, out


@pytest.fixture(scope="module")
def camera(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Camera]:
    cam = Camera(tmp_path_factory.mktemp("mavlink"))
    yield cam
    if cam.proc.poll() is None:
        cam.stop()


def test_it_is_a_camera_and_answers_what_a_camera_is_asked(camera: Camera) -> None:
    m = camera.m
    hb = camera.expect("HEARTBEAT")
    assert hb.type == m.MAV_TYPE_CAMERA and hb.autopilot == m.MAV_AUTOPILOT_INVALID
    assert camera.command(m.MAV_CMD_REQUEST_MESSAGE, m.MAVLINK_MSG_ID_CAMERA_INFORMATION) == m.MAV_RESULT_ACCEPTED
    info = camera.expect("CAMERA_INFORMATION")
    assert (info.resolution_h, info.resolution_v) == (64, 64)
    assert info.flags & m.CAMERA_CAP_FLAGS_CAPTURE_IMAGE
    assert bytes(info.vendor_name).rstrip(b"\0") == b"onboard"
    assert camera.command(m.MAV_CMD_REQUEST_CAMERA_SETTINGS, 1) == m.MAV_RESULT_ACCEPTED
    assert camera.expect("CAMERA_SETTINGS").mode_id == m.CAMERA_MODE_IMAGE
    assert camera.command(m.MAV_CMD_REQUEST_MESSAGE, m.MAVLINK_MSG_ID_CAMERA_CAPTURE_STATUS) == m.MAV_RESULT_ACCEPTED
    assert camera.expect("CAMERA_CAPTURE_STATUS").image_status == 0
    assert camera.command(m.MAV_CMD_REQUEST_MESSAGE, 33) == m.MAV_RESULT_UNSUPPORTED
    assert camera.command(m.MAV_CMD_DO_SET_MODE, 1) == m.MAV_RESULT_UNSUPPORTED


def test_commands_from_a_stranger_are_denied(camera: Camera) -> None:
    m = camera.m
    stranger = m.MAVLink(camera.ap.conn, srcSystem=77, srcComponent=190)
    assert camera.command(m.MAV_CMD_IMAGE_START_CAPTURE, 0, 0, 1, 99, mav=stranger) == m.MAV_RESULT_DENIED
    assert camera.command(m.MAV_CMD_IMAGE_START_CAPTURE, -1, -1, 1.5, 0) == m.MAV_RESULT_DENIED  # bad parameters


def test_a_capture_is_georeferenced_from_the_pose_at_its_exposure(camera: Camera) -> None:
    m = camera.m
    captured = camera.capture_one(sequence=1)
    # the same command again (its acknowledgement lost): acknowledged, not captured twice
    assert camera.command(m.MAV_CMD_IMAGE_START_CAPTURE, 0, 0, 1, 1) == m.MAV_RESULT_ACCEPTED
    assert camera.command(m.MAV_CMD_REQUEST_MESSAGE, m.MAVLINK_MSG_ID_CAMERA_CAPTURE_STATUS) == m.MAV_RESULT_ACCEPTED
    assert camera.expect("CAMERA_CAPTURE_STATUS").image_count == captured.image_index + 1
    assert captured.capture_result == 1
    name = captured.file_url
    product = camera.product(name)
    geo = product.meta["georef"]
    assert geo["georeferenced"], geo
    assert geo["exposure_utc"] == pytest.approx(captured.time_utc / 1e6, abs=1e-6)
    truth = camera.ap.true_pose(geo["exposure_utc"])
    assert captured.lat == pytest.approx(truth.lat_deg * 1e7, abs=20)  # 2 m: the stated sigma is 0.5
    # the exposure on the autopilot's clock, within the bound the product states
    assert abs(geo["autopilot_time_s"] - camera.ap.boot_time_s(geo["exposure_utc"])) <= geo["sync_bound_s"]
    assert 0 < geo["sync_bound_s"] < 0.05 and 0 <= geo["pose_age_s"] <= 0.1
    # no pose noise: the corners within a ground pixel of the truth's
    rc = corners_rc(64, 64)
    true_xy = ground_points(truth, CameraGeometry(20.0, 20.0), 64, 64, rc, geo["epsg"])
    err = float(np.sqrt(np.sum((pixel_to_xy(geo, rc) - true_xy) ** 2, axis=1).mean()))
    assert err <= geo["gsd_m"], (err, geo["gsd_m"])
    assert geo["epsg"] == 32631 and geo["gsd_m"] == pytest.approx(2 * 100 * math.tan(math.radians(10)) / 64, rel=0.01)
    assert geo["expected_error_m"] == pytest.approx(0.5, rel=0.2)  # the stated position sigma (attitude 0)


def test_the_v1_trigger_captures_one_image(camera: Camera) -> None:
    m = camera.m
    assert camera.command(m.MAV_CMD_DO_DIGICAM_CONTROL, 0, 0, 0, 0, 1, 7) == m.MAV_RESULT_ACCEPTED
    captured = camera.expect("CAMERA_IMAGE_CAPTURED")
    assert captured.capture_result == 1 and camera.product(captured.file_url).meta["georef"]["georeferenced"]


def test_an_interval_capture_runs_until_its_count(camera: Camera) -> None:
    m = camera.m
    assert camera.command(m.MAV_CMD_IMAGE_START_CAPTURE, 0, 0.2, 3, 0) == m.MAV_RESULT_ACCEPTED
    indices = [camera.expect("CAMERA_IMAGE_CAPTURED").image_index for _ in range(3)]
    assert indices == sorted(indices) and len(set(indices)) == 3
    assert camera.command(m.MAV_CMD_IMAGE_STOP_CAPTURE) == m.MAV_RESULT_ACCEPTED


def test_without_a_pose_the_frame_is_made_and_flagged(camera: Camera) -> None:
    camera.ap.positions_paused = True
    try:
        for _ in range(2):  # two of its 1 Hz requests: the newest position is over 1 s old
            camera.expect("TIMESYNC", lambda t: t.tc1 == 0)
        captured = camera.capture_one(sequence=2)
    finally:
        camera.ap.positions_paused = False
    assert captured.capture_result == 1 and captured.lat == 0 and math.isnan(captured.q[0])
    geo = camera.product(captured.file_url).meta["georef"]
    assert not geo["georeferenced"] and "position" in geo["reason"]
    assert "geotransform" not in geo and "gcps" not in geo


def test_stops_on_sigterm_and_its_products_export_georeferenced(camera: Camera, tmp_path: Path) -> None:
    rasterio = pytest.importorskip("rasterio")
    code, out = camera.stop()
    assert code == 143, out
    summary = json.loads(camera.summary.read_text())
    assert summary["stopped_by"] == "SIGTERM"
    assert summary["georeferenced"] >= 4 and summary["not_georeferenced"] >= 1
    assert any("system 77" in k for k in summary["refused"])
    user = tmp_path / "user"
    done = subprocess.run([sys.executable, "-m", "onboard", "ground", "export", str(camera.out), "-o", str(user)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    checked = 0
    for path in sorted((camera.out / "products").glob("residue_*.obp")):
        geo = Product.from_bytes(path.read_bytes()).meta["georef"]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
            ds = rasterio.open(user / f"{path.stem}_fractions.tif")
        with ds:
            if not geo["georeferenced"]:
                assert ds.crs is None
                continue
            assert ds.crs.to_epsg() == geo["epsg"] and ds.count == 3
            got = np.array([ds.xy(int(r), int(c), offset="ul") for r, c in corners_rc(64, 64)])
            assert np.abs(got - np.asarray(geo["corners_xy"])).max() < 0.01
            checked += 1
    assert checked >= 4


def test_without_the_drone_extra_it_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    from onboard.runtime import mavlink_camera

    monkeypatch.setitem(sys.modules, "pyproj", None)  # import pyproj -> ImportError
    with pytest.raises(mavlink_camera.MavlinkSetupError, match=r"pyproj is missing.*onboard\[drone\]"):
        mavlink_camera._imports()


def test_a_port_that_does_not_open_is_one_line_and_exit_1(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "onboard", "run", "--mavlink", str(tmp_path / "no_such_tty"),
                           "--out", str(tmp_path / "out"), "--quiet"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert "cannot open MAVLink" in done.stderr and "Traceback" not in done.stderr
