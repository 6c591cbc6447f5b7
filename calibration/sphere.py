"""The absolute radiometric calibration: an integrating sphere (or a lamp-panel) of
certified radiance seen by the instrument, and the gain per reconstructed band it gives.

On-disk layout of a sphere acquisition (one folder; every problem is one
:class:`SphereError` naming it):

* ``frames.npy`` (n >= 2, H, W) uint16: raw frames of the sphere's port filling the field of
  view, at ``exposure_s``;
* ``dark.npy`` (m >= 2, H, W) uint16: raw frames with the shutter closed (or the sphere
  off) at the same exposure, subtracted pixel by pixel: they hold the bias and the dark
  signal of the day, which the calibration's maps only model;
* ``options.json``: ``exposure_s``, ``bit_depth``; optional ``device_id``, ``sphere``
  (free text);
* ``certificate.csv`` beside them when the simulator wrote the folder (a real one comes
  from the standard's laboratory: :mod:`calibration.certificate`).

The gain (:func:`measure_gain`), for an ImSPOC calibration: the dark-subtracted frames,
divided by the calibration's flat, are averaged over the good pixels of each thumbnail's
central core (where the reconstruction's operator is the bank's at the thumbnail centre);
the gain itself is the unknown: the smooth ``g`` (B,) whose prediction
``A diag(L) g t`` through the calibration's own transfer matrix ``A``, with ``L`` the
certificate's band-averaged radiance, fits them, weight by GCV as for the white reference
(:func:`onboard.stages.reconstruct.white_reference`). Smoothness is asked of the gain, not of
the sphere's signal: a quartz-tungsten sphere's spectrum rises fourfold over the visible,
and a smooth signal fitted to it was 11 % low at 455 nm (measured on the simulator, 8
seeds), the gain 2.6 % high. ``S = g L`` and the gain ``S / L`` then go through
:func:`onboard.sources.simulated.radiance_gain`, the one definition the simulated
calibration uses too. Its relative standard uncertainty (k = 1) combines in quadrature:
the frames' noise (spread of the per-frame ``S``), the dark stack's (spread of ``S`` with
each dark frame subtracted in turn, over sqrt(m)) and the certificate's.

For a push-broom calibration the gain is per detector band: the dark-subtracted frames over
the flat, the median over the cross-track of each band's good pixels (as its white reference
is made), per second, over the certificate's radiance averaged over the band.

ImSPOC: per reconstructed band, not per interferometer: the runtime turns counts into radiance
after the reconstruction (radiance = cube x white reference / gain), so that is where a gain
is applied. A per-interferometer absolute gain would be a rescaling of the bank's gain
polynomials, which changes the reconstruction operator the characterisation fitted; it is
measured instead as a check (:attr:`SphereGain.interferometer_ratio`: each
interferometer's signal over what the bank predicts for the certified spectrum; its spread
says how well the bank's relative gains and the flat agree with the sphere) and reported.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from calibration.acquisitions import AcquisitionError, read_options
from calibration.certificate import Certificate
from calibration.fullframe import WHITE_CORE, _frames
from onboard.formats.calfile import Calibration
from onboard.physics.imspoc import ImspocInstrument, band_edges_nm, band_mean, transfer_matrix
from onboard.physics.pushbroom import PushbroomInstrument
from onboard.sources.simulated import radiance_gain
from onboard.stages.reconstruct import white_reference

FILES = ("frames.npy", "dark.npy", "options.json")
#: Median core signal over the dark stack's temporal noise below which the frames are dark
#: (sphere off, shutter closed): a lit sphere at a usable level is hundreds of times above.
MIN_SNR = 20.0


class SphereError(AcquisitionError):
    """A sphere acquisition that cannot give a radiance gain; the message says why."""


@dataclass
class SphereAcquisition:
    """Frames of a radiance standard and darks at one exposure (module docstring)."""

    frames: NDArray[np.uint16]
    dark: NDArray[np.uint16]
    exposure_s: float
    bit_depth: int
    name: str = "sphere"
    options: dict | None = None
    path: str = ""

    @property
    def saturation_dn(self) -> int:
        """Raw level at and above which a pixel counts as saturated (as the runtime flags it)."""
        return (1 << self.bit_depth) - 2


def load_sphere(folder: str | Path) -> SphereAcquisition:
    """Read and validate a sphere acquisition folder."""
    folder = Path(folder)
    opt_path, options = read_options(folder, f"a sphere acquisition needs {', '.join(FILES)}")
    exposure = options.get("exposure_s")
    if not isinstance(exposure, (int, float)) or not exposure > 0:
        raise SphereError(f"{opt_path}: exposure_s must be a positive number (s), got {exposure!r}")
    bits = options.get("bit_depth")
    if not isinstance(bits, int) or not 8 <= bits <= 16:
        raise SphereError(f"{opt_path}: bit_depth must be an integer 8-16, got {bits!r}")
    frames = _frames(folder / "frames.npy", 3, "(frames, rows, cols)")
    dark = _frames(folder / "dark.npy", 3, "(frames, rows, cols)")
    if frames.shape[0] < 2 or dark.shape[0] < 2:
        raise SphereError(f"{folder}: {frames.shape[0]} sphere and {dark.shape[0]} dark frames; "
                          "at least two of each are needed to measure their noise")
    if dark.shape[1:] != frames.shape[1:]:
        raise SphereError(f"{folder}: dark frames are {dark.shape[1:]}, sphere frames {frames.shape[1:]}")
    return SphereAcquisition(frames, dark, float(exposure), bits,
                             str(options.get("device_id", folder.name)), options, str(folder))


def write_sphere(folder: str | Path, acq: SphereAcquisition) -> None:
    """Write ``acq`` in the layout :func:`load_sphere` reads."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / "frames.npy", acq.frames)
    np.save(folder / "dark.npy", acq.dark)
    options = {**(acq.options or {}), "exposure_s": acq.exposure_s, "bit_depth": acq.bit_depth,
               "device_id": acq.name}
    (folder / "options.json").write_text(json.dumps(options, indent=2, sort_keys=True))


