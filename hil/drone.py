"""Drone HIL scenarios: the payload process as a MAVLink camera (``onboard run --mavlink``)
beside the autopilot emulator (hil/autopilot.py), over UDP on the loopback and over a pair of
pseudo-terminals joined by the link emulator (firmware_bridge/linkemu.py), as a companion
computer's UART would be. ``onboard hil run`` runs a scenario file whose ``kind`` is ``"drone"``
here. Format::

    name = "drone_survey"
    kind = "drone"
    transports = ["udp", "pty"]      # one run over each
    timeout_s = 90                   # per run, from the survey's start
    seed = 0
    [payload]                        # the payload's mission TOML (onboard/config.py sections)
    [survey]                         # hil.autopilot.Lawnmower's fields
    [faults]                         # hil.autopilot.Faults' fields (times: s of survey time)
    [criteria]                       # each one given is checked (CRITERIA below)

Each product's georeferencing is judged against the emulator's truth at the product's own
exposure time: the frame corners where the product puts them against where the true pose
puts them (RMS, metres and ground pixels); the exposure on the autopilot's clock against the
truth, as a share of the bound the product states.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from firmware_bridge.linkemu import Impairments, LinkEmulator
from hil.autopilot import AutopilotEmulator, Faults, Lawnmower
from hil.scenario import ScenarioError
from onboard.config import check_scalar, read_toml
from onboard.formats.products import Product, ProductKind
from onboard.geo.georef import CameraGeometry, corners_rc, ground_points, pixel_to_xy, utm_epsg
from onboard.physics.imspoc import default_instrument

#: Longest wait for the payload's first HEARTBEAT.
BOOT_TIMEOUT_S = 60.0
#: The survey starts this long after the camera is first heard (its clock sync settles).
SURVEY_IN_S = 1.5
#: The emulator's position period (10 Hz) plus its time-stamp jitter's reach (s).
POSITION_PERIOD_S = 0.11
#: Byte rate of the emulated UART (921600 baud, 8N1), as a companion computer's.
UART_BYTES_PER_S = 92160.0

CRITERIA = {
    "every_trigger_answered": "every trigger acknowledged, the payload made a frame or an event for each and "
                              "answered each by CAMERA_IMAGE_CAPTURED (naming the residue product for a success; "
                              "an answer that reached the autopilot while it hung counts, seen by the harness)",
    "payload_survives": "the payload ran until stopped, then exited 143 (SIGTERM)",
    "captures_after_lost": "the autopilot's loss and return were reported and frames were georeferenced after it",
    "max_sync_error_over_bound": "|exposure on the autopilot's clock - truth| / the product's sync_bound_s",
    "max_error_over_expected": "georeferencing error (RMS over corners) / the product's expected_error_m",
    "max_error_px": "georeferencing error (RMS over corners) in ground pixels",
    "dropout_frames_not_georeferenced": "every frame exposed in a GPS dropout or a silence (past the last position "
                                        "and the extrapolation allowed from it) is flagged not georeferenced",
    "bad_input_refused": "garbage, the stranger's positions and the future position each counted as refused",
    "min_georeferenced_share": "share of frames georeferenced",
}


@dataclass
class DroneScenario:
    name: str
    description: str = ""
    transports: list[str] = field(default_factory=lambda: ["udp"])
    timeout_s: float = 90.0
    seed: int = 0
    payload: dict[str, Any] = field(default_factory=dict)
    survey: Lawnmower = field(default_factory=Lawnmower)
    faults: Faults = field(default_factory=Faults)
    criteria: dict[str, Any] = field(default_factory=dict)


def is_drone(path: Path) -> bool:
    return read_toml(path, ScenarioError, "scenario file").get("kind") == "drone"


def _typed(section: str, values: dict[str, Any], cls: type) -> Any:
    """``cls`` built from a TOML table, each key checked against the field's type."""
    known = {f.name: f for f in fields(cls)}
    out: dict[str, Any] = {}
    for key, value in values.items():
        if key not in known:
            raise ScenarioError(f"[{section}] {key}: unknown key; [{section}] accepts {', '.join(sorted(known))}")
        default = getattr(cls(), key)
        where = f"[{section}] {key}"
        if isinstance(default, tuple) or default is None:
            if not isinstance(value, list) or not all(isinstance(v, int | float) for v in value):
                raise ScenarioError(f"{where}: expected a list of numbers, got {value!r}")
            out[key] = tuple(float(check_scalar(where, v, float, ScenarioError)) for v in value)
        else:
            out[key] = check_scalar(where, value, type(default), ScenarioError)
    return cls(**out)


