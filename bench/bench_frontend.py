"""Radiometric correction and the choice of the reconstruction weight, against a baseline checkout.

    git worktree add --detach /tmp/base <commit>     # the code to compare with
    python bench/bench_frontend.py --baseline /tmp/base --repeats 30 --json out.json

Times, in one process and interleaved, the baseline's ``stages/radiometric.py`` (loaded from
``--baseline``) and this tree's on the same inputs: one default simulated ImSPOC frame
(``correct``), and one push-broom block of 64 lines of the simulated 81-band, 64-pixel
instrument (the baseline corrects it line by line, as its pipeline did; this tree with
``correct_lines``). The outputs are compared bit for bit. The reconstruction weight is timed on
30 frames of one simulated scene (new noise each frame) with the GCV grid scored every frame
(``reuse_frames=0``, the baseline's rule, run by this tree's code) and with the previous weight
kept while the scene allows; the weights chosen are compared. The thumbnail extraction both
reconstructions run twice a frame is timed apart, the baseline's ``physics/imspoc.py`` against
this tree's. CPU time (``time.process_time``), median over
``--repeats``; BLAS runs single-threaded. Prints a table; ``--json`` writes it.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click


def _load(path: Path, name: str) -> Any:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _cpu_ms(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    import numpy as np

    times, out = [], None
    for _ in range(repeats):
        c0 = time.process_time()
        out = fn()
        times.append((time.process_time() - c0) * 1e3)
    return float(np.median(times)), out


@click.command(help=__doc__.splitlines()[0])
@click.option("--baseline", type=click.Path(file_okay=False, exists=True), required=True,
              help="a checkout of the code to compare with")
@click.option("--repeats", type=int, default=30, show_default=True)
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="also write the results here")
def main(baseline: str, repeats: int, json_path: str | None) -> None:
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = "1"
    import numpy as np

    from onboard.physics.imspoc import default_instrument
    from onboard.physics.pushbroom import finch_like
    from onboard.sources.simulated import calibrate_imspoc, calibrate_pushbroom
    from onboard.stages import radiometric
    from onboard.stages.reconstruct import Reconstructor

    old = _load(Path(baseline) / "onboard/stages/radiometric.py", "baseline_radiometric")
    rows: list[dict[str, Any]] = []

    def row(stage: str, data: str, old_fn: Callable[[], Any], new_fn: Callable[[], Any],
            same: Callable[[Any, Any], bool]) -> None:
        old_ms, new_ms = [], []
        for _ in range(3):  # interleave: load drifts on a shared machine
            t, a = _cpu_ms(old_fn, repeats)
            old_ms.append(t)
            t, b = _cpu_ms(new_fn, repeats)
            new_ms.append(t)
        o, n = float(np.median(old_ms)), float(np.median(new_ms))
        rows.append({"stage": stage, "data": data, "old_ms": o, "new_ms": n, "ratio": o / n,
                     "identical": bool(same(a, b))})

    inst = default_instrument(seed=0)
    cal = calibrate_imspoc(inst)
    grid = inst.scene_grid()
    rng = np.random.default_rng(0)
    refl = np.full((len(grid), *inst.thumb_shape), 0.3)
    frame = inst.frame(refl, grid, rng)
    sat = inst.detector_spec.max_dn - 1
    row("radiometric", f"ImSPOC {frame.pixels.shape}",
        lambda: old.correct(frame, cal.radiometric, sat), lambda: radiometric.correct(frame, cal.radiometric, sat),
        lambda a, b: np.array_equal(a.pixels, b.pixels) and np.array_equal(a.valid, b.valid))

    pb = finch_like(cross_track=64, seed=2)
    pcal = calibrate_pushbroom(pb)
    psat = pb.detector_spec.max_dn - 1
    lines = [pb.line(np.full((81, 64), 0.3), rng) for _ in range(64)]

    def per_line() -> tuple[Any, Any]:
        out = [old.correct(ln, pcal.radiometric, psat) for ln in lines]
        return np.stack([c.pixels for c in out]), np.stack([c.valid for c in out])

    row("radiometric", "push-broom 64 lines x (64, 81)", per_line,
        lambda: radiometric.correct_lines(lines, pcal.radiometric, psat),
        lambda a, b: np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]))

    frames = [radiometric.correct(inst.frame(refl * (1 + 0.3 * np.sin(grid / 40))[:, None, None], grid, rng),
                                  cal.radiometric, sat) for _ in range(30)]

    def weights(reuse: int) -> Callable[[], list[float]]:
        def run() -> list[float]:
            rec = Reconstructor(cal, reuse_frames=reuse)
            return [rec.reconstruct(f)[1] for f in frames]
        return run

    row("reconstruct (30 frames)", "ImSPOC, one scene, new noise", weights(0), weights(Reconstructor.reuse_frames),
        lambda a, b: a == b)
    old_layout = _load(Path(baseline) / "onboard/physics/imspoc.py", "baseline_imspoc").ThumbnailLayout(
        cal.layout.corners, cal.layout.thumb_shape, cal.layout.detector_shape)
    row("thumbnail extract (x2)", "ImSPOC pixels and mask",
        lambda: (old_layout.extract(frames[0].pixels), old_layout.extract(frames[0].valid)),
        lambda: (cal.layout.extract(frames[0].pixels), cal.layout.extract(frames[0].valid)),
        lambda a, b: all(np.array_equal(x, y) for x, y in zip(a, b, strict=True)))
    for r in rows:
        if r["stage"].startswith("reconstruct"):
            r["old_ms"] /= len(frames)
            r["new_ms"] /= len(frames)
            r["stage"] = "reconstruct per frame"

    print(f"{'stage':<24} {'data':<32} {'old ms':>8} {'new ms':>8} {'old/new':>8}  identical")
    for r in rows:
        print(f"{r['stage']:<24} {r['data']:<32} {r['old_ms']:8.2f} {r['new_ms']:8.2f} {r['ratio']:8.1f}  {r['identical']}")
    print(f"load average {os.getloadavg()[0]:.1f}, CPU ms median of {repeats} x 3 interleaved rounds")
    if json_path:
        Path(json_path).write_text(json.dumps({"repeats": repeats, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