def tungsten_certificate(peak_radiance: float = 0.3, temperature_k: float = 2900.0,
                         relative_uncertainty: float = 0.01,
                         wavelength_nm: NDArray | None = None) -> Certificate:
    """The certificate of a simulated quartz-tungsten-halogen sphere: a black body at
    ``temperature_k`` scaled to ``peak_radiance`` (W m-2 sr-1 nm-1) at its maximum (near
    1 µm; it rises to the red across the visible, unlike the lab lamp's spectrum the white
    reference is measured under), standard uncertainty ``relative_uncertainty`` of the
    radiance, at 5 nm over 350-2500 nm as such certificates are."""
    wl = np.arange(350.0, 2501.0, 5.0) if wavelength_nm is None else np.asarray(wavelength_nm, float)
    x = 1.438777e7 / (wl * temperature_k)  # hc / (lambda k T), lambda in nm
    planck = 1.0 / (wl**5 * np.expm1(x))
    radiance = peak_radiance * planck / planck.max()
    return Certificate(wl, radiance, relative_uncertainty * radiance,
                       f"simulated QTH sphere, {temperature_k:g} K, {peak_radiance:g} W m-2 sr-1 nm-1 peak")


def simulate_sphere(inst: ImspocInstrument | PushbroomInstrument, cert: Certificate,
                    exposure_s: float | None = None, frames: int = 8, darks: int = 8,
                    seed: int = 0) -> SphereAcquisition:
    """Raw frames of a uniform field at the certificate's radiance (the simulator's forward
    model: :meth:`ImspocInstrument.frame_radiance`, or :meth:`PushbroomInstrument.line_radiance`
    read out as on the ground calibration's day) and darks, at ``exposure_s`` (default the
    instrument's)."""
    if exposure_s is not None:
        inst = replace(inst, exposure_s=exposure_s)
    rng = np.random.default_rng(seed)
    if isinstance(inst, PushbroomInstrument):
        field = np.interp(inst.wavelengths_nm, cert.wavelength_nm, cert.radiance)
        line = np.broadcast_to(field[:, None], (field.size, inst.cross_track))
        lit = np.stack([inst.line_radiance(line, rng, drift=False).pixels for _ in range(frames)])
        shape = tuple(inst.detector_spec.shape)
    else:
        grid = inst.scene_grid()
        h, w = inst.thumb_shape
        radiance = np.broadcast_to(np.interp(grid, cert.wavelength_nm, cert.radiance)[:, None, None],
                                   (grid.size, h, w))
        lit = np.stack([inst.frame_radiance(radiance, grid, rng).pixels for _ in range(frames)])
        shape = tuple(inst.layout.detector_shape)
    dark = np.stack([inst.detector.expose(np.zeros(shape), inst.exposure_s, rng) for _ in range(darks)])
    return SphereAcquisition(lit, dark, inst.exposure_s, inst.detector_spec.bit_depth, inst.name,
                             {"simulated": True, "seed": seed, "sphere": cert.source})


