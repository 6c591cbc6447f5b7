"""`onboard bench` runs every engine setting it is given and reports every stage (no timing
is asserted: speed is measured by the benchmark, not tested)."""

import json
import os
import subprocess
import sys


def test_bench_reports_each_engine_and_stage(tmp_path) -> None:
    out = tmp_path / "b.json"
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    proc = subprocess.run([sys.executable, "-m", "onboard", "bench", "--frames", "2", "--warmup", "1",
                           "--engines", "classical,auto,nonsense", "--json", str(out)],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr
    results = {r["engine"]: r for r in json.loads(out.read_text())["results"]}
    for name in ("classical", "auto"):
        r = results[name]
        assert {"radiometric", "reconstruct", "denoise", "classify", "package"} <= set(r["stages"])
        assert r["frames"] == 2 and r["frames_per_s"] > 0 and 0 <= r["non_inference_share"] <= 1
    assert "engine" in results["nonsense"]["error"]  # an unknown engine is reported, not fatal
