"""The whole pipeline end to end on real scenes: ``onboard run --scene`` on each cube of
``../shared/data/real_cubes`` through each simulated sensor.

    python bench/bench_scene.py [--frames 4] [--json out.json]

Each cube is written as a scene file (``onboard export scene``: scaled to [0, 1] as the
denoiser's benchmarks scale it) and flown by the real CLI in a subprocess with the runtime's
defaults (``[denoise] method = "auto"``, the bundle's residue classifier), seed 0. The
summary's accuracy is against the scene as the instrument sees it (the cube interpolated onto
the instrument's bands, area-averaged to its swath, averaged over each output band): PSNR
(peak 1) and spectral angle of the reconstructed (the push-broom's: radiometrically
corrected) and denoised cubes. Also: residue products written, median frame time (this
machine, one thread), and the refusal where the cube does not cover the sensor's bands.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import click

from export import real_cubes
from onboard.formats.products import ProductKind
from onboard.runtime.run import products_of
from onboard.sources.scene import write_scene

SENSORS = ("imspoc", "pushbroom")


def fly(scene: Path, sensor: str, frames: int, work: Path) -> dict:
    """One run's row: its summary's numbers, or the refusal's first line."""
    out, summary = work / f"{scene.stem}-{sensor}", work / f"{scene.stem}-{sensor}.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "onboard", "run", "--scene", str(scene), "--sensor", sensor,
                           "--frames", str(frames), "--out", str(out), "--json", str(summary), "--quiet"],
                          capture_output=True, text=True, env=env, timeout=900)
    if proc.returncode != 0:
        return {"refused": proc.stderr.strip().splitlines()[-1]}
    s = json.loads(summary.read_text())
    acc = s["accuracy"]
    return {
        "frames": s["frames"], "cube_shape": s["cube_shape"],
        "psnr_reconstructed_db": acc["psnr_denoised_db"] - acc["psnr_gain_db"],
        "psnr_denoised_db": acc["psnr_denoised_db"],
        "sam_reconstructed_deg": acc["sam_reconstructed_deg"], "sam_denoised_deg": acc["sam_denoised_deg"],
        "residue_products": sum(p.kind == ProductKind.RESIDUE for p in products_of(out)),
        "products_written": s["products_written"], "median_frame_s": s["median_frame_s"],
        "median_latency_s": s["median_latency_s"],
    }


@click.command(help=__doc__.split("\n\n")[0])
@click.option("--frames", type=int, default=4, show_default=True, help="frames flown per cube and sensor")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path))
def main(frames: int, json_path: Path | None) -> None:
    if real_cubes.folder() is None:
        raise click.ClickException(f"no shared/data/real_cubes found; set {real_cubes.ENV}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for name in real_cubes.FILES:
            rc = real_cubes.load(name)
            scene = write_scene(work / f"{name}.npz", rc.data.transpose(1, 2, 0), rc.wavelengths_nm)
            for sensor in SENSORS:
                rows.append({"cube": name, "sensor": sensor, **fly(scene, sensor, frames, work)})
    print("| cube | sensor | frames | PSNR recon / denoised dB | SAM recon / denoised deg | residue products | frame ms |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        if "refused" in r:
            print(f"| {r['cube']} | {r['sensor']} | refused: {r['refused']} | | | | |")
            continue
        print(f"| {r['cube']} | {r['sensor']} | {r['frames']} | {r['psnr_reconstructed_db']:.2f} / "
              f"{r['psnr_denoised_db']:.2f} | {r['sam_reconstructed_deg']:.2f} / {r['sam_denoised_deg']:.2f} | "
              f"{r['residue_products']} | {1000 * r['median_frame_s']:.0f} |")
    if json_path:
        json_path.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
