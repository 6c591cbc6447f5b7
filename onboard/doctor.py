"""``onboard doctor``: what this device is, what the payload will run on it and why, and what to
fix before it flies.

One line per check: JetPack / L4T, TensorRT, CUDA and the GPU, the inference engines and the
model bundle, the device's plan cache, memory, free storage against the mission's budget, clock
sync, the serial port's permissions, the key and counter files, the calibration. Each check is
``ok``, ``warn`` (the payload flies, degraded or with something to know) or ``FAIL`` (the
payload would not start or not fly as configured); every non-ok line says what to do. The exit
status is 1 when any check fails (``--strict``: any warning too), else 0, so the systemd unit's
``ExecStartPre`` puts the report in the journal and a provisioning script can gate on it.

Nothing here writes, loads a model or builds a plan: a doctor that takes minutes or changes the
device would not be run. ``--json`` writes the same checks for machines.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import stat
import subprocess
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import click

from firmware_bridge.auth import CounterStore, load_key
from firmware_bridge.errors import BridgeError
from onboard.config import Config, ConfigError, override
from onboard.config import load as load_config
from onboard.engines import plan_cache
from onboard.engines.select import CANDIDATE_NAMES, CLASSICAL, probe_engines
from onboard.engines.tensorrt_engine import PlanKey
from onboard.errors import OnboardError

OK, WARN, FAIL = "ok", "warn", "FAIL"
TEGRA_RELEASE = Path("/etc/nv_tegra_release")
CUDA_VERSION = Path("/usr/local/cuda/version.json")
#: L4T release -> JetPack (the Jetson Orin releases that matter here).
JETPACK = {"36.2": "6.0 DP", "36.3": "6.0", "36.4": "6.1", "36.4.3": "6.2", "36.4.4": "6.2.1"}
#: Less available memory than this and a TensorRT build or the frame loop may be killed.
MIN_AVAILABLE_MEMORY = 1 << 30


@dataclass
class Check:
    name: str
    status: str
    detail: str
    fix: str = ""

    def line(self) -> str:
        fix = f" -> {self.fix}" if self.fix else ""
        return f"{self.status:<4}  {self.name:<15} {self.detail}{fix}"


@dataclass
class Device:
    """Where the checks look; the defaults are this machine's, tests point them elsewhere."""

    tegra_release: Path = TEGRA_RELEASE
    meminfo: Path = Path("/proc/meminfo")
    cache_root: Path | None = None  # None: [engine] trt_cache_dir or the default


def l4t_release(text: str) -> str | None:
    """'36.4.3' from /etc/nv_tegra_release's '# R36 (release), REVISION: 4.3, ...'."""
    head = text.split(",")
    if not head or not head[0].startswith("# R"):
        return None
    major = head[0][3:].split()[0]
    for part in head[1:]:
        if "REVISION:" in part:
            return f"{major}.{part.split(':', 1)[1].strip()}"
    return major


def check_platform(device: Device) -> Check:
    name = f"{platform.system()} {platform.machine()}, Python {platform.python_version()}"
    try:
        release = l4t_release(device.tegra_release.read_text())
    except OSError:
        return Check("platform", OK, f"{name}; not a Jetson (no {device.tegra_release})")
    if release is None:
        return Check("platform", WARN, f"{name}; {device.tegra_release} unreadable as an L4T release",
                     "check the JetPack install (cat /etc/nv_tegra_release)")
    jetpack = next((jp for l4t, jp in sorted(JETPACK.items(), reverse=True)
                    if release == l4t or release.startswith(l4t + ".")), None)
    detail = f"{name}; Jetson, L4T {release}" + (f" (JetPack {jetpack})" if jetpack else "")
    major_minor = tuple(int(x) for x in release.split(".")[:2] if x.isdigit())
    if major_minor < (36, 4):
        return Check("platform", WARN, detail + ": TensorRT < 10, the bundle's plans cannot be built",
                     "flash JetPack 6.1 or 6.2 (L4T 36.4); ONNX Runtime on the CPU is used meanwhile")
    return Check("platform", OK, detail)


