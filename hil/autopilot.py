"""An autopilot emulator speaking real MAVLink (pymavlink) to the payload's camera, flying a
lawnmower survey whose true pose at any instant is known.

The flight (:class:`Lawnmower`): ``legs`` straight legs of ``leg_m`` flown at ``speed_m_s`` and
``height_m`` above the flat terrain, alternately north and south, ``spacing_m`` apart, joined by
half-circle turns of radius ``spacing_m / 2`` flown banked (coordinated turn: roll =
atan(v^2 / (g R)), rolled in and out over a tenth of the turn: the attitude has no step); nose down by ``pitch_deg`` while flying, as a multicopter is. The vehicle
hovers at the start until the survey begins, and after its end at the last point.

The emulator (:class:`AutopilotEmulator`), system 1 component 1 by default, in its own thread:
HEARTBEAT and SYSTEM_TIME at 1 Hz, ATTITUDE at 50 Hz, GLOBAL_POSITION_INT at 10 Hz (the rates
PX4 streams to a companion), each stamped with its boot clock (``time_boot_ms``); it answers
the camera's TIMESYNC and sends its own; along each leg it triggers the camera every
``trigger_m`` with ``MAV_CMD_IMAGE_START_CAPTURE`` (one image, a sequence number),
retransmitting a command that is not acknowledged within :data:`ACK_TIMEOUT_S` (at most
:data:`RETRIES` times, the same sequence number) and records the acknowledgements and each
CAMERA_IMAGE_CAPTURED.

Faults (:class:`Faults`): Gaussian pose noise (horizontal position, RMS over both axes,
and each attitude angle) and time-stamp jitter on every sample; a GPS dropout (no position for
a while; attitude goes on); a silence (the autopilot hangs: nothing sent, nothing read), with
``reboot`` its boot clock restarting when it comes back; garbage bytes on the link; position
messages from a stranger's system id; a position stamped in the future. Truth is never noisy:
:meth:`AutopilotEmulator.true_pose` at a payload exposure time (UTC) is what georeferencing is
judged against.
"""

from __future__ import annotations

import math
import os
import queue
import random
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from onboard.geo.georef import Pose

#: Seconds before an unacknowledged trigger is sent again, and how many times.
ACK_TIMEOUT_S, RETRIES = 0.3, 3
#: Seconds after its acknowledgement that a trigger's CAMERA_IMAGE_CAPTURED is waited for.
ANSWER_TIMEOUT_S = 10.0
#: The emulator's loop period (its fastest stream, ATTITUDE, at 50 Hz).
TICK_S = 0.02
_WGS84_A, _WGS84_E2 = 6378137.0, 6.69437999014e-3


