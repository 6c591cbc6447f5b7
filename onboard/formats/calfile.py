"""The calibration file: made on the ground by ``calibration/``, read on board.

One ``.cal`` file is a NumPy ``.npz`` archive (zip, no pickles) holding:

* ``header``: UTF-8 JSON as a uint8 array: ``format`` ("onboard-calibration"),
  ``version``, ``kind`` ("imspoc" or "pushbroom"), ``instrument`` name, ``created_utc``,
  ``software_version`` and ``provenance`` (source acquisitions, fit residuals, model chosen,
  regularisation rule, ...).
* ``wavelengths_nm`` (B,): the output wavelength grid of the reconstructed cube (imspoc) or
  the band centres of the detector's spectral axis (push-broom).
* ``white_reference`` (B,): the reconstructed signal of a unit-reflectance panel per second
  of exposure, on ``wavelengths_nm``; lab reflectance = signal / (white_reference x exposure):
  a reflectance only under the laboratory's lamp.
* Version 2 adds, optional, the absolute radiometric calibration: ``radiance_gain`` (B,), the
  signal in DN per second per unit at-sensor radiance (``RADIANCE_UNITS``), so radiance =
  signal / (radiance_gain x exposure), per reconstructed band for the ImSPOC (the bank's
  per-interferometer gains are relative: the absolute scale is fitted on the output grid) and
  per detector band for the push-broom; and ``radiance_gain_uncertainty`` (B,), its relative
  standard uncertainty (k = 1). A file without them is written as version 1, which a reader
  of version 1 reads; products from it can only be lab reflectance.
* Radiometric maps on the detector (rows, cols): ``bias_dn`` float32 (DN at zero exposure),
  ``dark_dn_s`` float32 (dark signal DN per second), ``flat`` float32 (relative response,
  mean 1), ``bad`` bool (dead or hot).
* ImSPOC only: ``layout/corners`` (N, 2) int, ``layout/thumb_shape`` (2,),
  ``layout/detector_shape`` (2,), and the interferometer bank as ``bank/<name>`` (see
  :meth:`onboard.physics.interferometers.InterferometerBank.arrays`).

The reconstruction operator is derived from the bank on ``wavelengths_nm`` when the file is
loaded (milliseconds), so a file can never hold an operator inconsistent with its bank.

The reader refuses, with the reason, any file that is not this format, is a version it does
not read, lacks an entry, or whose shapes disagree. It never guesses.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from firmware_bridge.storage import atomic_write
from onboard import __version__
from onboard.errors import OnboardError
from onboard.formats.npyio import load_npz
from onboard.physics.imspoc import ThumbnailLayout
from onboard.physics.interferometers import InterferometerBank

FORMAT = "onboard-calibration"
#: The newest version this software writes (a file without radiance calibration is still 1).
VERSION = 2
SUPPORTED_VERSIONS = (1, 2)
RADIANCE_UNITS = "W m-2 sr-1 nm-1"
KINDS = ("imspoc", "pushbroom")
_RADIOMETRIC = ("bias_dn", "dark_dn_s", "flat", "bad")
#: Most bytes the arrays of one file may declare, checked before inflating: the radiometric
#: maps of a 4096 x 4096 detector (3 float32 maps and a bool map, 208 MiB) and room for the
#: rest. A file over it is refused (a compression bomb declaring TiB would otherwise be
#: allocated before any shape is checked).
MAX_FILE_BYTES = 256 << 20


class CalibrationFileError(OnboardError, ValueError):
    """A calibration file that this runtime cannot use; the message says why and what to do."""


@dataclass
class Radiometric:
    """Radiometric maps of the detector, each (rows, cols)."""

    bias_dn: NDArray[np.float32]
    dark_dn_s: NDArray[np.float32]
    flat: NDArray[np.float32]
    bad: NDArray[np.bool_]

    def __post_init__(self) -> None:
        shapes = {k: getattr(self, k).shape for k in _RADIOMETRIC}
        if len(set(shapes.values())) != 1:
            raise CalibrationFileError(f"radiometric maps disagree in shape: {shapes}")

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.bias_dn.shape)  # type: ignore[return-value]


@dataclass
class Calibration:
    """Everything the runtime needs to turn raw frames of one instrument into reflectance."""

    kind: str
    instrument: str
    wavelengths_nm: NDArray[np.float64]
    white_reference: NDArray[np.float64]
    radiometric: Radiometric
    layout: ThumbnailLayout | None = None
    bank: InterferometerBank | None = None
    provenance: dict = field(default_factory=dict)
    created_utc: float = field(default_factory=time.time)
    software_version: str = __version__
    radiance_gain: NDArray[np.float64] | None = None
    radiance_gain_uncertainty: NDArray[np.float64] | None = None

    def __post_init__(self) -> None:
        _check_kind(self.kind)
        if self.white_reference.shape != self.wavelengths_nm.shape:
            raise CalibrationFileError(
                f"white reference has {self.white_reference.shape} entries for "
                f"{self.wavelengths_nm.shape} wavelengths"
            )
        if (self.radiance_gain is None) != (self.radiance_gain_uncertainty is None):
            raise CalibrationFileError("a radiance gain comes with its uncertainty (both or neither)")
        for name in ("radiance_gain", "radiance_gain_uncertainty"):
            v = getattr(self, name)
            if v is not None and (v.shape != self.wavelengths_nm.shape or not np.all(np.isfinite(v))
                                  or np.any(v <= 0 if name == "radiance_gain" else v < 0)):
                raise CalibrationFileError(
                    f"{name} must be {self.wavelengths_nm.shape} finite values, "
                    f"{'positive' if name == 'radiance_gain' else 'non-negative'}")
        if self.kind == "imspoc":
            if self.layout is None or self.bank is None:
                raise CalibrationFileError("an imspoc calibration needs a thumbnail layout and a bank")
            if len(self.layout) != len(self.bank):
                raise CalibrationFileError(
                    f"layout has {len(self.layout)} thumbnails, bank {len(self.bank)} interferometers"
                )
            if tuple(self.layout.detector_shape) != self.radiometric.shape:
                raise CalibrationFileError(
                    f"radiometric maps are {self.radiometric.shape}; detector is "
                    f"{self.layout.detector_shape}"
                )

    @property
    def format_version(self) -> int:
        """1 without a radiance calibration (so a version-1 reader keeps reading it), else 2."""
        return 1 if self.radiance_gain is None else 2

    def lab_radiance(self) -> NDArray[np.float64]:
        """Radiance (``RADIANCE_UNITS``) of one unit of lab reflectance on ``wavelengths_nm``:
        lab reflectance times this is at-sensor radiance. Refused without a radiance gain."""
        if self.radiance_gain is None:
            raise CalibrationFileError(
                f"calibration of {self.instrument} has no absolute radiometric gain (a version-1 "
                "file, or characterised without a radiance source): only lab reflectance is known; "
                "'onboard calibrate radiance FILE SPHERE --certificate CERT -o NEW.cal' measures one")
        return self.white_reference / self.radiance_gain

    def flight_problem(self) -> str | None:
        """Why this calibration cannot fly, or None. An ImSPOC layout of 1 x 1 thumbnails
        holds no detector geometry: it comes from a sweep of averaged per-interferometer
        responses characterised without a device file, and a flight frame would be compared
        with a (1, N) detector and make no products. The message names the commands that
        make a flyable file."""
        if self.kind != "imspoc" or self.layout is None or tuple(self.layout.thumb_shape) != (1, 1):
            return None
        return (f"no detector geometry (1 x 1 thumbnails on a {self.layout.detector_shape} "
                "'detector': characterised from averaged responses without a device file), so "
                "it cannot fly. For the instrument 'onboard run' simulates: 'onboard calibrate "
                "simulate --full-frame --preset default -o ACQ' then 'onboard calibrate "
                "characterize ACQ -o FILE.cal'; for a real instrument, characterize its "
                "full-frame sweep, or its responses with --device device.json")

    def header(self) -> dict:
        return {
            "format": FORMAT,
            "version": self.format_version,
            "kind": self.kind,
            "instrument": self.instrument,
            "created_utc": self.created_utc,
            "software_version": self.software_version,
            "provenance": self.provenance,
        }

    def write(self, path: str | os.PathLike) -> str:
        """Write atomically (firmware_bridge.storage.atomic_write); returns the file's SHA-256."""
        arrays: dict[str, NDArray] = {
            "header": np.frombuffer(json.dumps(self.header(), sort_keys=True).encode(), np.uint8),
            "wavelengths_nm": np.asarray(self.wavelengths_nm, dtype=np.float64),
            "white_reference": np.asarray(self.white_reference, dtype=np.float64),
            "bias_dn": self.radiometric.bias_dn.astype(np.float32),
            "dark_dn_s": self.radiometric.dark_dn_s.astype(np.float32),
            "flat": self.radiometric.flat.astype(np.float32),
            "bad": self.radiometric.bad.astype(bool),
        }
        if self.radiance_gain is not None and self.radiance_gain_uncertainty is not None:
            arrays["radiance_gain"] = np.asarray(self.radiance_gain, dtype=np.float64)
            arrays["radiance_gain_uncertainty"] = np.asarray(self.radiance_gain_uncertainty, dtype=np.float64)
        if self.kind == "imspoc":
            assert self.layout is not None and self.bank is not None
            arrays["layout/corners"] = np.asarray(self.layout.corners, dtype=np.int64)
            arrays["layout/thumb_shape"] = np.asarray(self.layout.thumb_shape, dtype=np.int64)
            arrays["layout/detector_shape"] = np.asarray(self.layout.detector_shape, dtype=np.int64)
            arrays.update({f"bank/{k}": v for k, v in self.bank.arrays().items()})
        path = Path(path)
        buf = io.BytesIO()
        np.savez_compressed(buf, **arrays)  # type: ignore[arg-type]  # numpy stub: **kwds may fill allow_pickle
        atomic_write(path, buf.getvalue(), mode=0o644)
        return file_sha256(path)


