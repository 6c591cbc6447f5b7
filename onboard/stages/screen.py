"""Screening: which pixels of a frame are cloud, cloud shadow, haze or invalid, and whether the
frame is worth the downlink.

Phi-Sat-1 sends a frame only when less than 70 % of it is cloud (REFERENCES.md, "Onboard
triage"); this stage applies that rule (``ScreenRule.max_cloud_share``, ``[screen]`` in the
mission file) to a per-pixel mask computed from the spectra of the (denoised) cube, in
apparent reflectance, with a few band tests and no model: it costs well under a millisecond per
thousand pixels and needs no training data.

**The mask** (:data:`CLOUD`, :data:`SHADOW`, :data:`HAZE`, :data:`INVALID` bits of a uint8):

* ``INVALID``: the cube says the pixel is not valid (dead, hot, saturated or repaired detector
  pixels) or its spectrum is not finite (a failed stage, a corrupt frame). Every other test is
  off there.
* Visible-NIR cube (its bands reach below ``VNIR_BELOW_NM``; bands nearest 470, 560, 660 and
  860 nm: blue, green, red, NIR), the tests of Fmask (Zhu and Woodcock 2012, Remote Sens.
  Environ. 118, 83) with its published thresholds:
  ``HOT = blue - 0.5 red - 0.08 > 0`` (the haze-optimised transform, Zhang et al. 2002: clear land
  lies on a line where blue is about half the red, path radiance and clouds lift the blue above
  it), whiteness ``mean(|vis - mean|) / mean < 0.7`` over blue, green, red (clouds are white),
  ``NDVI < 0.8`` (no red edge of dense vegetation). A pixel that passes all three is ``CLOUD``
  when its mean visible reflectance is above ``VNIR_CLOUD_BRIGHT`` (0.2: a cloud of optical
  depth 2 reflects 0.13 on its own, 0.17 over the darkest land, dense vegetation; the
  two-stream values of ``onboard/scene/clouds.py``), else ``HAZE`` (the blue is lifted, but by
  a path radiance too faint to be a cloud).
* Short-wave cube (900-1700 nm, no blue: the bands nearest 1000, 1250 and 1650 nm): ``CLOUD``
  where ``R(1250) > SWIR_CLOUD_BRIGHT`` (0.45: a cloud of optical depth 10 reflects 0.43 on its
  own, above nearly all vegetation and soils at 1250 nm), ``R(1650) / R(1250)`` lies in
  ``SWIR_CLOUD_RATIO`` (0.8-1.0: droplets absorb a little more at 1650 nm, 0.87-0.97 for optical
  depths 10-60; dry soils rise towards 1650 nm, above 1, and leaf water pulls vegetation below
  0.8) and ``R(1000) / R(1250)`` in ``SWIR_CLOUD_FLAT`` (0.96-1.06: the droplets absorb less
  than 1e-3 of the light they scatter at both, so a cloud is flat there, 1.00-1.03 for optical
  depths 10-60, 0.98 for a cloud of depth 10 over soil; soils rise by 5-15 % from 1000 to
  1250 nm, the iron oxides' broad absorption near 900-1000 nm: the test that keeps bright moist
  soils, whose 1650/1250 ratio is cloud-like, from being called cloud). Thin clouds and haze are
  not separable from the ground in these bands: the push-broom flags thick clouds only, and
  ``HAZE`` never.
* ``SHADOW``: not cloud, and the NIR reflectance (860 nm, or 1250 nm for the push-broom) below
  ``SHADOW_RELATIVE`` (0.5) of the frame's bright ground (the 90th percentile of its valid
  pixels that are not cloud): under a cloud thick enough to block half the direct beam
  (optical depth 13 and more) a pixel keeps the skylight and the light the cloud transmits,
  ``f + (1 - f) T`` <= 0.53 of its irradiance in the NIR (``onboard/scene/clouds.py``), while the
  sunlit ground of one frame varies less than two-fold in the NIR (soils 0.2-0.4, vegetation
  0.3-0.5). Relative, not absolute: a shadow over bright vegetation stays above any fixed dark
  threshold that spares dark soils. Water and the darkest roofs are also below half the bright
  ground: they are flagged as shadow (a false-shadow rate the bench measures on real cubes).

**The frame**: ``saturated_share`` is the share of the detector's pixels read out at saturation
(given by the pipeline, which sees the raw frame; a cube pixel made from them is ``INVALID``);
``cloud_share`` is the share of valid pixels that are cloud (invalid pixels count
neither way: an unreadable pixel is not evidence of a cloud); ``worth_sending`` is
``cloud_share < max_cloud_share`` and at least ``min_valid_share`` of the pixels valid.
``haze`` is the share of valid clear pixels flagged haze.

**Motion blur** (drone): where the frame has a pose at its exposure (``onboard run --mavlink``,
or the flight computer's POSE), ``blur_px`` is the image motion during the exposure from that
pose's ground speed and roll and pitch rates (onboard/geo/blur.py, which states the formula);
over ``ScreenRule.max_blur_px`` (``[screen] max_blur_px``, 1 pixel: beyond it the blur smears
neighbouring ground into each spectrum) the frame is not worth sending either, with the same
consequences as a cloudy one and its event saying blur. Without a pose ``blur_px`` is None and
``blur_reason`` says why; the frame is judged on its spectra alone.

**What a frame not worth sending still sends** (``ScreenRule.cloudy_frames``, the first part of
the downlink's value rule): ``"residue"`` (default) its residue map, which carries the
screening mask, and its events, while the quick-look, the cube and the raw frame stay in the
on-board archive (a ground request fetches them while storage lasts); ``"events"`` its events only;
``"all"`` everything, as before screening. ``held_kinds`` names the kinds held back.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from onboard.formats.products import ProductKind
from onboard.formats.types import Cube

CLOUD, SHADOW, HAZE, INVALID = 1, 2, 4, 8
#: A cube with a band below this (nm) is a visible-NIR cube; else a short-wave one.
VNIR_BELOW_NM = 600.0
VNIR_BANDS_NM = {"blue": 470.0, "green": 560.0, "red": 660.0, "nir": 860.0}
SWIR_BANDS_NM = {"edge": 1000.0, "nir": 1250.0, "swir": 1650.0}
HOT_OFFSET = 0.08
WHITENESS_MAX = 0.7
NDVI_MAX = 0.8
VNIR_CLOUD_BRIGHT = 0.2
SWIR_CLOUD_BRIGHT = 0.45
SWIR_CLOUD_RATIO = (0.8, 1.0)
SWIR_CLOUD_FLAT = (0.96, 1.06)
SHADOW_RELATIVE = 0.5
#: Why a frame has no motion-blur estimate until a pose at its exposure gives one.
NO_POSE = "no pose at the exposure (run with --mavlink, or a flight computer's POSE)"
#: The frame's bright ground: this percentile of the NIR of its valid pixels that are not cloud.
BRIGHT_GROUND_PERCENTILE = 90.0


CloudyFrames = Literal["all", "residue", "events"]
#: Product kinds a frame not worth sending keeps on board, per ``cloudy_frames``.
HELD_KINDS: dict[str, frozenset[ProductKind]] = {
    "all": frozenset(),
    "residue": frozenset({ProductKind.QUICKLOOK, ProductKind.CUBE, ProductKind.RAW}),
    "events": frozenset({ProductKind.RESIDUE, ProductKind.QUICKLOOK, ProductKind.CUBE, ProductKind.RAW}),
}


@dataclass(frozen=True)
class ScreenRule:
    """The per-frame decision: worth sending when less than ``max_cloud_share`` of the valid
    pixels are cloud, at least ``min_valid_share`` of all pixels are valid and the motion blur,
    where there is a pose, is at most ``max_blur_px``; what a frame that is not still sends
    (module docstring)."""

    max_cloud_share: float = 0.7
    min_valid_share: float = 0.1
    cloudy_frames: CloudyFrames = "residue"
    max_blur_px: float = 1.0

    def __post_init__(self) -> None:
        if not self.max_blur_px > 0:
            raise ValueError(f"max_blur_px must be > 0, got {self.max_blur_px}")
        for name in ("max_cloud_share", "min_valid_share"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"{name} must be 0-1, got {v}")
        if self.cloudy_frames not in HELD_KINDS:
            raise ValueError(f"cloudy_frames must be one of {', '.join(HELD_KINDS)}, got {self.cloudy_frames!r}")

    @property
    def held_kinds(self) -> frozenset[ProductKind]:
        return HELD_KINDS[self.cloudy_frames]


@dataclass
class Screening:
    """One frame's screening: ``mask`` (rows, cols) uint8 of the bits above, and the shares."""

    mask: NDArray[np.uint8]
    cloud_share: float
    shadow_share: float
    haze_share: float
    invalid_share: float
    saturated_share: float
    worth_sending: bool
    sensor_range: str  # "vnir" or "swir": which tests ran
    blur_px: float | None = None
    blur_reason: str | None = NO_POSE

    def judge_blur(self, blur_px: float | None, reason: str | None, rule: ScreenRule) -> bool:
        """Record the frame's motion blur (or why there is none); True when it turns a frame
        worth sending into one that is not (over ``rule.max_blur_px``)."""
        self.blur_px, self.blur_reason = blur_px, None if blur_px is not None else reason
        blurred = self.worth_sending and blur_px is not None and blur_px > rule.max_blur_px
        self.worth_sending = self.worth_sending and not blurred
        return blurred

    def summary(self) -> dict:
        """What travels in every product's header (``meta["screen"]``)."""
        out = {"cloud_share": round(self.cloud_share, 4), "shadow_share": round(self.shadow_share, 4),
               "haze_share": round(self.haze_share, 4), "invalid_share": round(self.invalid_share, 4),
               "saturated_share": round(self.saturated_share, 4), "worth_sending": self.worth_sending,
               "tests": self.sensor_range, "blur_px": None if self.blur_px is None else round(self.blur_px, 3)}
        if self.blur_px is None:
            out["blur_reason"] = self.blur_reason
        return out