@dataclass
class SphereGain:
    """A measured gain: ``gain`` (B,) DN/s per W m-2 sr-1 nm-1 and its relative standard
    uncertainty ``uncertainty`` (B,), with the parts it is made of, each (B,) relative;
    ``interferometer_ratio`` (N,): each interferometer's core signal (DN/s) over the bank's
    prediction for the certified spectrum (the check of the module docstring; None for a
    push-broom)."""

    gain: NDArray[np.float64]
    uncertainty: NDArray[np.float64]
    frames_noise: NDArray[np.float64]
    dark_noise: NDArray[np.float64]
    certificate: NDArray[np.float64]
    interferometer_ratio: NDArray[np.float64] | None
    snr: float

    def summary(self) -> dict:
        """JSON-able summary (the calibration's provenance carries it)."""
        r = self.interferometer_ratio
        check = {} if r is None else {
            "interferometer_ratio_median": float(np.median(r)),
            "interferometer_ratio_spread": float(np.percentile(r, 95) / np.percentile(r, 5) - 1)}
        return {
            "gain_median": float(np.median(self.gain)),
            "uncertainty_max": float(self.uncertainty.max()),
            "uncertainty_median": float(np.median(self.uncertainty)),
            "frames_noise_max": float(self.frames_noise.max()),
            "dark_noise_max": float(self.dark_noise.max()),
            "certificate_max": float(self.certificate.max()),
            "signal_over_dark_noise": self.snr,
            **check,
        }


