"""The camera seam: what a real camera driver implements to feed the runtime.

A driver is a context manager that yields ``RawFrame`` objects (uint16 detector images with
their exposure and time). ``OpenCVCamera`` reads a V4L2/UVC device through OpenCV; where
OpenCV is not installed it refuses at construction, naming the package to install.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Protocol

import numpy as np

from onboard.errors import OnboardError
from onboard.formats.types import RawFrame

if TYPE_CHECKING:  # OpenCV is optional: imported where a camera is opened
    import cv2


class Camera(Protocol):
    """A frame source backed by hardware."""

    def __enter__(self) -> Camera: ...

    def __exit__(self, *exc: object) -> None: ...

    def frames(self) -> Iterator[RawFrame]:
        """Frames as they are read out; ends when the device stops."""
        ...


class CameraUnavailable(OnboardError, RuntimeError):
    """The camera cannot be used here; the message says why and what to do."""


class OpenCVCamera:
    """A V4L2/UVC camera through OpenCV (``pip install opencv-python-headless``).

    ``device``: index or path (``/dev/video0``). Frames are converted to single-channel
    uint16 (8-bit sensors are scaled by 257 so full scale stays full scale).
    """

    def __init__(self, device: int | str = 0, exposure_s: float = 0.01) -> None:
        try:
            import cv2  # noqa: F401
        except ImportError as exc:
            raise CameraUnavailable(
                "OpenCV is not installed: pip install opencv-python-headless to use a V4L2/UVC camera"
            ) from exc
        self.device = device
        self.exposure_s = exposure_s
        self._cap: cv2.VideoCapture | None = None

    def __enter__(self) -> OpenCVCamera:
        import cv2

        self._cap = cv2.VideoCapture(self.device)
        if not self._cap.isOpened():
            raise CameraUnavailable(f"camera {self.device!r} could not be opened (is it connected?)")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None

    def frames(self) -> Iterator[RawFrame]:
        counter = 0
        while self._cap is not None:
            ok, image = self._cap.read()
            if not ok:
                return
            scale = 257 if image.dtype == np.uint8 else 1
            if image.ndim == 3:
                image = image.mean(axis=2)
            pixels = (np.rint(image) * scale).astype(np.uint16)
            yield RawFrame(pixels=pixels, counter=counter, timestamp=time.time(),
                           exposure_s=self.exposure_s, sensor="camera")
            counter += 1
