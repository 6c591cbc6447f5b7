"""Time the classical denoising and residue stages on cubes of a few sizes; print a table.

    python bench/bench_stages.py                       # default sizes, table
    python bench/bench_stages.py --sizes 30x64x64,40x128x128 --repeats 20 --json out.json

Each cube is a tile of the farmland simulator (eval split) on a band grid over 450-1000 nm,
with band-dependent Gaussian noise (sigma 0.005-0.05), 2 % gain stripes per column and band
and 0.5 % dead pixels; residue unmixing uses the nominal library (dry and wet soil, mean
residue and canopy).
The same cube is run ``--repeats`` times; the table gives the median and minimum wall time
and the median CPU time of each stage (CPU time is what to trust on a shared machine; the
header shows the load) and, since the truth is known, what the stages achieve (PSNR in and out,
residue-fraction MAE after denoising). BLAS runs single-threaded by default (``--threads``),
as the flight loop runs it: on a shared 2-core machine a multi-threaded BLAS spends more
time waking threads than working on matrices this small.
"""

from __future__ import annotations

import json
import os
import time

import click


@click.command(help=__doc__.splitlines()[0])
@click.option("--sizes", default="30x64x64,24x48x48,40x128x128,81x64x128", show_default=True,
              help="comma-separated BANDSxROWSxCOLS")
@click.option("--repeats", type=int, default=10, show_default=True)
@click.option("--threads", type=int, default=1, show_default=True,
              help="BLAS threads (set before numpy loads)")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--json", "json_path", type=click.Path(dir_okay=False),
              help="also write the results here")
def main(sizes: str, repeats: int, threads: int, seed: int, json_path: str | None) -> None:
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(threads)
    import numpy as np  # after the thread settings, which BLAS reads once at load

    from onboard.formats.types import ENDMEMBERS, Cube
    from onboard.scene.farmland import FarmlandScene, nominal_endmembers
    from onboard.stages.denoise import SubspaceDenoiseConfig, denoise_subspace_report
    from onboard.stages.residue import UnmixConfig, unmix_fcls

    scene = FarmlandScene.generate(size=256, seed=seed, split="eval")

    def field(bands: int, rows: int, cols: int, rng: np.random.Generator):
        wl = np.linspace(450.0, 1000.0, bands)
        tile = scene.tile(wl, int(rng.integers(scene.size)), int(rng.integers(scene.size)), (rows, cols))
        clean = tile.reflectance.astype(np.float64)
        sigma = np.linspace(0.005, 0.05, bands)[rng.permutation(bands)]
        gain = 1 + 0.02 * rng.standard_normal((bands, cols))
        noisy = (clean + sigma[:, None, None] * rng.standard_normal(clean.shape)) * gain[:, None, :]
        valid = rng.uniform(size=(rows, cols)) > 0.005
        noisy[:, ~valid] = 0.0
        return Cube(noisy.astype(np.float32), wl, valid), clean, tile.fractions, nominal_endmembers(wl)

    def psnr(x: np.ndarray, ref: np.ndarray) -> float:
        return float(10 * np.log10(ref.max() ** 2 / np.mean((x - ref) ** 2)))

    rng = np.random.default_rng(seed)
    results = []
    for size in sizes.split(","):
        bands, rows, cols = (int(v) for v in size.lower().split("x"))
        cube, clean, truth, lib = field(bands, rows, cols, rng)
        config = SubspaceDenoiseConfig()
        times: dict[str, list[float]] = {"denoise": [], "residue": []}
        cpu: dict[str, list[float]] = {"denoise": [], "residue": []}
        for _ in range(repeats):
            t0, c0 = time.perf_counter(), time.process_time()
            denoised, report = denoise_subspace_report(cube, config)
            t1, c1 = time.perf_counter(), time.process_time()
            residue = unmix_fcls(denoised, lib, UnmixConfig())
            t2, c2 = time.perf_counter(), time.process_time()
            times["denoise"].append(t1 - t0)
            times["residue"].append(t2 - t1)
            cpu["denoise"].append(c1 - c0)
            cpu["residue"].append(c2 - c1)
        v = cube.valid
        r = ENDMEMBERS.index("residue")
        results.append({
            "size": size, "bands": bands, "rows": rows, "cols": cols,
            **{f"{k}_ms_median": 1e3 * float(np.median(t)) for k, t in times.items()},
            **{f"{k}_ms_min": 1e3 * float(np.min(t)) for k, t in times.items()},
            **{f"{k}_cpu_ms_median": 1e3 * float(np.median(t)) for k, t in cpu.items()},
            "rank": report.rank,
            "psnr_in_db": psnr(cube.data[:, v], clean[:, v]),
            "psnr_out_db": psnr(denoised.data[:, v], clean[:, v]),
            "residue_mae": float(np.nanmean(np.abs(residue.fractions[r] - truth[r])[v])),
            "fcls_iterations": residue.extra["iterations"],
        })

    head = (f"{'bands x rows x cols':>20} {'denoise ms':>11} {'(min)':>7} {'(cpu)':>7} "
            f"{'residue ms':>11} {'(min)':>7} {'(cpu)':>7} {'rank':>5} {'PSNR in':>8} {'out':>6} "
            f"{'res. MAE':>9}")
    print(f"classical stages, {repeats} runs each (median wall, min wall, median CPU), "
          f"BLAS threads {threads}, numpy {np.__version__}, load {os.getloadavg()[0]:.1f}")
    print(head)
    for row in results:
        print(f"{row['size']:>20} {row['denoise_ms_median']:11.1f} {row['denoise_ms_min']:7.1f} "
              f"{row['denoise_cpu_ms_median']:7.1f} {row['residue_ms_median']:11.1f} "
              f"{row['residue_ms_min']:7.1f} {row['residue_cpu_ms_median']:7.1f} {row['rank']:5d} "
              f"{row['psnr_in_db']:8.1f} {row['psnr_out_db']:6.1f} {row['residue_mae']:9.3f}")
    if json_path:
        with open(json_path, "w") as fh:
            json.dump({"threads": threads, "repeats": repeats, "numpy": np.__version__,
                       "load": os.getloadavg()[0], "results": results}, fh, indent=2)


if __name__ == "__main__":
    main()
