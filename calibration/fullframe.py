"""Full-frame monochromatic sweeps: detector images of an ImSPOC, simulated and characterised.

A real bench records, for each monochromatic line, a whole detector frame of a uniformly lit
scene; the per-interferometer responses of :mod:`calibration.acquisitions` are what remains
after the detector's own effects are removed and the thumbnails found. This module does those
steps from the frames, so the calibration file gets real radiometric maps, the layout as
found, and each interferometer's OPD wedge.

On-disk layout (one folder; the loader checks every item and raises one
:class:`~calibration.acquisitions.AcquisitionError` naming the problem):

* ``central_wavenumbers.npy`` (S,) float64, 1/µm, ascending: the line of each frame.
* ``frames.npy`` (S, H, W) uint16: one raw detector frame per line, at ``exposure_s``.
* ``norm.npy`` (S,) float64: the source's power per line, in DN of photo-signal that a unit
  response would give (the bench's reference detector); ``signal / norm`` is the response.
* ``dark.npy`` (2, n, H, W) uint16: n dark frames at each of the two ``dark_exposures_s``
  (two exposures separate the bias from the dark current).
* ``flat.npy`` (m, H, W) uint16: m frames of a uniformly lit unit-reflectance (white) panel
  at ``exposure_s``: it gives the thumbnail layout, the pixel response and the white
  reference.
* ``options.json``: ``full_frame`` (true), ``opd_step`` (µm), ``exposure_s``,
  ``dark_exposures_s`` [t1, t2], ``bit_depth``; optional ``first_index`` (design index of the
  first interferometer), ``order`` ("row" or "column" numbering of the thumbnails),
  ``interferometers`` (count expected on the flat), ``device_id``.
* ``truth.npz``: written by the simulator only, ignored by the loader.

Characterisation (:func:`characterise_full_frame`):

1. radiometric maps from the darks and the flat (:func:`onboard.stages.radiometric.estimate`,
   the runtime's own estimator), plus dead pixels inside the thumbnails that its local rule
   cannot judge (it leaves the outer two pixels of each thumbnail alone);
2. the layout from the dark-corrected flat (:func:`calibration.geometry.find_thumbnails`);
3. every sweep frame corrected as the runtime corrects frames, each thumbnail split into a
   grid of regions, and the mean of each region's good pixels taken;
4. :func:`calibration.characterise.characterise` on whole-thumbnail means (which chooses the
   model and degree), then on each region with that model;
5. per interferometer, a least-squares plane through the region OPDs: the OPD at the
   thumbnail's centre and the wedge (µm per pixel along rows and columns); the other
   parameters are the mean of the regions' (the wedge moves only the OPD). Failed region
   fits and regions off the plane are set aside first (:func:`trusted_regions`); an
   interferometer whose regions do not lie on a plane (too few fringes for a region's OPD
   to be identifiable) keeps its whole-thumbnail fit and no wedge (:func:`combine_regions`).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from calibration.acquisitions import Acquisition, AcquisitionError, read_options
from calibration.calfile_writer import build_calibration, default_bands
from calibration.characterise import Characterisation, characterise
from calibration.geometry import GeometryError, find_thumbnails
from calibration.model_selection import DEFAULT_MODELS
from calibration.simulate import source_spectrum
from onboard.formats.calfile import Calibration, Radiometric
from onboard.formats.types import RawFrame
from onboard.physics.detector import DetectorSpec
from onboard.physics.imspoc import (
    ImspocInstrument,
    ThumbnailLayout,
    default_instrument,
    simulated_bank,
    transfer_matrix,
)
from onboard.physics.interferometers import InterferometerBank
from onboard.sources.simulated import DARK_EXPOSURES_S, STACK
from onboard.stages import radiometric
from onboard.stages.reconstruct import output_grid, white_reference

FILES = ("central_wavenumbers.npy", "frames.npy", "norm.npy", "dark.npy", "flat.npy", "options.json")
#: Half side (pixels) of the central core whose white-panel signal gives the white reference
#: (the reconstruction's operator for that block is the bank's at the thumbnail centre).
WHITE_CORE = 4
#: Region fits set aside (see :func:`trusted_regions`).
RMS_REJECT = 5.0
PLANE_REJECT = 5.0
OPD_TOLERANCE_UM = 0.005
MIN_REGIONS = 4
#: Region OPDs scattering about their plane by more than this RMS (µm) measure no wedge
#: (measured wedges leave 0.1-0.3 nm; wedges are 10-20 nm across a thumbnail).
WEDGE_NOISE_UM = 0.002
Progress = Callable[[str], None]


def is_full_frame(folder: str | Path) -> bool:
    """True when ``folder`` holds a full-frame sweep (``frames.npy``) rather than responses."""
    return (Path(folder) / "frames.npy").is_file()


@dataclass
class FullFrameAcquisition:
    """A full-frame sweep as read from disk (see the module docstring for each array)."""

    name: str
    sigma: NDArray[np.float64]
    frames: NDArray[np.uint16]
    norm: NDArray[np.float64]
    dark: NDArray[np.uint16]
    flat: NDArray[np.uint16]
    exposure_s: float
    dark_exposures_s: tuple[float, float]
    opd_step_um: float
    bit_depth: int
    first_index: int = 0
    order: str = "row"
    options: dict = field(default_factory=dict)
    path: str = ""

    @property
    def detector_shape(self) -> tuple[int, int]:
        return tuple(self.frames.shape[1:])  # type: ignore[return-value]

    @property
    def saturation_dn(self) -> int:
        """Raw level at and above which a pixel counts as saturated (as the runtime flags it)."""
        return (1 << self.bit_depth) - 2


def _frames(path: Path, ndim: int, what: str) -> NDArray[np.uint16]:
    """A stack of raw frames: integer DN in uint16 range, or floats that are whole and finite."""
    if not path.is_file():
        raise AcquisitionError(f"{path} is missing: a full-frame acquisition needs {', '.join(FILES)}")
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise AcquisitionError(f"{path} is not a readable .npy array ({exc}); copy it again") from exc
    if arr.ndim != ndim:
        raise AcquisitionError(f"{path} is {arr.shape}; expected {what}")
    if arr.dtype.kind == "f":
        bad = ~np.isfinite(arr)
        if bad.any():
            first = np.argwhere(bad)[0].tolist()
            raise AcquisitionError(f"{path} holds {int(bad.sum())} NaN or infinite pixels (first at "
                                   f"{first}); re-record those frames before characterising")
        if np.any(arr != np.rint(arr)):
            raise AcquisitionError(f"{path} holds fractional values: raw frames are whole DN")
    elif arr.dtype.kind not in "iu":
        raise AcquisitionError(f"{path} holds {arr.dtype}, not detector numbers")
    if arr.size and (arr.min() < 0 or arr.max() > np.iinfo(np.uint16).max):
        raise AcquisitionError(f"{path} has values outside 0-65535: not raw detector DN")
    return np.asarray(arr, dtype=np.uint16)


def _vector(path: Path) -> NDArray[np.float64]:
    if not path.is_file():
        raise AcquisitionError(f"{path} is missing: a full-frame acquisition needs {', '.join(FILES)}")
    try:
        arr = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise AcquisitionError(f"{path} is not a readable .npy array ({exc}); copy it again") from exc
    if arr.ndim != 1 or arr.dtype.kind not in "fiu":
        raise AcquisitionError(f"{path} must be a 1-D array of numbers, got {arr.dtype} {arr.shape}")
    arr = arr.astype(np.float64)
    if not np.all(np.isfinite(arr)) or np.any(arr <= 0):
        raise AcquisitionError(f"{path} must hold positive finite numbers")
    return arr


def load_full_frame(folder: str | Path) -> FullFrameAcquisition:
    """Read and validate a full-frame acquisition folder (layout in the module docstring)."""
    folder = Path(folder)
    opt_path, options = read_options(folder, f"a full-frame acquisition needs {', '.join(FILES)}")

    def positive(key: str) -> float:
        v = options.get(key)
        if not isinstance(v, (int, float)) or not v > 0:
            raise AcquisitionError(f"{opt_path}: {key} must be a positive number, got {v!r}")
        return float(v)

    step, exposure = positive("opd_step"), positive("exposure_s")
    bits = options.get("bit_depth")
    if not isinstance(bits, int) or not 8 <= bits <= 16:
        raise AcquisitionError(f"{opt_path}: bit_depth must be an integer 8-16, got {bits!r}")
    t = options.get("dark_exposures_s")
    if not (isinstance(t, list) and len(t) == 2 and all(isinstance(v, (int, float)) for v in t)
            and t[1] > t[0] >= 0):
        raise AcquisitionError(f"{opt_path}: dark_exposures_s must be two increasing exposures [t1, t2] "
                               f"(s), got {t!r}")
    first = options.get("first_index", 0)
    if not isinstance(first, int) or first < 0:
        raise AcquisitionError(f"{opt_path}: first_index must be a non-negative integer, got {first!r}")
    order = options.get("order", "row")
    if order not in ("row", "column"):
        raise AcquisitionError(f"{opt_path}: order must be 'row' or 'column', got {order!r}")
    sigma = _vector(folder / "central_wavenumbers.npy")
    norm = _vector(folder / "norm.npy")
    frames = _frames(folder / "frames.npy", 3, "(lines, rows, cols)")
    dark = _frames(folder / "dark.npy", 4, "(2 exposures, frames, rows, cols)")
    flat = _frames(folder / "flat.npy", 3, "(frames, rows, cols)")
    s = sigma.size
    if frames.shape[0] != s or norm.size != s:
        raise AcquisitionError(f"{folder}: {s} wavenumbers, {frames.shape[0]} frames and {norm.size} "
                               "norm values: one of each per line")
    shape = frames.shape[1:]
    if dark.shape[0] != 2 or dark.shape[2:] != shape or dark.shape[1] < 2:
        raise AcquisitionError(f"{folder}/dark.npy is {dark.shape}; expected (2, n >= 2, *{shape})")
    if flat.shape[1:] != shape or flat.shape[0] < 1:
        raise AcquisitionError(f"{folder}/flat.npy is {flat.shape}; expected (m, *{shape})")
    if np.any(np.diff(sigma) <= 0):
        raise AcquisitionError(f"{folder}/central_wavenumbers.npy must be strictly ascending")
    return FullFrameAcquisition(
        name=str(options.get("device_id", folder.name)), sigma=sigma, frames=frames, norm=norm,
        dark=dark, flat=flat, exposure_s=exposure, dark_exposures_s=(float(t[0]), float(t[1])),
        opd_step_um=step, bit_depth=bits, first_index=first, order=order, options=options,
        path=str(folder),
    )


def write_full_frame(folder: str | Path, acq: FullFrameAcquisition) -> None:
    """Write ``acq`` in the layout :func:`load_full_frame` reads."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / "central_wavenumbers.npy", acq.sigma.astype(np.float64))
    np.save(folder / "frames.npy", acq.frames)
    np.save(folder / "norm.npy", acq.norm.astype(np.float64))
    np.save(folder / "dark.npy", acq.dark)
    np.save(folder / "flat.npy", acq.flat)
    options = {**acq.options, "full_frame": True, "device_id": acq.name, "opd_step": acq.opd_step_um,
               "exposure_s": acq.exposure_s, "dark_exposures_s": list(acq.dark_exposures_s),
               "bit_depth": acq.bit_depth, "first_index": acq.first_index, "order": acq.order}
    (folder / "options.json").write_text(json.dumps(options, indent=2, sort_keys=True))


