"""The payload as a MAVLink camera (``onboard run --mavlink URL``), beside a PX4 or ArduPilot
autopilot: Camera Protocol v2 over pymavlink (imported here, and only with ``--mavlink``).

Two threads share one :class:`MavlinkCamera`:

* the **MAVLink thread** reads the link and answers: HEARTBEAT as a camera (MAV_TYPE_CAMERA,
  1 Hz); ``MAV_CMD_REQUEST_MESSAGE`` (and the older ``REQUEST_CAMERA_*``) for
  CAMERA_INFORMATION, CAMERA_SETTINGS and CAMERA_CAPTURE_STATUS; ``MAV_CMD_IMAGE_START_CAPTURE``
  (``param2`` interval s, ``param3`` images, 0 until stopped, ``param4`` the sequence number of a
  single capture: a retransmitted command is acknowledged, not captured twice) and
  ``_STOP_CAPTURE``, and the v1 trigger ``MAV_CMD_DO_DIGICAM_CONTROL`` (``param5`` 1: one
  image, ``param6`` its command identity, deduplicated the same way), each answered by
  COMMAND_ACK; TIMESYNC both ways (onboard/geo/timesync.py);
  the autopilot's GLOBAL_POSITION_INT and ATTITUDE into the checked pose buffer
  (onboard/geo/pose.py). It declares the autopilot lost after ``[mavlink] lost_after_s``
  without its HEARTBEAT and back when one comes (an event product each); a restarted
  autopilot clock (a reboot) drops the poses stamped on the old one.
* the **frame thread** (the caller's) takes a frame from the session's source for each trigger,
  stamps its exposure (the system clock, UTC: a camera's own time stamp, or for the simulated
  camera the trigger's arrival, as a hardware-triggered camera exposes on the trigger and is
  read out after), runs it through the frame loop, puts the pose
  interpolated to the exposure and the georeferencing into every product's ``meta["georef"]``
  and answers CAMERA_IMAGE_CAPTURED (``capture_result`` 0 when the frame yielded no residue
  product; ``file_url`` the residue product's name).

Every trigger yields a frame or an event product. Refused input is never used and always
counted, by reason, in the summary (``refused``): bytes that do not parse (pymavlink's CRC and
framing checks), pose or clock messages from another system or component than the autopilot's,
commands from a system that is neither the autopilot's nor the ground station's (answered
DENIED), pose samples out of range, out of order or from the future.

``meta["georef"]`` of a product: ``georeferenced`` (bool) and, if not, ``reason``;
``exposure_utc``; ``autopilot_time_s`` (the exposure on the autopilot's boot clock) and
``sync_bound_s`` (how far off that can be); ``pose`` (lat, lon deg, alt, height m, roll,
pitch, yaw deg), ``pose_age_s``, ``pose_extrapolated``; ``epsg``, ``geotransform`` or ``gcps``,
``gsd_m``, ``corners_xy``, ``corners_lonlat`` (REQUEST_AREA matches on it);
``expected_error_m`` (onboard/geo/georef.py).

Event products of the link (lost, back, restarted clock) are numbered from
:data:`LINK_EVENT_BASE` so that they never take a frame's event name.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections import Counter, deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from firmware_bridge.stopping import StopRequest, stop_on_signals
from onboard.config import Config
from onboard.errors import OnboardError
from onboard.formats.products import ProductKind, event_product
from onboard.formats.types import Frame
from onboard.geo.blur import frame_blur
from onboard.geo.frame import PUSHBROOM_REASON, attach, camera_geometry, frame_georef
from onboard.geo.georef import rotation
from onboard.geo.pose import AttitudeSample, PoseBuffer, PositionSample
from onboard.geo.spacecraft import matrix_quaternion
from onboard.geo.timesync import TimeSync
from onboard.runtime.loop import FrameLoop
from onboard.runtime.pipeline import FrameResult
from onboard.runtime.session import Session
from onboard.runtime.writer import ProductWriter

log = logging.getLogger(__name__)

#: Event products of the link are numbered from here (frame counters stay below).
LINK_EVENT_BASE = 90_000_000
#: Single-image triggers waiting for the frame thread; more are answered TEMPORARILY_REJECTED.
MAX_PENDING = 32
#: TIMESYNC requests: this many fast ones at the start and when the autopilot comes back (it
#: may have rebooted), then one every SYNC_PERIOD_S.
SYNC_FAST, SYNC_FAST_PERIOD_S, SYNC_PERIOD_S = 5, 0.1, 1.0
#: How long the MAVLink thread blocks on the link before its periodic work.
POLL_S = 0.02
#: Longest a waiting frame thread goes without looking at the stop flag (a signal handler may
#: take no lock, so it cannot wake a condition variable).
STOP_CHECK_S = 0.1
#: Milliseconds rounding of the autopilot's pose time stamps, added to the sync bound.
STAMP_ROUNDING_S = 0.0005


class MavlinkSetupError(OnboardError, ValueError):
    """``--mavlink`` cannot start: a missing library or a bad URL, said in one line."""


@dataclass
class Trigger:
    """One image asked for: by a single capture (its sequence number) or an interval run."""

    index: int
    asked_utc_ns: int  # when it was asked for (interval runs: when it fell due), system clock
    sequence: int = 0


@dataclass
class Capture:
    """What travels with a frame through the loop: its trigger and its exposure time."""

    trigger: Trigger
    exposure_ns: int


def _imports() -> tuple[Any, Any]:
    """pymavlink's connection module and MAVLink 2 common dialect; pyproj checked."""
    os.environ.setdefault("MAVLINK20", "1")  # read by pymavlink when it picks the dialect
    try:
        import pyproj  # noqa: F401 (the georeferencing needs it; say so before any frame)
        from pymavlink import mavutil
        from pymavlink.dialects.v20 import common
    except ImportError as exc:
        raise MavlinkSetupError(f"--mavlink needs pymavlink and pyproj ({exc.name} is missing): "
                                "pip install 'onboard[drone]'") from exc
    return mavutil, common