def from_dict(data: dict[str, Any], path: str = "") -> DroneScenario:
    data = dict(data)
    if data.pop("kind", None) != "drone":
        raise ScenarioError(f"{path}: not a drone scenario (kind = \"drone\")")
    known = {f.name for f in fields(DroneScenario)}
    for key in data:
        if key not in known:
            raise ScenarioError(f"{path}: {key}: unknown key; a drone scenario has {', '.join(sorted(known))}")
    if "name" not in data:
        raise ScenarioError(f"{path}: name is required")
    unknown = set(data.get("criteria", {})) - set(CRITERIA)
    if unknown:
        raise ScenarioError(f"{path}: [criteria] {', '.join(sorted(unknown))}: unknown; known: {', '.join(CRITERIA)}")
    bad = set(data.get("transports", [])) - {"udp", "pty"}
    if bad:
        raise ScenarioError(f"{path}: transports {sorted(bad)}: expected udp and/or pty")
    faults = data.pop("faults", {})
    if faults.get("gps_dropout") is not None or faults.get("silence") is not None:
        for key in ("gps_dropout", "silence"):
            if key in faults and len(faults[key]) != 2:
                raise ScenarioError(f"{path}: [faults] {key}: expected [start_s, duration_s]")
    return DroneScenario(**{**data, "survey": _typed("survey", data.get("survey", {}), Lawnmower),
                            "faults": _typed("faults", faults, Faults)})


def load(path: Path) -> DroneScenario:
    return from_dict(read_toml(path, ScenarioError, "scenario file"), str(path))