def check_gpu() -> list[Check]:
    """TensorRT, CUDA and the GPU, and every inference engine: available or why not."""
    out = []
    version = plan_cache.tensorrt_version()
    if version is None:
        out.append(Check("tensorrt", WARN if TEGRA_RELEASE.exists() else OK,
                         "not installed: no TensorRT plans here, ONNX Runtime runs the models",
                         "on a Jetson: apt install nvidia-tensorrt, and a venv made with "
                         "--system-site-packages (deploy/README.md)" if TEGRA_RELEASE.exists() else ""))
    else:
        try:
            plan_cache.check_version(version)
            out.append(Check("tensorrt", OK, f"TensorRT {version}"))
        except plan_cache.PlanBuildError as exc:
            out.append(Check("tensorrt", WARN, str(exc), "flash JetPack >= 6.1"))
    for probe in probe_engines():
        if probe.name == CLASSICAL:
            continue
        out.append(Check(f"engine {probe.name.removeprefix('onnxruntime-')}",
                         OK if probe.available else "n/a", probe.detail))
    return out


def check_cuda() -> Check:
    from onboard.engines.base import EngineError
    from onboard.engines.tensorrt_engine import cuda_device

    version = ""
    try:
        version = json.loads(CUDA_VERSION.read_text())["cuda"]["version"]
    except (OSError, ValueError, KeyError, TypeError):
        pass
    cuda = f"CUDA {version}" if version else "CUDA toolkit not found"
    try:
        dev = cuda_device(0)
    except EngineError as exc:
        on_jetson = TEGRA_RELEASE.exists()
        return Check("gpu", WARN if on_jetson else OK, f"{cuda}; no GPU seen: {exc}",
                     "pip install 'onboard[jetson]' (cuda-python) and add the user to group video"
                     if on_jetson else "")
    return Check("gpu", OK, f"{cuda}; {dev.name}, compute capability {dev.compute_capability}")


def check_engines(config: Config, explicit: bool) -> Check:
    """What the learned stages will run on, and why."""
    probes = {p.name: p for p in probe_engines()}
    asked = config.engine.engine
    if asked == CLASSICAL:
        return Check("will run", OK, "classical stages ([engine] engine = \"classical\")")
    order = [asked] if asked != "auto" else list(CANDIDATE_NAMES)
    usable = [n for n in order if probes[n].available]
    if usable:
        return Check("will run", OK, f"{usable[0]}: {probes[usable[0]].detail}"
                     + (" (the first of tensorrt, onnxruntime-gpu, onnxruntime-cpu available here)"
                        if asked == "auto" else ""))
    why = "; ".join(f"{n}: {probes[n].detail}" for n in order)
    if explicit and asked != "auto":
        return Check("will run", FAIL, f"[engine] engine = \"{asked}\" cannot run here ({why})",
                     "install it, or set [engine] engine = \"auto\"")
    return Check("will run", WARN, f"no inference engine: the classical stages run ({why})",
                 "pip install onnxruntime (onnxruntime-gpu on a Jetson, deploy/README.md)")


def check_bundle(config: Config) -> Check:
    from onboard.formats.bundle import find_bundle

    bundle, why = find_bundle(config.run.bundle)
    if bundle is None:
        return Check("models", WARN, f"no model bundle ({why}): the classical stages run",
                     "reinstall onboard (it ships onboard/models/default) or set [run] bundle")
    if bundle.problems:
        bad = "; ".join(f"{f}: {p}" for f, p in sorted(bundle.problems.items()))
        return Check("models", WARN, f"bundle {bundle.root}: unusable files ({bad})",
                     "reinstall the bundle (onboard export build, or the package)")
    return Check("models", OK, f"bundle {bundle.root} ({len(bundle.manifest.models)} models, "
                               f"manifest {bundle.manifest_sha256[:12]})")


def check_plan_cache(config: Config, device: Device) -> Check:
    """Entries that the next start would refuse (and rebuild, which takes minutes)."""
    root = device.cache_root or (Path(config.engine.trt_cache_dir) if config.engine.trt_cache_dir
                                 else plan_cache.default_root())
    entries = sorted(p for kind in ("tensorrt", "onnxruntime-trt") for p in (root / kind).glob("*")
                     if p.is_dir() and ".building-" not in p.name)
    if not entries:
        return Check("plan cache", OK, f"{root}: empty (the first start with TensorRT builds the "
                                       "plans: minutes)")
    version = plan_cache.tensorrt_version()
    stale = []
    for entry in entries:
        try:
            key = json.loads((entry / plan_cache.KEY_FILE).read_text())
            built = key["tensorrt_version"].split("+onnxruntime")[0]
        except (OSError, ValueError, KeyError, AttributeError):
            stale.append(f"{entry.name} (no readable key)")
            continue
        if version is None or built != version:
            stale.append(f"{entry.name} (built with TensorRT {built}, here "
                         f"{version or 'none'})")
        elif entry.parent.name == "tensorrt":
            here = PlanKey(key["model_sha256"], version, key["compute_capability"], key["precision"],
                           key["device_name"])
            problems = plan_cache.entry_problems(entry, here)
            if problems:
                stale.append(f"{entry.name} ({'; '.join(problems)})")
    if stale:
        return Check("plan cache", WARN, f"{root}: {len(stale)} of {len(entries)} entries stale, "
                                         f"refused and rebuilt at the next start: {', '.join(stale)}",
                     f"nothing (or remove them now: rm -r {' '.join(str(root / '*' / s.split()[0]) for s in stale)})")
    return Check("plan cache", OK, f"{root}: {len(entries)} entries for TensorRT {version}")


