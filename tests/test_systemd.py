"""The payload under systemd: the unit file passes ``systemd-analyze verify``, the notify
protocol reaches a real datagram socket, and the watchdog follows the frame loop: the real
payload (``onboard run --port`` in a subprocess, a flight computer on an emulated link) pings
through a slow frame and stops pinging when a frame hangs; a supervisor doing what systemd does
(abort when the pings stop, restart on failure) restarts it, and the restarted payload resumes
from its disk: the frame done before is not redone, the spool it left is counted."""

from __future__ import annotations

import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from firmware_bridge.auth import load_key, provision
from firmware_bridge.linkemu import Impairments, LinkEmulator
from firmware_bridge.messages import ResultCode
from hil.flight_computer import FlightComputer
from hil.sensor import make_frames
from onboard.sources.replay import write_frame
from onboard.systemd import Watchdog, notify, watchdog_period_s

ROOT = Path(__file__).resolve().parents[1]
UNIT = ROOT / "deploy" / "onboard.service"


def _unit_settings(text: str) -> dict[str, dict[str, list[str]]]:
    """section -> key -> values, as systemd reads a unit (a key may repeat)."""
    out: dict[str, dict[str, list[str]]] = {}
    section = ""
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        out.setdefault(section, {}).setdefault(key, []).append(value)
    return out


def _verify(tmp_path: Path, unit_text: str) -> subprocess.CompletedProcess:
    """``systemd-analyze verify`` of ``unit_text`` in a root holding this machine's system units
    and a stand-in for the installed ``onboard`` executable (verify checks it exists)."""
    root = tmp_path / "root"
    shutil.copytree("/usr/lib/systemd/system", root / "usr/lib/systemd/system", symlinks=True)
    exe = root / "opt/onboard/venv/bin/onboard"
    exe.parent.mkdir(parents=True)
    exe.write_text("#!/bin/sh\n")
    exe.chmod(0o755)
    (root / "etc/systemd/system").mkdir(parents=True)
    (root / "etc/systemd/system/onboard.service").write_text(unit_text)
    return subprocess.run(["systemd-analyze", "verify", f"--root={root}", "onboard.service"],
                          capture_output=True, text=True, timeout=120)


@pytest.mark.skipif(shutil.which("systemd-analyze") is None or not Path("/usr/lib/systemd/system").is_dir(),
                    reason="needs systemd-analyze and the system's units (/usr/lib/systemd/system)")
def test_the_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    done = _verify(tmp_path / "good", UNIT.read_text())
    assert done.returncode == 0 and done.stdout + done.stderr == "", done.stdout + done.stderr
    # the check can fail: verify only warns about a bad value, and a warning fails it here
    bad = _verify(tmp_path / "bad", UNIT.read_text().replace("Type=notify", "Type=notfy"))
    assert "Failed to parse service type" in bad.stderr


def test_the_unit_supervises_onboard_run_with_the_watchdog_and_restart_limits() -> None:
    unit = _unit_settings(UNIT.read_text())
    service = unit["Service"]
    assert service["Type"] == ["notify"] and service["Restart"] == ["on-failure"]
    assert int(service["WatchdogSec"][0]) > 0 and service["WatchdogSignal"] == ["SIGABRT"]
    assert int(unit["Unit"]["StartLimitBurst"][0]) >= 1 and int(unit["Unit"]["StartLimitIntervalSec"][0]) > 0
    (start,) = service["ExecStart"]
    assert re.search(r"/onboard run --port \S+ --config \S+", start)
    assert service["StateDirectory"] == ["onboard"] and "--out /var/lib/onboard/" in start
    assert "130 143" in service["SuccessExitStatus"][0]  # a stop by signal is not a failure


@pytest.mark.parametrize("abstract", [False, True], ids=["path", "abstract"])
def test_notify_reaches_a_datagram_socket(tmp_path: Path, abstract: bool) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        name = f"onboard-test-{secrets.token_hex(4)}"
        sock.bind("\0" + name if abstract else str(tmp_path / "notify"))
        env = {"NOTIFY_SOCKET": "@" + name if abstract else str(tmp_path / "notify")}
        assert notify("READY=1", "STATUS=up", environ=env)
        assert sock.recv(4096) == b"READY=1\nSTATUS=up"
    assert not notify("READY=1", environ={})  # not under systemd: nothing, no error
    assert not notify("READY=1", environ={"NOTIFY_SOCKET": str(tmp_path / "gone")})


def test_the_watchdog_period_is_read_for_this_process_only() -> None:
    assert watchdog_period_s({"WATCHDOG_USEC": "30000000"}) == 30.0
    assert watchdog_period_s({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}) == 30.0
    assert watchdog_period_s({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}) is None
    assert watchdog_period_s({}) is None and watchdog_period_s({"WATCHDOG_USEC": "0"}) is None