# --------------------------------------------------------------------------- simulation


@dataclass(frozen=True)
class FullFrameSpec:
    """What to simulate.

    ``preset``: "small" (a ``grid`` of ``thumb``-pixel thumbnails from design index
    ``first_index``, a wedge of up to ``wedge_um`` across a thumbnail along both axes) or
    "default" (:func:`onboard.physics.imspoc.default_instrument` of ``seed``, the instrument
    ``onboard run --sensor imspoc`` flies, so its calibration file can be flown).
    ``signal_e``: mean photo-electrons of a unit response at the source's peak.
    ``dead_fraction``: the detector's dead pixels (None: the preset's). ``saturated_line``:
    the brightest line recorded at 3 x the power, so the fringe peaks clip.
    """

    preset: str = "small"
    grid: tuple[int, int] = (4, 6)
    thumb: int = 32
    n_lines: int = 150
    band_nm: tuple[float, float] = (400.0, 1000.0)
    first_index: int = 14
    opd_step_um: float = 0.175
    reflectivity: tuple[float, float] = (0.15, 0.35)
    wedge_um: float = 0.02
    line_width: float = 0.0005
    signal_e: float = 6000.0
    dead_fraction: float | None = None
    saturated_line: bool = False
    seed: int = 0


def instrument_for(spec: FullFrameSpec) -> ImspocInstrument:
    """The simulated instrument a spec describes (the truth of its sweep)."""
    if spec.preset == "default":
        inst = default_instrument(seed=spec.seed)
        det = inst.detector_spec
    elif spec.preset == "small":
        rows, cols = spec.grid
        layout = ThumbnailLayout.grid(rows, cols, (spec.thumb, spec.thumb), gap=2, margin=4)
        lo, hi = spec.band_nm
        bank = simulated_bank(len(layout), spec.opd_step_um, (1000.0 / hi, 1000.0 / lo),
                              reflectivity=spec.reflectivity, wedge_um=spec.wedge_um,
                              thumb_width=spec.thumb, seed=spec.seed)
        bank.opd_um = bank.opd_um + spec.first_index * spec.opd_step_um
        rng = np.random.default_rng(spec.seed + 17)
        bank.opd_gradient_um_per_px[:, 0] = spec.wedge_um / (spec.thumb - 1) * rng.uniform(-0.5, 0.5, len(bank))
        det = DetectorSpec(shape=layout.detector_shape, seed=spec.seed + 1)
        inst = ImspocInstrument("imspoc-small", layout, bank, det, spec.band_nm,
                                photo_rate_e_s=2.0e3, exposure_s=0.01)
    else:
        raise ValueError(f"preset must be 'small' or 'default', got {spec.preset!r}")
    if spec.dead_fraction is not None:
        inst = ImspocInstrument(inst.name, inst.layout, inst.bank,
                                replace(det, dead_fraction=spec.dead_fraction), inst.band_nm,
                                inst.photo_rate_e_s, inst.exposure_s)
    return inst


