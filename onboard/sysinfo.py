"""What the platform says about itself: memory and temperatures, for health telemetry and
``onboard bench``.

Memory comes from ``resource.getrusage`` (peak resident set) and ``/proc/self/statm``
(current). Temperatures come from Linux thermal zones (``/sys/class/thermal/thermal_zone*``,
``type`` naming the sensor and ``temp`` in millidegrees Celsius; Jetsons expose
``cpu-thermal``/``gpu-thermal`` or ``CPU-therm``/``GPU-therm``, x86 ``x86_pkg_temp``), and
from ``jtop`` (jetson-stats) when it is installed and its service runs, for what the zones
do not give. Nothing here fails: what the platform does not expose is None, with the reason.
"""

from __future__ import annotations

import os
import resource
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

THERMAL_ROOT = Path("/sys/class/thermal")
#: Readings outside this range are sensors that are off or absent (Jetsons report -256 °C).
_PLAUSIBLE_C = (-50.0, 150.0)


def cache_root() -> Path:
    """Where the runtime keeps what it makes once per device (simulated calibrations, TensorRT
    plans): ``$XDG_CACHE_HOME/onboard``, else ``~/.cache/onboard`` (the systemd unit points
    ``XDG_CACHE_HOME`` at its ``CacheDirectory``)."""
    root = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(root) / "onboard"


def peak_rss_bytes() -> int:
    """Peak resident set size of this process so far, in bytes.

    On Linux this is ``VmHWM`` of /proc/self/status: ``getrusage``'s ru_maxrss survives
    fork + exec, so a payload started by a large parent (a test runner holding torch) would
    report the parent's size as its own."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)  # Linux counts KiB


def rss_bytes() -> int | None:
    """Current resident set size in bytes (Linux), None where /proc is absent."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return None
    return pages * os.sysconf("SC_PAGE_SIZE")


def _role(sensor: str) -> str | None:
    """'cpu', 'gpu' or None from a sensor name."""
    name = sensor.lower()
    if "gpu" in name:
        return "gpu"
    if "cpu" in name or name.startswith("x86_pkg"):
        return "cpu"
    return None


@dataclass
class Temperatures:
    """Degrees Celsius. ``cpu_c``/``gpu_c``: the hottest sensor of each kind, None when the
    platform exposes none (``reasons`` says why); ``sensors``: every plausible reading by
    name ("thermal_zone1/gpu-thermal", "jtop/GPU")."""

    cpu_c: float | None = None
    gpu_c: float | None = None
    sensors: dict[str, float] = field(default_factory=dict)
    reasons: list[str] = field(default_factory=list)

    def add(self, name: str, role: str | None, celsius: float) -> None:
        self.sensors[name] = celsius
        if role == "cpu":
            self.cpu_c = celsius if self.cpu_c is None else max(self.cpu_c, celsius)
        elif role == "gpu":
            self.gpu_c = celsius if self.gpu_c is None else max(self.gpu_c, celsius)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def read_thermal_zones(into: Temperatures, root: Path = THERMAL_ROOT) -> None:
    """Add every readable, plausible thermal zone under ``root`` to ``into``."""
    zones = sorted(root.glob("thermal_zone*")) if root.is_dir() else []
    if not zones:
        into.reasons.append(f"no thermal zones under {root}")
        return
    for zone in zones:
        try:
            kind = (zone / "type").read_text().strip()
            celsius = int((zone / "temp").read_text().strip()) / 1000.0
        except (OSError, ValueError):  # a sensor that is off answers EINVAL/ENODATA
            continue
        if _PLAUSIBLE_C[0] <= celsius <= _PLAUSIBLE_C[1]:
            into.add(f"{zone.name}/{kind}", _role(kind), celsius)


def read_jtop(into: Temperatures) -> None:
    """Add jetson-stats' temperatures (its service must run); the reason when it cannot."""
    try:
        from jtop import jtop
    except ImportError:
        into.reasons.append("jetson-stats (jtop) not installed")
        return
    try:
        with jtop() as jetson:
            readings = dict(jetson.temperature)
    except Exception as exc:  # jtop raises JtopException when its service is not running
        into.reasons.append(f"jtop unavailable: {exc}")
        return
    for name, value in readings.items():
        # jetson-stats 4 gives {"temp": C, "online": bool}, older versions the number
        celsius = value.get("temp") if isinstance(value, dict) else value
        online = value.get("online", True) if isinstance(value, dict) else True
        if online and isinstance(celsius, (int, float)) and \
                _PLAUSIBLE_C[0] <= celsius <= _PLAUSIBLE_C[1]:
            into.add(f"jtop/{name}", _role(name), float(celsius))


def temperatures(root: Path = THERMAL_ROOT, use_jtop: bool = True) -> Temperatures:
    """CPU and GPU temperatures: thermal zones first, jtop for what they leave out."""
    temps = Temperatures()
    read_thermal_zones(temps, root)
    if use_jtop and (temps.cpu_c is None or temps.gpu_c is None):
        read_jtop(temps)
    if temps.cpu_c is None:
        temps.reasons.append("no CPU temperature sensor exposed")
    if temps.gpu_c is None:
        temps.reasons.append("no GPU temperature sensor exposed")
    return temps


def snapshot(root: Path = THERMAL_ROOT, use_jtop: bool = True) -> dict[str, Any]:
    """Memory and temperatures in one dict for health telemetry."""
    return {"peak_rss_bytes": peak_rss_bytes(), "rss_bytes": rss_bytes(),
            "temperatures": temperatures(root, use_jtop).as_dict()}
