"""The frame loop's deadline logic: degrade in order, recover, never drop the residue product."""

import os
import signal
import time

import numpy as np
import pytest
from conftest import smooth_reflectance

from onboard.formats.products import ProductKind
from onboard.formats.types import ResidueMap
from onboard.runtime.loop import LEVELS, RECOVER_AFTER, FrameLoop
from onboard.runtime.pipeline import Pipeline


def _classify(cube):
    """Test double: a plain threshold classifier (the loop, not classification, is under test)."""
    shape = cube.valid.shape
    frac = np.stack([np.full(shape, 0.2), np.full(shape, 0.7), np.full(shape, 0.1)]).astype(np.float32)
    return ResidueMap(np.ones(shape, np.uint8), frac, counter=cube.counter)


@pytest.fixture(scope="module")
def frames(imspoc):
    grid = imspoc.scene_grid()
    refl = smooth_reflectance(grid, imspoc.thumb_shape)
    rng = np.random.default_rng(0)
    return [(imspoc.frame(refl, grid, rng, counter=i), None) for i in range(3)]


def test_degrades_in_order_then_recovers_and_keeps_residue(imspoc_calibration, frames) -> None:
    slow = {"on": True}

    def denoise(cube):
        if slow["on"]:
            time.sleep(1.0)  # far past the deadline below, whatever the machine
        return cube

    pipe = Pipeline(imspoc_calibration, denoise, _classify, saturation_dn=4094)
    loop = FrameLoop(pipe, deadline_s=0.8)  # a frame without the sleep takes ~0.1 s
    stream = (frames[i % 3] for i in range(4 + RECOVER_AFTER + 2))
    results = []
    for r, _ in loop.run(stream):
        results.append(r)
        if loop.level == len(LEVELS) - 1:
            slow["on"] = False  # the load goes away once denoising is off
    levels = [e.level for e in loop.stats.events]
    assert levels[:4] == [1, 2, 3, 4]
    assert levels[4] == 3  # recovered one step after RECOVER_AFTER comfortable frames
    assert loop.stats.deadline_misses >= 4
    for r in results:
        kinds = [p.kind for p in r.products]
        assert ProductKind.RESIDUE in kinds
    # at level >= 1 no quick-look, at >= 3 no cube product, at 4 no denoising
    assert ProductKind.QUICKLOOK in [p.kind for p in results[0].products]
    assert ProductKind.QUICKLOOK not in [p.kind for p in results[1].products]
    assert ProductKind.CUBE not in [p.kind for p in results[3].products]
    assert "denoise" not in results[4].seconds
    degrade_events = [p for r in results for p in r.products if p.kind == ProductKind.EVENT]
    assert len(degrade_events) == len(loop.stats.events)


def test_sigterm_finishes_the_frame_in_flight(imspoc_calibration, frames) -> None:
    def denoise(cube):
        if cube.counter == 1:
            os.kill(os.getpid(), signal.SIGTERM)
        return cube

    pipe = Pipeline(imspoc_calibration, denoise, _classify, saturation_dn=4094)
    loop = FrameLoop(pipe, deadline_s=10.0)
    with loop.signals():
        out = [r for r, _ in loop.run(iter(frames))]
    assert [r.counter for r in out] == [0, 1]  # frame 1 completed with its products, 2 never started
    assert ProductKind.RESIDUE in [p.kind for p in out[1].products]
    assert loop.stats.stopped_by_signal == "SIGTERM"


def test_degradation_never_turns_on_what_the_mission_turned_off(imspoc_calibration, frames) -> None:
    from onboard.runtime.pipeline import StageOptions

    pipe = Pipeline(imspoc_calibration, lambda c: c, _classify, saturation_dn=4094,
                    options=StageOptions(quicklook=True, cube=False))
    loop = FrameLoop(pipe, deadline_s=10.0)
    kinds = {p.kind for r, _ in loop.run(iter(frames)) for p in r.products}
    assert ProductKind.CUBE not in kinds and ProductKind.QUICKLOOK in kinds
