"""The floor of each stage: the time its bytes and FLOPs would take on this machine, one core.

``onboard bench`` prints it beside each stage's measured time, so "fast" means "near what the
hardware allows" rather than "faster than last week". The rates are measured when the bench
starts (:func:`measure_rates`): the copy bandwidth (bytes read and written by a 64 MiB
``numpy.copyto``, best of several) and the float32 matrix-product rate of one thread (a 384 x
384 product, best of several). A stage's floor is ``max(bytes / bandwidth, flops / rate)``
(the roofline: whichever bound is higher), its work counted from the frame's shapes
(:func:`stage_work`) as the least any implementation must do:

* radiometric: every detector pixel read once with its maps and written once: raw uint16
  (2 B), bias, dark rate and flat float32 (12 B), the bad-pixel mask (1 B), the signal float32
  (4 B) and its validity (1 B): 20 B a pixel; a push-broom block also makes its cube there
  (one read and one write of float32, 8 B a pixel).
* reconstruct (ImSPOC): one product of the (bands x thumbnails) operator with each pixel's
  thumbnail values, ``2 B T N`` FLOPs, the thumbnails read and the cube written; the
  regularisation's choice is not counted (it is kept while the scene allows).
* reflectance (onboard/stages/reflectance.py): the cube read and written once (8 B a voxel),
  what a conversion to radiance or a field reflectance needs; the default "lab" method hands
  the cube on untouched, so its measured time is below this floor.
* denoise (classical): the two ``B x B`` covariances over the ``N`` pixels (noise and signal),
  ``4 B^2 N`` FLOPs, the cube read twice and written once; the rank-dependent projection and
  the eigen-images' wavelet are not counted. A learned denoiser adds its network.
* a network (learned denoise, classify): ``2 x parameters x pixels x batch`` FLOPs, exact for
  the bundle's fully convolutional, stride-1 models (every weight used once per output pixel)
  and its input read once.
* screen: the cube read once, the mask written.
* package: the cube read (and written as float16), each product's bytes written; the
  encoders' own work (deflate, PNG filters) is not in a FLOP count, so this floor is far below
  what an entropy coder can reach (libdeflate, the products' deflate, takes the float16 cubes
  at about 80 MB/s on one core of a 2023 Xeon, 30 times under this floor's bandwidth:
  bench/bench_package.py).

A floor is a lower bound, not a forecast: a stage at 1x its floor is done.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from onboard.formats.types import Cube
from onboard.runtime.pipeline import FrameResult

#: Bytes a pixel of the radiometric correction touches at least (see the module docstring).
RADIOMETRIC_BYTES_PER_PIXEL = 20
#: Bytes a pixel of a push-broom block's cube costs on top (transpose and scale).
PUSHBROOM_CUBE_BYTES_PER_PIXEL = 8


@dataclass(frozen=True)
class Rates:
    """This machine's measured rates, one core."""

    copy_bytes_per_s: float
    matmul_flops_per_s: float

    def describe(self) -> str:
        return (f"copy {self.copy_bytes_per_s / 1e9:.1f} GB/s, float32 matmul "
                f"{self.matmul_flops_per_s / 1e9:.0f} GFLOP/s (one thread, measured now)")


def measure_rates(repeats: int = 7) -> Rates:
    """Copy bandwidth and float32 matmul rate, best of ``repeats`` (the best is the machine's;
    the rest is other processes)."""
    src = np.ones(16 * 2**20, np.float32)  # 64 MiB, beyond any cache
    dst = np.empty_like(src)
    n = 384
    a = np.random.default_rng(0).standard_normal((n, n)).astype(np.float32)
    copy, matmul = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        np.copyto(dst, src)
        copy.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        a @ a
        matmul.append(time.perf_counter() - t0)
    return Rates(2 * src.nbytes / min(copy), 2 * n**3 / min(matmul))


@dataclass(frozen=True)
class Work:
    """What a stage must at least do: bytes moved to or from memory, floating-point operations."""

    bytes: float
    flops: float = 0.0

    def floor_s(self, rates: Rates) -> float:
        return max(self.bytes / rates.copy_bytes_per_s, self.flops / rates.matmul_flops_per_s)


@dataclass(frozen=True)
class Network:
    """A network a stage ran: its parameter count and the input's shape (batch, ..., H, W)."""

    parameters: int
    input_shape: tuple[int, ...]

    def work(self) -> Work:
        batch, pixels = self.input_shape[0], self.input_shape[-2] * self.input_shape[-1]
        return Work(4 * float(np.prod(self.input_shape)), 2.0 * self.parameters * pixels * batch)


def stage_work(result: FrameResult, detector_pixels: int, thumbnails: int | None,
               networks: Mapping[str, Sequence[Network]]) -> dict[str, Work]:
    """The least work of each stage the frame ran (``result.seconds``' keys). ``thumbnails``:
    the ImSPOC's interferometer count (None for a push-broom); ``networks``: per stage, the
    networks it ran for this frame."""
    cube: Cube | None = result.cube
    if cube is None:
        return {}
    bands, n = cube.data.shape[0], cube.data.shape[1] * cube.data.shape[2]
    voxels = bands * n
    per_pixel = RADIOMETRIC_BYTES_PER_PIXEL + (PUSHBROOM_CUBE_BYTES_PER_PIXEL if thumbnails is None else 0)
    out = {"radiometric": Work(per_pixel * detector_pixels)}
    if thumbnails is not None:
        out["reconstruct"] = Work(4 * (thumbnails + bands) * n, 2.0 * bands * thumbnails * n)
    out["reflectance"] = Work(2 * 4 * voxels)
    out["denoise"] = Work(3 * 4 * voxels, 4.0 * bands**2 * n)
    out["screen"] = Work(4 * voxels + n)
    out["classify"] = Work(4 * voxels)
    out["package"] = Work(4 * voxels + 2 * voxels + sum(len(p.payload) for p in result.products))
    for stage, nets in networks.items():
        base = out[stage] if stage == "denoise" else Work(0.0)
        for net in nets:
            w = net.work()
            base = Work(base.bytes + w.bytes, base.flops + w.flops)
        out[stage] = base
    return {s: w for s, w in out.items() if s in result.seconds}