def _used(cal: Calibration) -> NDArray[np.bool_]:
    """(rows, cols) the good pixels the gain is measured on: each thumbnail's central core
    (ImSPOC: where the reconstruction's operator is the bank's at the thumbnail centre), or
    the whole detector (push-broom: every pixel is one band of one cross-track sample)."""
    good = ~cal.radiometric.bad
    if cal.kind == "pushbroom":
        return good
    assert cal.layout is not None
    h, w = cal.layout.thumb_shape
    core = np.zeros((len(cal.layout), h, w), bool)
    core[:, h // 2 - WHITE_CORE:h // 2 + WHITE_CORE, w // 2 - WHITE_CORE:w // 2 + WHITE_CORE] = True
    return cal.layout.place(core, fill=False) & good


def _reduce(cal: Calibration, stack: NDArray, used: NDArray[np.bool_]) -> NDArray[np.float64]:
    """Each (dark-subtracted) frame divided by the flat and reduced to what the gain is fitted
    to: (frames, N) mean of each thumbnail's used pixels (ImSPOC), or (frames, B) median over
    the cross-track of each band's (push-broom, as its white reference is made)."""
    signal = np.asarray(stack, np.float64) / cal.radiometric.flat
    if cal.kind == "pushbroom":
        return np.nanmedian(np.where(used, signal, np.nan), axis=1)
    assert cal.layout is not None
    thumbs = np.stack([cal.layout.extract(f) for f in signal])
    weight = cal.layout.extract(used).astype(np.float64)
    return (thumbs * weight).sum((2, 3)) / np.maximum(weight.sum((1, 2)), 1)


def _check_levels(cal: Calibration, acq: SphereAcquisition, used: NDArray[np.bool_]) -> float:
    """Refuse saturated or dark sphere frames (a saturated pixel under-reads the sphere; a
    dark frame measures noise); returns the median signal over the dark noise."""
    if acq.frames.shape[1:] != cal.radiometric.shape:
        raise SphereError(f"{acq.path}: frames are {acq.frames.shape[1:]}; the calibration's "
                          f"detector ({cal.instrument}) is {cal.radiometric.shape}")
    saturated = (acq.frames >= acq.saturation_dn) & used
    if saturated.any():
        which = np.flatnonzero(saturated.any(axis=(1, 2)))
        raise SphereError(
            f"{acq.path}: {int(saturated.sum())} of the pixels used are saturated "
            f"(raw >= {acq.saturation_dn} DN) in {which.size} of {len(acq.frames)} sphere frames "
            f"(first: frame {int(which[0])}): lower the exposure ({acq.exposure_s:g} s) or the "
            "sphere's level and record again")
    noise = float(np.median(acq.dark.astype(np.float64).std(axis=0, ddof=1)[used]))
    signal = float(np.median(_reduce(cal, acq.frames.mean(0, keepdims=True)
                                     - acq.dark.mean(0, keepdims=True), used)))
    snr = signal / max(noise, 1e-9)
    if snr < MIN_SNR:
        raise SphereError(
            f"{acq.path}: the sphere frames are dark: median signal {signal:.2f} DN above the "
            f"darks, {snr:.1f} times their noise ({noise:.2f} DN; at least {MIN_SNR:g} needed): "
            "was the sphere lit and the shutter open? Are frames.npy and dark.npy swapped?")
    return snr


def measure_gain(cal: Calibration, acq: SphereAcquisition, cert: Certificate) -> SphereGain:
    """The gain per band of a calibration (module docstring): per reconstructed band for the
    ImSPOC, per detector band for the push-broom (its signal per band over the radiance)."""
    if cal.flight_problem() is not None:
        raise SphereError(f"calibration of {cal.instrument} has {cal.flight_problem()}: no thumbnail "
                          "cores to measure a sphere on")
    cert.check_covers(cal.wavelengths_nm)
    used = _used(cal)
    snr = _check_levels(cal, acq, used)
    radiance, u_cert = cert.in_bands(cal.wavelengths_nm)
    t = acq.exposure_s
    dark = acq.dark.astype(np.float64)
    lit = _reduce(cal, acq.frames.astype(np.float64) - dark.mean(0), used)
    dark_reduced = _reduce(cal, dark, used)
    if cal.kind == "imspoc":
        assert cal.bank is not None
        a = transfer_matrix(cal.bank, cal.wavelengths_nm) * radiance[None, :]

        def signal(y: NDArray) -> NDArray[np.float64]:
            # the smooth gain g with A diag(radiance) g t = y, times the radiance
            return white_reference(a, y, t) * radiance
    else:
        def signal(y: NDArray) -> NDArray[np.float64]:
            return np.asarray(y, np.float64) / t

    spectrum = signal(lit.mean(0))
    per_frame = np.stack([signal(y) for y in lit])
    per_dark = np.stack([signal(lit.mean(0) + dark_reduced.mean(0) - d) for d in dark_reduced])
    u_dark = per_dark.std(0, ddof=1) / np.sqrt(len(per_dark)) / np.abs(spectrum)
    gain, u = radiance_gain(spectrum, per_frame, radiance, np.hypot(u_dark, u_cert))
    frames_noise = per_frame.std(0, ddof=1) / np.sqrt(len(per_frame)) / np.abs(spectrum)
    ratio = _interferometer_ratio(cal, cert, lit.mean(0) / t) if cal.kind == "imspoc" else None
    return SphereGain(gain, u, frames_noise, u_dark, u_cert, ratio, snr)


def _interferometer_ratio(cal: Calibration, cert: Certificate, rate: NDArray) -> NDArray[np.float64]:
    """Each interferometer's signal rate (DN/s) over the bank's prediction for the certified
    spectrum, sampled at 2 nm over the bands (the check of the module docstring)."""
    assert cal.bank is not None
    edges = band_edges_nm(cal.wavelengths_nm)
    fine = np.arange(edges[0] + 1.0, edges[-1], 2.0)
    predicted = transfer_matrix(cal.bank, fine) @ band_mean(cert.wavelength_nm, cert.radiance, fine)
    return rate / np.where(np.abs(predicted) > 0, predicted, np.nan)


def with_radiance_gain(cal: Calibration, measured: SphereGain, acq: SphereAcquisition,
                       cert: Certificate) -> Calibration:
    """``cal`` with the measured gain (a version-2 file), its provenance saying where from."""
    return replace(cal, radiance_gain=measured.gain, radiance_gain_uncertainty=measured.uncertainty,
                   provenance={**cal.provenance,
                               "radiance_source": (f"radiance standard {cert.source or '?'} "
                                                   f"(certificate {cert.path or '?'}), acquisition "
                                                   f"{acq.path or acq.name} at {acq.exposure_s:g} s, "
                                                   f"{len(acq.frames)} frames, {len(acq.dark)} darks"),
                               "radiance_gain": measured.summary()})
