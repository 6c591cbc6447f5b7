"""The simulated instrument's ground calibration, made the way a real one is.

With no camera and no calibration file configured, the runtime flies a simulated
instrument; its calibration file is produced here by simulating the ground acquisitions
(darks at two exposures, a flat field, a white panel) and running the same estimators a
real instrument's acquisitions go through. The interferometer bank is the simulator's truth
("oracle" characterisation); ``onboard calibrate characterize`` replaces it with a fitted one.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from onboard.formats.calfile import Calibration
from onboard.physics.illumination import lab_panel_radiance
from onboard.physics.imspoc import ImspocInstrument, transfer_matrix
from onboard.physics.pushbroom import PushbroomInstrument
from onboard.sources.base import band_average
from onboard.stages import radiometric
from onboard.stages.reconstruct import output_grid, white_reference

#: What the absolute radiometric gain is measured against (a real calibration names its
#: integrating sphere or panel and adds that standard's uncertainty to the statistical one).
RADIANCE_SOURCE = ("the white panel of known radiance under the simulated lab lamp "
                   "(onboard/physics/illumination.py), exact: the uncertainty is the stack's own")
#: Dark exposures (s) and frames per stack used for the radiometric maps.
DARK_EXPOSURES_S = (0.005, 0.05)
STACK = 8


def radiance_gain(white: NDArray, per_frame: NDArray, panel_radiance: NDArray,
                  source_uncertainty: float | NDArray = 0.0) -> tuple[NDArray, NDArray]:
    """Absolute gain (DN/s per unit radiance, per band) of a white reference measured on a
    panel of known radiance ``panel_radiance``, and its relative standard uncertainty: the
    standard error of the per-frame white references (``per_frame``, (frames, B)) and the
    radiance standard's own ``source_uncertainty`` (relative; one value or one per band), in quadrature."""
    stat = per_frame.std(0, ddof=1) / np.sqrt(len(per_frame)) / np.abs(white)
    return white / panel_radiance, np.hypot(stat, source_uncertainty)


def calibrate_imspoc(instrument: ImspocInstrument, n_bands: int = 24, seed: int = 1000) -> Calibration:
    """Calibration of a simulated ImSPOC from simulated ground acquisitions."""
    rng = np.random.default_rng(seed)
    det = instrument.detector
    zero = np.zeros(instrument.layout.detector_shape)
    darks = [np.stack([det.expose(zero, t, rng) for _ in range(STACK)]) for t in DARK_EXPOSURES_S]
    grid = instrument.scene_grid()
    h, w = instrument.thumb_shape
    panel = np.ones((len(grid), h, w))
    flats = np.stack([instrument.frame(panel, grid, rng).pixels for _ in range(STACK)])
    maps = radiometric.estimate(darks[0], darks[1], DARK_EXPOSURES_S, flats, instrument.exposure_s)
    # white panel: the flat acquisitions are of a unit-reflectance panel under the sun model
    saturation = instrument.detector_spec.max_dn - 1
    corrected = [
        radiometric.correct(instrument.frame(panel, grid, rng), maps, saturation) for _ in range(STACK)
    ]
    thumbs = np.stack([instrument.layout.extract(c.pixels) for c in corrected])
    core = thumbs[:, :, h // 2 - 4 : h // 2 + 4, w // 2 - 4 : w // 2 + 4].mean((2, 3))  # (frames, N)
    wavelengths = output_grid(instrument.band_nm, n_bands)
    a = transfer_matrix(instrument.bank, wavelengths, instrument.band_nm)
    white = white_reference(a, core.mean(0), instrument.exposure_s)
    per_frame = np.stack([white_reference(a, c, instrument.exposure_s) for c in core])
    gain, gain_u = radiance_gain(white, per_frame, band_average(lab_panel_radiance(grid), grid, wavelengths))
    return Calibration(
        kind="imspoc",
        instrument=instrument.name,
        wavelengths_nm=wavelengths,
        white_reference=white,
        radiometric=maps,
        layout=instrument.layout,
        bank=instrument.bank,
        provenance={
            "source": "simulated ground acquisitions",
            "bank": "simulator truth (oracle)",
            "dark_exposures_s": list(DARK_EXPOSURES_S),
            "stack": STACK,
            "seed": seed,
            "radiance_source": RADIANCE_SOURCE,
        },
        radiance_gain=gain,
        radiance_gain_uncertainty=gain_u,
    )


def calibrate_pushbroom(instrument: PushbroomInstrument, seed: int = 1000) -> Calibration:
    """Calibration of a simulated push-broom: darks at two exposures and a unit-reflectance
    panel, read out before the detector's response drifted (the stripes the denoiser sees)."""
    rng = np.random.default_rng(seed)
    det = instrument.detector
    zero = np.zeros(instrument.detector_spec.shape)
    darks = [np.stack([det.expose(zero, t, rng) for _ in range(STACK * 4)]) for t in DARK_EXPOSURES_S]
    panel = np.ones((len(instrument.wavelengths_nm), instrument.cross_track))
    flats = np.stack([instrument.line(panel, rng, drift=False).pixels for _ in range(STACK * 4)])
    maps = radiometric.estimate(darks[0], darks[1], DARK_EXPOSURES_S, flats, instrument.exposure_s,
                                along_axis=0)
    saturation = instrument.detector_spec.max_dn - 1
    corrected = np.stack([
        radiometric.correct(instrument.line(panel, rng, drift=False), maps, saturation).pixels
        for _ in range(STACK * 4)
    ])
    white = np.median(corrected.mean(0), axis=0) / instrument.exposure_s
    per_frame = np.median(corrected, axis=1) / instrument.exposure_s
    gain, gain_u = radiance_gain(white, per_frame, lab_panel_radiance(instrument.wavelengths_nm))
    return Calibration(
        kind="pushbroom",
        instrument=instrument.name,
        wavelengths_nm=np.asarray(instrument.wavelengths_nm, dtype=float),
        white_reference=white.astype(np.float64),
        radiometric=maps,
        provenance={"source": "simulated ground acquisitions", "seed": seed,
                    "dark_exposures_s": list(DARK_EXPOSURES_S), "stack": STACK * 4,
                    "radiance_source": RADIANCE_SOURCE},
        radiance_gain=gain,
        radiance_gain_uncertainty=gain_u,
    )
