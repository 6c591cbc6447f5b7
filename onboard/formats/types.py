"""The data that flows through the pipeline (docs/design.md, "The data that flows").

Every array says its shape, dtype, units and band order here, once; stages take and return
these types and nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TypeAlias

import numpy as np
from numpy.typing import NDArray

#: Tillage classes by residue cover (conservation agriculture): < 15 %, 15-30 %, > 30 %.
TILLAGE_CLASSES: tuple[str, ...] = ("intensive", "reduced", "conservation")
#: Residue-cover thresholds between the tillage classes.
TILLAGE_THRESHOLDS: tuple[float, float] = (0.15, 0.30)
#: Endmember order of every fraction array.
ENDMEMBERS: tuple[str, ...] = ("residue", "soil", "green")
#: Class value for pixels with no valid measurement.
INVALID_CLASS = 255
#: Tillage value of a residue product's pixel marked uncertain (onboard/stages/confidence.py).
UNCERTAIN_CLASS = 254


def tillage_class(residue_cover: NDArray[np.floating]) -> NDArray[np.uint8]:
    """Tillage class index (0 intensive, 1 reduced, 2 conservation) from residue cover."""
    return np.digitize(residue_cover, TILLAGE_THRESHOLDS).astype(np.uint8)


@dataclass
class RawFrame:
    """One detector readout and its context.

    ``pixels``: (rows, cols). uint16 digital numbers as read out; after radiometric
    correction, float32 in DN with dark removed and flat applied.
    ``valid``: (rows, cols) bool, False for dead, hot, saturated or repaired pixels; None
    before radiometric correction. For a push-broom sensor a frame is one line
    (cross-track, bands) and the same fields apply.
    """

    pixels: NDArray
    counter: int
    timestamp: float  # seconds since the Unix epoch, UTC
    exposure_s: float
    temperature_c: float = 20.0
    pose: tuple[float, ...] | None = None  # (lat deg, lon deg, alt m, roll, pitch, yaw deg)
    sensor: str = "imspoc"
    valid: NDArray[np.bool_] | None = None


#: What the pipeline takes per step: one ImSPOC frame, or one block of push-broom lines.
Frame: TypeAlias = RawFrame | list[RawFrame]


@dataclass
class Cube:
    """A hyperspectral cube, channels first as ONNX and TensorRT want it.

    ``data``: (bands, rows, cols) float32, reflectance (unitless, about 0-1) unless
    ``units`` says otherwise. ``wavelengths_nm``: (bands,) ascending. ``valid``:
    (rows, cols) bool, False where no trustworthy spectrum exists. ``response``: optional
    (bands, bands) spectral response of the cube's bands: a scene whose reflectance is ``r``
    on this band grid is expected to read ``response @ r`` (the resolution matrix of a
    regularised reconstruction); None when each band is measured on its own.
    """

    data: NDArray[np.float32]
    wavelengths_nm: NDArray[np.float64]
    valid: NDArray[np.bool_]
    counter: int = 0
    timestamp: float = 0.0
    units: str = "reflectance"
    response: NDArray[np.float64] | None = None

    def __post_init__(self) -> None:
        if self.data.ndim != 3:
            raise ValueError(f"a Cube is (bands, rows, cols); got shape {self.data.shape}")
        if self.wavelengths_nm.shape != (self.data.shape[0],):
            raise ValueError(
                f"wavelength grid has {self.wavelengths_nm.shape} entries for "
                f"{self.data.shape[0]} bands"
            )
        if self.valid.shape != self.data.shape[1:]:
            raise ValueError(f"valid mask {self.valid.shape} does not match {self.data.shape[1:]}")
        if self.response is not None and self.response.shape != (self.bands, self.bands):
            raise ValueError(f"response {self.response.shape} is not ({self.bands}, {self.bands})")

    @property
    def bands(self) -> int:
        return int(self.data.shape[0])


@dataclass
class ResidueMap:
    """Crop-residue products of one frame.

    ``tillage``: (rows, cols) uint8, index into TILLAGE_CLASSES or INVALID_CLASS.
    ``fractions``: (3, rows, cols) float32 in ENDMEMBERS order, each pixel non-negative and
    summing to one; NaN where ``tillage`` is INVALID_CLASS. ``probabilities``: optional
    (3, rows, cols) class probabilities. ``confidence`` (rows, cols) float32 and
    ``uncertain`` (rows, cols) bool: optional, see onboard/stages/confidence.py.
    """

    tillage: NDArray[np.uint8]
    fractions: NDArray[np.float32]
    counter: int = 0
    timestamp: float = 0.0
    method: str = "fcls"
    probabilities: NDArray[np.float32] | None = None
    extra: dict = field(default_factory=dict)
    confidence: NDArray[np.float32] | None = None
    uncertain: NDArray[np.bool_] | None = None
