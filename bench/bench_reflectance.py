"""Reflectance in the field against the simulator's truth, per method, under changing light.

    python bench/bench_reflectance.py [--frames 30] [--zeniths 20,40,60] [--json out.json]

The simulated default ImSPOC (``onboard run``'s instrument and its simulated ground calibration,
with its absolute radiance gain) flies over the held-out farmland (``[scene] split = "test"``,
seed 7) under a SPECTRL2 clear sky (onboard/scene/sky.py; turbidity 0.1, water 1.4 cm) at
local noon on the March equinox at latitudes 20, 40 and 60 deg (sun zenith 20, 40, 60), one
frame every 0.5 s:

* **drone** (120 m): the light changes by 20 % steps (factor 1.0 from the start, 0.8 from 3 s,
  1.0 from 6 s, 1.2 from 9 s, 0.8 from 12 s) and a cloud of optical depth 2 crosses the sun from
  13.5 to 15 s; the body sways 5 deg in roll and pitch. Frame 0 holds two reference panels
  (reflectance 0.05 and 0.5, flat, 12 x 12 pixels) and is left out of the scores; an irradiance
  sensor (400-1050 nm at 5 nm, 0.5 % noise) reads at 5 Hz through the file source.
  Methods: ``lab`` (what the runtime did before: the white reference, no correction), ``panel``,
  ``irradiance``, ``panel+irradiance`` (onboard/stages/reflectance.py); truth: the surface
  reflectance;
* **satellite** (nadir, TOA radiance: SPECTRL2's transmittances and a single-scattering path
  radiance): ``lab`` and ``surface-dos`` against the surface reflectance, ``toa`` against the
  sky's own TOA reflectance (pi L / (E0 mu) with SPECTRL2's extraterrestrial spectrum);
* **floor**: the same frames under the lab lamp, ``lab`` method: what reconstruction and noise
  alone cost.

Scores: absolute reflectance error of every valid pixel of the reflectance stage's output (before
denoising) per band, median and p95, over all frames and zeniths; per zenith, all bands. Then the
residue (the runtime's own denoiser and residue stage, ``build_session``'s) on each method's
output: tillage accuracy and residue-fraction MAE against the truth's, corrected against not.
"""

from __future__ import annotations

import calendar
import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import click
import numpy as np

from onboard.config import from_dict
from onboard.formats.types import INVALID_CLASS, tillage_class
from onboard.runtime.pipeline import Pipeline
from onboard.runtime.session import build_session
from onboard.scene.farmland import FarmlandScene
from onboard.scene.library import load as load_library
from onboard.scene.sky import Flight, PanelPlacement, Sky
from onboard.sources.base import SimulatedImspoc, band_average
from onboard.sources.irradiance import (
    IrradianceLog,
    IrradianceReading,
    read_irradiance_file,
    write_irradiance_file,
)
from onboard.stages.reflectance import Panel, ReflectanceSettings, ReflectanceStage

STEPS = ((0.0, 1.0), (3.0, 0.8), (6.0, 1.0), (9.0, 1.2), (12.0, 0.8))
CLOUDS = ((13.5, 15.0, 2.0),)
PANELS = (("dark", 0.05, (8, 8, 12, 12)), ("grey", 0.5, (8, 34, 12, 12)))
DRONE_METHODS = ("lab", "panel", "irradiance", "panel+irradiance")
SATELLITE_METHODS = ("lab", "toa", "surface-dos")
SENSOR_NM = np.arange(400.0, 1051.0, 5.0)


@dataclass
class Score:
    """Absolute errors per band, pooled; residue results."""

    errors: list[np.ndarray] = field(default_factory=list)  # each (B, pixels)
    tillage_right: int = 0
    tillage_total: int = 0
    residue_abs: list[float] = field(default_factory=list)
    flags: int = 0

    def add(self, est: np.ndarray, truth: np.ndarray, valid: np.ndarray) -> None:
        self.errors.append(np.abs(est[:, valid] - truth[:, valid]))

    def table(self) -> tuple[np.ndarray, np.ndarray]:
        e = np.concatenate(self.errors, axis=1)
        return np.median(e, axis=1), np.percentile(e, 95, axis=1)


