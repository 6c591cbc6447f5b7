"""The payload service: ``onboard run --port PORT`` talking to a flight computer.

Two threads share one :class:`PayloadService`:

* the **frame thread** (the caller's) runs the :class:`~onboard.runtime.loop.FrameLoop` while a
  capture is commanded, archives each frame's products (``out/products``, as ``onboard run``
  does) and puts every product into the power-safe downlink spool;
* the **link thread** serves the serial link: telecommands go through the authenticating
  dispatcher (``firmware_bridge.dispatch``) to the handlers below, and between them it sends
  telemetry (ACKs, events, periodic HEALTH) and advances the CFDP downlink of the spool
  (``firmware_bridge.cfdp``), one space packet at a time, at the link's byte rate.

The spool has one lock: the frame thread holds it to put, the link thread to step the
downlink. Memory is bounded: no queue of frames or products is kept in memory (products go
to disk at once; a frame is processed before the next is read).

**Full disk.** The archive, the spool and the spool's state share one free-space floor
(``[run] disk_floor_mb``, a :class:`~firmware_bridge.storage.StorageBudget`): archive copies
are shed first, then low-priority products, each reported as an EVENT; a product that cannot
be kept is a ``refused`` event. Nothing the frame thread writes raises on ENOSPC, and the
downlink needs no free space (delivering deletes; the transaction counter is updated in
place), so a payload restarted on a full disk drains its spool.

**Commands** (PROTOCOL.md section 6). The payload boots in IDLE, not capturing.
SET_MODE: IDLE stops a capture, SAFE too (and refuses START_CAPTURE), OPERATE allows one.
START_CAPTURE n: process the next n frames (0: until STOP_CAPTURE); BUSY when a capture
runs or the mode is not OPERATE. STOP_CAPTURE ends it after the frame in flight. SET_CONFIG
accepts ``run.deadline_s``, ``run.health_period_s`` and ``link.telemetry_period_s`` (a
positive number); anything else is BAD_ARGUMENT. REQUEST_PRODUCT NAME queues the archived
product NAME (a cube or raw frame the value rule kept on board, or any other) again at the
highest priority, while the archive holds it (BAD_ARGUMENT and an event saying so when not).
REQUEST_AREA queues, the same way, the archived products of the kinds named whose frame's
footprint meets a lat/lon box in a time window (onboard/runtime/area.py), and answers with an
AREA_MATCHED event: how many matched, which were queued, which were gone from storage, how
many could not be located (no georeferencing). ABORT stops the capture and returns to IDLE; spooled products keep going down. SET_PASSES
replaces the contact plan (the mission file's ``[[downlink.pass]]``), kept in
``out/contact_plan.json`` across reboots. POSE (the flight computer's navigation state,
PROTOCOL.md section 6.1) goes into the pose buffer of onboard/geo/pose.py, checked as an
autopilot's is (BAD_ARGUMENT and an event saying why when refused).

**Passes.** With a contact plan, a transfer starts only if it ends before the current pass
does (between passes none starts), choosing as ``onboard downlink plan`` forecasts
(``firmware_bridge.spool.pick``); each pass opens with a PASS_PLANNED event giving that
forecast. HEALTH telemetry, and the health products, take at most ``[link] telemetry_share``
of the link's rate (the current pass's, else the configured one): their periods lengthen on
a slow link.

**Georeferencing.** Each ImSPOC frame's products carry ``meta["georef"]`` as under
``--mavlink`` (onboard/geo/frame.py): the pose interpolated to the frame's time stamp (UTC,
the POSE time base), the UTM CRS, a geotransform or GCPs, the expected error and the pose's
age; or ``georeferenced`` false and the ``reason``, with a flag on the frame. A push-broom
block gets the pose of each line at its own time stamp and GCPs along the swath
(``swath_georef``; the camera's ``fov_along_deg`` is then one line's).

**Frames.** From the session's source (the simulator by default), or, with a replay folder,
from frames arriving in that folder while the service runs (the sensor's drop folder, in the
``onboard/sources/replay.py`` format; a frame counts once both its files are there). A frame whose
``out/frames/frame_N.json`` manifest exists was processed before a restart and is skipped; a
damaged frame becomes an event product. After a power cut the spool delivers what it holds.

**Under systemd** (``deploy/onboard.service``, :mod:`onboard.systemd`): READY=1 once the link
is up; the watchdog is pinged while the frame thread makes progress (between frames and on
every idle poll) and stops when a frame runs past ``[run] hang_s``; STOPPING=1 on a clean stop.

**Stop.** SIGINT/SIGTERM: the frame in flight is finished and its products spooled, a last
HEALTH is sent, the link closes; what is still spooled goes down after the next boot.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NoReturn

from firmware_bridge.auth import KeyFileError
from firmware_bridge.cfdp.common import DownlinkConfig
from firmware_bridge.cfdp.sender import DownlinkSender, transfer_wire_bytes
from firmware_bridge.dispatch import CommandDispatcher, CommandRefused
from firmware_bridge.link import ByteRate, Link, PayloadEndpoint, wire_bytes
from firmware_bridge.messages import (
    Event,
    EventCode,
    Health,
    Message,
    Mode,
    MsgType,
    PoseState,
    RequestArea,
    RequestProduct,
    ResultCode,
    SetConfig,
    SetMode,
    SetPasses,
    StartCapture,
)
from firmware_bridge.passes import ContactPlan, Pass, PlanError, adapted_period_s, from_unix
from firmware_bridge.plan import LinkModel, plan
from firmware_bridge.spool import Spool, SpoolEntry, SpoolEvent
from onboard import sysinfo
from onboard.config import Config
from onboard.formats.products import Product, ProductFormatError, ProductKind, event_product
from onboard.formats.types import Frame, RawFrame
from onboard.geo.blur import frame_blur
from onboard.geo.frame import attach, camera_geometry, frame_georef, swath_georef
from onboard.geo.pose import ORBIT_LIMITS, PoseBuffer
from onboard.geo.spacecraft import samples
from onboard.runtime.area import answer_text, find_area
from onboard.runtime.loop import FrameLoop
from onboard.runtime.pipeline import FrameResult
from onboard.runtime.session import Session
from onboard.runtime.writer import ProductWriter
from onboard.sources.replay import ReplaySource
from onboard.systemd import Watchdog

log = logging.getLogger(__name__)

#: How often an idle frame thread looks for a command or a new frame.
IDLE_POLL_S = 0.05
#: Keys SET_CONFIG may change, and the (positive float) attribute each sets.
CONFIG_KEYS = ("run.deadline_s", "run.health_period_s", "link.telemetry_period_s")


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _iso(t: dt.datetime) -> str:
    return t.isoformat(timespec="seconds").replace("+00:00", "Z")


class FollowFolder:
    """Frames as they arrive in ``folder`` (onboard/sources/replay.py format), in counter order.

    A frame is taken once its sidecar (written after the image) exists; ``done(counter)``
    says a frame was processed before a restart and is skipped. Damaged frames are yielded
    as ``(None, reason)`` so the caller reports them.
    """

    def __init__(self, folder: Path, done: Callable[[int], bool]) -> None:
        self.folder = folder
        self.done = done
        self.seen: set[str] = set()
        self._reader: ReplaySource | None = None

    def poll(self) -> Iterator[tuple[RawFrame | None, str | None, str]]:
        """(frame or None, reason when damaged, stem) for each new complete frame."""
        if not self.folder.is_dir():
            return
        for side in sorted(self.folder.glob("frame_*.json")):
            stem = side.stem
            if stem in self.seen:
                continue
            self.seen.add(stem)
            tail = stem.rsplit("_", 1)[-1]
            if tail.isdigit() and self.done(int(tail)):
                continue
            if self._reader is None:
                self._reader = ReplaySource(self.folder)
            try:
                yield self._reader.read(stem), None, stem
            except ValueError as exc:
                yield None, str(exc), stem


class PayloadService:
    """The payload's main job with a flight computer on ``config.link.port``."""

    def __init__(self, config: Config, session: Session, writer: ProductWriter,
                 follow: Path | None = None) -> None:
        self.config = config
        self.follow = follow
        self.session = session
        self.writer = writer  # the on-board archive
        lc = config.link
        if lc.port is None:
            raise ValueError("the payload service needs [link] port (or --port)")
        if lc.uplink and lc.key_file is None:
            raise KeyFileError(
                "[link] uplink = true needs key_file and counter_file: the ground's CFDP PDUs "
                "are authenticated like telecommands (firmware_bridge/PROTOCOL.md section 4; "
                "python -m firmware_bridge.keytool provision KEY COUNTER makes both), or set "
                "uplink = false for unacknowledged (class 1) transfers")
        handlers = {
            MsgType.SET_MODE: self._set_mode,
            MsgType.START_CAPTURE: self._start_capture,
            MsgType.STOP_CAPTURE: self._stop_capture,
            MsgType.SET_CONFIG: self._set_config,
            MsgType.REQUEST_PRODUCT: self._request_product,
            MsgType.ABORT: self._abort,
            MsgType.SET_PASSES: self._set_passes,
            MsgType.POSE: self._pose,
            MsgType.REQUEST_AREA: self._request_area,
        }
        # the key and its counter are checked before the port opens
        self.dispatcher = CommandDispatcher.from_files(handlers, lc.key_file, lc.counter_file)
        out = Path(config.run.out)
        # one free-space floor over the archive, the spool and its state (writer.py)
        self.spool = Spool(lc.spool or out / "spool", int(lc.spool_quota_mb * 1e6),
                           budget=writer.budget)
        self.spool_lock = threading.Lock()
        rate = ByteRate(lc.rate_bytes_per_s) if lc.rate_bytes_per_s else ByteRate.uart(lc.baud)
        self.link = Link.open(lc.port, baudrate=lc.baud, rate=rate)
        # the passes ahead: the mission file's, or the ground's latest SET_PASSES
        self.contact = ContactPlan(config.downlink.passes, out / "contact_plan.json")
        self._pass_announced: Pass | None = None
        self.downlink = DownlinkSender(self.spool, self.link.send_data, DownlinkConfig(
            acknowledged=lc.uplink, ack_timer_s=lc.ack_timer_s, nak_timer_s=lc.ack_timer_s,
            inactivity_s=lc.inactivity_s), room=self._room, cost=self._pass_cost)
        self.endpoint = PayloadEndpoint(self.link, self.dispatcher, self.downlink.on_packet)
        self.loop = FrameLoop(session.pipeline, config.run.deadline_s,
                              faster_inference=session.faster_inference, health=session.health,
                              health_period_s=config.run.health_period_s)
        # what runs per stage, without the skip reasons (HEALTH must fit one frame; the
        # health product carries them in full)
        self.engine = "; ".join(n.split("; skipped")[0][:160] for n in session.notes
                                if n.startswith(("denoise:", "classify:"))) or session.engine_description[:160]
        self.mode = Mode.IDLE
        self.capturing = False
        self.frames_left = 0  # 0 with capturing: until STOP_CAPTURE
        self.products_spooled = 0
        self.telemetry_period_s = lc.telemetry_period_s
        self.health_base_s = config.run.health_period_s  # before the link rate lengthens it
        self.started = time.monotonic()
        # systemd's watchdog, pinged while the frame thread makes progress (onboard/systemd.py)
        self.watchdog = Watchdog.from_environment(config.run.hang_s)
        # the flight computer's POSEs (link thread) and the frames' georeferencing (frame thread)
        self.camera = camera_geometry(config.camera)
        self.terrain_alt_m = config.camera.terrain_alt_m or 0.0
        self.poses = PoseBuffer(lc.pose_max_gap_s, lc.pose_max_extrapolation_s, self.terrain_alt_m, **ORBIT_LIMITS)
        self.pose_cv = threading.Condition()
        self.georeferenced = 0
        self._handler_events: list[Event] = []  # link thread only
        self._stop = threading.Event()
        self._link_thread = threading.Thread(target=self._serve_link, name="link", daemon=True)
        self._link_error: BaseException | None = None
        recovery = self.spool.recovery
        log.info("spool %s: %d products (%d B) queued, %d partial files discarded",
                 self.spool.root, recovery.entries, recovery.queued_bytes,
                 recovery.partial_files_discarded)

    # -- telecommand handlers (link thread) ---------------------------------------------

    def _event(self, code: EventCode, text: str) -> None:
        """An event a handler raises: sent after the command's ACK (PROTOCOL.md section 4)."""
        self._handler_events.append(Event(code, text))

    def _set_mode(self, msg: Message) -> None:
        assert isinstance(msg, SetMode)
        if msg.mode != Mode.OPERATE and self.capturing:
            self.capturing = False
            self._event(EventCode.CAPTURE_STOPPED, f"capture stopped by SET_MODE {msg.mode.name}")
        old, self.mode = self.mode, Mode(msg.mode)
        self._event(EventCode.MODE_CHANGED, f"mode {old.name} -> {self.mode.name}")

    def _start_capture(self, msg: Message) -> None:
        assert isinstance(msg, StartCapture)
        if self.mode != Mode.OPERATE:
            raise CommandRefused(ResultCode.BUSY, f"mode {self.mode.name}; SET_MODE OPERATE first")
        if self.capturing:
            raise CommandRefused(ResultCode.BUSY, "a capture is running")
        self.frames_left = msg.frame_count
        self.capturing = True
        self._event(EventCode.CAPTURE_STARTED,
                    f"capture of {msg.frame_count or 'unlimited'} frames")

    def _stop_capture(self, msg: Message) -> None:
        was, self.capturing = self.capturing, False
        self._event(EventCode.CAPTURE_STOPPED, "capture stopped" if was else "no capture was running")

    def _set_config(self, msg: Message) -> None:
        assert isinstance(msg, SetConfig)
        if msg.key not in CONFIG_KEYS:
            raise CommandRefused(ResultCode.BAD_ARGUMENT)
        try:
            value = float(msg.value)
        except ValueError:
            raise CommandRefused(ResultCode.BAD_ARGUMENT) from None
        if not 0 < value < math.inf:  # NaN and inf too: an infinite deadline turns the guard off
            raise CommandRefused(ResultCode.BAD_ARGUMENT)
        if msg.key == "run.deadline_s":
            self.loop.deadline_s = value
        elif msg.key == "run.health_period_s":
            self.loop.health_period_s = self.health_base_s = value
        else:
            self.telemetry_period_s = value
        self._event(EventCode.CONFIG_CHANGED, f"{msg.key} = {value:g}")

    def _refuse(self, result: ResultCode, why: str) -> NoReturn:
        """Refuse the command with ``result`` and an event that says why."""
        self._event(EventCode.BAD_ARGUMENT if result == ResultCode.BAD_ARGUMENT else EventCode.HANDLER_ERROR,
                    why)
        raise CommandRefused(result, why)

    def _request_product(self, msg: Message) -> None:
        assert isinstance(msg, RequestProduct)
        path = self.writer.products_dir / f"{msg.name}.obp"
        if "/" in msg.name or not path.is_file():
            self._refuse(ResultCode.BAD_ARGUMENT, f"REQUEST_PRODUCT {msg.name[:64]}: not in the on-board "
                         "archive (never made, or shed when storage ran short)")
        product = Product.from_bytes(path.read_bytes())
        self._handler_events += [e.message() for e in self._spool(product, priority=0)]

    def _request_area(self, msg: Message) -> None:
        assert isinstance(msg, RequestArea)
        unknown = sorted(set(msg.kinds) - {k.value for k in ProductKind})
        if unknown:
            self._refuse(ResultCode.BAD_ARGUMENT, f"REQUEST_AREA: no product kind {', '.join(unknown)[:64]} "
                         f"(kinds: {', '.join(k.value for k in ProductKind)})")
        answer = find_area(self.writer.products_dir, self.writer.frames_dir, msg)
        queued: list[str] = []
        for path in answer.queue:  # value order, each at the request's priority
            try:
                product = Product.from_bytes(path.read_bytes())
            except (OSError, ProductFormatError):  # shed since it was found
                answer.gone.append(path.stem)
                continue
            events = self._spool(product, priority=0)
            self._handler_events += [e.message() for e in events if e.what != "queued"]
            if not any(e.what == "refused" for e in events):
                queued.append(product.name)
        self._event(EventCode.AREA_MATCHED, answer_text(msg, answer, queued))

    def _set_passes(self, msg: Message) -> None:
        assert isinstance(msg, SetPasses)
        try:
            passes = from_unix(msg.passes)
        except PlanError as exc:  # overlapping passes
            self._refuse(ResultCode.BAD_ARGUMENT, str(exc))
        try:
            self.contact.replace(passes)
        except OSError as exc:
            self._refuse(ResultCode.FAILED, f"SET_PASSES: contact plan not kept ({exc}), not changed")
        self._pass_announced = None
        ahead = [p for p in passes if p.end_utc > utc_now()]
        self._event(EventCode.CONFIG_CHANGED, f"contact plan: {len(passes)} passes, {len(ahead)} ahead"
                    + (f", next {_iso(ahead[0].start_utc)} at {ahead[0].rate_bit_s:g} bit/s" if ahead else ""))

    def _pose(self, msg: Message) -> None:
        """Keep the flight computer's state in the pose buffer, or refuse it saying why."""
        assert isinstance(msg, PoseState)
        position, attitude = samples(msg.time_us / 1e6, msg.position_m, msg.velocity_m_s, msg.quaternion,
                                     msg.rates_rad_s, self.terrain_alt_m)
        bound = self.config.link.pose_clock_bound_s
        with self.pose_cv:
            kept = (self.poses.add_position(position, time.time(), bound)
                    and self.poses.add_attitude(attitude, time.time(), bound))
            self.pose_cv.notify_all()
        if not kept:
            event = self.dispatcher.events.event(EventCode.BAD_ARGUMENT, f"POSE at {msg.time_us} us refused: "
                                                 f"{self.poses.last_refusal}")
            if event is not None:
                self._handler_events.append(event)
            raise CommandRefused(ResultCode.BAD_ARGUMENT, self.poses.last_refusal or "")

    def _georef(self, times: list[float]) -> dict:
        """``meta["georef"]`` of a frame exposed at ``times`` (the payload's UTC clock, the POSE
        time base: one ImSPOC exposure, or each push-broom line's); waits for the POSE after
        the last exposure while they flow."""
        lc = self.config.link
        _, rows, cols = self.session.cube_shape
        geo: dict = {"exposure_utc": times[0], "time_base": "UTC", "clock_bound_s": lc.pose_clock_bound_s}
        sigmas = (lc.pose_position_sigma_m, lc.pose_attitude_sigma_deg, lc.pose_clock_bound_s)
        with self.pose_cv:
            if self.poses.newest_s() > times[-1] - lc.pose_max_gap_s:
                self.pose_cv.wait_for(lambda: self.poses.newest_s() >= times[-1] or self._stop.is_set(),
                                      timeout=lc.pose_max_gap_s)
            if self.session.sensor == "imspoc":
                geo.update(frame_georef(self.poses, times[0], self.camera, rows, cols, *sigmas, age_share=0.0))
            else:
                geo.update(swath_georef(self.poses, times, self.camera, cols, *sigmas, age_share=0.0))
        return geo

    def _abort(self, msg: Message) -> None:
        self.capturing = False
        self.mode = Mode.IDLE
        self._event(EventCode.ABORTED, "capture stopped, mode IDLE")

    # -- products -------------------------------------------------------------------------

    def _spool(self, product: Product, priority: int | None = None) -> list[SpoolEvent]:
        """Put ``product`` in the spool (durably); the spool's events, to report."""
        prio = priority if priority is not None else product.priority
        assert prio is not None  # Product sets its kind's default priority
        with self.spool_lock:
            events = self.spool.put(product.name, product.to_bytes(), prio, product.kind.value)
        self.products_spooled += 1
        return events

    def _report(self, events: list[SpoolEvent]) -> None:
        for e in events:
            self.link.send(e.message())

    def health(self) -> dict:
        """The HEALTH telemetry body (compact: it must fit one 1024-byte frame)."""
        stats = self.loop.stats
        return {
            "mode": self.mode.name,
            "capturing": self.capturing,
            "frames": stats.frames,
            "frames_left": self.frames_left,
            "deadline_misses": stats.deadline_misses,
            "degrade_level": self.loop.level,
            "degrade_events": len(stats.events),
            "products_spooled": self.products_spooled,
            "georeferenced": self.georeferenced,
            "poses_kept": len(self.poses.positions),
            "poses_refused": sum(self.poses.refused.values()),
            "spool_products": len(self.spool),
            "spool_bytes": self.spool.used_bytes,
            "delivered": self.downlink.stats.delivered,
            "rss_mb": round((sysinfo.rss_bytes() or 0) / 2**20, 1),
            "peak_rss_mb": round(sysinfo.peak_rss_bytes() / 2**20, 1),
            "uptime_s": round(time.monotonic() - self.started, 1),
            # what runs per stage, without the skip reasons (the health product has them)
            "engine": self.engine,
        }

    # -- the link thread --------------------------------------------------------------------

    def _link_model(self) -> LinkModel:
        """What a product costs a pass besides its transfer (firmware_bridge/plan.py): the
        Finished PDU's round trip as the sender measures it, and HEALTH's share kept."""
        return LinkModel(self.downlink.turnaround_s, self.config.link.telemetry_share)

    def _room(self) -> float | None:
        """Bytes of the current pass left for products (None: no contact plan)."""
        now = utc_now()
        window = self.contact.current(now)
        if window is None:
            return self.contact.room_bytes(now)
        return self._link_model().capacity(window, now)

    def _pass_cost(self, entry: SpoolEntry) -> float:
        return self._link_model().cost(self.downlink.cost, entry, self._rate_bytes_per_s())

    def _rate_bytes_per_s(self) -> float:
        """The link's rate now: the current pass's, else the configured one."""
        window = self.contact.current(utc_now())
        return window.rate.bytes_per_s if window is not None else self.link.rate.bytes_per_s

    def _announce_pass(self) -> None:
        """At the start of each pass, a PASS_PLANNED event: what the contact plan forecasts
        the pass carries from the spool as it is (firmware_bridge/plan.py), so that the
        ground can check the forecast against what it receives."""
        now = utc_now()
        window = self.contact.current(now)
        if window is None or window == self._pass_announced:
            return
        self._pass_announced = window
        with self.spool_lock:
            forecast = plan(self.spool.entries(), [window], now, self.downlink.config,
                            self._link_model()).passes[0]
        names = [p.name for p in forecast.products]
        body = {"start": _iso(window.start_utc), "end": _iso(window.end_utc),
                "rate_bit_s": window.rate_bit_s, "turnaround_s": round(self.downlink.turnaround_s, 3),
                "products": len(names),
                "bytes": forecast.used_bytes, "names": names}
        while len(json.dumps(body)) > 900:  # one EVENT: the first names only
            names = body["names"] = names[: len(names) // 2]
        self.link.send(Event(EventCode.PASS_PLANNED, json.dumps(body, separators=(",", ":"))))

    def _flush_handler_events(self) -> None:
        while self._handler_events:
            self.link.send(self._handler_events.pop(0))

    def _serve_link(self) -> None:
        next_health = time.monotonic()
        try:
            while not self._stop.is_set():
                self.endpoint.poll(0.0)
                self._flush_handler_events()
                with self.spool_lock:
                    sent = self.downlink.stats.packets_sent
                    self.downlink.step()
                    sent = self.downlink.stats.packets_sent - sent
                    events, self.downlink.events = self.downlink.events, []
                self._report(events)
                self._announce_pass()
                if time.monotonic() >= next_health:
                    frame = self.link.send(Health(self.health()))
                    # HEALTH takes at most telemetry_share of the link (firmware_bridge/passes.py)
                    next_health = time.monotonic() + adapted_period_s(
                        self.telemetry_period_s, wire_bytes([frame.body]),
                        self._rate_bytes_per_s(), self.config.link.telemetry_share)
                if not sent:
                    self.endpoint.poll(IDLE_POLL_S)
                    self._flush_handler_events()
        except BaseException as exc:  # surfaced to the frame thread, which stops the run
            log.exception("link thread failed")
            self._link_error = exc
            self._stop.set()

    # -- the frame thread -----------------------------------------------------------------

    def request_stop(self, reason: str) -> None:
        self.loop.request_stop(reason)
        self._stop.set()

    def _frames(self) -> Iterator[tuple[Frame, list[float]]]:
        """Frames while a capture is commanded, each with its exposure times (UTC s: one, or
        one per push-broom line); waits (polling) while there is none."""
        for frame, _ in self._captured():
            yield frame, [f.timestamp for f in frame] if isinstance(frame, list) else [frame.timestamp]

    def _captured(self) -> Iterator[tuple[Frame, object]]:
        def done(counter: int) -> bool:
            return (self.writer.frames_dir / f"frame_{counter:08d}.json").is_file()

        follow = FollowFolder(self.follow, done) if self.follow is not None else None
        simulated = None if follow else iter(self.session.source)
        while not self._stop.is_set():
            self.watchdog.progress()  # between frames, and on every idle poll
            if not self.capturing:
                time.sleep(IDLE_POLL_S)
                continue
            if follow is not None:
                got = False
                for frame, problem, stem in follow.poll():
                    got = True
                    if frame is None:
                        self._damaged(stem, problem or "unreadable")
                        continue
                    yield frame, None
                    if not self.capturing or self._stop.is_set():
                        break
                if not got:
                    time.sleep(IDLE_POLL_S)
            else:
                assert simulated is not None
                item = next(simulated, None)
                if item is None:
                    self.capturing = False
                    return
                yield item

    def _damaged(self, stem: str, reason: str) -> None:
        tail = stem.rsplit("_", 1)[-1]
        counter = int(tail) if tail.isdigit() else -1
        product = event_product(counter, time.time(), self.session.instrument,
                                "frame not replayed", f"{stem}: {reason}")
        self._report(self._spool(product))
        self._report(self.writer.write(FrameResult(counter=counter, flags=[reason],
                                                   products=[product])))

    def _after_frame(self, result: FrameResult, times: list[float]) -> None:
        geo = self._georef(times)
        self.georeferenced += geo["georeferenced"]
        attach(result, geo)
        _, rows, cols = self.session.cube_shape
        self.loop.pipeline.judge_motion(result, *frame_blur(geo, result.exposure_s, self.camera, rows, cols))
        for product in result.products:
            if product.kind == ProductKind.HEALTH:  # health products too take at most their share
                self.loop.health_period_s = adapted_period_s(
                    self.health_base_s,
                    transfer_wire_bytes(len(product.to_bytes()), product.name),
                    self._rate_bytes_per_s(), self.config.link.telemetry_share)
            if product.name not in result.held:  # a frame not worth sending: archived only
                self._report(self._spool(product))
        self._report(self.writer.write(result))  # the manifest last: it marks the frame done
        if self.capturing and self.frames_left:
            self.frames_left -= 1
            if self.frames_left == 0:
                self.capturing = False
                self.link.send(Event(EventCode.CAPTURE_STOPPED, "capture complete"))

    def run(self) -> None:
        """Serve until SIGINT/SIGTERM (or a link failure); returns after a clean stop."""
        def on_signal(signum, _frame):
            self.request_stop(signal.Signals(signum).name)

        old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        self._link_thread.start()
        self.link.send(Event(EventCode.MODE_CHANGED, f"payload up (pid {os.getpid()}), mode IDLE"))
        self.watchdog.ready(f"payload up, mode IDLE, {len(self.spool)} products spooled")
        if self.contact.problem:
            self.link.send(Event(EventCode.CONFIG_CHANGED, self.contact.problem[:900]))
        try:
            for result, times in self.loop.run(self._frames()):
                self._after_frame(result, times)
                self.watchdog.progress()
        finally:
            for s, h in old.items():
                signal.signal(s, h)
            self.watchdog.stopping(f"stopping ({self.loop.stats.stopped_by_signal or 'end'})")
            self._stop.set()
            self._link_thread.join(timeout=10)
            try:
                self.link.send(Health(self.health()))
            finally:
                self.link.close()
        if self._link_error is not None:
            raise RuntimeError(f"link failed: {self._link_error}") from self._link_error

    def summary(self) -> dict:
        return {**self.health(), "link_bytes_sent": self.link.bytes_sent,
                "bad_frames": self.link.decoder.bad_frames,
                "commands": {r.name: n for r, n in self.dispatcher.results.items()},
                "commands_unanswered": self.dispatcher.unanswered,
                "pose_refused": dict(self.poses.refused),
                "uplink_data": {r.name: n for r, n in self.dispatcher.data_results.items()},
                "downlink": json.loads(json.dumps(self.downlink.stats.__dict__))}