def test_pings_follow_progress_not_the_clock() -> None:
    """A clock the test moves: pings while the last progress is within hang_s, none after,
    the hang said once, and pings again when the loop moves again."""
    now = [0.0]
    sent: list[tuple[str, ...]] = []
    dog = Watchdog(10.0, 30.0, send=lambda *f: sent.append(f) or True, clock=lambda: now[0])
    dog.progress()
    now[0] = 9.5  # a slow frame, within hang_s
    assert dog.tick() and sent[-1] == ("WATCHDOG=1",)
    now[0] = 10.5  # hung
    assert not dog.tick() and not dog.tick()
    hung = [f for f in sent if f[0].startswith("STATUS=")]
    assert len(hung) == 1 and "without progress for 10 s" in hung[0][0]
    dog.progress()
    assert dog.tick() and sent[-1] == ("WATCHDOG=1",)
    with pytest.raises(ValueError):
        Watchdog(0.0, 30.0)


# -- the real payload under an emulated systemd ----------------------------------------------

RATE = 2000.0  # bytes/s: slow enough that a frame's products are still spooled at the abort
WATCHDOG_S = 2.0  # WatchdogSec
HANG_S = 8.0  # [run] hang_s
SLOW_S = 3.0  # the slow frame waits this much more than it takes: over the deadline and WatchdogSec

#: The real command line with a fault injected into the frame loop, as a wedged driver call
#: would: frames listed in ONBOARD_TEST_HANG never return, those in ONBOARD_TEST_SLOW take
#: SLOW_S longer.
WRAPPER = f"""
import os, sys, threading
from onboard.runtime.pipeline import Pipeline
counters = lambda name: {{int(c) for c in os.environ.get(name, "").split(",") if c}}
hang, slow = counters("ONBOARD_TEST_HANG"), counters("ONBOARD_TEST_SLOW")
process = Pipeline.process
def injected(self, frame):
    if frame.counter in hang:
        threading.Event().wait()
    if frame.counter in slow:
        threading.Event().wait({SLOW_S})
    return process(self, frame)
Pipeline.process = injected
from onboard.cli import main
sys.argv[0] = "onboard"
main()
"""


class Supervisor:
    """What systemd does for ``Type=notify`` with ``WatchdogSec``: a notify socket, every
    message kept; after READY=1 and until the service stops (STOPPING=1), SIGABRT to the
    service when no WATCHDOG=1 came for ``WatchdogSec`` (``WatchdogSignal=SIGABRT``)."""

    def __init__(self, path: Path, watchdog_s: float) -> None:
        self.path, self.watchdog_s = path, watchdog_s
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.1)
        self.messages: list[tuple[float, list[str]]] = []
        self.proc: subprocess.Popen | None = None
        self.aborted = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def start(self, args: list[str], extra_env: dict[str, str], out: Path) -> subprocess.Popen:
        self.messages.clear()
        self.aborted.clear()
        env = {**os.environ, **extra_env, "NOTIFY_SOCKET": str(self.path),
               "WATCHDOG_USEC": str(int(self.watchdog_s * 1e6))}
        log = (out / "payload.log").open("a")
        self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env)
        return self.proc

    def fields(self, prefix: str) -> list[tuple[float, str]]:
        return [(t, f) for t, fs in list(self.messages) for f in fs if f.startswith(prefix)]

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(4096)
                self.messages.append((time.monotonic(), data.decode().split("\n")))
            except TimeoutError:
                pass
            ready = self.fields("READY=1")
            if not ready or self.fields("STOPPING=1") or self.proc is None or self.proc.poll() is not None or self.aborted.is_set():
                continue
            last = max([ready[-1][0], *(t for t, _ in self.fields("WATCHDOG=1"))])
            if time.monotonic() - last > self.watchdog_s:
                self.proc.send_signal(signal.SIGABRT)
                self.aborted.set()

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sock.close()


def _wait(what, timeout: float, fc: FlightComputer | None = None):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if fc is not None:
            fc.poll(0.05)
        else:
            threading.Event().wait(0.05)
        got = what()
        if got:
            return got
    raise AssertionError(f"timed out waiting for {what.__doc__ or what}")


def _command(fc: FlightComputer, name: str, args: dict | None = None) -> ResultCode:
    cmd = fc.send(name, args or {}, "valid")
    _wait(lambda: cmd.result is not None, 30, fc)
    return cmd.result