def sweep_wavenumbers(band_nm: tuple[float, float], n_lines: int) -> NDArray[np.float64]:
    """Lines uniform in wavenumber, half a step inside the optical band at both ends."""
    lo, hi = 1000.0 / band_nm[1], 1000.0 / band_nm[0]
    step = (hi - lo) / n_lines
    return lo + step * (np.arange(n_lines) + 0.5)


def monochromatic_frame(inst: ImspocInstrument, sigma: float, width: float, electrons: float,
                        rng: np.random.Generator) -> tuple[NDArray[np.uint16], float]:
    """One raw frame of a uniform scene lit by a line at ``sigma`` (1/µm) of box width
    ``width`` (1/µm), bright enough that a unit response collects ``electrons``.

    The line is the middle band of a three-band scene given to the instrument's own forward
    model (:meth:`ImspocInstrument.signal_e_s`, band-averaged response, wedge), the outer bands
    dark. Returns the frame and the line's power in DN of photo-signal per unit response."""
    lam = 1000.0 / sigma
    d_lam = lam * lam * width / 1000.0  # the middle band spans lam +- d_lam / 2
    grid = lam + d_lam * np.array([-1.0, 0.0, 1.0])
    h, w = inst.thumb_shape
    radiance_unit = inst.photo_rate_e_s * inst.exposure_s * d_lam
    scene = np.zeros((3, h, w))
    scene[1] = electrons / radiance_unit
    rate = inst.layout.place(inst.signal_e_s(scene, grid))
    frame = inst.detector.expose(rate, inst.exposure_s, rng)
    return frame, electrons / inst.detector_spec.electrons_per_dn