def _toml(doc: dict[str, dict[str, Any]]) -> str:
    return "".join(f"[{s}]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in t.items()) for s, t in doc.items())


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class RunFacts:
    transport: str
    exit_code: int | None
    summary: dict
    triggers: list[dict]
    frames: list[dict]
    events: list[str]


class DroneRunner:
    """One scenario over each of its transports."""

    def __init__(self, scenario: DroneScenario, work: Path | None = None,
                 progress: Callable[[str], None] = lambda _line: None) -> None:
        self.s = scenario
        self.work = work or Path(tempfile.mkdtemp(prefix=f"hil-{scenario.name}-"))
        self.progress = progress

    def run(self) -> dict:
        runs = [self._run(t) for t in self.s.transports]
        return report(self.s, runs)

    def _run(self, transport: str) -> RunFacts:
        work = self.work / transport
        work.mkdir(parents=True, exist_ok=True)
        mission = work / "mission.toml"
        mission.write_text(_toml(self.s.payload))
        emu = None
        if transport == "udp":
            port = _free_udp_port()
            payload_url, autopilot_url = f"udpin:127.0.0.1:{port}", f"udpout:127.0.0.1:{port}"
        else:
            emu = LinkEmulator(Impairments(bytes_per_s=UART_BYTES_PER_S, buffer_bytes=65536), seed=self.s.seed).start()
            payload_url, autopilot_url = emu.a_path, emu.b_path
        out = work / "out"
        log = open(work / "payload.log", "w")  # noqa: SIM115 (closed below)
        cmd = [sys.executable, "-m", "onboard", "run", "--mavlink", payload_url, "--out", str(out), "--overwrite",
               "--config", str(mission), "--json", str(work / "summary.json"), "--quiet"]
        payload = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        ap = AutopilotEmulator(autopilot_url, self.s.survey, self.s.faults, seed=self.s.seed)
        self.progress(f"{self.s.name} over {transport}: payload {payload_url}, autopilot {autopilot_url}")
        try:
            ap.start(SURVEY_IN_S)
            if not ap.camera_seen.wait(BOOT_TIMEOUT_S):
                self.progress("no HEARTBEAT from the camera")
            elif not ap.done.wait(self.s.timeout_s + self.s.survey.length_m / self.s.survey.speed_m_s):
                self.progress("timed out before every trigger was answered")
            early = payload.poll()
            if early is None:
                payload.send_signal(signal.SIGTERM)
            try:
                code = payload.wait(timeout=60)
            except subprocess.TimeoutExpired:
                payload.kill()
                code = None
            code = code if early is None else early
        finally:
            ap.stop()
            if emu is not None:
                emu.stop()
            log.close()
        summary_path = work / "summary.json"
        summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
        return RunFacts(transport, code, summary, [asdict(r) for r in ap.triggers], *self._frames(out, ap))

    def _in_outage(self, t: float | None) -> bool:
        """Exposed in a GPS dropout or a silence, past the last position sent before it plus
        the extrapolation the payload may make from it (its [mavlink] max_extrapolation_s)."""
        if t is None:
            return False
        grace = self.s.payload.get("mavlink", {}).get("max_extrapolation_s", 0.05) + POSITION_PERIOD_S
        return any(w is not None and w[0] + grace <= t < w[0] + w[1]
                   for w in (self.s.faults.gps_dropout, self.s.faults.silence))

    def _frames(self, out: Path, ap: AutopilotEmulator) -> tuple[list[dict], list[str]]:
        """Each residue product's georeferencing against the truth; the event products' names."""
        cc = self.s.payload.get("camera", {})
        camera = CameraGeometry(cc.get("fov_across_deg", 20.0), cc.get("fov_along_deg", 20.0),
                                (cc.get("boresight_roll_deg", 0.0), cc.get("boresight_pitch_deg", 0.0),
                                 cc.get("boresight_yaw_deg", 0.0)))
        frames, events = [], []
        for path in sorted((out / "products").glob("*.obp")):
            p = Product.from_bytes(path.read_bytes())
            if p.kind == ProductKind.EVENT:
                events.append(p.name)
            if p.kind != ProductKind.RESIDUE:
                continue
            geo, rows, cols = p.meta["georef"], *p.arrays()["tillage"].shape
            t = ap.survey_time(geo["exposure_utc"])
            row: dict[str, Any] = {"name": p.name, "survey_s": t, "georeferenced": geo["georeferenced"],
                                   "reason": geo.get("reason"),
                                   "in_dropout": self._in_outage(t)}
            if "autopilot_time_s" in geo:
                err = geo["autopilot_time_s"] - ap.boot_time_s(geo["exposure_utc"])
                row.update(sync_error_s=err, sync_bound_s=geo["sync_bound_s"])
            if geo["georeferenced"]:
                truth = ap.true_pose(geo["exposure_utc"])
                rc = corners_rc(rows, cols)
                true_xy = ground_points(truth, camera, rows, cols, rc, utm_epsg(truth.lat_deg, truth.lon_deg))
                got = pixel_to_xy(geo, rc)
                err_m = float(np.sqrt(np.sum((got - true_xy) ** 2, axis=1).mean()))
                row.update(error_m=err_m, error_px=err_m / geo["gsd_m"], expected_error_m=geo["expected_error_m"],
                           pose_age_s=geo["pose_age_s"], gsd_m=geo["gsd_m"])
                if p.meta.get("screen", {}).get("blur_px") is not None:
                    row.update(blur_px=p.meta["screen"]["blur_px"],
                               true_blur_px=true_blur_px(ap, geo["exposure_utc"], camera, rows, cols))
            frames.append(row)
        return frames, events


def true_blur_px(ap: AutopilotEmulator, utc: float, camera: CameraGeometry, rows: int, cols: int) -> float:
    """The image motion during the exposure by the emulator's truth, by ray tracing, not by the
    payload's formula (onboard/geo/blur.py): how far the ground seen by the frame's centre
    pixel at the exposure's start moves by its end, in that pixel's ground size (the exposure:
    the simulated ImSPOC's, onboard/physics/imspoc.py's preset)."""
    start, end = ap.true_pose(utc), ap.true_pose(utc + default_instrument().exposure_s)
    epsg = utm_epsg(start.lat_deg, start.lon_deg)
    centre = np.array([[rows / 2, cols / 2], [rows / 2, cols / 2 + 1]])
    a = ground_points(start, camera, rows, cols, centre, epsg)
    b = ground_points(end, camera, rows, cols, centre[:1], epsg)
    return float(np.hypot(*(b[0] - a[0])) / np.hypot(*(a[1] - a[0])))


def _stats(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"n": 0, "median": None, "p95": None, "max": None}
    return {"n": len(values), "median": statistics.median(values), "p95": float(np.percentile(values, 95)),
            "max": max(values)}


def measure(run: RunFacts, faults: Faults) -> dict:
    geo = [f for f in run.frames if f["georeferenced"]]
    triggers = run.triggers
    answered = [t for t in triggers if t["captured"] is not None]
    ok = [t for t in answered if t["captured"]["capture_result"] == 1]
    names = {f["name"] for f in run.frames}
    s = run.summary
    refused = {**s.get("refused", {}), **s.get("pose_refused", {})}
    silence_end = faults.silence[0] + faults.silence[1] if faults.silence else None
    return {
        "transport": run.transport,
        "exit_code": run.exit_code,
        "triggers": len(triggers),
        "triggers_acknowledged": sum(t["ack"] == 0 for t in triggers),
        "triggers_answered": len(answered),
        "answers_while_hung": sum(t["captured"]["while_hung"] for t in answered),
        "payload_triggers": s.get("triggers", 0),
        "payload_frames_and_events": s.get("frames", 0) + s.get("trigger_events", 0),
        "frames": len(run.frames),
        "frames_answered_with_product": sum(t["captured"]["file_url"] in names for t in ok),
        "failed_captures": len(answered) - len(ok),
        "event_products": len(run.events),
        "georeferenced": len(geo),
        "error_m": _stats([f["error_m"] for f in geo]),
        "error_px": _stats([f["error_px"] for f in geo]),
        "expected_error_m": _stats([f["expected_error_m"] for f in geo]),
        "error_over_expected": _stats([f["error_m"] / f["expected_error_m"] for f in geo]),
        "pose_age_s": _stats([f["pose_age_s"] for f in geo]),
        "blur_px": _stats([f["blur_px"] for f in geo if "blur_px" in f]),
        "true_blur_px": _stats([f["true_blur_px"] for f in geo if "blur_px" in f]),
        "blur_error_px": _stats([abs(f["blur_px"] - f["true_blur_px"]) for f in geo if "blur_px" in f]),
        "sync_bound_s": _stats([f["sync_bound_s"] for f in run.frames if "sync_bound_s" in f]),
        "sync_error_over_bound": _stats([abs(f["sync_error_s"]) / f["sync_bound_s"] for f in run.frames
                                         if "sync_error_s" in f]),
        "dropout_frames": sum(f["in_dropout"] for f in run.frames),
        "dropout_frames_georeferenced": sum(f["in_dropout"] and f["georeferenced"] for f in run.frames),
        "georeferenced_after_silence": sum(silence_end is not None and f["survey_s"] is not None
                                           and f["survey_s"] > silence_end for f in geo),
        "autopilot_lost": s.get("autopilot_lost", 0),
        "autopilot_back": s.get("autopilot_back", 0),
        "refused": refused,
        "not_georeferenced_reasons": sorted({f["reason"] for f in run.frames if not f["georeferenced"]}),
    }


def _judge(criteria: dict[str, Any], m: dict, faults: Faults) -> list[dict]:
    out = []

    def check(name: str, passed: bool, value: Any) -> None:
        if name in criteria:
            out.append({"criterion": name, "transport": m["transport"], "passed": bool(passed), "value": value,
                        "limit": criteria[name]})

    refused = m["refused"]
    check("every_trigger_answered", m["triggers"] > 0 and m["triggers_acknowledged"] == m["triggers"]
          and m["payload_triggers"] == m["triggers"] == m["payload_frames_and_events"]
          and m["triggers_answered"] == m["triggers"]
          and m["frames_answered_with_product"] + m["failed_captures"] == m["triggers_answered"]
          and m["event_products"] >= m["failed_captures"],
          f"{m['triggers_answered']}/{m['triggers']} answered ({m['answers_while_hung']} while the autopilot "
          f"hung), {m['frames_answered_with_product']} frames, {m['failed_captures']} failed; payload: "
          f"{m['payload_frames_and_events']} frames and events for {m['payload_triggers']} triggers")
    check("payload_survives", m["exit_code"] == 143, m["exit_code"])
    check("captures_after_lost", m["autopilot_lost"] >= 1 and m["autopilot_back"] >= 1
          and m["georeferenced_after_silence"] > 0,
          f"lost {m['autopilot_lost']}, back {m['autopilot_back']}, {m['georeferenced_after_silence']} georeferenced after")
    worst_sync = m["sync_error_over_bound"]["max"]
    check("max_sync_error_over_bound", worst_sync is not None and worst_sync <= criteria.get("max_sync_error_over_bound", 0),
          worst_sync)
    worst = m["error_over_expected"]["max"]
    check("max_error_over_expected", worst is not None and worst <= criteria.get("max_error_over_expected", 0), worst)
    px = m["error_px"]["max"]
    check("max_error_px", px is not None and px <= criteria.get("max_error_px", 0), px)
    check("dropout_frames_not_georeferenced", m["dropout_frames"] > 0 and m["dropout_frames_georeferenced"] == 0,
          f"{m['dropout_frames_georeferenced']} of {m['dropout_frames']} georeferenced")
    kinds = {"garbage": any("do not parse" in k for k in refused) if faults.garbage_at else True,
             "stranger": any("system 42" in k for k in refused) if faults.stranger_at else True,
             "future": any("from the future" in k for k in refused) if faults.future_at else True}
    check("bad_input_refused", all(kinds.values()), kinds)
    share = m["georeferenced"] / m["frames"] if m["frames"] else 0.0
    check("min_georeferenced_share", share >= criteria.get("min_georeferenced_share", 1), share)
    return out


def report(s: DroneScenario, runs: list[RunFacts]) -> dict:
    measures = [measure(r, s.faults) for r in runs]
    results = [c for m in measures for c in _judge(s.criteria, m, s.faults)]
    return {"scenario": s.name, "kind": "drone", "passed": all(r["passed"] for r in results), "criteria": results,
            "measures": measures, "faults": asdict(s.faults), "survey": asdict(s.survey),
            "frames": {r.transport: r.frames for r in runs}, "triggers": {r.transport: r.triggers for r in runs}}


def table(rep: dict) -> Any:
    from rich.table import Table

    t = Table(title=f"hil scenario {rep['scenario']}: {'PASS' if rep['passed'] else 'FAIL'}")
    t.add_column("measure")
    for m in rep["measures"]:
        t.add_column(m["transport"], justify="right")

    def fmt(v: Any) -> str:
        return "-" if v is None else f"{v:.3g}" if isinstance(v, float) else str(v)

    rows = [("triggers / answered", lambda m: f"{m['triggers']} / {m['triggers_answered']}"),
            ("frames / georeferenced", lambda m: f"{m['frames']} / {m['georeferenced']}"),
            ("failed captures (events)", lambda m: str(m["failed_captures"])),
            ("error m: median / p95 / max", lambda m: " / ".join(fmt(m["error_m"][k]) for k in ("median", "p95", "max"))),
            ("error ground px: median / max", lambda m: " / ".join(fmt(m["error_px"][k]) for k in ("median", "max"))),
            ("expected error m (median)", lambda m: fmt(m["expected_error_m"]["median"])),
            ("error / expected (max)", lambda m: fmt(m["error_over_expected"]["max"])),
            ("sync bound ms (median / max)", lambda m: " / ".join(
                fmt(None if m["sync_bound_s"][k] is None else 1e3 * m["sync_bound_s"][k]) for k in ("median", "max"))),
            ("|sync error| / bound (max)", lambda m: fmt(m["sync_error_over_bound"]["max"])),
            ("pose age ms (median / max)", lambda m: " / ".join(
                fmt(None if m["pose_age_s"][k] is None else 1e3 * m["pose_age_s"][k]) for k in ("median", "max"))),
            ("frames in dropout (georeferenced)", lambda m: f"{m['dropout_frames']} ({m['dropout_frames_georeferenced']})"),
            ("autopilot lost / back", lambda m: f"{m['autopilot_lost']} / {m['autopilot_back']}"),
            ("payload exit", lambda m: str(m["exit_code"]))]
    for label, get in rows:
        t.add_row(label, *(get(m) for m in rep["measures"]))
    transports = [m["transport"] for m in rep["measures"]]
    for name in dict.fromkeys(c["criterion"] for c in rep["criteria"]):
        cells = {c["transport"]: f"{'ok' if c['passed'] else 'FAILED'}: {fmt(c['value'])}"
                 for c in rep["criteria"] if c["criterion"] == name}
        t.add_row(name, *(cells.get(tr, "-") for tr in transports))
    return t


def run_file(path: Path, work: Path | None, progress: Callable[[str], None]) -> dict:
    """Load and run a drone scenario file (``onboard hil run``)."""
    s = load(path)
    return DroneRunner(s, work / s.name if work else None, progress).run()
