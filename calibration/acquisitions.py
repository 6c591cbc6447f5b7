"""Monochromatic sweep acquisitions on disk: reading and validating them, and writing them.

The layout is the one the real prototypes' acquisitions come in (``../shared/data/imspoc``),
one folder per acquisition:

* ``central_wavenumbers.npy`` (S,) float64, 1/µm: the central wavenumber of each line.
* ``data.npy`` (N, S) float64: each interferometer's recorded response to each line.
* ``norm.npy`` (N, S) float64: the source's power per line; ``data / norm`` is the response.
* ``options.json``: at least ``opd_step`` (µm, the design's OPD step) and ``is_normalized``
  (true when ``data`` is already divided by the source's spectrum).
  Optional ``first_index``: the design index of the folder's first interferometer (a
  subset of a bank keeps its place in the thickness series; default 0).
* optional ``mean.npy`` (N, S) and ``device.json``: carried along, not needed.

Every problem gives one :class:`AcquisitionError` naming the file and what to do; nothing is
dropped silently.
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from onboard.errors import OnboardError

REQUIRED = ("central_wavenumbers.npy", "data.npy", "options.json")


class AcquisitionError(OnboardError, ValueError):
    """An acquisition folder that cannot be characterised; the message says why."""


@dataclass
class Acquisition:
    """One monochromatic sweep of N interferometers over S lines.

    sigma: (S,) 1/µm, ascending. data: (N, S) raw responses. norm: (N, S) source power, or
    None when ``is_normalized``. opd_step_um: the design's OPD step between consecutive
    interferometers (µm), the only prior the characterisation takes.
    """

    name: str
    sigma: NDArray[np.float64]
    data: NDArray[np.float64]
    norm: NDArray[np.float64] | None
    opd_step_um: float
    is_normalized: bool
    options: dict = field(default_factory=dict)
    path: str = ""
    first_index: int = 0

    @property
    def n_interferometers(self) -> int:
        return int(self.data.shape[0])

    @property
    def n_lines(self) -> int:
        return int(self.sigma.shape[0])

    def responses(self) -> NDArray[np.float64]:
        """(N, S) responses with the source's spectrum removed (``data / norm``)."""
        if self.is_normalized or self.norm is None:
            return self.data
        return self.data / self.norm

    def subset(self, index: NDArray[np.intp] | slice) -> Acquisition:
        """The same acquisition restricted to some interferometers (index into N)."""
        return Acquisition(
            self.name, self.sigma, self.data[index], None if self.norm is None else self.norm[index],
            self.opd_step_um, self.is_normalized, dict(self.options), self.path, self.first_index,
        )


def _load_npy(path: Path) -> NDArray[np.float64]:
    if not path.is_file():
        raise AcquisitionError(f"{path} is missing: an acquisition folder needs {', '.join(REQUIRED)}"
                               " (and norm.npy unless options.json says is_normalized)")
    try:
        arr = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise AcquisitionError(
            f"{path} is not a readable .npy array ({exc}); it is corrupt or truncated: copy it again"
        ) from exc
    if not isinstance(arr, np.ndarray) or arr.dtype.kind not in "fiu":
        raise AcquisitionError(f"{path} holds {getattr(arr, 'dtype', type(arr))}, not numbers")
    arr = arr.astype(np.float64)
    bad = ~np.isfinite(arr)
    if bad.any():
        where = np.argwhere(bad)[0].tolist()
        raise AcquisitionError(
            f"{path} holds {int(bad.sum())} NaN or infinite values (first at index {where}); "
            "remove or re-record those lines before characterising"
        )
    return arr


def read_options(folder: Path, needs: str) -> tuple[Path, dict]:
    """An acquisition folder's ``options.json`` as a dict (and its path); ``needs`` says what
    a missing file should have given."""
    if not folder.is_dir():
        raise AcquisitionError(f"acquisition folder {folder} does not exist")
    opt_path = folder / "options.json"
    if not opt_path.is_file():
        raise AcquisitionError(f"{opt_path} is missing: {needs}")
    try:
        options = json.loads(opt_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise AcquisitionError(f"{opt_path} is not valid JSON ({exc})") from exc
    if not isinstance(options, dict):
        raise AcquisitionError(f"{opt_path} must hold a JSON object")
    return opt_path, options


def load_acquisition(folder: str | Path) -> Acquisition:
    """Read and validate an acquisition folder (see the module docstring for the layout)."""
    folder = Path(folder)
    opt_path, options = read_options(folder, "it must give opd_step (µm) and is_normalized")
    step = options.get("opd_step")
    if not isinstance(step, (int, float)) or not step > 0:
        raise AcquisitionError(f"{opt_path}: opd_step must be a positive number (µm), got {step!r}")
    normalized = bool(options.get("is_normalized", False))
    first = options.get("first_index", 0)
    if not isinstance(first, int) or first < 0:
        raise AcquisitionError(f"{opt_path}: first_index must be a non-negative integer, got {first!r}")
    sigma = _load_npy(folder / "central_wavenumbers.npy")
    data = _load_npy(folder / "data.npy")
    if sigma.ndim != 1 or sigma.size < 8:
        raise AcquisitionError(f"{folder}/central_wavenumbers.npy must be 1-D with >= 8 lines, "
                               f"got shape {sigma.shape}")
    if np.any(sigma <= 0):
        raise AcquisitionError(f"{folder}/central_wavenumbers.npy must be positive (1/µm)")
    if data.ndim != 2 or data.shape[1] != sigma.size:
        raise AcquisitionError(
            f"{folder}/data.npy is {data.shape}; expected (interferometers, {sigma.size}) to match "
            "central_wavenumbers.npy"
        )
    norm = None
    if not normalized:
        norm = _load_npy(folder / "norm.npy")
        if norm.shape != data.shape:
            raise AcquisitionError(f"{folder}/norm.npy is {norm.shape} but data.npy is {data.shape}")
        if np.any(norm <= 0):
            raise AcquisitionError(f"{folder}/norm.npy has non-positive source power at "
                                   f"{int((norm <= 0).sum())} entries: those lines cannot be normalised")
    order = np.argsort(sigma, kind="stable")
    if np.any(np.diff(sigma[order]) <= 0):
        raise AcquisitionError(f"{folder}/central_wavenumbers.npy repeats a wavenumber")
    return Acquisition(
        name=str(options.get("device_id", folder.name)),
        sigma=sigma[order],
        data=data[:, order],
        norm=None if norm is None else norm[:, order],
        opd_step_um=float(step),
        is_normalized=normalized,
        options=options,
        path=str(folder),
        first_index=first,
    )


def write_acquisition(folder: str | Path, acq: Acquisition, extra: dict | None = None) -> None:
    """Write ``acq`` in the on-disk layout :func:`load_acquisition` reads."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / "central_wavenumbers.npy", np.asarray(acq.sigma, dtype=np.float64))
    np.save(folder / "data.npy", np.asarray(acq.data, dtype=np.float64))
    if acq.norm is not None:
        np.save(folder / "norm.npy", np.asarray(acq.norm, dtype=np.float64))
    options = {**acq.options, "device_id": acq.name, "opd_step": acq.opd_step_um,
               "is_normalized": acq.is_normalized, "first_index": acq.first_index, **(extra or {})}
    (folder / "options.json").write_text(json.dumps(options, indent=2, sort_keys=True))
