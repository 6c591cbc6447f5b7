"""The stage floors of ``onboard bench`` (onboard/floor.py): the work counted from a real
frame's shapes, checked against the counts done by hand for the default instruments."""

from __future__ import annotations

import pytest

from onboard.config import load, override
from onboard.floor import Network, Rates, Work, measure_rates, stage_work
from onboard.runtime.session import build_session

RATES = Rates(copy_bytes_per_s=10e9, matmul_flops_per_s=100e9)


def _frame(sensor: str):
    config = load(None)
    override(config, "run", "sensor", sensor)
    override(config, "engine", "engine", "classical")
    session = build_session(config)
    frame, _ = next(iter(session.frames(1)))
    return session, frame, session.pipeline.process(frame)


def test_imspoc_work_is_counted_from_the_frame_shapes() -> None:
    session, frame, result = _frame("imspoc")
    assert frame.pixels.shape == (534, 798) and result.cube.data.shape == (24, 64, 64)
    work = stage_work(result, frame.pixels.size, 96, {})
    assert set(work) == set(result.seconds)
    assert work["radiometric"] == Work(20 * 534 * 798)  # 0.85 ms at 10 GB/s
    assert work["reconstruct"].flops == 2 * 24 * 96 * 4096  # the (24 x 96) operator per pixel
    assert work["denoise"].flops == 4 * 24**2 * 4096
    assert work["reflectance"] == Work(8 * 24 * 4096)  # the cube read and written once
    assert work["package"].bytes == 6 * 24 * 4096 + sum(len(p.payload) for p in result.products)
    assert work["radiometric"].floor_s(RATES) == pytest.approx(20 * 534 * 798 / 10e9)
    # the roofline: reading the thumbnails and writing the cube (2.0 MB, 0.20 ms at 10 GB/s)
    # outlasts the operator's 18.9 MFLOP (0.19 ms at 100 GFLOP/s)
    assert work["reconstruct"].floor_s(RATES) == pytest.approx(4 * (96 + 24) * 4096 / 10e9)


def test_a_pushbroom_block_has_no_reconstruction_and_makes_its_cube_in_radiometric() -> None:
    session, frame, result = _frame("pushbroom")
    detector = sum(line.pixels.size for line in frame)
    work = stage_work(result, detector, None, {})
    assert "reconstruct" not in work
    assert work["radiometric"] == Work((20 + 8) * detector)


def test_a_network_costs_two_flops_per_weight_and_output_pixel() -> None:
    session, frame, result = _frame("imspoc")
    net = Network(39140, (1, 24, 64, 64))
    work = stage_work(result, frame.pixels.size, 96, {"classify": [net]})
    assert work["classify"] == Work(4 * 24 * 4096, 2 * 39140 * 4096)
    # a learned denoiser runs after the classical decomposition: both are counted
    k = Network(21505, (9, 2, 64, 64))
    both = stage_work(result, frame.pixels.size, 96, {"denoise": [k]})["denoise"]
    assert both.flops == 4 * 24**2 * 4096 + 2 * 21505 * 4096 * 9


def test_rates_are_measured_here() -> None:
    rates = measure_rates(repeats=2)
    assert 1e8 < rates.copy_bytes_per_s < 1e13 and 1e8 < rates.matmul_flops_per_s < 1e14
    assert "GB/s" in rates.describe()
