"""The real benchmark cubes of ``shared/data/real_cubes`` (README there), read as clean truth.

Four public scenes with real spatial texture and spectral variability, which the farmland
simulator does not have: the denoiser is trained on :data:`TRAIN` and every number we report
is on :data:`TEST` (split by cube, so no pixel of a reported scene was seen in training). The
held-out cubes are both AVIRIS scenes, the sensor the denoiser is also judged on outside the
repository; the training cubes are the two VNIR ones (Samson, ROSIS beach).

Each cube is scaled to [0, 1] as a whole (one offset and one scale, so spectra keep their
shapes), after dropping bands that are constant or saturated (AVIRIS water-vapour channels
of the urban scene). Wavelength grids are approximate (the files carry none; README).
The files are read with SciPy (ground tool: export, benches, tests), never in flight.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
from numpy.typing import NDArray

from onboard.formats.types import Cube

if TYPE_CHECKING:
    from export.data import Sample

#: Environment variable naming the folder of the cubes (else the nearest ``shared/data/real_cubes``
#: above this checkout).
ENV = "ONBOARD_REAL_CUBES"
TRAIN = ("samson", "beach")
TEST = ("jasper", "urban")
NoiseCase = Literal["iid-0.05", "iid-0.10", "band", "mixed"]
#: The noise cases of issue 13, as the HyDe and HSDT papers add them to clean real cubes.
NOISE_CASES: tuple[NoiseCase, ...] = ("iid-0.05", "iid-0.10", "band", "mixed")
#: The file of each cube in the folder (README there).
FILES = {"samson": "samson_1.mat", "jasper": "jasperRidge2_R198.mat", "urban": "abu-urban-2.mat",
         "beach": "abu-beach-4.mat"}
#: AVIRIS channel centres, approximately: 224 channels over 365-2497 nm.
_AVIRIS_NM = np.linspace(365.0, 2497.0, 224)


@dataclass(frozen=True)
class RealCube:
    """A clean real cube: ``data`` (B, H, W) float64 in [0, 1], ``wavelengths_nm`` (B,)
    (approximate), ``name`` and ``sensor``."""

    name: str
    sensor: str
    data: NDArray[np.float64]
    wavelengths_nm: NDArray[np.float64]


def folder() -> Path | None:
    """The cubes' folder, or None where this checkout has no shared data."""
    env = os.environ.get(ENV)
    if env:
        return Path(env) if Path(env).is_dir() else None
    for parent in Path(__file__).resolve().parents:
        candidate = parent / "shared" / "data" / "real_cubes"
        if candidate.is_dir():
            return candidate
    return None


def _read(name: str, root: Path) -> tuple[NDArray, NDArray, str]:
    """(cube (H, W, B) raw, grid (B,), sensor) as the README lays each file out."""
    from scipy.io import loadmat

    if name == "samson":
        m = loadmat(root / FILES["samson"])
        return m["V"].T.reshape(95, 95, 156, order="F"), np.linspace(401.0, 889.0, 156), "Samson VNIR"
    if name == "jasper":
        m = loadmat(root / FILES["jasper"])
        grid = _AVIRIS_NM[m["SlectBands"].ravel().astype(int) - 1]
        return m["Y"].T.reshape(100, 100, 198, order="F"), grid, "AVIRIS"
    if name == "urban":
        m = loadmat(root / FILES["urban"])
        return m["data"], np.linspace(400.0, 2500.0, m["data"].shape[2]), "AVIRIS"
    if name == "beach":
        m = loadmat(root / FILES["beach"])
        return m["data"], np.linspace(430.0, 860.0, m["data"].shape[2]), "ROSIS-03"
    raise ValueError(f"unknown real cube {name!r}; known: {', '.join(TRAIN + TEST)}")


def load(name: str, root: Path | None = None) -> RealCube:
    """A real cube, bands first, scaled to [0, 1]; bands that are constant or reach the
    cube's maximum in more than 1 % of the pixels (saturated) are dropped. Raises
    FileNotFoundError where the shared data are absent."""
    root = root or folder()
    if root is None:
        raise FileNotFoundError(f"no shared/data/real_cubes found; set {ENV}")
    raw, grid, sensor = _read(name, root)
    x = np.asarray(raw, dtype=np.float64).transpose(2, 0, 1)
    flat = x.reshape(x.shape[0], -1)
    top = flat.max()
    keep = (flat.std(axis=1) > 0) & ((flat >= top).mean(axis=1) <= 0.01)
    x, grid = x[keep], grid[keep]
    lo, hi = x.min(), x.max()
    return RealCube(name, sensor, (x - lo) / (hi - lo), np.asarray(grid, dtype=np.float64))