@dataclass(frozen=True)
class Lawnmower:
    lat_deg: float = 44.80
    lon_deg: float = 0.60
    home_alt_m: float = 50.0
    height_m: float = 100.0
    speed_m_s: float = 10.0
    legs: int = 2
    leg_m: float = 60.0
    spacing_m: float = 30.0
    pitch_deg: float = -3.0
    trigger_m: float = 6.0

    @property
    def radius_m(self) -> float:
        return self.spacing_m / 2

    @property
    def length_m(self) -> float:
        return self.legs * self.leg_m + (self.legs - 1) * math.pi * self.radius_m

    def at(self, s_m: float) -> tuple[float, float, float, float, float]:
        """(north m, east m, yaw deg, roll deg, yaw rate deg/s) at path length ``s_m``."""
        s = min(max(s_m, 0.0), self.length_m)
        turn = math.pi * self.radius_m
        i = 0
        while True:
            north0 = 0.0 if i % 2 == 0 else self.leg_m
            heading = 1.0 if i % 2 == 0 else -1.0
            east0 = i * self.spacing_m
            if s <= self.leg_m or i == self.legs - 1:
                return north0 + heading * s, east0, 0.0 if heading > 0 else 180.0, 0.0, 0.0
            s -= self.leg_m
            if s <= turn:  # half circle to the east: right turn after a north leg, left after south
                a = s / self.radius_m
                right = heading > 0
                centre_n, centre_e = north0 + heading * self.leg_m, east0 + self.radius_m
                north = centre_n + heading * self.radius_m * math.sin(a)
                east = centre_e - self.radius_m * math.cos(a)
                yaw = (math.degrees(a) if right else 180.0 - math.degrees(a))
                # banked as a coordinated turn, rolling in and out over its first and last tenth
                ramp = min(1.0, a / (0.1 * math.pi), (math.pi - a) / (0.1 * math.pi))
                bank = ramp * math.degrees(math.atan(self.speed_m_s ** 2 / (9.80665 * self.radius_m)))
                rate = math.degrees(self.speed_m_s / self.radius_m)
                return north, east, (yaw + 180) % 360 - 180, bank if right else -bank, rate if right else -rate
            s -= turn
            i += 1

    def triggers_m(self) -> list[float]:
        """Path lengths where the camera is triggered: every ``trigger_m`` along each leg."""
        out = []
        turn = math.pi * self.radius_m
        for i in range(self.legs):
            start = i * (self.leg_m + turn)
            n = int(self.leg_m // self.trigger_m)
            out += [start + k * self.trigger_m for k in range(n + 1)]
        return out

    def pose(self, s_m: float, flying: bool) -> Pose:
        """The true pose at path length ``s_m``."""
        north, east, yaw, roll, rate = self.at(s_m)
        lat0 = math.radians(self.lat_deg)
        w = math.sqrt(1 - _WGS84_E2 * math.sin(lat0) ** 2)
        meridian, normal = _WGS84_A * (1 - _WGS84_E2) / w ** 3, _WGS84_A / w
        lat = self.lat_deg + math.degrees(north / meridian)
        lon = self.lon_deg + math.degrees(east / (normal * math.cos(lat0)))
        v = self.speed_m_s if flying else 0.0
        vel = (v * math.cos(math.radians(yaw)), v * math.sin(math.radians(yaw)), 0.0)
        return Pose(lat, lon, self.home_alt_m + self.height_m, self.height_m, roll if flying else 0.0,
                    self.pitch_deg if flying else 0.0, yaw, vel, (0.0, 0.0, rate if flying else 0.0))


@dataclass(frozen=True)
class Faults:
    position_sigma_m: float = 0.0  # horizontal RMS (each axis sigma / sqrt 2)
    attitude_sigma_deg: float = 0.0
    stamp_jitter_s: float = 0.0
    gps_dropout: tuple[float, float] | None = None  # (start, duration) s of survey time
    silence: tuple[float, float] | None = None  # the autopilot hangs: nothing sent or read
    reboot: bool = False  # after the silence its boot clock restarts
    garbage_at: tuple[float, ...] = ()  # survey times: 200 random bytes on the link
    stranger_at: tuple[float, ...] = ()  # survey times: 1 s of positions from system 42, 1 km off
    future_at: tuple[float, ...] = ()  # survey times: one position stamped 30 s ahead, 1 km off


@dataclass
class TriggerRecord:
    sequence: int
    survey_s: float
    sent: list[float] = field(default_factory=list)  # UTC of each transmission
    ack: int | None = None  # MAV_RESULT
    acked_s: float | None = None  # survey time of the acknowledgement
    image_index: int | None = None  # the camera's, by the order of accepted triggers
    captured: dict | None = None  # the CAMERA_IMAGE_CAPTURED, as a dict


class AutopilotEmulator:
    """The autopilot side of a MAVLink link (``url`` as pymavlink takes it)."""

    def __init__(self, url: str, survey: Lawnmower, faults: Faults, seed: int = 0, camera: tuple[int, int] = (1, 100),
                 baud: int = 921600) -> None:
        os.environ.setdefault("MAVLINK20", "1")
        from pymavlink import mavutil
        from pymavlink.dialects.v20 import common

        self.m = common
        self.conn = mavutil.mavlink_connection(url, baud=baud, source_system=1, source_component=1,
                                               dialect="common")
        self.conn.mav.robust_parsing = True
        self.stranger = common.MAVLink(self.conn, srcSystem=42, srcComponent=1)
        self.survey, self.faults, self.camera = survey, faults, camera
        self.rng = random.Random(seed)
        self.boot_wall = time.time()
        self.boots: list[float] = [self.boot_wall]  # UTC of each boot
        self.survey_start: float | None = None  # UTC
        self.triggers: list[TriggerRecord] = []
        self.camera_heartbeats = 0
        self.camera_seen = threading.Event()
        self.done = threading.Event()  # the survey flown and every trigger answered or given up
        self.received: dict[str, int] = {}
        self.inbox: queue.Queue[Any] = queue.Queue()  # every message from the camera, for tests
        self.positions_paused = False  # for tests: no GLOBAL_POSITION_INT while set
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="autopilot", daemon=True)
        self._sequence = 0
        self._fired: set[tuple[str, float]] = set()  # one-shot faults done

    # -- truth --------------------------------------------------------------------------

    def survey_time(self, utc: float) -> float | None:
        return None if self.survey_start is None else utc - self.survey_start

    def true_pose(self, utc: float) -> Pose:
        """The vehicle's true pose at ``utc`` (no noise)."""
        t = self.survey_time(utc)
        s = 0.0 if t is None else t * self.survey.speed_m_s
        flying = t is not None and 0 <= s <= self.survey.length_m
        return self.survey.pose(s, flying)

    def boot_time_s(self, utc: float) -> float:
        """The autopilot's boot clock at ``utc`` (the boot in force then)."""
        return utc - max(b for b in self.boots if b <= utc)

    # -- the link -------------------------------------------------------------------------

    def start(self, survey_in_s: float = 0.0) -> AutopilotEmulator:
        """Start talking now; the survey starts ``survey_in_s`` after the camera is first heard."""
        self._survey_in_s = survey_in_s
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.conn.close()

    def _silent(self, t: float | None) -> bool:
        s = self.faults.silence
        return t is not None and s is not None and s[0] <= t < s[0] + s[1]

    def _run(self) -> None:
        next_slow = 0.0
        tick = 0
        pending = sorted(self.survey.triggers_m())
        was_silent = False
        while not self._stop.is_set():
            now = time.time()
            t = self.survey_time(now)
            silent = self._silent(t)
            if was_silent and not silent and self.faults.reboot:
                self.boots.append(now)
            was_silent = silent
            if silent:
                while t is not None and pending and pending[0] <= t * self.survey.speed_m_s:
                    pending.pop(0)  # a hung autopilot triggers nothing
                self._read_until(now + TICK_S, hung=True)  # and reads nothing
                continue
            if self.survey_start is None and self.camera_seen.is_set():
                self.survey_start = now + self._survey_in_s
            if now >= next_slow:
                next_slow = now + 1.0
                self.conn.mav.heartbeat_send(self.m.MAV_TYPE_QUADROTOR, self.m.MAV_AUTOPILOT_PX4, 0, 0,
                                             self.m.MAV_STATE_ACTIVE)
                self.conn.mav.system_time_send(int(now * 1e6), self._boot_ms(now))
                self.conn.mav.timesync_send(0, int(self.boot_time_s(now) * 1e9))
            self._stream(now, t, tick)
            if t is not None:
                while pending and pending[0] <= t * self.survey.speed_m_s:
                    self._trigger(pending.pop(0) / self.survey.speed_m_s)
                self._retransmit(now)
                self._faults(now, t)
                if not pending and t * self.survey.speed_m_s > self.survey.length_m and self._settled(now):
                    self.done.set()
            tick += 1
            self._read_until(now + TICK_S)

    def _boot_ms(self, utc: float) -> int:
        return int(round(self.boot_time_s(utc) * 1000))

    def _stamp(self, now: float) -> int:
        return max(0, int(round((self.boot_time_s(now) + self.rng.gauss(0, self.faults.stamp_jitter_s or 1e-12)) * 1000)))

    def _stream(self, now: float, t: float | None, tick: int) -> None:
        f = self.faults
        # each sample is the truth at its own instant, stamped with jitter, then made noisy
        pose = self.true_pose(now)
        att = [a + self.rng.gauss(0, f.attitude_sigma_deg or 1e-12) for a in (pose.roll_deg, pose.pitch_deg, pose.yaw_deg)]
        self.conn.mav.attitude_send(self._stamp(now), *(math.radians(a) for a in att),
                                    *(math.radians(r) for r in pose.rates_deg_s))
        dropout = f.gps_dropout
        in_dropout = t is not None and dropout is not None and dropout[0] <= t < dropout[0] + dropout[1]
        if tick % 5 == 0 and not in_dropout and not self.positions_paused:
            self._position(self.conn.mav, now, pose, self._stamp(now), noise=f.position_sigma_m)

    def _position(self, mav: Any, now: float, pose: Pose, stamp_ms: int, noise: float, north_m: float = 0.0) -> None:
        s = noise / math.sqrt(2)
        dn, de = self.rng.gauss(0, s or 1e-12) + north_m, self.rng.gauss(0, s or 1e-12)
        lat = pose.lat_deg + math.degrees(dn / 6371000.0)
        lon = pose.lon_deg + math.degrees(de / (6371000.0 * math.cos(math.radians(pose.lat_deg))))
        vn, ve, vd = pose.velocity_ned
        mav.global_position_int_send(stamp_ms, int(round(lat * 1e7)), int(round(lon * 1e7)),
                                     int(round(pose.alt_m * 1000)), int(round(pose.height_m * 1000)),
                                     int(round(vn * 100)), int(round(ve * 100)), int(round(vd * 100)),
                                     int(pose.yaw_deg % 360 * 100))

    def _once(self, kind: str, at: float, t: float) -> bool:
        """True the first time ``t`` reaches ``at`` (a late tick does not skip a fault)."""
        if t < at or (kind, at) in self._fired:
            return False
        self._fired.add((kind, at))
        return True

    def _faults(self, now: float, t: float) -> None:
        f = self.faults
        for at in f.garbage_at:
            if self._once("garbage", at, t):
                junk = bytes(self.rng.randrange(256) for _ in range(200))
                self.conn.write(junk.replace(b"\xfd", b"\xfd\x20", 3))  # a few false MAVLink 2 starts
        for at in f.stranger_at:
            if at <= t < at + 1.0 and int(t / TICK_S) % 5 == 0:
                self._position(self.stranger, now, self.true_pose(now), self._boot_ms(now), 0.0, north_m=1000.0)
        for at in f.future_at:
            if self._once("future", at, t):
                self._position(self.conn.mav, now, self.true_pose(now), self._boot_ms(now) + 30_000, 0.0, north_m=1000.0)

    def _trigger(self, survey_s: float) -> None:
        """Queue a trigger: commands to the camera go one at a time, each waiting for its
        acknowledgement (or its last retry), as an autopilot's command sender does."""
        self._sequence += 1
        with self._lock:
            self.triggers.append(TriggerRecord(self._sequence, survey_s))

    def _send_trigger(self, rec: TriggerRecord, now: float) -> None:
        rec.sent.append(now)
        self.conn.mav.command_long_send(self.camera[0], self.camera[1], self.m.MAV_CMD_IMAGE_START_CAPTURE,
                                        len(rec.sent) - 1, 0, 0, 1, rec.sequence, 0, 0, 0)

    def _in_flight(self, now: float) -> TriggerRecord | None:
        """The trigger whose command is in flight (sent, not acknowledged, retries left)."""
        for rec in self.triggers:
            if rec.ack is None and not (len(rec.sent) > RETRIES and now - rec.sent[-1] > ACK_TIMEOUT_S):
                return rec
        return None

    def _retransmit(self, now: float) -> None:
        with self._lock:
            rec = self._in_flight(now)
            if rec is not None and (not rec.sent or now - rec.sent[-1] > ACK_TIMEOUT_S):
                self._send_trigger(rec, now)

    def _settled(self, now: float) -> bool:
        """Every trigger acknowledged and answered, or given up (no ACK after the retries)."""
        with self._lock:
            return all((r.ack is not None and (r.captured is not None or (
                        r.acked_s is not None and self.survey_time(now) - r.acked_s > ANSWER_TIMEOUT_S)))
                       or (r.ack is None and len(r.sent) > RETRIES and now - r.sent[-1] > ACK_TIMEOUT_S)
                       or (r.ack is not None and r.ack != self.m.MAV_RESULT_ACCEPTED)
                       for r in self.triggers)

    def _read_until(self, deadline: float, hung: bool = False) -> None:
        """Answer what arrives until ``deadline`` (UTC), each message as it comes: a TIMESYNC
        answered late would widen the camera's sync bound."""
        while (left := deadline - time.time()) > 0:
            msg = self.conn.recv_match(blocking=True, timeout=left)
            if msg is not None:
                self._read(msg, time.time(), hung)

    def _read(self, msg: Any, now: float, hung: bool = False) -> None:
        """Act on one message; while ``hung``, only note (as the harness, not the autopilot)
        the CAMERA_IMAGE_CAPTURED that arrives, so an answer sent to a hung autopilot is told
        from one never sent."""
        kind = msg.get_type()
        self.received[kind] = self.received.get(kind, 0) + 1
        if (msg.get_srcSystem(), msg.get_srcComponent()) != self.camera or hung and kind != "CAMERA_IMAGE_CAPTURED":
            return
        self.inbox.put(msg)
        if kind == "HEARTBEAT":
            self.camera_heartbeats += 1
            self.camera_seen.set()
        elif kind == "TIMESYNC" and msg.tc1 == 0:
            self.conn.mav.timesync_send(int(self.boot_time_s(now) * 1e9), msg.ts1)
        elif kind == "COMMAND_ACK" and msg.command == self.m.MAV_CMD_IMAGE_START_CAPTURE:
            with self._lock:
                rec = self._in_flight(now)
                if rec is not None and rec.sent:
                    rec.ack, rec.acked_s = msg.result, self.survey_time(now)
                    if rec.ack == self.m.MAV_RESULT_ACCEPTED:
                        rec.image_index = sum(r.image_index is not None for r in self.triggers)
        elif kind == "CAMERA_IMAGE_CAPTURED":
            with self._lock:
                for r in self.triggers:
                    if r.image_index == msg.image_index and r.captured is None:
                        r.captured = {k: getattr(msg, k) for k in (
                            "image_index", "capture_result", "time_utc", "lat", "lon", "file_url")}
                        r.captured["while_hung"] = hung

    def send(self, method: str, *args: Any) -> None:
        """Send one message by its pymavlink ``*_send`` method (for tests)."""
        getattr(self.conn.mav, method)(*args)