def simulate_full_frame(spec: FullFrameSpec, progress: Progress | None = None
                        ) -> tuple[FullFrameAcquisition, ImspocInstrument]:
    """A full-frame sweep of the spec's instrument, and the instrument (the truth)."""
    say = progress or (lambda _m: None)
    inst = instrument_for(spec)
    rng = np.random.default_rng(spec.seed + 1000)
    sigma = sweep_wavenumbers(inst.band_nm, spec.n_lines)
    hump = source_spectrum(sigma, sigma[0], sigma[-1])
    power = spec.signal_e * hump
    if spec.saturated_line:
        power[int(np.argmax(hump))] *= 3.0
    frames = np.empty((sigma.size, *inst.layout.detector_shape), np.uint16)
    norm = np.empty(sigma.size)
    for j, s in enumerate(sigma):
        frames[j], norm[j] = monochromatic_frame(inst, float(s), spec.line_width, float(power[j]), rng)
        if (j + 1) % 50 == 0:
            say(f"line {j + 1}/{sigma.size}")
    zero = np.zeros(inst.layout.detector_shape)
    dark = np.stack([np.stack([inst.detector.expose(zero, t, rng) for _ in range(STACK)])
                     for t in DARK_EXPOSURES_S])
    grid = inst.scene_grid()
    panel = np.ones((len(grid), *inst.thumb_shape))
    flat = np.stack([inst.frame(panel, grid, rng).pixels for _ in range(STACK)])
    acq = FullFrameAcquisition(
        name=f"simulated-{inst.name}", sigma=sigma, frames=frames, norm=norm, dark=dark, flat=flat,
        exposure_s=inst.exposure_s, dark_exposures_s=DARK_EXPOSURES_S, opd_step_um=spec.opd_step_um,
        bit_depth=inst.detector_spec.bit_depth,
        first_index=0 if spec.preset == "default" else spec.first_index,
        options={"simulated": True, "preset": spec.preset, "seed": spec.seed,
                 "interferometers": len(inst.layout), "saturated_line": spec.saturated_line,
                 "dead_fraction": inst.detector_spec.dead_fraction},
    )
    return acq, inst