def _check_kind(kind: object) -> str:
    if kind not in KINDS:
        raise CalibrationFileError(f"calibration kind {kind!r} is not one of {KINDS}")
    return str(kind)


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of a file, hex."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read(path: str | os.PathLike) -> Calibration:
    """Read and validate a calibration file; :class:`CalibrationFileError` says what is wrong."""
    path = Path(path)
    rebuild = "rebuild it with 'onboard calibrate characterize ACQ -o FILE'"
    if path.is_dir():
        raise CalibrationFileError(f"{path} is a folder, not a calibration file: give the .cal file "
                                   "itself ('onboard calibrate characterize ACQ -o FILE.cal' writes one)")
    if not path.is_file():
        raise CalibrationFileError(f"calibration file {path} does not exist")
    try:
        with open(path, "rb") as fh:
            a = load_npz(fh, MAX_FILE_BYTES, f"{path} is not a readable calibration file",
                         CalibrationFileError)
    except OSError as exc:
        raise CalibrationFileError(f"{path} cannot be read ({exc})") from exc
    if "header" not in a:
        raise CalibrationFileError(f"{path} has no header: not an onboard calibration file")
    try:
        h = json.loads(a["header"].tobytes().decode())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CalibrationFileError(f"{path}: header is not valid JSON ({exc}); {rebuild}") from exc
    if not isinstance(h, dict):
        raise CalibrationFileError(f"{path}: header is {type(h).__name__}, not a JSON object; {rebuild}")
    if h.get("format") != FORMAT:
        raise CalibrationFileError(f"{path} is a {h.get('format')!r} file, not {FORMAT!r}")
    if h.get("version") not in SUPPORTED_VERSIONS:
        raise CalibrationFileError(
            f"calibration file {path} is version {h.get('version')}; this runtime reads versions "
            f"{', '.join(map(str, SUPPORTED_VERSIONS))}: {rebuild} or update the runtime"
        )
    kind = _check_kind(h.get("kind"))
    need = ["wavelengths_nm", "white_reference", *_RADIOMETRIC]
    if kind == "imspoc":
        need += ["layout/corners", "layout/thumb_shape", "layout/detector_shape"]
        need += [f"bank/{k}" for k in (
            "opd_um", "phase_rad", "gain_cheb", "reflectivity_cheb", "offset", "sigma_domain",
            "opd_gradient_um_per_px", "harmonics")]
    if h["version"] >= 2:
        need += ["radiance_gain", "radiance_gain_uncertainty"]
    missing = [k for k in need if k not in a]
    if missing:
        raise CalibrationFileError(f"{path} lacks {', '.join(missing)}; {rebuild}")
    for k in ("wavelengths_nm", "white_reference", "bias_dn", "dark_dn_s", "flat"):
        if not np.all(np.isfinite(a[k])):
            raise CalibrationFileError(f"{path}: {k} holds NaN or infinite values; {rebuild}")
    try:
        layout = bank = None
        if kind == "imspoc":
            layout = ThumbnailLayout(
                tuple(map(tuple, a["layout/corners"].tolist())),
                tuple(a["layout/thumb_shape"].tolist()),
                tuple(a["layout/detector_shape"].tolist()),
            )
            bank = InterferometerBank.from_arrays({k[5:]: v for k, v in a.items() if k.startswith("bank/")})
        return Calibration(
            kind=kind,
            instrument=h.get("instrument", "?"),
            wavelengths_nm=a["wavelengths_nm"],
            white_reference=a["white_reference"],
            radiometric=Radiometric(a["bias_dn"], a["dark_dn_s"], a["flat"], a["bad"].astype(bool)),
            layout=layout,
            bank=bank,
            provenance=h.get("provenance", {}),
            created_utc=h.get("created_utc", 0.0),
            software_version=h.get("software_version", "?"),
            radiance_gain=a["radiance_gain"] if h["version"] >= 2 else None,
            radiance_gain_uncertainty=a["radiance_gain_uncertainty"] if h["version"] >= 2 else None,
        )
    except (ValueError, TypeError, KeyError, IndexError) as exc:
        if isinstance(exc, CalibrationFileError):
            raise
        raise CalibrationFileError(f"{path} is inconsistent: {exc}; {rebuild}") from exc