class MavlinkCamera:
    """A camera component on a MAVLink link, capturing and georeferencing frames."""

    def __init__(self, config: Config, session: Session, writer: ProductWriter, url: str) -> None:
        self.mavutil, self.m = _imports()
        self.config, self.session, self.writer = config, session, writer
        mc, cc = config.mavlink, config.camera
        self.mc = mc
        self.camera = camera_geometry(cc)
        try:
            self.conn = self.mavutil.mavlink_connection(
                url, baud=mc.baud, source_system=mc.system_id, source_component=mc.component_id,
                dialect="common", autoreconnect=True)
        except Exception as exc:  # noqa: BLE001 (pymavlink raises anything from a bad URL)
            raise MavlinkSetupError(f"cannot open MAVLink {url}: {exc}") from exc
        self.conn.mav.robust_parsing = True  # bad bytes become BAD_DATA messages, counted
        self.url = url
        self.sync = TimeSync()
        self.poses = PoseBuffer(mc.max_pose_gap_s, mc.max_extrapolation_s, cc.terrain_alt_m)
        self.loop = FrameLoop(session.pipeline, config.run.deadline_s,
                              faster_inference=session.faster_inference, health=session.health,
                              health_period_s=config.run.health_period_s)
        self.boot_ns = time.monotonic_ns()
        self.cv = threading.Condition()
        self.send_lock = threading.Lock()
        self.write_lock = threading.Lock()
        self.pending: deque[Trigger] = deque()
        self.interval: tuple[float, int, int] | None = None  # (interval s, images left or -1, next due ns)
        self.next_index = 0
        self.last_sequence = 0
        self.autopilot_seen_ns: int | None = None
        self.autopilot_lost = False
        self.autopilot_utc_offset_s: float | None = None
        self.sync_requests: dict[int, int] = {}  # ts1 sent -> monotonic ns sent
        self.next_sync_ns = 0
        self.fast_syncs = SYNC_FAST  # requests still to send at the fast rate
        self.next_heartbeat_ns = 0
        self.refused: Counter[str] = Counter()
        self.stats: Counter[str] = Counter()
        self.link_events = 0
        self._stop = threading.Event()  # the MAVLink thread's
        self.stop = StopRequest()  # SIGINT/SIGTERM, or a failed MAVLink thread
        self.pose_cv = threading.Condition()  # pose samples added (MAVLink thread) / read
        self._thread = threading.Thread(target=self._serve, name="mavlink", daemon=True)
        self._error: BaseException | None = None

    # -- sending ----------------------------------------------------------------------------

    def _send(self, msg: Any) -> None:
        with self.send_lock:
            self.conn.mav.send(msg)

    def _time_boot_ms(self) -> int:
        return (time.monotonic_ns() - self.boot_ns) // 1_000_000 & 0xFFFFFFFF

    def _ack(self, command: int, result: int, src: tuple[int, int]) -> None:
        self._send(self.m.MAVLink_command_ack_message(command, result, 0, 0, src[0], src[1]))

    def _name(self, text: str) -> list[int]:
        return list(text.encode()[:32].ljust(32, b"\0"))

    def _camera_information(self) -> Any:
        _, rows, cols = self.session.cube_shape
        return self.m.MAVLink_camera_information_message(
            self._time_boot_ms(), self._name("onboard"), self._name(self.session.instrument), 0,
            math.nan, math.nan, math.nan, int(cols), int(rows), 0,
            self.m.CAMERA_CAP_FLAGS_CAPTURE_IMAGE, 0, b"")

    def _capture_status(self) -> Any:
        with self.cv:
            interval = self.interval
            busy = bool(self.pending)
        status = (3 if busy else 2) if interval else (1 if busy else 0)
        return self.m.MAVLink_camera_capture_status_message(
            self._time_boot_ms(), status, 0, interval[0] if interval else 0.0, 0, math.nan, self.next_index)

    # -- the MAVLink thread -------------------------------------------------------------------

    def _serve(self) -> None:
        try:
            while not self._stop.is_set():
                msg = self.conn.recv_match(blocking=True, timeout=POLL_S)
                if msg is not None:
                    self._handle(msg)
                self._periodic()
        except BaseException as exc:  # surfaced to the frame thread, which stops the run
            log.exception("MAVLink thread failed")
            self._error = exc
            self.request_stop("MAVLink thread failed")

    def _periodic(self) -> None:
        now = time.monotonic_ns()
        if now >= self.next_heartbeat_ns:
            self.next_heartbeat_ns = now + 1_000_000_000
            self._send(self.m.MAVLink_heartbeat_message(
                self.m.MAV_TYPE_CAMERA, self.m.MAV_AUTOPILOT_INVALID, 0, 0, self.m.MAV_STATE_ACTIVE, 3))
        if now >= self.next_sync_ns:
            fast = self.fast_syncs > 0 or not self.sync.synced
            self.fast_syncs -= fast
            self.next_sync_ns = now + int(1e9 * (SYNC_FAST_PERIOD_S if fast else SYNC_PERIOD_S))
            ts1 = time.time_ns()
            self.sync_requests = {k: v for k, v in self.sync_requests.items() if now - v < 2e9}
            self.sync_requests[ts1] = now
            self._send(self.m.MAVLink_timesync_message(0, ts1))
        seen = self.autopilot_seen_ns
        if seen is not None and not self.autopilot_lost and now - seen > self.mc.lost_after_s * 1e9:
            self.autopilot_lost = True
            self.stats["autopilot_lost"] += 1
            self._link_event("autopilot lost", f"no HEARTBEAT from system {self.mc.autopilot_system_id} "
                             f"for {self.mc.lost_after_s:g} s; capturing goes on, frames are not "
                             "georeferenced until its pose comes back")

    def _link_event(self, what: str, detail: str) -> None:
        log.warning("%s: %s", what, detail)
        product = event_product(LINK_EVENT_BASE + self.link_events, time.time(), self.session.instrument,
                                what, detail)
        self.link_events += 1
        with self.write_lock:
            self.writer.write(FrameResult(counter=product.frame_counter, products=[product]))

    def _handle(self, msg: Any) -> None:
        kind = msg.get_type()
        if kind == "BAD_DATA":
            self.refused["bytes that do not parse as MAVLink"] += 1
            return
        src = (msg.get_srcSystem(), msg.get_srcComponent())
        if kind == "COMMAND_LONG":
            self._command(msg, src)
            return
        autopilot = (self.mc.autopilot_system_id, self.mc.autopilot_component_id)
        if kind not in ("HEARTBEAT", "TIMESYNC", "SYSTEM_TIME", "GLOBAL_POSITION_INT", "ATTITUDE"):
            return
        if src != autopilot:
            if kind != "HEARTBEAT":  # other components' heartbeats are normal on a MAVLink network
                self.refused[f"{kind} from system {src[0]} component {src[1]}, not the autopilot"] += 1
            return
        now_ns = time.time_ns()
        if kind == "HEARTBEAT":
            if self.autopilot_lost:
                self.autopilot_lost = False
                self.stats["autopilot_back"] += 1
                gone = (time.monotonic_ns() - (self.autopilot_seen_ns or 0)) / 1e9
                self._link_event("autopilot back", f"HEARTBEAT again after {gone:.1f} s")
                self.fast_syncs, self.next_sync_ns = SYNC_FAST, 0  # it may have rebooted: resync now
            self.autopilot_seen_ns = time.monotonic_ns()
        elif kind == "TIMESYNC":
            self._timesync(msg, now_ns)
        elif kind == "SYSTEM_TIME":
            if msg.time_unix_usec:  # 0: the autopilot has no UTC (no GPS time yet)
                self.autopilot_utc_offset_s = msg.time_unix_usec / 1e6 - now_ns / 1e9
        else:
            self._pose(kind, msg, now_ns)

    def _timesync(self, msg: Any, now_ns: int) -> None:
        if msg.tc1 == 0:  # the autopilot asks: answer with our clock
            self._send(self.m.MAVLink_timesync_message(time.time_ns(), msg.ts1))
            return
        if self.sync_requests.pop(msg.ts1, None) is None:
            self.refused["TIMESYNC answer to no request of ours"] += 1
            return
        if self.sync.add(msg.ts1, msg.tc1, now_ns):
            with self.pose_cv:
                self.poses.clear()
            self.stats["autopilot_clock_restarted"] += 1
            self._link_event("autopilot clock restarted",
                             "its boot clock jumped (a reboot): poses stamped before are dropped")
        self.stats["timesync_refused"] = self.sync.refused

    def _pose(self, kind: str, msg: Any, now_ns: int) -> None:
        synced = self.sync.synced
        ap_now = self.sync.to_autopilot_s(now_ns) if synced else None
        t = msg.time_boot_ms / 1000.0
        with self.pose_cv:
            if kind == "GLOBAL_POSITION_INT":
                self.poses.add_position(PositionSample(
                    t, msg.lat / 1e7, msg.lon / 1e7, msg.alt / 1000.0, msg.relative_alt / 1000.0,
                    (msg.vx / 100.0, msg.vy / 100.0, msg.vz / 100.0)), ap_now, self.sync.bound_s)
            else:
                self.poses.add_attitude(AttitudeSample(
                    t, math.degrees(msg.roll), math.degrees(msg.pitch), math.degrees(msg.yaw),
                    (math.degrees(msg.rollspeed), math.degrees(msg.pitchspeed), math.degrees(msg.yawspeed))),
                    ap_now, self.sync.bound_s)
            self.pose_cv.notify_all()

    def _command(self, msg: Any, src: tuple[int, int]) -> None:
        m = self.m
        if msg.target_system != self.mc.system_id or msg.target_component not in (self.mc.component_id, 0):
            return  # for another component: not ours to answer
        if src[0] not in (self.mc.autopilot_system_id, self.mc.gcs_system_id):
            self.refused[f"command from system {src[0]}, neither the autopilot nor the ground station"] += 1
            self._ack(msg.command, m.MAV_RESULT_DENIED, src)
            return
        cmd, replies = msg.command, {
            m.MAVLINK_MSG_ID_CAMERA_INFORMATION: self._camera_information,
            m.MAVLINK_MSG_ID_CAMERA_SETTINGS: lambda: m.MAVLink_camera_settings_message(
                self._time_boot_ms(), m.CAMERA_MODE_IMAGE, math.nan, math.nan),
            m.MAVLINK_MSG_ID_CAMERA_CAPTURE_STATUS: self._capture_status}
        legacy = {m.MAV_CMD_REQUEST_CAMERA_INFORMATION: m.MAVLINK_MSG_ID_CAMERA_INFORMATION,
                  m.MAV_CMD_REQUEST_CAMERA_SETTINGS: m.MAVLINK_MSG_ID_CAMERA_SETTINGS,
                  m.MAV_CMD_REQUEST_CAMERA_CAPTURE_STATUS: m.MAVLINK_MSG_ID_CAMERA_CAPTURE_STATUS}
        wanted = int(msg.param1) if cmd == m.MAV_CMD_REQUEST_MESSAGE and math.isfinite(msg.param1) else legacy.get(cmd)
        if cmd == m.MAV_CMD_REQUEST_MESSAGE or cmd in legacy:
            if wanted not in replies:
                self._ack(cmd, m.MAV_RESULT_UNSUPPORTED, src)
                return
            self._ack(cmd, m.MAV_RESULT_ACCEPTED, src)
            self._send(replies[wanted]())
        elif cmd == m.MAV_CMD_IMAGE_START_CAPTURE:
            self._ack(cmd, self._start(msg.param2, msg.param3, msg.param4), src)
        elif cmd == m.MAV_CMD_DO_DIGICAM_CONTROL and msg.param5 == 1:  # the v1 trigger: one image
            self._ack(cmd, self._start(0.0, 1.0, msg.param6), src)
        elif cmd == m.MAV_CMD_IMAGE_STOP_CAPTURE:
            with self.cv:
                self.interval = None
                self.cv.notify_all()
            self.stats["stop_capture"] += 1
            self._ack(cmd, m.MAV_RESULT_ACCEPTED, src)
        else:
            self._ack(cmd, m.MAV_RESULT_UNSUPPORTED, src)

    def _start(self, interval_s: float, images: float, sequence: float) -> int:
        """MAV_CMD_IMAGE_START_CAPTURE's result."""
        m = self.m
        if not (math.isfinite(interval_s) and math.isfinite(images) and math.isfinite(sequence)) \
                or interval_s < 0 or images < 0 or images != int(images):
            self.refused["IMAGE_START_CAPTURE with bad parameters"] += 1
            return m.MAV_RESULT_DENIED
        now = time.monotonic_ns()
        with self.cv:
            if int(images) == 1:
                if sequence and int(sequence) == self.last_sequence:  # a retransmission: captured once
                    self.stats["duplicate_triggers"] += 1
                    return m.MAV_RESULT_ACCEPTED
                if len(self.pending) >= MAX_PENDING:
                    self.stats["triggers_rejected_busy"] += 1
                    return m.MAV_RESULT_TEMPORARILY_REJECTED
                self.last_sequence = int(sequence)
                self.stats["triggers"] += 1
                self.pending.append(Trigger(self.next_index, time.time_ns(), int(sequence)))
                self.next_index += 1
            else:
                if self.interval is not None:
                    return m.MAV_RESULT_TEMPORARILY_REJECTED
                self.interval = (interval_s, int(images) or -1, now)
            self.cv.notify_all()
        return m.MAV_RESULT_ACCEPTED

    # -- the frame thread -------------------------------------------------------------------

    def request_stop(self, reason: str) -> None:
        """Stop after the frame in flight (from code; signals set ``self.stop`` alone)."""
        self.stop.request(reason)
        with self.cv:
            self.cv.notify_all()

    def _next_trigger(self) -> Trigger | None:
        """The next trigger, waiting for it; None once stopping."""
        with self.cv:
            while not self.stop:
                if self.pending:
                    return self.pending.popleft()
                if self.interval is not None:
                    period, left, due = self.interval
                    now = time.monotonic_ns()
                    if now >= due:
                        left -= left > 0
                        # a frame slower than the interval is taken late, not queued up
                        self.interval = (period, left, max(due + int(period * 1e9), now)) if left else None
                        self.stats["triggers"] += 1
                        trigger = Trigger(self.next_index, time.time_ns() - (now - due))
                        self.next_index += 1
                        return trigger
                    self.cv.wait(timeout=min((due - now) / 1e9, STOP_CHECK_S))
                else:
                    self.cv.wait(timeout=STOP_CHECK_S)
        return None

    def _frames(self) -> Iterator[tuple[Frame, Capture]]:
        source = iter(self.session.source)
        while (trigger := self._next_trigger()) is not None:
            item = next(source, None)
            if item is None:
                self._trigger_event(trigger, "no frame: the frame source is exhausted")
                continue
            frame, _truth = item
            first = frame[0] if isinstance(frame, list) else frame
            if self.session.simulated:  # the simulated camera exposes on the trigger, as a
                for f in frame if isinstance(frame, list) else [frame]:  # triggered camera does
                    f.timestamp = trigger.asked_utc_ns / 1e9
            yield frame, Capture(trigger, int(first.timestamp * 1e9))

    def _trigger_event(self, trigger: Trigger, why: str) -> None:
        """A trigger that yields no frame: an event product and a failed CAMERA_IMAGE_CAPTURED."""
        self.stats["trigger_events"] += 1
        product = event_product(trigger.index, time.time(), self.session.instrument, "trigger without frame", why)
        with self.write_lock:
            self.writer.write(FrameResult(counter=trigger.index, flags=[why], products=[product]))
        self._captured(trigger, time.time_ns(), None, "")

    def georef_meta(self, exposure_ns: int, rows: int, cols: int) -> dict:
        """The ``meta["georef"]`` of a frame exposed at ``exposure_ns`` (UTC ns)."""
        out: dict = {"exposure_utc": exposure_ns / 1e9, "georeferenced": False}
        if not self.sync.synced:
            out["reason"] = "no time sync with the autopilot"
            return out
        t = self.sync.to_autopilot_s(exposure_ns)
        bound = self.sync.bound_s + STAMP_ROUNDING_S
        out.update(autopilot_time_s=t, sync_bound_s=bound)
        with self.pose_cv:  # the samples just after the exposure may still be on their way
            self.pose_cv.wait_for(lambda: self.poses.newest_s() >= t, timeout=self.mc.max_pose_gap_s)
            out.update(frame_georef(self.poses, t, self.camera, rows, cols, self.mc.position_sigma_m,
                                    self.mc.attitude_sigma_deg, bound))
        return out

    def _after_frame(self, result: FrameResult, capture: Capture) -> None:
        _, rows, cols = self.session.cube_shape
        if self.session.sensor == "imspoc":
            geo = self.georef_meta(capture.exposure_ns, rows, cols)
        else:
            geo = {"exposure_utc": capture.exposure_ns / 1e9, "georeferenced": False, "reason": PUSHBROOM_REASON}
        self.stats["frames"] += 1
        self.stats["georeferenced" if geo["georeferenced"] else "not_georeferenced"] += 1
        attach(result, geo)
        self.loop.pipeline.judge_motion(result, *frame_blur(geo, result.exposure_s, self.camera, rows, cols))
        with self.write_lock:
            self.writer.write(result)
        residue = next((p.name for p in result.products if p.kind == ProductKind.RESIDUE), "")
        self._captured(capture.trigger, capture.exposure_ns, geo, residue)

    def _captured(self, trigger: Trigger, exposure_ns: int, geo: dict | None, name: str) -> None:
        pose = (geo or {}).get("pose")
        if pose is not None:
            lat, lon, alt, height, roll, pitch, yaw = pose
            q = list(matrix_quaternion(rotation(roll, pitch, yaw) @ rotation(*self.camera.boresight_deg)))
            position = (int(round(lat * 1e7)), int(round(lon * 1e7)), int(round(alt * 1000)), int(round(height * 1000)))
        else:
            q, position = [math.nan] * 4, (0, 0, 0, 0)
        self._send(self.m.MAVLink_camera_image_captured_message(
            self._time_boot_ms(), exposure_ns // 1000, 0, *position, q, trigger.index, 1 if name else 0,
            name.encode()[:205]))

    def run(self) -> None:
        """Serve until a stop is requested (SIGINT/SIGTERM through the loop's signals)."""
        self._thread.start()
        try:
            with stop_on_signals(self.stop):
                for result, capture in self.loop.run(self._frames()):
                    self._after_frame(result, capture)
        finally:
            with self.cv:  # triggers still waiting: each an event, none silently dropped
                left, self.pending = list(self.pending), deque()
            for trigger in left:
                self._trigger_event(trigger, "not captured: the payload was stopped")
            self._stop.set()
            self._thread.join(timeout=10)
            self.conn.close()
        if self._error is not None:
            raise RuntimeError(f"MAVLink link failed: {self._error}") from self._error

    def summary(self) -> dict:
        return {"url": self.url, **dict(self.stats), "refused": dict(self.refused),
                "pose_refused": dict(self.poses.refused), "sync_bound_s": self.sync.bound_s,
                "sync_restarts": self.sync.restarts, "autopilot_utc_offset_s": self.autopilot_utc_offset_s,
                "stopped_by": self.stop.reason,
                "deadline_misses": self.loop.stats.deadline_misses}

