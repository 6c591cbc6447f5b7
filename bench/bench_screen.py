"""Cloud screening measured against truth: simulated clouds of known mask, and real cloud-free cubes.

    python bench/bench_screen.py [--frames 40] [--real-frames 4] [--json out.json]

**Simulated** (truth known): for each sensor (ImSPOC, push-broom) and cloud kind (thin, thick,
mixed; ``onboard/scene/clouds.py``), ``--frames`` frames of the held-out farmland (``[scene]
split = "test"``, seed 7) under clouds whose cover is drawn uniformly in 0-100 % per frame,
through the real pipeline (raw frames, radiometric correction, reconstruction, denoising,
screening; ``build_session`` with the runtime's defaults). Per pixel (the frame's valid
pixels): accuracy of cloud / not cloud, precision and recall of cloud, recall by the truth's
optical depth, precision and recall of cloud shadow (the truth's shadows: the direct beam
halved or less); per frame: the
decision "worth sending" (``[screen] max_cloud_share``, 0.7) against the same rule applied to
the truth mask, with its precision and recall and the decision accuracy; median time of the
screening stage (this machine, one thread). The same, thick and mixed clouds only, over the
real Jasper Ridge cube in reflectance (``onboard run --scene``'s source, real texture and
spectra under the simulated clouds).

**Real** (no clouds: every cloud pixel is false): ``onboard run --scene`` (the CLI, in a
subprocess) over the Jasper Ridge and ABU urban cubes (``../shared/data/real_cubes``) through
each sensor, scaled as ``onboard export scene`` scales them (to [0, 1]), and Jasper Ridge also
in reflectance (counts / 10 000, AVIRIS's reflectance scale; ABU urban's counts are radiance-like,
blue above red, on an assumed band grid, so it has no reflectance version); the screening read back from the residue products (``screen`` mask, header
``meta["screen"]``): false-cloud rate (cloud pixels of the valid pixels), shadow and haze
rates (dark water and roofs are flagged shadow), and frames judged not worth sending.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import click
import numpy as np

from export import real_cubes
from onboard.config import from_dict
from onboard.formats.products import ProductKind, decode_arrays
from onboard.runtime.run import products_of
from onboard.runtime.session import build_session
from onboard.scene.clouds import CLOUD as TRUE_CLOUD
from onboard.scene.clouds import SHADOW as TRUE_SHADOW
from onboard.sources.scene import write_scene
from onboard.stages.screen import CLOUD, HAZE, INVALID, SHADOW

SENSORS = ("imspoc", "pushbroom")
KINDS = ("thin", "thick", "mixed")
REAL = ("jasper", "urban")
#: Optical-depth bins of the truth's clouds for the recall by thickness.
TAU_BINS = ((1.0, 2.0), (2.0, 5.0), (5.0, 10.0), (10.0, 1e9))


def _ratio(a: int, b: int) -> float | None:
    return a / b if b else None


def simulated(sensor: str, kind: str, frames: int, max_cloud: float, scene: Path | None = None) -> dict:
    """One row of the simulated table (module docstring): clouds over the held-out farmland, or
    over the real cube ``scene``."""
    config = from_dict({"run": {"sensor": sensor, "seed": 7, **({"scene": str(scene)} if scene else {})},
                        "scene": {"split": "test", "seed": 7},
                        "clouds": {"cover": 0.0, "cover_max": 1.0, "kind": kind, "seed": 7},
                        "screen": {"max_cloud_share": max_cloud}})
    session = build_session(config)
    tp = fp = fn = tn = 0
    shadow_tp = shadow_said = shadow_true = 0
    bin_hits, bin_count = np.zeros(len(TAU_BINS)), np.zeros(len(TAU_BINS))
    frame_tp = frame_fp = frame_fn = frame_tn = 0
    seconds = []
    for _, (frame, truth) in zip(range(frames), session.source, strict=False):
        result = session.pipeline.process(frame)
        assert result.screening is not None and truth is not None and truth.clouds is not None
        mask = result.screening.mask
        valid = (mask & INVALID) == 0
        said, true = (mask & CLOUD) > 0, truth.clouds == TRUE_CLOUD
        tp += int((said & true & valid).sum())
        fp += int((said & ~true & valid).sum())
        fn += int((~said & true & valid).sum())
        tn += int((~said & ~true & valid).sum())
        said_shadow, true_shadow = (mask & SHADOW) > 0, truth.clouds == TRUE_SHADOW
        shadow_tp += int((said_shadow & true_shadow & valid).sum())
        shadow_said += int((said_shadow & valid).sum())
        shadow_true += int((true_shadow & valid).sum())
        assert truth.cloud_tau is not None
        which = np.digitize(truth.cloud_tau, [lo for lo, _ in TAU_BINS]) - 1
        for b in range(len(TAU_BINS)):
            sel = valid & true & (which == b)
            bin_hits[b] += int(said[sel].sum())
            bin_count[b] += int(sel.sum())
        truly_worth = bool(valid.any()) and float(true[valid].mean()) < max_cloud
        worth = result.screening.worth_sending
        frame_tp += worth and truly_worth
        frame_fp += worth and not truly_worth
        frame_fn += (not worth) and truly_worth
        frame_tn += (not worth) and not truly_worth
        seconds.append(result.seconds["screen"])
    return {
        "ground": scene.stem if scene else "farmland", "sensor": sensor, "kind": kind, "frames": frames, "pixels": tp + fp + fn + tn,
        "pixel_accuracy": _ratio(tp + tn, tp + fp + fn + tn), "cloud_precision": _ratio(tp, tp + fp),
        "cloud_recall": _ratio(tp, tp + fn),
        "cloud_recall_by_tau": {f"{lo:g}-{hi:g}": _ratio(int(h), int(n))
                                for (lo, hi), h, n in zip(TAU_BINS, bin_hits, bin_count, strict=True)},
        "shadow_precision": _ratio(shadow_tp, shadow_said), "shadow_recall": _ratio(shadow_tp, shadow_true),
        "frames_worth_sending_truth": frame_tp + frame_fn,
        "decision_accuracy": _ratio(frame_tp + frame_tn, frames),
        "send_precision": _ratio(frame_tp, frame_tp + frame_fp), "send_recall": _ratio(frame_tp, frame_tp + frame_fn),
        "screen_ms_median": 1000 * statistics.median(seconds),
        "cube_shape": [int(n) for n in result.denoised.data.shape] if result.denoised is not None else None,
    }


def real(scene: Path, sensor: str, frames: int, work: Path) -> dict:
    """One row of the real table: ``onboard run --scene`` in a subprocess, screening read back."""
    out = work / f"{scene.stem}-{sensor}"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "onboard", "run", "--scene", str(scene), "--sensor", sensor,
                           "--frames", str(frames), "--out", str(out), "--quiet"],
                          capture_output=True, text=True, env=env, timeout=900)
    if proc.returncode != 0:
        return {"refused": proc.stderr.strip().splitlines()[-1]}
    counts = {"valid": 0, "cloud": 0, "shadow": 0, "haze": 0}
    not_worth = 0
    residues = [p for p in products_of(out) if p.kind == ProductKind.RESIDUE]
    for p in residues:
        mask = decode_arrays(p.payload, p.kind)["screen"]
        valid = (mask & INVALID) == 0
        counts["valid"] += int(valid.sum())
        for name, bit in (("cloud", CLOUD), ("shadow", SHADOW), ("haze", HAZE)):
            counts[name] += int(((mask & bit) > 0).sum())
        not_worth += not p.meta["screen"]["worth_sending"]
    return {"frames": len(residues), "pixels": counts["valid"],
            **{f"{k}_rate": _ratio(counts[k], counts["valid"]) for k in ("cloud", "shadow", "haze")},
            "frames_not_worth_sending": not_worth}


def _real_scenes(work: Path) -> list[tuple[str, Path]]:
    """The real cubes as scene files in ``work`` (module docstring); none without the data."""
    if real_cubes.folder() is None:
        return []
    scenes = []
    for name in REAL:
        rc = real_cubes.load(name)
        scenes.append((f"{name} [0, 1]", write_scene(work / f"{name}.npz", rc.data.transpose(1, 2, 0),
                                                     rc.wavelengths_nm)))
        if name == "jasper":
            from scipy.io import loadmat  # ground side: the bench reads the .mat once

            counts = loadmat(str(real_cubes.folder() / real_cubes.FILES[name]))["Y"]
            refl = (rc.data * (counts.max() - counts.min()) + counts.min()) / 10_000
            scenes.append((f"{name} reflectance", write_scene(work / "jasper-reflectance.npz",
                                                               refl.transpose(1, 2, 0), rc.wavelengths_nm)))
    return scenes


def _pct(v: float | None) -> str:
    return "n/a" if v is None else f"{100 * v:.1f} %"


@click.command(help=__doc__)
@click.option("--frames", default=40, show_default=True, help="simulated frames per sensor and cloud kind")
@click.option("--real-frames", default=4, show_default=True, help="frames per real cube and sensor")
@click.option("--max-cloud", default=0.7, show_default=True, help="the rule: worth sending below this cloud share")
@click.option("--json", "json_path", type=click.Path(path_type=Path), help="write the rows here")
def main(frames: int, real_frames: int, max_cloud: float, json_path: Path | None) -> None:
    rows = [simulated(s, k, frames, max_cloud) for s in SENSORS for k in KINDS]
    real_rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        scenes = _real_scenes(work)
        rows += [simulated(s, k, frames, max_cloud, path) for label, path in scenes if label == "jasper reflectance"
                 for s in SENSORS for k in ("thick", "mixed")]
        for label, scene in scenes:
            for sensor in SENSORS:
                real_rows.append({"cube": label, "sensor": sensor, **real(scene, sensor, real_frames, work)})
    print(f"Simulated clouds (cover 0-100 % per frame), rule: worth sending < {max_cloud:.0%} cloud")
    print("| ground | sensor | clouds | frames | pixel accuracy | cloud precision | cloud recall | "
          "frames worth sending (truth) | decision accuracy | send precision | send recall | screen ms |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['ground']} | {r['sensor']} | {r['kind']} | {r['frames']} | {_pct(r['pixel_accuracy'])} | "
              f"{_pct(r['cloud_precision'])} | {_pct(r['cloud_recall'])} | {r['frames_worth_sending_truth']} | "
              f"{_pct(r['decision_accuracy'])} | {_pct(r['send_precision'])} | {_pct(r['send_recall'])} | "
              f"{r['screen_ms_median']:.2f} |")
    print("\nCloud recall by optical depth, and cloud shadows (darker than half the frame's bright ground)")
    print("| ground | sensor | clouds | " + " | ".join(f"recall tau {k}" for k in rows[0]["cloud_recall_by_tau"])
          + " | shadow precision | shadow recall |")
    print("|---|---|---|" + "---|" * (len(TAU_BINS) + 2))
    for r in rows:
        print(f"| {r['ground']} | {r['sensor']} | {r['kind']} | " + " | ".join(_pct(v) for v in r["cloud_recall_by_tau"].values())
              + f" | {_pct(r['shadow_precision'])} | {_pct(r['shadow_recall'])} |")
    if real_rows:
        print("\nReal cloud-free cubes (onboard run --scene): every cloud pixel is a false cloud")
        print("| cube | sensor | frames | pixels | false cloud | shadow | haze | frames not worth sending |")
        print("|---|---|---|---|---|---|---|---|")
        for r in real_rows:
            if "refused" in r:
                print(f"| {r['cube']} | {r['sensor']} | refused: {r['refused']} | | | | | |")
                continue
            print(f"| {r['cube']} | {r['sensor']} | {r['frames']} | {r['pixels']} | {_pct(r['cloud_rate'])} | "
                  f"{_pct(r['shadow_rate'])} | {_pct(r['haze_rate'])} | {r['frames_not_worth_sending']} |")
    else:
        print(f"no shared/data/real_cubes found (set {real_cubes.ENV}): real cubes skipped")
    if json_path:
        json_path.write_text(json.dumps({"simulated": rows, "real": real_rows}, indent=2))


if __name__ == "__main__":
    main()