def truth_arrays(inst: ImspocInstrument) -> dict[str, NDArray]:
    """What a simulated sweep was made from, for ``truth.npz``: the bank (``bank/...``), the
    layout, and the detector's fixed pattern (dead, hot, dark rate in DN/s, bias, gain)."""
    det, spec = inst.detector, inst.detector_spec
    return {
        **{f"bank/{k}": v for k, v in inst.bank.arrays().items()},
        "layout/corners": np.asarray(inst.layout.corners),
        "layout/thumb_shape": np.asarray(inst.layout.thumb_shape),
        "dead": det.dead, "hot": det.hot, "gain_map": det.gain_map,
        "dark_dn_s": det.dark_map / spec.electrons_per_dn,
        "bias_dn": np.asarray(spec.bias_dn),
    }


def write_simulated(folder: str | Path, spec: FullFrameSpec, progress: Progress | None = None
                    ) -> tuple[FullFrameAcquisition, ImspocInstrument]:
    """Simulate and write ``folder`` (the full-frame layout plus ``truth.npz``)."""
    acq, inst = simulate_full_frame(spec, progress)
    write_full_frame(folder, acq)
    np.savez(Path(folder) / "truth.npz", **truth_arrays(inst))  # type: ignore[arg-type]
    return acq, inst


# --------------------------------------------------------------------------- characterisation


