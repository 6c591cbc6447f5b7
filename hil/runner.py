"""Runs one scenario: the payload process, the link, the sensor and the flight computer.

Emulated wiring (the default)::

    sensor feeder --frames--> drop folder --> payload process (onboard run --port A)
                                                    |  pyserial on pty A
                                              link emulator (rate, latency, BER, drops, cuts)
                                                    |  pyserial on pty B
                                              flight computer + ground (this process)

With ``port`` (real hardware) the flight computer opens that device and talks to the
payload computer behind it; there is no emulated link, sensor or power, and the payload's
own instrument makes the frames. The key file and counter file are then the flight
computer's real ones.
"""

from __future__ import annotations

import bisect
import json
import random
import secrets
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from firmware_bridge.auth import load_key, provision
from firmware_bridge.linkemu import Impairments, LinkEmulator
from hil.flight_computer import FlightComputer
from hil.power import PayloadProcess
from hil.report import RunFacts, judge, measure
from hil.scenario import CommandSpec, Scenario
from hil.sensor import SensorFeeder, make_frames
from onboard.formats.bundle import find_bundle
from onboard.formats.products import Product

#: Longest wait for a payload to boot (its first telemetry) before the scenario clock starts.
BOOT_TIMEOUT_S = 60.0
#: How often a progress line is printed while a scenario runs.
PROGRESS_PERIOD_S = 5.0
#: Telemetry period asked of the payload in emulation (end-of-run detection needs fresh HEALTH).
TELEMETRY_PERIOD_S = 0.5


def _toml(doc: dict[str, dict[str, Any]]) -> str:
    """A mission TOML from nested dicts of scalars and lists (JSON literals are valid TOML)."""
    lines = []
    for section, table in doc.items():
        lines.append(f"[{section}]")
        lines += [f"{k} = {json.dumps(v)}" for k, v in table.items() if v is not None]
        lines.append("")
    return "\n".join(lines)


def _flip(path: Path, rng: random.Random) -> None:
    """Damage a file as a bad flash sector would: 64 bytes in its middle replaced."""
    data = bytearray(path.read_bytes())
    mid = len(data) // 2
    data[mid : mid + 64] = rng.randbytes(64)
    path.write_bytes(bytes(data))


def apply_faults(scenario: Scenario, work: Path, doc: dict[str, dict[str, Any]]) -> None:
    """The scenario's faults of the payload's own files, on copies in ``work``."""
    f, rng = scenario.faults, random.Random(scenario.seed)
    if f.corrupt_models:
        bundle, why = find_bundle(doc.get("run", {}).get("bundle"))
        if bundle is None:
            raise ValueError(f"faults.corrupt_models: no model bundle to damage ({why})")
        copy = work / "bundle"
        shutil.copytree(bundle.root, copy, dirs_exist_ok=True)
        for name in f.corrupt_models:
            if not (copy / name).is_file():
                raise ValueError(f"faults.corrupt_models: {name} is not in the bundle {bundle.root}")
            _flip(copy / name, rng)
        doc.setdefault("run", {})["bundle"] = str(copy)
    if f.corrupt_calibration:
        (work / "broken.cal").write_bytes(rng.randbytes(4096))
        doc.setdefault("run", {})["calibration"] = str(work / "broken.cal")


def mission(scenario: Scenario, work: Path, port: str) -> dict[str, dict[str, Any]]:
    """The payload's mission config: the scenario's [payload] plus the link wiring."""
    doc = {k: dict(v) for k, v in scenario.payload.items()}
    apply_faults(scenario, work, doc)
    link = doc.setdefault("link", {})
    link.setdefault("rate_bytes_per_s", scenario.link.bytes_per_s)
    link.setdefault("telemetry_period_s", TELEMETRY_PERIOD_S)
    link.setdefault("ack_timer_s", 2.0)
    link.setdefault("inactivity_s", 20.0)
    link.update(port=port, key_file=str(work / "payload.key"),
                counter_file=str(work / "payload-counter.json"))
    doc.setdefault("run", {}).setdefault("seed", scenario.seed)
    return doc


def _held(out: Path) -> set[str]:
    """Products the payload archived but held back from the downlink (a frame not worth
    sending, onboard/stages/screen.py), as its frame manifests say."""
    held = set()
    for path in sorted((out / "frames").glob("frame_*.json")):
        held |= {e["name"] for e in json.loads(path.read_text())["products"] if e.get("held")}
    return held


def _queued(out: Path) -> set[str]:
    """Products still in the payload's spool when the scenario ended (not lost: waiting)."""
    queue = out / "spool" / "queue"
    return {p.name.split(".", 3)[3] for p in queue.iterdir() if p.name.count(".") == 3} if queue.is_dir() else set()


