"""Frames in flight (``[run] workers``): the later stages of successive frames run on several
threads at once, results come out in frame order, a stop finishes the frames in flight, and
the products are byte-identical to one frame at a time for the same seed (all but the
acquisition time in their headers, which is the clock's: it differs between any two runs)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from conftest import smooth_reflectance
from test_loop import _classify  # noqa: I001  (a sibling test module, after ours)

from onboard.config import ConfigError, load
from onboard.formats.products import Product, ProductKind
from onboard.runtime.loop import FrameLoop
from onboard.runtime.pipeline import Pipeline


@pytest.fixture(scope="module")
def frames(imspoc):
    grid = imspoc.scene_grid()
    refl = smooth_reflectance(grid, imspoc.thumb_shape)
    rng = np.random.default_rng(0)
    return [(imspoc.frame(refl, grid, rng, counter=i), i) for i in range(6)]


def test_two_frames_are_denoised_at_the_same_time(imspoc_calibration, frames) -> None:
    """Each denoising waits at a barrier for a second one: only frames in flight together
    get past it (one frame at a time, the barrier breaks)."""
    barrier = threading.Barrier(2, timeout=120)
    threads = set()

    def denoise(cube):
        threads.add(threading.current_thread().name)
        barrier.wait()
        return cube

    loop = FrameLoop(Pipeline(imspoc_calibration, denoise, _classify, saturation_dn=4094),
                     deadline_s=1e3, workers=2)
    out = list(loop.run(iter(frames[:4])))
    assert [r.counter for r, _ in out] == [0, 1, 2, 3]
    assert [truth for _, truth in out] == [0, 1, 2, 3]  # each result with its own frame's truth
    assert len(threads) == 2 and threading.main_thread().name not in threads
    assert loop.stats.frames == 4


def test_a_stop_finishes_the_frames_in_flight_in_order(imspoc_calibration, frames) -> None:
    def denoise(cube):
        if cube.counter == 1:
            os.kill(os.getpid(), signal.SIGTERM)
        return cube

    loop = FrameLoop(Pipeline(imspoc_calibration, denoise, _classify, saturation_dn=4094),
                     deadline_s=1e3, workers=3)
    with loop.signals():
        out = [r for r, _ in loop.run(iter(frames))]
    counters = [r.counter for r in out]
    assert counters == list(range(len(counters))) and 2 <= len(counters) <= 1 + 3
    assert all(ProductKind.RESIDUE in [p.kind for p in r.products] for r in out)
    assert loop.stats.stopped_by_signal == "SIGTERM"


def _run(tmp_path: Path, sensor: str, workers: int) -> tuple[dict[str, bytes], list[dict]]:
    out = tmp_path / f"{sensor}{workers}"
    config = tmp_path / f"{sensor}{workers}.toml"
    # health products come by the wall clock (every health_period_s): a slow run would make one more
    config.write_text(f"[run]\nworkers = {workers}\ndeadline_s = 1000.0\nhealth_period_s = 1e6\n")
    done = subprocess.run([sys.executable, "-m", "onboard", "run", "--config", str(config), "--sensor", sensor,
                           "--frames", "5", "--seed", "7", "--out", str(out), "--quiet"],
                          capture_output=True, text=True, timeout=600, env={**os.environ, "PYTHONPATH": os.getcwd()})
    assert done.returncode == 0, done.stderr
    products = {p.name: replace(Product.from_bytes(p.read_bytes()), created_utc=0.0).to_bytes()
                for p in sorted((out / "products").glob("*.obp"))}
    manifests = [json.loads(p.read_text()) for p in sorted((out / "frames").glob("*.json"))]
    for m in manifests:
        m.pop("seconds")  # wall times differ from run to run
        for entry in m["products"]:
            entry.pop("bytes")  # the header's time, written as text, may differ in length
    return products, manifests


@pytest.mark.parametrize("sensor", ["imspoc", "pushbroom"])
def test_products_are_byte_identical_to_one_frame_at_a_time(tmp_path: Path, sensor: str) -> None:
    one, one_manifests = _run(tmp_path, sensor, 1)
    three, three_manifests = _run(tmp_path, sensor, 3)
    assert len(one) >= 15 and list(one) == list(three)
    assert [n for n in one if one[n] != three[n]] == []
    assert one_manifests == three_manifests


@pytest.mark.parametrize("workers", [0, 65])
def test_workers_out_of_range_is_a_clear_config_error(tmp_path: Path, workers: int) -> None:
    path = tmp_path / "m.toml"
    path.write_text(f"[run]\nworkers = {workers}\n")
    with pytest.raises(ConfigError, match=r"\[run\] workers: expected 1-64"):
        load(path)