@dataclass
class FullFrameCharacterisation:
    """A full-frame sweep characterised: layout, maps, whole-thumbnail and per-region fits,
    and the bank with each interferometer's centre OPD and wedge."""

    acquisition: FullFrameAcquisition
    layout: ThumbnailLayout
    maps: Radiometric
    thumbnails: Characterisation
    regions: list[Characterisation]
    region_grid: tuple[int, int]
    region_offsets: NDArray[np.float64]
    bank: InterferometerBank
    plane_rms_um: NDArray[np.float64]
    trusted: NDArray[np.bool_]
    wedge_measured: NDArray[np.bool_]
    counts: dict

    @property
    def region_opd_um(self) -> NDArray[np.float64]:
        """(N, regions) OPD fitted in each region."""
        return np.stack([c.bank.opd_um for c in self.regions], axis=1)

    def summary(self) -> dict:
        """JSON-able summary; the calibration file's provenance carries it."""
        h, w = self.layout.thumb_shape
        g = self.bank.opd_gradient_um_per_px
        wedge = np.abs(g[:, 0]) * (h - 1) + np.abs(g[:, 1]) * (w - 1)
        rms = np.stack([c.rms for c in self.regions], axis=1)[self.trusted]
        return {
            "thumbnails": len(self.layout),
            "thumb_shape": list(self.layout.thumb_shape),
            "regions": list(self.region_grid),
            "region_rms_median": float(np.median(rms)),
            "region_rms_p95": float(np.percentile(rms, 95)),
            "plane_rms_um_median": float(np.median(self.plane_rms_um)),
            "plane_rms_um_max": float(self.plane_rms_um.max()),
            "wedge_um_across_median": float(np.median(wedge)),
            **self.counts,
        }

    def calibration(self, n_bands: int | None = None) -> Calibration:
        """The runtime's calibration file content: this bank, the found layout, the estimated
        maps, and the white reference from the flat panel."""
        c = replace(self.thumbnails, bank=self.bank)
        bands = n_bands or default_bands(c)
        lo, hi = self.bank.sigma_domain
        wavelengths = output_grid((1000.0 / hi, 1000.0 / lo), bands)
        white = white_reference(transfer_matrix(self.bank, wavelengths), self._white_panel(),
                                self.acquisition.exposure_s)
        acq = self.acquisition
        return build_calibration(
            c, n_bands=bands, layout=self.layout, radiometric=self.maps, white_reference=white,
            provenance={
                "source": f"full-frame monochromatic sweep {acq.path or acq.name}",
                "layout": "found on the flat frame (calibration.geometry)",
                "radiometric": f"estimated from {acq.dark.shape[1]} darks at {list(acq.dark_exposures_s)} s "
                               f"and {acq.flat.shape[0]} flat frames",
                "white_reference": "the flat (white panel) frames' central cores",
                "full_frame": self.summary(),
            },
        )

    def _white_panel(self) -> NDArray[np.float64]:
        """(N,) corrected white-panel signal averaged over each thumbnail's central core."""
        acq = self.acquisition
        total = np.zeros(self.layout.detector_shape)
        for f in acq.flat:
            total += _correct(f, acq, self.maps)[0]
        thumbs = self.layout.extract(total / len(acq.flat))
        good = self.layout.extract(~self.maps.bad)
        h, w = self.layout.thumb_shape
        core = (slice(None), slice(h // 2 - WHITE_CORE, h // 2 + WHITE_CORE),
                slice(w // 2 - WHITE_CORE, w // 2 + WHITE_CORE))
        return (thumbs[core] * good[core]).sum((1, 2)) / np.maximum(good[core].sum((1, 2)), 1)


def _correct(raw: NDArray, acq: FullFrameAcquisition, maps: Radiometric) -> tuple[NDArray, NDArray]:
    """A raw frame corrected as the runtime corrects it: (signal DN, saturated mask)."""
    frame = radiometric.correct(RawFrame(pixels=np.ascontiguousarray(raw), counter=0, timestamp=0.0,
                                         exposure_s=acq.exposure_s, sensor="imspoc"),
                                maps, acq.saturation_dn)
    return frame.pixels.astype(np.float64), raw >= acq.saturation_dn


def detector_maps(acq: FullFrameAcquisition) -> tuple[Radiometric, ThumbnailLayout, int]:
    """Radiometric maps and the thumbnail layout from the darks and the flat.

    The runtime's estimator judges flat-field response only where nearly all of a pixel's
    7 x 7 neighbours are lit (it finds stuck-low pixels anywhere from the darks). Once the
    layout is known, one rule completes it: a thumbnail pixel below half or above 1.5 times
    its thumbnail's median flat signal is dead too (a white panel lights a thumbnail
    uniformly; the estimator's own bounds). Returns the maps, the layout and how many bad
    pixels that rule added."""
    maps = radiometric.estimate(acq.dark[0], acq.dark[1], acq.dark_exposures_s, acq.flat, acq.exposure_s)
    signal = acq.flat.astype(np.float64).mean(0) - maps.bias_dn - maps.dark_dn_s * acq.exposure_s
    expected = acq.options.get("interferometers")
    try:
        layout = find_thumbnails(signal, order=acq.order,
                                 expected=expected if isinstance(expected, int) else None)
    except GeometryError as exc:
        raise AcquisitionError(f"{acq.path}/flat.npy: {exc}") from exc
    thumbs = layout.extract(signal)
    level = np.median(thumbs.reshape(len(layout), -1), axis=1)[:, None, None]
    ratio = thumbs / np.maximum(level, 1e-9)
    dead_in = layout.place((ratio < 0.5) | (ratio > 1.5), fill=False) & ~maps.bad
    flat = np.where(dead_in, np.float32(1.0), maps.flat)
    return (Radiometric(maps.bias_dn, maps.dark_dn_s, flat.astype(np.float32), maps.bad | dead_in),
            layout, int(dead_in.sum()))


def region_edges(size: int, parts: int) -> NDArray[np.intp]:
    """Edges of ``parts`` near-equal regions along a thumbnail side of ``size`` pixels."""
    return np.linspace(0, size, parts + 1).round().astype(np.intp)


def region_means(acq: FullFrameAcquisition, layout: ThumbnailLayout, maps: Radiometric,
                 grid: tuple[int, int], progress: Progress | None = None
                 ) -> tuple[NDArray[np.float64], NDArray[np.float64], int]:
    """Per line, the mean corrected signal of each region's good pixels.

    Returns (N, R, S) region means, (R, 2) region centre offsets (rows, cols) from the
    thumbnail centre, and how many (thumbnail, line) pairs held a saturated pixel (kept: the
    characterisation's robust fit drops such lines where they misfit)."""
    say = progress or (lambda _m: None)
    h, w = layout.thumb_shape
    re, ce = region_edges(h, grid[0]), region_edges(w, grid[1])
    label = (np.searchsorted(re, np.arange(h), side="right") - 1)[:, None] * grid[1] + (
        np.searchsorted(ce, np.arange(w), side="right") - 1)[None, :]
    n_reg = grid[0] * grid[1]
    onehot = (label.ravel()[:, None] == np.arange(n_reg)[None, :]).astype(np.float64)
    good = layout.extract(~maps.bad).reshape(len(layout), -1).astype(np.float64)
    counts = good @ onehot
    if np.any(counts == 0):
        raise AcquisitionError(f"{acq.path}: a region of a thumbnail has no good pixel; use fewer regions")
    out = np.empty((len(layout), n_reg, acq.sigma.size))
    saturated = 0
    for j, raw in enumerate(acq.frames):
        signal, sat = _correct(raw, acq, maps)
        thumbs = layout.extract(signal).reshape(len(layout), -1)
        out[:, :, j] = ((thumbs * good) @ onehot) / counts
        saturated += int(layout.extract(sat).any(axis=(1, 2)).sum())
        if (j + 1) % 50 == 0:
            say(f"corrected and averaged {j + 1}/{acq.sigma.size} frames")
    rows = (np.add.reduceat(np.arange(h), re[:-1]) / np.diff(re)) - (h - 1) / 2
    cols = (np.add.reduceat(np.arange(w), ce[:-1]) / np.diff(ce)) - (w - 1) / 2
    offsets = np.stack(np.meshgrid(rows, cols, indexing="ij"), axis=-1).reshape(-1, 2)
    return out, offsets, saturated


def _acquisition(acq: FullFrameAcquisition, data: NDArray, name: str) -> Acquisition:
    return Acquisition(name, acq.sigma, data, np.broadcast_to(acq.norm, data.shape).copy(),
                       acq.opd_step_um, False, dict(acq.options), acq.path, acq.first_index)


def wedge_plane(opd: NDArray, offsets: NDArray, use: NDArray | None = None
                ) -> tuple[NDArray, NDArray, NDArray]:
    """Least-squares plane ``opd = c + g_row drow + g_col dcol`` through region OPDs (N, R) at
    region offsets (R, 2), over the regions ``use`` (N, R) bool (default all): centre OPD
    (N,), gradient (N, 2) µm/px, residual RMS over the regions used (N,) µm."""
    use = np.ones(opd.shape, bool) if use is None else use
    x = np.column_stack([np.ones(len(offsets)), offsets])
    coef = np.empty((opd.shape[0], 3))
    for k in range(opd.shape[0]):
        coef[k] = np.linalg.lstsq(x[use[k]], opd[k, use[k]], rcond=None)[0]
    resid = np.where(use, opd - coef @ x.T, 0.0)
    return coef[:, 0], coef[:, 1:], np.sqrt((resid**2).sum(axis=1) / use.sum(axis=1))


def trusted_regions(opd: NDArray, rms: NDArray, offsets: NDArray) -> NDArray[np.bool_]:
    """(N, R) the region fits the wedge plane and the bank are made from.

    A region is set aside when its fit failed (residual over ``RMS_REJECT`` times the median
    of its interferometer's regions: on a thumbnail with few fringes a region can settle in
    a local minimum), or when its OPD lies off the plane of the others by more than
    ``PLANE_REJECT`` robust standard deviations and ``OPD_TOLERANCE_UM``. An interferometer
    left with fewer than ``MIN_REGIONS`` keeps them all (and its plane residual shows it)."""
    use = rms <= RMS_REJECT * np.median(rms, axis=1, keepdims=True)
    centre, grad, _ = wedge_plane(opd, offsets, use)
    resid = np.abs(opd - centre[:, None] - grad @ offsets.T)
    scale = 1.4826 * np.array([np.median(r[u]) for r, u in zip(resid, use, strict=True)])
    use &= resid <= np.maximum(PLANE_REJECT * scale, OPD_TOLERANCE_UM)[:, None]
    use[use.sum(axis=1) < MIN_REGIONS] = True
    return use


def combine_regions(regions: list[Characterisation], offsets: NDArray, whole: Characterisation
                    ) -> tuple[InterferometerBank, NDArray[np.float64], NDArray[np.bool_], NDArray[np.bool_]]:
    """One bank from the region fits: OPD at the centre and wedge from the plane, phase the
    circular mean, gain, reflectivity and offset the mean of the trusted regions' (a thickness
    wedge moves only the OPD).

    Where the trusted regions scatter about their plane by more than ``WEDGE_NOISE_UM`` RMS
    the wedge is not measured: with too few fringes across the sweep a region's OPD trades
    against its gain polynomial (on the default instrument, interferometers under ~4
    fringes), and a plane through such OPDs would shift the model's OPD by whole fringes at
    the thumbnail's edge. Those interferometers take the whole-thumbnail fit, which
    describes their mean response, and no wedge.

    Returns the bank, the plane's residual RMS per interferometer, the trusted regions
    (N, R) and which interferometers' wedge was measured (N,)."""
    banks = [c.bank for c in regions]
    opd = np.stack([b.opd_um for b in banks], axis=1)
    use = trusted_regions(opd, np.stack([c.rms for c in regions], axis=1), offsets)
    centre, grad, rms = wedge_plane(opd, offsets, use)
    measured = rms <= WEDGE_NOISE_UM
    weight = use / use.sum(axis=1, keepdims=True)

    def mean(values: list[NDArray], fallback: NDArray) -> NDArray:
        v = np.einsum("nr,nr...->n...", weight, np.stack(values, axis=1))
        if v.ndim == 2:  # Chebyshev series of different degrees: pad the shorter with zeros
            cols = max(v.shape[1], fallback.shape[1])
            v, fallback = (np.pad(a, ((0, 0), (0, cols - a.shape[1]))) for a in (v, fallback))
        return np.where(measured.reshape(-1, *([1] * (v.ndim - 1))), v, fallback)

    w = whole.bank
    bank = InterferometerBank(
        opd_um=np.where(measured, centre, w.opd_um),
        phase_rad=np.angle(mean([np.exp(1j * b.phase_rad) for b in banks], np.exp(1j * w.phase_rad))),
        gain_cheb=mean([b.gain_cheb for b in banks], w.gain_cheb),
        reflectivity_cheb=mean([b.reflectivity_cheb for b in banks], w.reflectivity_cheb),
        offset=mean([b.offset for b in banks], w.offset),
        sigma_domain=banks[0].sigma_domain, harmonics=banks[0].harmonics,
        opd_gradient_um_per_px=np.where(measured[:, None], grad, 0.0),
    )
    return bank, rms, use, measured


def characterise_full_frame(acq: FullFrameAcquisition, regions: tuple[int, int] = (4, 4),
                            models: tuple[str, ...] = DEFAULT_MODELS, degrees: tuple[int, ...] = (5, 8),
                            progress: Progress | None = None) -> FullFrameCharacterisation:
    """Characterise a full-frame sweep (the steps of the module docstring). ``models`` and
    ``degrees`` are the candidates for the whole-thumbnail fit; the regions use its choice."""
    say = progress or (lambda _m: None)
    say(f"{acq.name}: {acq.sigma.size} frames of {acq.detector_shape}; radiometric maps and layout")
    maps, layout, dead_added = detector_maps(acq)
    h, w = layout.thumb_shape
    if not (1 <= regions[0] <= h // 2 and 1 <= regions[1] <= w // 2):
        raise AcquisitionError(f"{regions[0]} x {regions[1]} regions do not fit {h} x {w} thumbnails")
    say(f"found {len(layout)} thumbnails of {h} x {w}; {int(maps.bad.sum())} bad pixels")
    means, offsets, saturated = region_means(acq, layout, maps, regions, say)
    thumb = characterise(_acquisition(acq, means.mean(axis=1), acq.name), models=models,
                         degrees=degrees, progress=say)
    model, degree = thumb.selection.model, thumb.selection.degree
    fits = []
    for r in range(means.shape[1]):
        say(f"region {r + 1}/{means.shape[1]}")
        fits.append(characterise(_acquisition(acq, means[:, r], f"{acq.name}/region{r}"),
                                 models=(model,), degrees=(degree,)))
    bank, rms, use, measured = combine_regions(fits, offsets, thumb)
    return FullFrameCharacterisation(
        acq, layout, maps, thumb, fits, regions, offsets, bank, rms, use, measured,
        {"bad_pixels": int(maps.bad.sum()), "dead_added_to_estimator": dead_added,
         "saturated_thumbnail_lines": saturated, "regions_set_aside": int((~use).sum()),
         "wedge_not_measured": int((~measured).sum())},
    )
