"""A real reflectance cube as the ground a simulated instrument flies over (``onboard run --scene``).

The farmland simulator knows its truth but has no real texture; a real cube has both texture and
real spectra. This module reads a cube, resamples it to what one instrument sees and cuts it
into the tiles the simulated sources (``sources/base.py``) turn into raw frames through the one
forward model each sensor has, so the whole pipeline runs and is measured on a real scene.

**Scene file** (``.npz``, numpy only): ``reflectance`` (rows, cols, bands), reflectance 0-1 (up
to :data:`MAX_REFLECTANCE`), any real dtype; ``wavelengths_nm`` (bands,), ascending band
centres in nm. Other members are ignored. :func:`write_scene` writes one; ``onboard export
scene`` converts the benchmark cubes of ``shared/data/real_cubes`` (MATLAB files, read with
SciPy on the ground).

**Bad bands**: a band that is not finite at every pixel or is constant (all zero: a removed
water band) is dropped, and said so; negative values (over-corrected water bands) are clipped
to zero, and said so.

**Spectral**: the instrument's scene grid must lie within the cube's range (its first and last
band centres, half a band beyond); else :class:`SceneError` says both ranges and what to do.
The cube is linearly interpolated onto that grid (:func:`onboard.scene.library.resample`);
instrument bands that fall in a gap of the cube's grid (bands missing or dropped) are
interpolated across it, and the notes name them.

**Spatial**: the swath spans the cube's width: each instrument pixel is the area average of
the cube pixels it covers (square pixels, the rows scaled like the columns). Frames are
footprints of the sensor's shape stepped along track (down the rows) so that the first starts
at the top and the last ends at the bottom; after the last, the track flies the scene again
(new noise on each pass).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from numpy.typing import ArrayLike, NDArray

from onboard.errors import OnboardError
from onboard.formats.npyio import load_npz
from onboard.scene.library import resample

#: Largest scene file read (bytes of array data): a 1000 x 1000 x 500 float32 cube.
MAX_BYTES = 2 * 1024**3
#: Largest value taken for reflectance; a cube above it is scaled (e.g. x 10 000) and is refused.
MAX_REFLECTANCE = 2.0
#: A step of the cube's wavelength grid this many times its median step is a gap.
GAP_FACTOR = 1.5


class SceneError(OnboardError, ValueError):
    """The scene file cannot be flown; the message says why and what to do."""


@dataclass(frozen=True)
class Scene:
    """A reflectance cube: ``reflectance`` (bands, rows, cols) float32 on ``wavelengths_nm``
    (bands,) ascending; ``notes`` say what reading it changed (bands dropped, values clipped)."""

    name: str
    reflectance: NDArray[np.float32]
    wavelengths_nm: NDArray[np.float64]
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class SceneTile:
    """One footprint of a scene, as the simulated sources take it (the scene's cover fractions
    and tillage are unknown: None)."""

    reflectance: NDArray[np.float32]
    wavelengths_nm: NDArray[np.float64]
    origin: tuple[int, int]
    fractions: None = None
    tillage: None = None


def write_scene(path: str | Path, reflectance: ArrayLike, wavelengths_nm: ArrayLike) -> Path:
    """Write a scene file: ``reflectance`` (rows, cols, bands), ``wavelengths_nm`` (bands,)."""
    path = Path(path)
    np.savez_compressed(path, reflectance=np.asarray(reflectance, dtype=np.float32),
                        wavelengths_nm=np.asarray(wavelengths_nm, dtype=np.float64))
    return path if path.suffix == ".npz" else path.with_name(path.name + ".npz")


def read_scene(path: str | Path) -> Scene:
    """The scene in ``path`` (module docstring), bad bands dropped and negatives clipped;
    anything else wrong raises :class:`SceneError` naming the file."""
    path = Path(path)
    if path.suffix.lower() == ".mat":
        raise SceneError(f"{path}: a MATLAB cube is read on the ground; convert it first: "
                         f"onboard export scene {path} -o {path.with_suffix('.npz').name}")
    if path.suffix.lower() != ".npz":
        raise SceneError(f"{path}: a scene is an .npz with 'reflectance' (rows, cols, bands) and "
                         "'wavelengths_nm' (bands,): an .npy holds no wavelengths "
                         "(np.savez(FILE, reflectance=..., wavelengths_nm=...))")
    try:
        with open(path, "rb") as fh:
            arrays = load_npz(fh, MAX_BYTES, f"{path}: not a readable scene .npz", SceneError)
    except OSError as exc:
        raise SceneError(f"{path}: cannot read the scene ({exc.strerror or exc})") from exc
    missing = [k for k in ("reflectance", "wavelengths_nm") if k not in arrays]
    if missing:
        raise SceneError(f"{path}: no {' or '.join(missing)} in the file (it has "
                         f"{', '.join(sorted(arrays)) or 'nothing'})")
    cube, wl = arrays["reflectance"], arrays["wavelengths_nm"]
    for key, a in (("reflectance", cube), ("wavelengths_nm", wl)):
        if a.dtype.kind not in "fiu":
            raise SceneError(f"{path}: {key} must be real numbers, not {a.dtype}")
    if cube.ndim != 3 or wl.ndim != 1 or cube.shape[2] != wl.size or min(cube.shape) < 1:
        raise SceneError(f"{path}: reflectance must be (rows, cols, bands) and wavelengths_nm "
                         f"(bands,); got {cube.shape} and {wl.shape}")
    wl = wl.astype(np.float64)
    if not np.isfinite(wl).all() or np.any(np.diff(wl) <= 0):
        raise SceneError(f"{path}: wavelengths_nm must be finite and strictly ascending")
    if wl[-1] < 30.0:
        raise SceneError(f"{path}: wavelengths_nm end at {wl[-1]:g}: micrometres? give nanometres")
    return _clean(path.stem, cube.astype(np.float32).transpose(2, 0, 1), wl, str(path))


def _clean(name: str, cube: NDArray[np.float32], wl: NDArray[np.float64], where: str) -> Scene:
    """Drop the bad bands, clip negatives, refuse what is not reflectance."""
    flat = cube.reshape(len(cube), -1)
    finite = np.asarray(np.isfinite(flat).all(axis=1))
    good: NDArray[np.bool_] = finite.copy()
    good[finite] = flat[finite].max(axis=1) > flat[finite].min(axis=1)
    notes = []
    if not good.any():
        holes = int((~np.isfinite(flat)).any(axis=0).sum())
        raise SceneError(f"{where}: no usable band: every band is constant or not finite somewhere"
                         + (f" ({holes} pixels hold NaN or inf; crop them away)" if holes else ""))
    if (~good).any():
        dropped = _ranges(wl[~good], float(np.median(np.diff(wl))))
        notes.append(f"scene: {int((~good).sum())} of {len(good)} bands dropped (not finite or "
                     f"constant, e.g. removed water bands): {dropped}")
    cube, wl = cube[good], wl[good]
    if len(wl) < 2:
        raise SceneError(f"{where}: one usable band ({wl[0]:.0f} nm); a spectrum needs at least two")
    top = float(cube.max())
    if top > MAX_REFLECTANCE:
        raise SceneError(f"{where}: values reach {top:g}; a scene is reflectance (0-1): divide the "
                         "cube by its scale (e.g. 10000) before saving it")
    negative = float((cube < 0).mean())
    if negative > 0:
        notes.append(f"scene: {100 * negative:.2g} % of the values were negative, clipped to 0")
        cube = np.maximum(cube, 0.0)
    return Scene(name, np.ascontiguousarray(cube), wl, tuple(notes))


def _ranges(wl: NDArray[np.float64], step: float) -> str:
    """Wavelengths of a grid of ``step`` nm as runs of neighbours: '1340-1400, 1800-1950 nm'."""
    cuts = np.flatnonzero(np.diff(wl) > GAP_FACTOR * step) + 1
    return ", ".join(f"{r[0]:.0f}-{r[-1]:.0f}" if r.size > 1 else f"{r[0]:.0f}"
                     for r in np.split(wl, cuts)) + " nm"


def coverage_nm(wavelengths_nm: NDArray[np.float64]) -> tuple[float, float]:
    """The range a cube's bands cover: its first and last band centres, half a band beyond."""
    wl = wavelengths_nm
    return float(wl[0] - (wl[1] - wl[0]) / 2), float(wl[-1] + (wl[-1] - wl[-2]) / 2)