def frames(session, flight: Flight | None, n: int, start: float):
    """(raw frame, truth) of ``n`` frames over the test farmland, under ``flight`` (None: lab lamp)."""
    inst = session.source.instrument
    scene = FarmlandScene.generate(size=256, seed=7, split="test", library=load_library())
    seen: list[np.ndarray] = []

    def tiles():
        for tile in scene.track(inst.scene_grid(), inst.thumb_shape):
            seen.append(tile.reflectance)
            yield tile

    src = SimulatedImspoc(inst, tiles(), session.pipeline.calibration.wavelengths_nm, seed=7, start_time=start,
                          frame_period_s=0.5, flight=flight)
    out = []
    for i, (frame, truth) in enumerate(src):
        if i >= n:
            break
        truth.fine = seen[i]  # the tile on the scene grid, for a truth computed from it (TOA)
        out.append((frame, truth))
    return out


def run_method(session, stage: ReflectanceStage, items, truth_of, score: Score, residue: bool) -> None:
    p = session.pipeline
    pipe = Pipeline(p.calibration, p.denoise, p.classify, p.saturation_dn, p.options, screen_rule=p.screen_rule,
                    reflectance=stage)
    for frame, truth in items:
        result = pipe.process(frame)
        if frame.counter == 0 and stage.settings.panel_frames:
            continue  # the panel frame is not scored
        score.flags += bool(result.flags)
        cube = result.cube
        if cube is None or cube.units != "reflectance":
            continue
        score.add(cube.data, truth_of(frame, truth), cube.valid)
        if residue and result.residue is not None and truth.fractions is not None:
            ok = result.residue.tillage != INVALID_CLASS
            score.tillage_right += int((result.residue.tillage[ok] == tillage_class(truth.fractions[0])[ok]).sum())
            score.tillage_total += int(ok.sum())
            score.residue_abs.append(float(np.abs(result.residue.fractions[0][ok] - truth.fractions[0][ok]).mean()))


@click.command(help=__doc__)
@click.option("--frames", "n", default=30, show_default=True, help="frames per flight (one flight per zenith)")
@click.option("--zeniths", default="20,40,60", show_default=True, help="sun zenith angles (deg)")
@click.option("--residue/--no-residue", default=True, show_default=True, help="also score the residue stage")
@click.option("--json", "json_path", type=click.Path(path_type=Path), help="write the results here")
def main(n: int, zeniths: str, residue: bool, json_path: Path | None) -> None:
    session = build_session(from_dict({"run": {"sensor": "imspoc", "threads": 1}}))
    cal = session.pipeline.calibration
    out_nm = cal.wavelengths_nm
    grid = session.source.instrument.scene_grid()
    scores: dict[str, dict[str, Score]] = {}
    per_zenith: dict[str, dict[str, dict[int, Score]]] = {}
    panels = [Panel(name, grid, np.full(grid.size, r), region) for name, r, region in PANELS]
    tmp = Path(tempfile.mkdtemp(prefix="bench-reflectance-"))
    for zen in (int(z) for z in zeniths.split(",")):
        start = float(calendar.timegm((2026, 3, 20, 12, 7, 0)))
        sky = Sky(float(zen), 0.0, start, steps=STEPS, clouds=CLOUDS)
        # -- drone
        placed = tuple(PanelPlacement(np.full(grid.size, r), region) for _, r, region in PANELS)
        drone = Flight(sky, panels=placed, panel_frames=(0,))
        rng = np.random.default_rng(zen)
        log = IrradianceLog(SENSOR_NM)
        for t, e, att in drone.irradiance_readings(start - 2.0, start + 0.5 * n + 2.0, 5.0, SENSOR_NM, rng):
            log.add(IrradianceReading(t, e, att))
        log = read_irradiance_file(write_irradiance_file(tmp / f"irradiance-{zen}.npz", log))
        items = frames(session, drone, n, start)
        for method in DRONE_METHODS:
            settings = ReflectanceSettings(method, panels, (0,))
            for key in (f"drone {method}",):
                s = scores.setdefault(key, {}).setdefault("all", Score())
                z = per_zenith.setdefault(key, {}).setdefault("z", {}).setdefault(zen, Score())
                before = len(s.errors)
                run_method(session, ReflectanceStage(cal, settings, log), items, lambda f, t: t.reflectance, s,
                           residue)
                z.errors.extend(s.errors[before:])
        # -- satellite
        sat = Flight(sky, platform="satellite")
        items = frames(session, sat, n, start)

        def toa_truth(frame, truth, sky=sky):
            rad = sky.toa_radiance(truth.fine, grid, frame.timestamp)
            return band_average(sky.toa_reflectance(rad, frame.timestamp, grid), grid, out_nm)

        for method in SATELLITE_METHODS:
            key = f"satellite {method}"
            s = scores.setdefault(key, {}).setdefault("all", Score())
            z = per_zenith.setdefault(key, {}).setdefault("z", {}).setdefault(zen, Score())
            before = len(s.errors)
            truth_of = toa_truth if method == "toa" else (lambda f, t: t.reflectance)
            run_method(session, ReflectanceStage(cal, ReflectanceSettings(method)), items, truth_of, s,
                       residue and method != "toa")
            z.errors.extend(s.errors[before:])
    # -- floor: the lab lamp
    start = float(calendar.timegm((2026, 3, 20, 12, 7, 0)))
    s = scores.setdefault("floor (lab lamp) lab", {}).setdefault("all", Score())
    run_method(session, ReflectanceStage(cal, ReflectanceSettings("lab")), frames(session, None, n, start),
               lambda f, t: t.reflectance, s, residue)
    report(scores, per_zenith, out_nm, json_path)