@pytest.mark.slow
def test_a_hung_frame_loop_is_aborted_and_restarted_a_slow_frame_is_not(tmp_path: Path) -> None:
    secret = secrets.token_bytes(32)
    provision(tmp_path / "payload.key", tmp_path / "counter.json", secret)
    provision(tmp_path / "fc.key", tmp_path / "fc-counter.json", secret)
    quota_b = 300_000
    (tmp_path / "mission.toml").write_text(
        f"[run]\nhang_s = {HANG_S}\ndeadline_s = 2.0\n[products]\ncube = false\n[link]\n"
        f'key_file = "{tmp_path / "payload.key"}"\ncounter_file = "{tmp_path / "counter.json"}"\n'
        f"rate_bytes_per_s = {RATE}\ntelemetry_period_s = 0.5\nack_timer_s = 5.0\n"
        f"spool_quota_mb = {quota_b / 1e6}\n")
    (tmp_path / "wrapper.py").write_text(WRAPPER)
    out, drop = tmp_path / "out", tmp_path / "drop"
    out.mkdir()
    emu = LinkEmulator(Impairments(RATE, buffer_bytes=32768)).start()
    args = [sys.executable, str(tmp_path / "wrapper.py"), "run", "--port", emu.a_path, "--config",
            str(tmp_path / "mission.toml"), "--replay", str(drop), "--out", str(out), "--quiet"]
    sup = Supervisor(tmp_path / "notify", WATCHDOG_S)
    fc = FlightComputer.open(emu.b_path, RATE, load_key(tmp_path / "fc.key"),
                             tmp_path / "fc-counter.json", tmp_path / "staging", ack_timer_s=5.0)
    try:
        proc = sup.start(args, {"ONBOARD_TEST_SLOW": "0", "ONBOARD_TEST_HANG": "1"}, out)
        _wait(lambda: sup.fields("READY=1"), 120, fc)
        for frame in make_frames({}, 2):
            write_frame(drop, frame)
        assert _command(fc, "SET_MODE", {"mode": "OPERATE"}) == ResultCode.OK
        assert _command(fc, "START_CAPTURE", {"frame_count": 0}) == ResultCode.OK
        started = time.monotonic()
        # frame 0 is slow (longer than its deadline and than WatchdogSec): it ends, and the
        # pings went on meanwhile, so the supervisor did nothing
        _wait(lambda: (out / "frames" / "frame_00000000.json").is_file(), 60, fc)
        assert not sup.aborted.is_set() and proc.poll() is None
        assert len([t for t, _ in sup.fields("WATCHDOG=1") if t > started]) >= 2
        # frame 1 hangs: the pings stop, the hang is said in the status, the supervisor aborts
        _wait(lambda: sup.aborted.is_set(), HANG_S + 4 * WATCHDOG_S + 30, fc)
        assert proc.wait(30) == -signal.SIGABRT
        assert any("frame loop without progress" in f for _, f in sup.fields("STATUS="))
        assert not (out / "frames" / "frame_00000001.json").exists()
        left = [p for p in (out / "spool" / "queue").iterdir() if not p.name.endswith(".tmp")]

        # Restart=on-failure: the same command; the frame is not wedged this time
        proc = sup.start(args, {}, out)
        _wait(lambda: sup.fields("READY=1"), 120, fc)
        assert _command(fc, "SET_MODE", {"mode": "OPERATE"}) == ResultCode.OK
        assert _command(fc, "START_CAPTURE", {"frame_count": 0}) == ResultCode.OK
        _wait(lambda: (out / "frames" / "frame_00000001.json").is_file(), 60, fc)
        seen = len(fc.health)
        health = _wait(lambda: fc.health[seen:], 30, fc)[-1][1]
        assert health["frames"] == 1  # frame 0, done before the abort, was not redone
        assert health["spool_bytes"] <= quota_b
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
        assert sup.fields("STOPPING=1")
    finally:
        for p in (sup.proc,):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait()
        sup.close()
        fc.close()
        emu.stop()
    log = (out / "payload.log").read_text()
    recovered = re.findall(r"spool \S+: (\d+) products \((\d+) B\) queued", log)
    assert len(recovered) == 2, log[-3000:]
    # what the aborted run left in its spool is counted by the restarted one
    assert int(recovered[1][0]) == len(left) and len(left) > 0, (recovered, left)


def test_the_flight_image_recipe_is_lean_and_on_l4t_r36() -> None:
    """deploy/: the image is built on NVIDIA's L4T r36 JetPack base with the one install
    recipe, which installs the core dependencies and the jetson extra only (no torch, no
    scipy), takes onnxruntime-gpu from the Jetson index, and ships the example mission file,
    which is a valid mission for the unit's command line."""
    from onboard.config import load

    docker = (ROOT / "deploy" / "Dockerfile").read_text()
    assert re.search(r"^FROM nvcr\.io/nvidia/l4t-jetpack:\$\{L4T_TAG\}$", docker, re.M)
    assert re.search(r"^ARG L4T_TAG=r36\.", docker, re.M)
    assert "deploy/install-jetson.sh" in docker and "COPY deploy/etc/ /etc/onboard/" in docker
    assert not re.search(r"COPY (export|calibration|ground|hil|tests)\b", docker)
    script = (ROOT / "deploy" / "install-jetson.sh").read_text()
    installs = " ".join(ln for ln in script.splitlines() if "pip\" install" in ln)
    assert '"$SOURCE[jetson]"' in installs and "onnxruntime-gpu" in installs
    assert not re.search(r"torch|scipy|\[(ground|export|dev|bench|compress)", installs)
    assert "https://pypi.jetson-ai-lab.io/jp6/cu126" in script
    config = load(ROOT / "deploy" / "etc" / "mission.toml")
    (start,) = _unit_settings(UNIT.read_text())["Service"]["ExecStart"]
    assert "--config /etc/onboard/mission.toml" in start
    assert config.engine.trt_cache_dir == "/var/cache/onboard/engines" and config.run.hang_s > 0
