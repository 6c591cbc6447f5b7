"""A downwelling irradiance sensor: a frame source of its own, beside the camera.

A spectrometer behind a cosine diffuser on the drone's back (MicaSense's DLS, Headwall's or a
fibre spectrometer's irradiance head) reads the light falling on the drone, timestamped, with
the drone's attitude at that moment. Each reading is an :class:`IrradianceReading`; an
:class:`IrradianceLog` holds them in time order and answers which one is nearest a frame and
how far it is from it (the reflectance stage refuses a reading farther than its limit:
onboard/stages/reflectance.py).

Two sources:

* a file (``.npz``, :func:`write_irradiance_file` / :func:`read_irradiance_file`):
  ``timestamps`` (n,) float64 UTC Unix seconds, ascending; ``wavelengths_nm`` (B,) ascending;
  ``irradiance`` (n, B) float, W m-2 nm-1 as the sensor reads it (not cosine-corrected);
  ``attitude_deg`` (n, 3) roll, pitch, yaw of the sensor's body;
* a serial port (:class:`SerialIrradiance`): one ASCII line per reading,
  ``IRR,<unix s>,<roll>,<pitch>,<yaw>,<e_1>,...,<e_B>`` on the wavelengths given to it; a line
  that does not parse or has the wrong count is counted and skipped, never guessed.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from onboard.errors import OnboardError
from onboard.formats.npyio import load_npz

#: Most bytes an irradiance file may declare (a day of readings at 10 Hz of 500 bands).
MAX_FILE_BYTES = 1 << 30


class IrradianceError(OnboardError, ValueError):
    """An irradiance file or stream that cannot be used; the message says why."""


@dataclass(frozen=True)
class IrradianceReading:
    """One reading: UTC ``timestamp``, ``irradiance`` (B,) W m-2 nm-1 on the log's grid, as
    read (tilted with the body), ``attitude_deg`` (roll, pitch, yaw)."""

    timestamp: float
    irradiance: NDArray[np.float64]
    attitude_deg: tuple[float, float, float]


@dataclass
class IrradianceLog:
    """Readings of one sensor in time order, on ``wavelengths_nm``."""

    wavelengths_nm: NDArray[np.float64]
    readings: list[IrradianceReading] = field(default_factory=list)

    def add(self, reading: IrradianceReading) -> None:
        if reading.irradiance.shape != self.wavelengths_nm.shape:
            raise IrradianceError(f"a reading of {reading.irradiance.shape[0]} values on a "
                                  f"{self.wavelengths_nm.size}-band sensor")
        times = [r.timestamp for r in self.readings]
        self.readings.insert(bisect.bisect(times, reading.timestamp), reading)

    def nearest(self, t: float) -> tuple[IrradianceReading | None, float]:
        """The reading nearest ``t`` and its distance in seconds (None, inf when empty)."""
        if not self.readings:
            return None, math.inf
        times = [r.timestamp for r in self.readings]
        i = bisect.bisect(times, t)
        best = min((j for j in (i - 1, i) if 0 <= j < len(times)), key=lambda j: abs(times[j] - t))
        return self.readings[best], abs(times[best] - t)


def write_irradiance_file(path: str | Path, log: IrradianceLog) -> Path:
    """Write ``log`` as the file format of the module docstring."""
    path = Path(path)
    np.savez(path, timestamps=np.array([r.timestamp for r in log.readings], np.float64),
             wavelengths_nm=np.asarray(log.wavelengths_nm, np.float64),
             irradiance=np.array([r.irradiance for r in log.readings], np.float64).reshape(-1, log.wavelengths_nm.size),
             attitude_deg=np.array([r.attitude_deg for r in log.readings], np.float64).reshape(-1, 3))
    return path


def read_irradiance_file(path: str | Path) -> IrradianceLog:
    """Read and check an irradiance file; :class:`IrradianceError` says what is wrong."""
    path = Path(path)
    if not path.is_file():
        raise IrradianceError(f"irradiance file {path} does not exist")
    with open(path, "rb") as fh:
        a = load_npz(fh, MAX_FILE_BYTES, f"{path} is not a readable irradiance file", IrradianceError)
    missing = [k for k in ("timestamps", "wavelengths_nm", "irradiance", "attitude_deg") if k not in a]
    if missing:
        raise IrradianceError(f"{path} lacks {', '.join(missing)}")
    t, wl, e, att = (a[k].astype(np.float64) for k in ("timestamps", "wavelengths_nm", "irradiance", "attitude_deg"))
    if wl.ndim != 1 or wl.size < 2 or np.any(np.diff(wl) <= 0):
        raise IrradianceError(f"{path}: wavelengths_nm must be ascending, at least two")
    if t.ndim != 1 or e.shape != (t.size, wl.size) or att.shape != (t.size, 3):
        raise IrradianceError(f"{path}: {t.size} timestamps, irradiance {e.shape} and attitude {att.shape} "
                              f"disagree (expected ({t.size}, {wl.size}) and ({t.size}, 3))")
    if not (np.all(np.isfinite(t)) and np.all(np.isfinite(e)) and np.all(np.isfinite(att))):
        raise IrradianceError(f"{path}: NaN or infinite values")
    if np.any(np.diff(t) < 0):
        raise IrradianceError(f"{path}: timestamps are not in time order")
    return IrradianceLog(wl, [IrradianceReading(float(ti), ei, (float(r), float(p), float(y)))
                              for ti, ei, (r, p, y) in zip(t, e, att, strict=True)])


class SerialIrradiance:
    """Readings from a spectrometer on a serial port (module docstring's line format), added to
    ``log`` as they arrive; :meth:`poll` reads what is waiting without blocking."""

    def __init__(self, port: str, wavelengths_nm: NDArray[np.float64], baud: int = 115200) -> None:
        import serial  # pyserial, through firmware_bridge's dependencies

        self.log = IrradianceLog(np.asarray(wavelengths_nm, float))
        self.rejected = 0
        self._serial = serial.serial_for_url(port, baudrate=baud, timeout=0)
        self._pending = b""

    def poll(self) -> int:
        """Read every complete line waiting; returns how many readings were added."""
        self._pending += self._serial.read(self._serial.in_waiting or 1)
        *lines, self._pending = self._pending.split(b"\n")
        added = 0
        for line in lines:
            reading = parse_line(line, self.log.wavelengths_nm.size)
            if reading is None:
                self.rejected += 1
            else:
                self.log.add(reading)
                added += 1
        return added

    def close(self) -> None:
        self._serial.close()


def parse_line(line: bytes, bands: int) -> IrradianceReading | None:
    """One ``IRR,...`` line as a reading, or None if it is not one of ``bands`` values."""
    parts = line.strip().split(b",")
    if len(parts) != 5 + bands or parts[0] != b"IRR":
        return None
    try:
        values = [float(p) for p in parts[1:]]
    except ValueError:
        return None
    if not all(math.isfinite(v) for v in values):
        return None
    return IrradianceReading(values[0], np.array(values[4:]), (values[1], values[2], values[3]))
