"""`onboard bench` runs every engine setting it is given and reports every stage, counts as
inference only the stages that ran an engine, and its link view is consistent with the bytes
it states (no timing is asserted: speed is measured by the benchmark, not tested)."""

import json
import os
import subprocess
import sys

import pytest

RATES_KBIT = (9.6, 115.2, 1000.0)


def _bench(tmp_path, *args: str) -> tuple[dict, str]:
    out = tmp_path / "b.json"
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache"), "COLUMNS": "200"}
    proc = subprocess.run([sys.executable, "-m", "onboard", "bench", "--frames", "2", "--warmup", "1",
                           "--json", str(out), *args], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr
    return json.loads(out.read_text()), proc.stdout


def _rows(stdout: str, title: str) -> list[list[str]]:
    """The body rows (cells stripped) of the rich table printed under ``title``."""
    lines = stdout.splitlines()
    start = next(i for i, ln in enumerate(lines) if title in ln)
    rows = []
    for ln in lines[start + 1:]:
        if ln.startswith("└"):
            break
        if ln.startswith("│"):
            rows.append([c.strip() for c in ln.strip("│").split("│")])
    return rows


def test_bench_reports_each_engine_and_stage(tmp_path) -> None:
    data, stdout = _bench(tmp_path, "--engines", "classical,auto,nonsense")
    results = {r["engine"]: r for r in data["results"]}
    # the classical denoiser and classifier are no inference, whatever their stage's name
    assert results["classical"]["non_inference_share"] == 1 and results["classical"]["inference_ms"] == 0
    for name in ("classical", "auto"):
        r = results[name]
        assert {"radiometric", "reconstruct", "denoise", "classify", "package"} <= set(r["stages"])
        assert r["frames"] == 2 and r["frames_per_s"] > 0 and 0 <= r["non_inference_share"] <= 1
        for v in r["stages"].values():  # time inside an engine is part of its stage's time
            assert 0 <= v["in_engine_median_ms"] <= v["median_ms"] and (v["in_engine_median_ms"] > 0) == bool(v["engine"])
    # auto: the ImSPOC denoiser stays classical by default ([denoise] method), so it is not inference
    assert results["auto"]["stages"]["denoise"]["engine"] is None
    assert "engine" in results["nonsense"]["error"]  # an unknown engine is reported, not fatal
    # columns: the frame's median and p95 under their headers, frames/s in its own table
    stages = {(r[0], r[1]): r for r in _rows(stdout, "onboard bench")}
    total = stages[("classical / npz", "frame total")]
    c = results["classical"]
    assert total[3:6] == [f"{c['median_frame_ms']:.1f}", f"{c['p95_frame_ms']:.1f}", "0.0"]
    [summary] = [r for r in _rows(stdout, "per frame") if r[0] == "classical / npz"]
    assert summary[1] == f"{c['frames_per_s']:.2f}" and summary[2] == "0.0"
    # the floor beside each stage, the frame's the sum of its stages'; the rates it used stated
    assert data["machine_rates"]["copy_bytes_per_s"] > 1e8 and data["machine_rates"]["matmul_flops_per_s"] > 1e8
    assert "GB/s" in stdout and "GFLOP/s" in stdout
    floors = [v["floor_ms"] for v in c["stages"].values()]
    assert all(f > 0 for f in floors) and c["floor_frame_ms"] == pytest.approx(sum(floors), rel=1e-6)
    assert total[6:] == [f"{c['median_frame_cpu_ms']:.1f}", f"{c['floor_frame_ms']:.2f}",
                         f"{c['median_frame_cpu_ms'] / c['floor_frame_ms']:.1f}x"]
    assert all(0 < v["cpu_median_ms"] for v in c["stages"].values())
    assert summary[5:] == [f"{c['median_frame_cpu_ms']:.1f}", f"{c['floor_frame_ms']:.2f}",
                           f"{c['median_frame_cpu_ms'] / c['floor_frame_ms']:.1f}x"]


def test_bench_link_view_compares_codings_under_load(tmp_path) -> None:
    data, stdout = _bench(tmp_path, "--engines", "classical", "--compare-codings", "--load", "1")
    assert data["background_load"] == 1 and "beside 1 busy process" in stdout
    views = {r["coding"]["cube"]: r for r in data["results"]}
    assert set(views) == {"npz", "ccsds123"}
    for coding, r in views.items():
        assert r["coding"]["residue"] == coding
        link = r["link"]
        products = link["products"]
        assert {"residue", "quicklook", "cube"} <= set(products)
        assert products["cube"]["coding"] == products["residue"]["coding"] == coding
        for p in products.values():  # framing costs a little, never a lot
            assert p["product_bytes"] < p["wire_bytes"] < 1.1 * p["product_bytes"] + 1000
        assert link["wire_bytes"] == sum(p["wire_bytes"] for p in products.values())
        for rate in RATES_KBIT:
            assert link["frames_per_hour"][f"{rate:g}"] == pytest.approx(3600 * rate * 1000 / 8 / link["wire_bytes"])
            residue = products["residue"]
            assert residue["frames_per_hour"][f"{rate:g}"] == pytest.approx(3600 * rate * 1000 / 8 / residue["wire_bytes"])
        rows = {(row[0], row[1]): row for row in _rows(stdout, "link:")}
        row = rows[(f"classical / {coding}", "all products")]
        assert row[4] == str(link["wire_bytes"]) and row[5] == f"{link['frames_per_hour']['9.6']:.0f}"
    npz, coded = views["npz"]["link"]["products"], views["ccsds123"]["link"]["products"]
    assert coded["residue"]["product_bytes"] < npz["residue"]["product_bytes"]
    assert coded["cube"]["product_bytes"] < npz["cube"]["product_bytes"]