def check_memory(device: Device) -> Check:
    try:
        info = {line.split(":")[0]: int(line.split()[1]) * 1024
                for line in device.meminfo.read_text().splitlines() if line.split()[1:]}
        total, available = info["MemTotal"], info["MemAvailable"]
    except (OSError, KeyError, ValueError, IndexError):
        return Check("memory", WARN, f"{device.meminfo} unreadable", "")
    detail = f"{available / 2**30:.1f} GiB available of {total / 2**30:.1f} GiB"
    if available < MIN_AVAILABLE_MEMORY:
        return Check("memory", WARN, detail + ": a TensorRT build or a frame may be killed",
                     "stop other services (the desktop: sudo systemctl set-default multi-user.target)")
    return Check("memory", OK, detail)


def _existing(path: Path) -> Path:
    path = path.absolute()
    while not path.exists():
        path = path.parent
    return path


def check_storage(config: Config) -> Check:
    out = Path(config.run.out)
    floor = int(config.run.disk_floor_mb * 1e6)
    quota = int(config.link.spool_quota_mb * 1e6) if config.link.port else 0
    from firmware_bridge.storage import free_bytes

    free = free_bytes(_existing(out))
    detail = (f"{free / 1e6:.0f} MB free at {out}; floor [run] disk_floor_mb {floor / 1e6:g} MB"
              + (f", spool quota {quota / 1e6:g} MB" if quota else ""))
    if free <= floor:
        return Check("storage", FAIL, detail + ": below the floor, every product would be shed",
                     f"free space on {_existing(out)} or lower [run] disk_floor_mb")
    if free < floor + quota:
        return Check("storage", WARN, detail + ": the spool cannot fill its quota before the floor",
                     "lower [link] spool_quota_mb or free space")
    return Check("storage", OK, detail)


def _run(args: list[str]) -> str | None:
    if shutil.which(args[0]) is None:
        return None
    try:
        done = subprocess.run(args, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout if done.returncode == 0 else None


def check_clock() -> Check:
    synced = _run(["timedatectl", "show", "-p", "NTPSynchronized", "--value"])
    if synced is not None and synced.strip() in ("yes", "no"):
        if synced.strip() == "yes":
            return Check("clock", OK, "synchronised (timedatectl)")
        return Check("clock", WARN, "not synchronised (timedatectl): product times may be wrong",
                     "enable NTP (timedatectl set-ntp true) or chrony with the flight computer's time")
    tracking = _run(["chronyc", "tracking"])
    if tracking is not None:
        leap = next((ln.split(":", 1)[1].strip() for ln in tracking.splitlines()
                     if ln.startswith("Leap status")), "")
        if leap == "Normal":
            return Check("clock", OK, "synchronised (chrony)")
        return Check("clock", WARN, f"chrony: leap status {leap or 'unknown'}: not synchronised",
                     "check chronyc sources")
    return Check("clock", WARN, "sync state unknown (no timedatectl or chronyc answered)",
                 "install chrony or systemd-timesyncd")


def check_serial(config: Config) -> Check:
    port = config.link.port
    if port is None:
        return Check("serial", OK, "no [link] port: onboard run processes frames without a flight computer")
    if "://" in port:
        return Check("serial", OK, f"{port}: a pyserial URL, not a device")
    path = Path(port)
    try:
        st = path.stat()
    except OSError as exc:
        return Check("serial", FAIL, f"{port}: {exc.strerror}", "check the wiring and the device "
                     "tree (ls /dev/ttyTHS* /dev/ttyUSB*)")
    try:  # opened as the payload opens it (not os.access: root passes that for any mode)
        os.close(os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK))
    except OSError as exc:
        group = _group_name(st.st_gid)
        return Check("serial", FAIL, f"{port}: cannot be opened for reading and writing "
                     f"({exc.strerror}; mode {stat.filemode(st.st_mode)}, group {group})",
                     f"sudo usermod -aG {group} $USER (the unit runs with SupplementaryGroups=dialout)")
    return Check("serial", OK, f"{port}: opens for reading and writing")