def on_grid(scene: Scene, grid_nm: NDArray[np.float64], instrument: str,
            sees_nm: tuple[float, float]) -> tuple[NDArray[np.float32], list[str]]:
    """The scene's reflectance (B, rows, cols) interpolated onto ``grid_nm`` (the instrument's
    scene grid), and notes naming the instrument bands that fall in a gap of the cube's grid.
    Raises :class:`SceneError` where the grid leaves the cube's range."""
    wl, grid = scene.wavelengths_nm, np.asarray(grid_nm, dtype=float)
    lo, hi = coverage_nm(wl)
    if grid[0] < lo or grid[-1] > hi:
        raise SceneError(
            f"scene {scene.name} covers {lo:.0f}-{hi:.0f} nm but the simulated {instrument} sees "
            f"{sees_nm[0]:.0f}-{sees_nm[1]:.0f} nm: give a cube that covers the instrument's range, "
            "or fly another --sensor")
    notes = []
    step, grid_step = np.diff(wl), float(np.median(np.diff(grid)))
    for i in np.flatnonzero(step > GAP_FACTOR * np.median(step)):
        inside = grid[(grid > wl[i]) & (grid < wl[i + 1])]
        if inside.size:
            notes.append(f"scene: instrument bands {_ranges(inside, grid_step)} fall in the cube's gap "
                         f"{wl[i]:.0f}-{wl[i + 1]:.0f} nm (bands missing or dropped): interpolated "
                         "across it")
    # the end bands reach half a band beyond their centres (coverage_nm)
    src = np.concatenate([[lo], wl, [hi]])
    b, h, w = scene.reflectance.shape
    spectra = scene.reflectance.reshape(b, h * w).T
    spectra = np.concatenate([spectra[:, :1], spectra, spectra[:, -1:]], axis=1)
    out = resample(spectra, src, grid).T.reshape(len(grid), h, w)
    return out.astype(np.float32), notes