def _archive(out: Path) -> dict[str, Product]:
    """The products the payload made for the downlink: its archive, less the held ones."""
    products = {}
    held = _held(out)
    for path in sorted((out / "products").glob("*.obp")):
        product = Product.from_bytes(path.read_bytes())
        if product.name not in held:
            products[product.name] = product
    return products


class Runner:
    """One run of one scenario. ``progress(line)`` gets a line per notable step."""

    def __init__(self, scenario: Scenario, work: Path | None = None, port: str | None = None,
                 key_file: Path | None = None, counter_file: Path | None = None,
                 progress: Callable[[str], None] = lambda line: None) -> None:
        self.s = scenario
        self.port = port
        self.key_file = key_file
        self.counter_file = counter_file
        self.progress = progress
        self._tmp = None if work is not None else tempfile.mkdtemp(prefix=f"hil-{scenario.name}-")
        self.work = Path(work or self._tmp)  # type: ignore[arg-type]
        if self.work.is_dir() and any(self.work.iterdir()):
            raise ValueError(f"work folder {self.work} is not empty (a previous run's spool and "
                             "counters would leak into this one): give a new folder")
        self.work.mkdir(parents=True, exist_ok=True)

    def run(self) -> dict[str, Any]:
        try:
            return self._run()
        finally:
            if self._tmp is not None:
                shutil.rmtree(self._tmp, ignore_errors=True)

    def _run(self) -> dict[str, Any]:
        s, work = self.s, self.work
        emulated = self.port is None
        emu = payload = feeder = None
        if emulated:
            secret = secrets.token_bytes(32)
            # each end's key comes with its counter file (the payload refuses a key without one)
            provision(work / "payload.key", work / "payload-counter.json", secret)
            key = provision(work / "fc.key", work / "fc-counter.json", secret)
            counter = work / "fc-counter.json"
            self.progress(f"making {s.sensor.frames} sensor frames")
            frames = make_frames(s.payload, s.sensor.frames)
            imp = Impairments(s.link.bytes_per_s, s.link.latency_s, s.link.bit_error_rate,
                              s.link.frame_drop, buffer_bytes=max(4096, int(s.link.bytes_per_s / 4)))
            emu = LinkEmulator(imp, imp, seed=s.seed).start()
            (work / "mission.toml").write_text(_toml(mission(s, work, emu.a_path)))
            payload = PayloadProcess(emu.a_path, work / "mission.toml", work / "drop", work / "out",
                                     work / "payload.log")
            fc_url, rate = emu.b_path, s.link.bytes_per_s
        else:
            if self.key_file is None or self.counter_file is None:
                raise ValueError("with --port give the flight computer's --key-file and --counter-file")
            key, counter, frames = load_key(self.key_file), self.counter_file, []
            fc_url, rate = self.port, s.link.bytes_per_s
        fc = FlightComputer.open(fc_url, rate, key, counter, work / "ground-staging",
                                 ack_timer_s=2.0, seed=s.seed)
        commands = list(s.commands)
        # the contact plan, sent in the first pass; its times count from the scenario's start
        announce = CommandSpec(s.link.passes[0].at_s + 0.05 if s.link.passes else 0.0, "SET_PASSES", {"passes": [
            {"in_s": p.at_s, "for_s": p.duration_s, "rate_bit_s": 8 * s.link.bytes_per_s} for p in s.link.passes]})
        if s.link.passes and s.link.announce_passes:
            commands.insert(0, announce)
        schedule = sorted(
            [(c.at_s + i * c.interval_s, "command", c) for c in commands for i in range(c.repeat)]
            + [(p.at_s, "cut", p) for p in s.power], key=lambda e: e[0])
        boot_s = None
        try:
            boot_s = self._boot(payload, fc)
            t0 = time.monotonic()
            announce.args["t0_unix"] = time.time()
            if emu is not None:
                for cut in s.link.pass_cuts(s.duration_s + 60.0) if s.link.passes else s.link.cuts:
                    emu.cut(cut.duration_s, after_s=cut.at_s)
                feeder = SensorFeeder(frames, s.sensor, work / "drop", work / "sensor-staging", t0).start()
            self.progress(f"scenario {s.name}: running for up to {s.duration_s:.0f} s")
            powered, next_progress, cuts_mid_transfer = True, 0.0, 0
            while (now := time.monotonic() - t0) < s.duration_s:
                if now >= next_progress:
                    next_progress = now + PROGRESS_PERIOD_S
                    self._report_progress(now, fc, feeder)
                while schedule and schedule[0][0] <= now:
                    _, what, item = schedule[0]
                    if (what == "cut" and item.mid_transfer and not fc.receiver.open_transactions
                            and now < item.at_s + item.wait_s):
                        break  # this cut waits for a transfer in flight, and what follows it
                    schedule.pop(0)
                    if what == "command":
                        fc.send(item.type, item.args, item.auth)
                    elif what == "cut" and payload is not None:
                        busy = fc.receiver.open_transactions
                        self.progress(f"t={now:.1f} s: power cut, {busy} transfer(s) in flight")
                        cuts_mid_transfer += busy > 0
                        payload.cut()
                        powered = False
                        bisect.insort(schedule, (now + item.off_s, "on", item), key=lambda e: e[0])
                    elif what == "on" and payload is not None:
                        self.progress(f"t={now:.1f} s: power back")
                        payload.on()
                        powered = True
                if payload is not None and powered and not payload.check():
                    self.progress(f"t={now:.1f} s: payload exited unexpectedly {payload.crashes}")
                    powered = False
                fc.poll(0.02)
                if not schedule and self._finished(fc, feeder, work / "out"):
                    break
        finally:
            exit_code = payload.stop() if payload is not None else None
            end = time.monotonic() + 1.0
            while time.monotonic() < end:  # the payload's last HEALTH
                fc.poll(0.05)
            fc.close()
            if feeder is not None:
                feeder.stop()
            if emu is not None:
                emu.stop()
        facts = RunFacts(
            archive=_archive(work / "out") if emulated else None,
            frames_written=dict(feeder.written) if feeder else {},
            damaged=set(feeder.damaged) if feeder else set(),
            boots=payload.boots if payload else 0, kills=payload.kills if payload else 0,
            crashes=payload.crashes if payload else [], exit_code=exit_code,
            seconds=time.monotonic() - t0, ended=time.monotonic(), boot_s=boot_s, cuts_mid_transfer=cuts_mid_transfer,
            link_stats={k: asdict(v) for k, v in emu.stats.items()} if emu else {},
            t0=t0, passes=[(p.at_s, p.at_s + p.duration_s) for p in s.link.passes],
            queued_at_end=_queued(work / "out") if emulated else set(),
        )
        measures = measure(s, fc, facts)
        criteria = judge(s.criteria, measures)
        return {"scenario": s.name, "path": s.path, "description": s.description,
                "passed": all(r["passed"] for r in criteria), "criteria": criteria,
                "measures": measures, "work": None if self._tmp else str(work)}

    def _report_progress(self, now: float, fc: FlightComputer, feeder: SensorFeeder | None) -> None:
        health = fc.health[-1][1] if fc.health else {}
        fed = f"{len(feeder.written)}/{len(feeder.frames)} frames fed, " if feeder else ""
        self.progress(f"t={now:.0f} s: {fed}{health.get('frames', '?')} processed, "
                      f"{len(fc.arrivals)} products down, spool {health.get('spool_products', '?')}, "
                      f"{sum(c.result is not None for c in fc.commands)}/{len(fc.commands)} "
                      "commands answered")

    def _boot(self, payload: PayloadProcess | None, fc: FlightComputer) -> float | None:
        """Power the payload on (real hardware: it is on) and wait for its first telemetry:
        the scenario's clock starts when the payload is up, as a flight computer waits for a
        payload it switched on. None if it never came up (the criteria then fail)."""
        start = time.monotonic()
        if payload is not None:
            payload.on()
        while time.monotonic() - start < BOOT_TIMEOUT_S and (payload is None or payload.check()):
            fc.poll(0.05)
            if fc.events or fc.health:
                self.progress(f"payload up after {time.monotonic() - start:.1f} s")
                return time.monotonic() - start
        self.progress("payload did not come up")
        return None

    def _finished(self, fc: FlightComputer, feeder: SensorFeeder | None, out: Path) -> bool:
        """Everything made has reached the ground: the feeder is done, every frame it wrote
        has been processed, every archived product has arrived, and a HEALTH sent after all
        that reports an empty spool (on real hardware: the capture is over and the spool
        empty)."""
        if not fc.health or (feeder is not None and not feeder.done):
            return False
        if any(c.result is None and c.kind in ("valid", "none") and c.tries <= 3 for c in fc.commands):
            return False
        t_health, last = fc.health[-1]
        newest = max(a.t for a in fc.arrivals) if fc.arrivals else 0.0
        drained = t_health > newest and last.get("spool_products") == 0
        if feeder is None:  # real hardware: its capture is over and its spool is empty
            return drained and not last.get("capturing") and last.get("frames", 0) > 0
        manifests = {p.stem for p in (out / "frames").glob("frame_*.json")} if (out / "frames").is_dir() else set()
        if any(f"frame_{c:08d}" not in manifests for c in feeder.written):
            return False
        names = {p.stem for p in (out / "products").glob("*.obp")} - _held(out)
        arrived = {a.name for a in fc.arrivals}
        return names <= arrived and drained
