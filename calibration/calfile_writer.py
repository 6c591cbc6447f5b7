"""Turn a characterisation into the runtime's calibration file (:mod:`onboard.formats.calfile`).

A monochromatic sweep gives the interferometer bank. The other parts of a calibration file
come from elsewhere, and this module says where each came from in the provenance:

* the thumbnail layout from the acquisition's ``device.json`` (image size, thumbnail size
  and count, arrangement), or, with none, one 1 x 1 sample per interferometer (the sweep
  holds one averaged value per interferometer, so that is what it describes);
* the radiometric maps: neutral (bias 0, dark 0, flat 1, no bad pixels) unless given: a
  sweep of averaged windows measures none of them;
* the output wavelength grid: uniform in wavenumber over the sweep, as many bands as the
  largest OPD resolves (``span x max OPD / 2``), unless given;
* the white reference: 1 in every band, since the sweep's responses are already divided by
  the source (a unit spectrum in, the bank's response out).

A full-frame sweep (:mod:`calibration.fullframe`) measures the layout (on its flat frame),
the maps (from its darks and flat) and the white reference (its white panel); it passes them
in, with provenance entries saying so, and they replace the defaults above.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from calibration.characterise import Characterisation
from onboard.errors import OnboardError
from onboard.formats.calfile import Calibration, Radiometric
from onboard.physics.imspoc import ThumbnailLayout
from onboard.stages.reconstruct import output_grid


class DeviceFileError(OnboardError, ValueError):
    """A device.json that does not describe a thumbnail layout."""


def layout_from_device(path: str | Path, n: int) -> ThumbnailLayout:
    """The thumbnail layout a ``device.json`` describes (keys ``image_size``,
    ``subimage_size``, ``subimage_amount`` (rows, cols) and ``subimage_arrangement``:
    "vertical" numbers the interferometers down the columns, anything else along rows)."""
    try:
        d = json.loads(Path(path).read_text())
        image = tuple(int(v) for v in d["image_size"])
        thumb = tuple(int(v) for v in d["subimage_size"])
        rows, cols = (int(v) for v in d["subimage_amount"])
    except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise DeviceFileError(f"{path} does not describe a thumbnail layout ({exc})") from exc
    if rows * cols != n:
        raise DeviceFileError(f"{path} lays out {rows} x {cols} = {rows * cols} thumbnails; "
                              f"the acquisition has {n} interferometers")
    order = "column" if d.get("subimage_arrangement") == "vertical" else "row"
    grid = ThumbnailLayout.grid(rows, cols, thumb, gap=0, margin=0, order=order)  # type: ignore[arg-type]
    return ThumbnailLayout(grid.corners, thumb, image)  # type: ignore[arg-type]


def default_bands(c: Characterisation) -> int:
    """Independent bands the largest OPD resolves over the sweep: ``span x max OPD / 2``."""
    span = float(np.ptp(c.acquisition.sigma))
    return int(np.clip(round(span * float(c.bank.opd_um.max()) / 2), 8, 256))


def build_calibration(c: Characterisation, device: str | Path | None = None,
                      n_bands: int | None = None, *, layout: ThumbnailLayout | None = None,
                      radiometric: Radiometric | None = None,
                      white_reference: NDArray[np.float64] | None = None,
                      provenance: dict | None = None) -> Calibration:
    """The calibration file's content for a characterisation.

    ``layout``, ``radiometric`` and ``white_reference`` (on the ``n_bands`` grid) replace the
    defaults of the module docstring where an acquisition measured them; ``provenance``
    entries then say where they came from."""
    n = len(c.bank)
    acq_dir = Path(c.acquisition.path) if c.acquisition.path else None
    if layout is not None:
        layout_src = "given"
    elif device is None and acq_dir is not None and (acq_dir / "device.json").is_file():
        device = acq_dir / "device.json"
    if layout is None and device is not None:
        layout = layout_from_device(device, n)
        layout_src = f"device file {device}"
    elif layout is None:
        layout = ThumbnailLayout(tuple((0, i) for i in range(n)), (1, 1), (1, n))
        layout_src = "none in the acquisition: one 1 x 1 sample per interferometer"
    shape = layout.detector_shape
    maps = radiometric or Radiometric(np.zeros(shape, np.float32), np.zeros(shape, np.float32),
                                      np.ones(shape, np.float32), np.zeros(shape, bool))
    lo, hi = c.bank.sigma_domain
    bands = n_bands or default_bands(c)
    wavelengths = output_grid((1000.0 / hi, 1000.0 / lo), bands)
    return Calibration(
        kind="imspoc",
        instrument=c.acquisition.name,
        wavelengths_nm=wavelengths,
        white_reference=np.ones(bands) if white_reference is None else white_reference,
        radiometric=maps,
        layout=layout,
        bank=c.bank,
        provenance={
            "source": f"monochromatic sweep {c.acquisition.path or c.acquisition.name}",
            "characterisation": c.summary(),
            "bic": c.selection.bic,
            "layout": layout_src,
            "radiometric": "neutral (a sweep of averaged windows measures no detector maps)",
            "white_reference": "1 per band: the sweep's responses are source-normalised",
            "regularisation_rule": "GCV (onboard.stages.reconstruct)",
            **(provenance or {}),
        },
    )