def area_weights(n_in: int, n_out: int) -> NDArray[np.float64]:
    """(n_out, n_in): each of ``n_out`` pixels spanning the same length as ``n_in`` pixels is
    the mean of those it overlaps, weighted by the overlap (area averaging; upsampling
    repeats a pixel over the output pixels it covers)."""
    e_in, e_out = np.linspace(0.0, 1.0, n_in + 1), np.linspace(0.0, 1.0, n_out + 1)
    overlap = np.clip(np.minimum(e_out[1:, None], e_in[None, 1:])
                      - np.maximum(e_out[:-1, None], e_in[None, :-1]), 0.0, None)
    return overlap / overlap.sum(axis=1, keepdims=True)


@dataclass
class SceneTrack:
    """Footprints of ``shape`` (rows, cols) flown over ``scene`` on the instrument's scene
    grid ``grid_nm`` (module docstring): an endless iterator of :class:`SceneTile`."""

    scene: Scene
    grid_nm: NDArray[np.float64]
    shape: tuple[int, int]
    instrument: str
    sees_nm: tuple[float, float]
    notes: list[str] = field(init=False)
    cube: NDArray[np.float32] = field(init=False)
    starts: list[int] = field(init=False)

    def __post_init__(self) -> None:
        h, w = self.shape
        b, rows, cols = self.scene.reflectance.shape
        out_rows = max(1, round(rows * w / cols))
        if out_rows < h:
            raise SceneError(
                f"scene {self.scene.name} is {rows} x {cols} px: with its width spanning the "
                f"{w}-pixel swath it is {out_rows} rows long, shorter than one {h}-row frame; "
                f"give a cube of at least {-(-h * cols // w)} rows, or crop its width")
        # spatial first: a large cube shrinks before its spectra are resampled (both are linear)
        along, across = area_weights(rows, out_rows), area_weights(cols, w)
        swath = np.einsum("rh,bhw,cw->brc", along, self.scene.reflectance, across, optimize=True)
        self.cube, self.notes = on_grid(replace(self.scene, reflectance=swath.astype(np.float32)),
                                        self.grid_nm, self.instrument, self.sees_nm)
        n = -(-out_rows // h)
        self.starts = sorted({round(s) for s in np.linspace(0, out_rows - h, n)})
        self.notes = [*self.scene.notes, *self.notes,
                      f"scene: {self.scene.name}, {rows} x {cols} px x {b} bands, resampled to "
                      f"{out_rows} x {w} px on the instrument's {len(self.grid_nm)}-band scene grid "
                      f"(area average); {len(self.starts)} frame(s) cover it, later frames fly it again"]

    def __iter__(self) -> Iterator[SceneTile]:
        h = self.shape[0]
        while True:
            for r in self.starts:
                yield SceneTile(self.cube[:, r:r + h], self.grid_nm, (r, 0))