def report(scores, per_zenith, out_nm, json_path: Path | None) -> None:
    names = list(scores)
    tables = {k: scores[k]["all"].table() for k in names}
    print("absolute reflectance error per band, median / p95 over all frames and zeniths")
    print(f"{'band nm':>8} " + " ".join(f"{k:>22}" for k in names))
    for b, nm in enumerate(out_nm):
        print(f"{nm:8.1f} " + " ".join(f"{tables[k][0][b]:10.4f} /{tables[k][1][b]:9.4f}" for k in names))
    print(f"{'all':>8} " + " ".join(
        f"{float(np.median(np.concatenate(scores[k]['all'].errors, axis=1))):10.4f} /"
        f"{float(np.percentile(np.concatenate(scores[k]['all'].errors, axis=1), 95)):9.4f}" for k in names))
    print("\nper sun zenith, all bands: median / p95")
    for k, v in per_zenith.items():
        cells = []
        for zen, sc in sorted(v["z"].items()):
            e = np.concatenate(sc.errors, axis=1)
            cells.append(f"{zen:2d} deg {np.median(e):.4f} / {np.percentile(e, 95):.4f}")
        print(f"{k:>26}: " + "; ".join(cells))
    print("\nresidue on each method's output (denoised, the runtime's residue stage)")
    print(f"{'method':>26} {'tillage acc':>12} {'residue MAE':>12} {'frames flagged':>15}")
    rows = {}
    for k in names:
        s = scores[k]["all"]
        acc = s.tillage_right / s.tillage_total if s.tillage_total else None
        mae = float(np.mean(s.residue_abs)) if s.residue_abs else None
        rows[k] = {"tillage_accuracy": acc, "residue_mae": mae, "frames_flagged": s.flags,
                   "median_per_band": tables[k][0].round(5).tolist(), "p95_per_band": tables[k][1].round(5).tolist(),
                   "per_zenith": {str(z): {"median": float(np.median(np.concatenate(sc.errors, axis=1))),
                                           "p95": float(np.percentile(np.concatenate(sc.errors, axis=1), 95))}
                                  for z, sc in per_zenith.get(k, {}).get("z", {}).items()}}
        print(f"{k:>26} {'-' if acc is None else f'{100 * acc:.1f} %':>12} "
              f"{'-' if mae is None else f'{mae:.3f}':>12} {s.flags:>15}")
    if json_path:
        json_path.write_text(json.dumps({"wavelengths_nm": [float(x) for x in out_nm], "methods": rows,
                                         "steps": STEPS, "clouds": CLOUDS}, indent=2))


if __name__ == "__main__":
    main()
