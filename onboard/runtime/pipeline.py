"""The frame pipeline: stages wired in docs/design.md's order, timed, and never losing a frame.

    RawFrame -radiometric-> RawFrame -reconstruct-> Cube -reflectance-> Cube -denoise-> Cube -screen-> Screening
                                                                  \\-classify-> ResidueMap
                                                                  \\__________ package -> Products

The reflectance stage (onboard/stages/reflectance.py) turns the lab reflectance into the
mission's quantity (radiance, TOA or surface reflectance) and says which in every product's
``meta["radiometry"]``; a frame left in radiance is not classified.

Screening (clouds, shadows, haze, invalid pixels; onboard/stages/screen.py) runs on the
denoised cube; its per-frame summary travels in every product's header, its mask in the
residue product.

Denoising and classification are injected (classical stages, or a learned model through an
inference engine), so the wiring does not change with the engine. A frame that cannot be
processed still yields a result: its flags say why and an event product carries the reason
to the ground.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field, replace

import numpy as np

from onboard.compress.cube_coding import CubeCoding
from onboard.formats.calfile import Calibration
from onboard.formats.products import Product, ProductKind, event_product
from onboard.formats.types import INVALID_CLASS, Cube, RawFrame, ResidueMap
from onboard.stages import radiometric
from onboard.stages.package import frame_products, raw_product
from onboard.stages.radiometric import UnusableFrameError
from onboard.stages.reconstruct import Reconstructor
from onboard.stages.reflectance import ReflectanceSettings, ReflectanceStage
from onboard.stages.screen import Screening, ScreenRule, screen
from onboard.stages.value import ValueRule, summary_product

DenoiseFn = Callable[[Cube], Cube]
ClassifyFn = Callable[[Cube], ResidueMap]


@dataclass
class FrameResult:
    """Everything one frame produced. ``seconds``: wall time per stage. ``flags``: what was
    wrong with the frame, in words; empty for a clean frame."""

    counter: int
    cube: Cube | None = None
    denoised: Cube | None = None
    residue: ResidueMap | None = None
    screening: Screening | None = None
    products: list[Product] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    #: CPU time per stage of the thread that ran it (a shared machine's wall time is mostly
    #: other processes' turns; this is what the stage itself cost)
    cpu_seconds: dict[str, float] = field(default_factory=dict)
    regularisation: float | None = None
    saturated_share: float = 0.0  # of the detector pixels read out (raw DN at saturation)
    #: names of products kept in the on-board archive but not sent (a frame not worth sending)
    held: list[str] = field(default_factory=list)
    flags: list[str] = field(default_factory=list)
    #: which quantity the cube holds and how it was obtained (onboard/stages/reflectance.py)
    radiometry: dict = field(default_factory=dict)
    exposure_s: float | None = None  # the (first line's) exposure time: the motion blur's
    pose: tuple[float, ...] | None = None  # the frame's own pose, if its source gives one (the summary's)


@dataclass
class StageOptions:
    """Which optional work a frame does; the deadline logic may turn these off."""

    quicklook: bool = True
    cube: bool = True
    cube_float16: bool = True
    denoise: bool = True
    cube_coding: CubeCoding = field(default_factory=CubeCoding)
    residue_coding: str = "npz"
    raw: bool = False


class Pipeline:
    """Processes frames of one instrument with one calibration."""

    def __init__(
        self,
        calibration: Calibration,
        denoise: DenoiseFn,
        classify: ClassifyFn,
        saturation_dn: int,
        options: StageOptions | None = None,
        model_versions: dict | None = None,
        screen_rule: ScreenRule | None = None,
        reflectance: ReflectanceStage | None = None,
        value_rule: ValueRule | None = None,
    ) -> None:
        self.calibration = calibration
        self.denoise = denoise
        self.classify = classify
        self.saturation_dn = saturation_dn
        self.options = options or StageOptions()
        self.model_versions = model_versions or {}
        self.screen_rule = screen_rule or ScreenRule()
        self.value_rule = value_rule or ValueRule()
        self.reconstructor = Reconstructor(calibration) if calibration.kind == "imspoc" else None
        self.reflectance = reflectance or ReflectanceStage(calibration, ReflectanceSettings())

    @contextmanager
    def _timed(self, result: FrameResult, stage: str):
        t0, c0 = time.perf_counter(), time.thread_time()
        try:
            yield
        finally:
            result.seconds[stage] = result.seconds.get(stage, 0.0) + time.perf_counter() - t0
            result.cpu_seconds[stage] = result.cpu_seconds.get(stage, 0.0) + time.thread_time() - c0

    def process(self, frame: RawFrame | list[RawFrame]) -> FrameResult:
        """One ImSPOC frame, or one block of push-broom lines, through every stage."""
        result, cube = self.start(frame)
        return self.finish(frame, result, cube, self.options)

    def start(self, frame: RawFrame | list[RawFrame]) -> tuple[FrameResult, Cube | None]:
        """The stages that carry state from frame to frame (radiometric correction,
        reconstruction, whose regularisation follows the scene, and the reflectance stage, which
        follows the light): call in frame order. The
        cube is None for a frame refused (the result says why)."""
        first = frame[0] if isinstance(frame, list) else frame
        result = FrameResult(counter=first.counter, exposure_s=first.exposure_s, pose=first.pose)
        try:
            cube = self._to_cube(frame, result)
        except UnusableFrameError as exc:
            result.flags.append(str(exc))
            result.products.append(self._event(first, "frame refused", str(exc)))
            return result, None
        with self._timed(result, "reflectance"):  # in frame order: it follows the light and the dark objects seen
            result.cube, result.radiometry, radiometry_flags = self.reflectance.apply(cube, first)
        result.flags.extend(radiometry_flags)
        return result, result.cube

    def finish(self, frame: RawFrame | list[RawFrame], result: FrameResult, cube: Cube | None,
               options: StageOptions) -> FrameResult:
        """The stages that depend on this frame alone (denoise, screen, classify, package),
        with ``options``: frames may finish on several threads at once."""
        if cube is None:
            return result
        first = frame[0] if isinstance(frame, list) else frame
        if not cube.valid.any():
            result.flags.append(f"frame {cube.counter}: no valid pixel (saturated or bad everywhere)")
        elif cube.valid.mean() < 0.9:
            result.flags.append(f"frame {cube.counter}: {100 * (1 - cube.valid.mean()):.0f} % of pixels invalid")
        result.denoised = cube
        if options.denoise and cube.valid.any():
            with self._timed(result, "denoise"):
                try:
                    # denoising removes noise, not the reconstruction's spectral response
                    result.denoised = replace(self.denoise(cube), response=cube.response)
                except ValueError as exc:  # e.g. too few valid pixels to estimate the noise
                    result.flags.append(f"frame {cube.counter}: not denoised ({exc})")
        with self._timed(result, "screen"):
            result.screening = screen(result.denoised, self.screen_rule, result.saturated_share)
        finite = np.isfinite(result.denoised.data).all(axis=0)
        not_finite = int((result.denoised.valid & ~finite).sum())
        if not_finite:  # a corrupt frame or a failed stage: those pixels are invalid from here on
            result.flags.append(f"frame {cube.counter}: {not_finite} valid pixels hold NaN or inf after "
                                "denoising: marked invalid")
            result.denoised = replace(result.denoised, valid=result.denoised.valid & finite)
        worth = result.screening.worth_sending
        held, screened = self._held(worth)
        if screened:
            s = result.screening
            result.flags.append(
                f"frame {cube.counter}: not worth sending ({100 * s.cloud_share:.0f} % cloud, "
                f"{100 * (1 - s.invalid_share):.0f} % valid; rule: under "
                f"{100 * self.screen_rule.max_cloud_share:.0f} % cloud): its "
                f"{', '.join(sorted(k.value for k in screened))} stay on board, not sent")
        made = {ProductKind.RESIDUE: True, ProductKind.QUICKLOOK: self.options.quicklook,
                ProductKind.CUBE: self.options.cube, ProductKind.RAW: self.options.raw}
        by_value = {k for k in held - screened if made[k]}
        if by_value:
            result.flags.append(f"frame {cube.counter}: its {', '.join(sorted(k.value for k in by_value))} "
                                "stay on board, not sent ([value] rule)")
        with self._timed(result, "classify"):
            result.residue = self._classify(result.denoised)
        with self._timed(result, "package"):
            meta = {"flags": list(result.flags), "regularisation": result.regularisation,
                    "valid_fraction": float(cube.valid.mean()), "screen": result.screening.summary(),
                    "radiometry": result.radiometry}
            result.products = frame_products(
                result.denoised, result.residue, self.calibration.instrument, meta,
                quicklook=options.quicklook, with_cube=options.cube,
                cube_float16=options.cube_float16, model_versions=self.model_versions,
                cube_coding=options.cube_coding, residue_coding=options.residue_coding,
                screen_mask=result.screening.mask,
            )
            layout = self.calibration.layout
            if options.raw and layout is not None and isinstance(frame, RawFrame):
                result.products.append(raw_product(frame, layout.extract(frame.pixels), layout.corners,
                                                   self.calibration.instrument, self.model_versions))
            if self.value_rule.summary_grid:
                result.products.append(self._summary(result))
            self._rank(result, worth, held)
            if result.flags:
                result.products.append(self._event(first, "frame flagged", "; ".join(result.flags)))
        return result

    def _held(self, worth: bool) -> tuple[set[ProductKind], set[ProductKind]]:
        """The kinds a frame keeps on board, and those of them held by the screening."""
        held = self.value_rule.held(worth, self.screen_rule.held_kinds)
        return held, held & (set() if worth else self.screen_rule.held_kinds)

    def _summary(self, result: FrameResult) -> Product:
        assert result.residue is not None and result.screening is not None
        return summary_product(result.residue, result.screening, self.calibration.instrument,
                               self.value_rule.summary_grid, result.pose)

    def _rank(self, result: FrameResult, worth: bool, held: set[ProductKind]) -> None:
        for p in result.products:  # the value rule's rank is the spool's priority (events keep theirs)
            if p.kind not in (ProductKind.EVENT, ProductKind.HEALTH):
                p.priority = self.value_rule.priority(p.kind, worth)
        result.held = [p.name for p in result.products if p.kind in held]

    def judge_motion(self, result: FrameResult, blur_px: float | None, reason: str | None) -> None:
        """After the pose at the exposure is known (the MAVLink camera, the payload service):
        put the frame's motion blur (onboard/geo/blur.py), or why there is none, in its
        ``meta["screen"]``; over ``[screen] max_blur_px`` the frame is not worth sending, held
        as a cloudy one is (its summary product remade), with an event
        saying blur."""
        s = result.screening
        if s is None:  # a refused frame: no products to judge
            return
        blurred = s.judge_blur(blur_px, reason, self.screen_rule)
        for p in result.products:
            if "screen" in p.meta:
                p.meta["screen"] = s.summary()
        if not blurred:
            return
        held, screened = self._held(False)
        flag = (f"frame {result.counter}: not worth sending (motion blur {blur_px:.2f} px over "
                f"{self.screen_rule.max_blur_px:g} px): its {', '.join(sorted(k.value for k in screened))} "
                "stay on board, not sent")
        result.flags.append(flag)
        created = result.products[0].created_utc
        # one "frame flagged" event per frame (products are named by kind and frame): remade with this flag
        result.products = [self._summary(result) if p.kind == ProductKind.SUMMARY else p
                           for p in result.products if p.meta.get("event") != "frame flagged"]
        self._rank(result, False, held)
        result.products.append(event_product(result.counter, created, self.calibration.instrument,
                                             "frame flagged", "; ".join(result.flags)))

    def _classify(self, cube: Cube) -> ResidueMap:
        if cube.valid.any() and cube.units == "reflectance":
            return self.classify(cube)
        shape = cube.valid.shape
        why = "no valid pixel" if cube.units == "reflectance" else f"{cube.units}, not reflectance"
        return ResidueMap(np.full(shape, INVALID_CLASS, np.uint8), np.full((3, *shape), np.nan, np.float32),
                          counter=cube.counter, timestamp=cube.timestamp, method=f"none: {why}")

    def _to_cube(self, frame: RawFrame | list[RawFrame], result: FrameResult) -> Cube:
        cal = self.calibration
        if isinstance(frame, list):
            if cal.kind != "pushbroom":
                raise UnusableFrameError(f"got push-broom lines but the calibration is for {cal.kind}")
            with self._timed(result, "radiometric"):
                signal, pixel_valid = radiometric.correct_lines(frame, cal.radiometric, self.saturation_dn)
                result.saturated_share = float(np.mean([f.pixels >= self.saturation_dn for f in frame]))
                # (lines, cross, bands) -> (bands, lines, cross): along-track rows, channels first
                data = signal.transpose(2, 0, 1)
                exposure = np.array([ln.exposure_s for ln in frame])[None, :, None]
                data = data / (cal.white_reference[:, None, None] * exposure)
                valid = np.asarray(pixel_valid.all(axis=2))  # (lines, cross)
            return Cube(data.astype(np.float32), cal.wavelengths_nm, valid,
                        counter=frame[0].counter, timestamp=frame[0].timestamp)
        if self.reconstructor is None:
            raise UnusableFrameError(f"got an ImSPOC frame but the calibration is for {cal.kind}")
        with self._timed(result, "radiometric"):
            corrected = radiometric.correct(frame, cal.radiometric, self.saturation_dn)
            result.saturated_share = float((frame.pixels >= self.saturation_dn).mean())
        with self._timed(result, "reconstruct"):
            cube, lam = self.reconstructor.reconstruct(corrected)
        result.regularisation = lam
        return cube

    def _event(self, frame: RawFrame, what: str, detail: str) -> Product:
        return event_product(frame.counter, frame.timestamp, self.calibration.instrument, what, detail)