def add_noise(clean: NDArray[np.float64], case: NoiseCase, rng: np.random.Generator
              ) -> NDArray[np.float64]:
    """Noisy copy (B, H, W) of a clean cube in [0, 1] (nothing is flagged invalid: every
    method gets the same cube and must find the defects itself).

    ``iid-0.05`` / ``iid-0.10``: Gaussian, one standard deviation. ``band``: Gaussian, each
    band's standard deviation drawn in U(0.01, 0.10). ``mixed``: ``band``, plus, each in a
    third of the bands drawn independently, column stripes (5-15 % of the columns offset
    by U(-0.25, 0.25)), dead lines (3-10 % of the columns at 0) and impulses (salt and
    pepper, 0 or 1, on 10-30 % of the pixels)."""
    b, h, w = clean.shape
    if case in ("iid-0.05", "iid-0.10"):
        return clean + float(case[4:]) * rng.standard_normal(clean.shape)
    if case not in ("band", "mixed"):
        raise ValueError(f"unknown noise case {case!r}; known: {', '.join(NOISE_CASES)}")
    sigma = rng.uniform(0.01, 0.10, b)
    noisy = clean + sigma[:, None, None] * rng.standard_normal(clean.shape)
    if case == "band":
        return noisy
    third = b // 3
    for k in rng.choice(b, third, replace=False):
        cols = rng.choice(w, int(rng.uniform(0.05, 0.15) * w), replace=False)
        noisy[k][:, cols] += rng.uniform(-0.25, 0.25, cols.size)
    for k in rng.choice(b, third, replace=False):
        cols = rng.choice(w, int(rng.uniform(0.03, 0.10) * w), replace=False)
        noisy[k][:, cols] = 0.0
    for k in rng.choice(b, third, replace=False):
        hit = rng.uniform(size=(h, w)) < rng.uniform(0.1, 0.3)
        noisy[k][hit] = rng.integers(0, 2, int(hit.sum())).astype(float)
    return noisy


def sample(rc: RealCube, case: NoiseCase, seed: int, bands: int | None = None,
           side: int | None = None) -> Sample:
    """A benchmark :class:`~export.data.Sample` of a real cube under a noise case: the
    clean cube is the truth; ``bands``/``side`` take every other band up to ``bands`` and
    the top-left ``side`` x ``side`` pixels (the size of the AVIRIS scene the issue was
    measured on). Its stripe model is the runtime default's (gain)."""
    from export.data import Sample  # the simulators' module: imported only when needed

    clean = rc.data
    if bands is not None:
        clean = clean[:: max(1, len(clean) // bands)][:bands]
    if side is not None:
        clean = clean[:, :side, :side]
    grid = rc.wavelengths_nm[:: max(1, len(rc.data) // bands)][:bands] if bands else rc.wavelengths_nm
    noisy = add_noise(clean, case, np.random.default_rng([seed, NOISE_CASES.index(case)]))
    h, w = clean.shape[1:]
    truth = clean.astype(np.float32)
    cube = Cube(noisy.astype(np.float32), np.asarray(grid, dtype=np.float64), np.ones((h, w), bool))
    return Sample(cube, truth, truth, np.zeros((3, h, w), np.float32), np.zeros((h, w), np.uint8),
                  f"real-{rc.name}", "gain")


def training_samples(seed: int, n: int, names: tuple[str, ...] = TRAIN) -> list[Sample]:
    """``n`` noisy samples of the training cubes for the learned refiner: each a random band
    subset (every 1st-3rd band) and 64 x 64 crop (the simulated tiles' size) of one cube, under i.i.d.
    noise (sigma log-uniform 0.003-0.12), per-band noise (each band U(0.1, 1) of such a
    sigma), or the mixed case; never the held-out cubes."""
    from export.data import TILE, Sample

    cubes = [load(name) for name in names]
    rng = np.random.default_rng([seed, 13])
    out = []
    for i in range(n):
        rc = cubes[i % len(cubes)]
        step = int(rng.integers(1, 4))
        side = TILE
        r0 = int(rng.integers(0, rc.data.shape[1] - side + 1))
        c0 = int(rng.integers(0, rc.data.shape[2] - side + 1))
        clean = rc.data[::step, r0:r0 + side, c0:c0 + side]
        sigma = float(np.exp(rng.uniform(np.log(0.003), np.log(0.12))))
        kind = ("iid", "band", "mixed")[i % 3]
        if kind == "mixed":
            noisy = add_noise(clean, "mixed", rng)
        else:
            per_band = sigma * (rng.uniform(0.1, 1.0, len(clean)) if kind == "band" else 1.0)
            noisy = clean + np.reshape(per_band, (-1, 1, 1)) * rng.standard_normal(clean.shape)
        truth = clean.astype(np.float32)
        valid = np.ones((side, side), bool)
        cube = Cube(noisy.astype(np.float32), rc.wavelengths_nm[::step], valid)
        out.append(Sample(cube, truth, truth, np.zeros((3, side, side), np.float32),
                          np.zeros((side, side), np.uint8), f"real-{rc.name}", "gain"))
    return out