def _group_name(gid: int) -> str:
    try:
        import grp

        return grp.getgrgid(gid).gr_name
    except (ImportError, KeyError):
        return str(gid)


def check_keys(config: Config) -> Check:
    lc = config.link
    if lc.key_file is None:
        if lc.port is not None and lc.uplink:
            return Check("keys", FAIL, "[link] uplink = true but no key_file and counter_file",
                         "python -m firmware_bridge.keytool provision KEY COUNTER, then set both in [link]")
        return Check("keys", OK, "no key configured: only PING is accepted")
    try:
        load_key(lc.key_file)
        CounterStore(str(lc.counter_file))
    except (BridgeError, OSError) as exc:
        return Check("keys", FAIL, str(exc).splitlines()[0],
                     "python -m firmware_bridge.keytool provision KEY COUNTER (set-counter recovers a "
                     "lost counter file)")
    return Check("keys", OK, f"{lc.key_file} (mode 0600) and {lc.counter_file} read")


def check_calibration(config: Config) -> Check:
    if config.run.calibration is None:
        return Check("calibration", WARN if config.link.port else OK,
                     "none configured: the simulated instrument flies",
                     "set [run] calibration to the instrument's .cal" if config.link.port else "")
    from onboard.formats import calfile

    try:
        cal = calfile.read(config.run.calibration)
    except (OnboardError, OSError) as exc:
        return Check("calibration", FAIL, str(exc).splitlines()[0], "give a calibration made by onboard calibrate characterize")
    return Check("calibration", OK, f"{config.run.calibration}: {cal.instrument}")


def diagnose(config: Config, explicit_engine: bool, device: Device | None = None) -> list[Check]:
    device = device or Device()
    checks: list[Check] = [check_platform(device), check_cuda(), *check_gpu()]
    steps: list[Callable[[], Check]] = [
        lambda: check_engines(config, explicit_engine), lambda: check_bundle(config),
        lambda: check_plan_cache(config, device), lambda: check_memory(device),
        lambda: check_storage(config), check_clock, lambda: check_serial(config),
        lambda: check_keys(config), lambda: check_calibration(config)]
    checks += [step() for step in steps]
    return checks


@click.command()
@click.option("--config", "config_path", type=click.Path(path_type=Path), help="Mission TOML file.")
@click.option("--port", help="The flight computer's serial port (as onboard run --port).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), help="Output folder (as onboard run --out).")
@click.option("--json", "json_path", type=click.Path(path_type=Path), help="Write the checks as JSON ('-': stdout).")
@click.option("--strict", is_flag=True, help="Exit 1 on warnings too.")
def doctor(config_path: Path | None, port: str | None, out: Path | None, json_path: Path | None,
           strict: bool) -> None:
    """What this device is, what the payload will run here and why, and what to fix.

    Exits 1 when the payload could not fly as configured (a FAIL line), else 0."""
    try:
        config = load_config(config_path)
        if port is not None:
            override(config, "link", "port", port)
        if out is not None:
            override(config, "run", "out", str(out))
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc
    explicit = config_path is not None and "engine" in _sections(config_path)
    checks = diagnose(config, explicit)
    failed = [c for c in checks if c.status == FAIL]
    warned = [c for c in checks if c.status == WARN]
    verdict = ("cannot fly: " + ", ".join(c.name for c in failed) if failed else
               "ready to fly" + (f" ({len(warned)} warnings)" if warned else ""))
    report = {"can_fly": not failed, "verdict": verdict, "checks": [asdict(c) for c in checks]}
    if json_path is not None and str(json_path) == "-":
        click.echo(json.dumps(report, indent=2))
    else:
        for c in checks:
            click.echo(c.line())
        click.echo(verdict)
        if json_path is not None:
            json_path.write_text(json.dumps(report, indent=2))
    sys.exit(1 if failed or (strict and warned) else 0)


def _sections(path: Path) -> set[str]:
    from onboard.config import read_toml

    return set(read_toml(path, ConfigError, "configuration file"))