def _band(cube: Cube, nm: float) -> NDArray[np.float32]:
    return cube.data[int(np.argmin(np.abs(cube.wavelengths_nm - nm)))]


def _ratio(num: NDArray, den: NDArray) -> NDArray[np.float64]:
    out = np.zeros(num.shape, dtype=np.float64)
    np.divide(num, den, out=out, where=np.abs(den) > 1e-6)
    return out


def screen(cube: Cube, rule: ScreenRule | None = None, saturated_share: float = 0.0) -> Screening:
    """The mask and decision of one cube (module docstring); ``saturated_share`` of the raw
    frame it was made from, as the pipeline counted it."""
    rule = rule or ScreenRule()
    valid = cube.valid & np.isfinite(cube.data).all(axis=0)
    mask = np.where(valid, 0, INVALID).astype(np.uint8)
    vnir = bool(cube.wavelengths_nm[0] < VNIR_BELOW_NM)
    with np.errstate(invalid="ignore"):
        if vnir:
            blue, green, red, nir = (_band(cube, VNIR_BANDS_NM[k]) for k in ("blue", "green", "red", "nir"))
            vis = (blue + green + red) / 3.0
            white = _ratio((np.abs(blue - vis) + np.abs(green - vis) + np.abs(red - vis)) / 3.0, vis)
            lifted = (blue - 0.5 * red - HOT_OFFSET > 0) & (white < WHITENESS_MAX) \
                & (_ratio(nir - red, nir + red) < NDVI_MAX) & (vis > 0)
            cloud = lifted & (vis > VNIR_CLOUD_BRIGHT)
            haze = lifted & ~cloud
        else:
            edge, nir, swir = (_band(cube, SWIR_BANDS_NM[k]) for k in ("edge", "nir", "swir"))
            ratio, flat = _ratio(swir, nir), _ratio(edge, nir)
            cloud = (nir > SWIR_CLOUD_BRIGHT) & (ratio >= SWIR_CLOUD_RATIO[0]) & (ratio <= SWIR_CLOUD_RATIO[1]) \
                & (flat >= SWIR_CLOUD_FLAT[0]) & (flat <= SWIR_CLOUD_FLAT[1])
            haze = np.zeros(cloud.shape, dtype=bool)
        ground = valid & ~cloud
        bright = float(np.percentile(nir[ground], BRIGHT_GROUND_PERCENTILE)) if ground.any() else 0.0
        shadow = ~cloud & (nir < SHADOW_RELATIVE * bright)
    for bit, sel in ((CLOUD, cloud), (HAZE, haze), (SHADOW, shadow)):
        mask[sel & valid] |= bit
    n_valid = int(valid.sum())

    def share(bit: int) -> float:
        return float(((mask & bit) > 0).sum() / n_valid) if n_valid else 0.0

    cloud_share = share(CLOUD)
    valid_share = n_valid / valid.size
    return Screening(mask, cloud_share, share(SHADOW), share(HAZE), 1.0 - valid_share, saturated_share,
                     worth_sending=bool(n_valid and cloud_share < rule.max_cloud_share
                                        and valid_share >= rule.min_valid_share),
                     sensor_range="vnir" if vnir else "swir")
