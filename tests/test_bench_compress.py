"""bench/bench_compress.py runs end to end and every round trip it times is checked inside it;
the ratios it reports hold issue 16's bar (CCSDS 123 lossless at least JPEG-LS's on the product
cubes). No timing is asserted."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_compression_bench_reports_every_coder_and_the_lossless_bar(tmp_path) -> None:
    out = tmp_path / "c.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "bench_compress.py"), "--frames", "1",
                           "--repeats", "1", "--json", str(out)], capture_output=True, text=True, env=env,
                          timeout=900, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.read_text())
    # "imspoc 24x64x64 lossless" -> "imspoc lossless" (the shape dropped)
    rows = {(" ".join(w for w in r["data"].split() if not w[0].isdigit()), r["coder"]): r for r in result["rows"]}
    for sensor in ("imspoc", "pushbroom"):
        ccsds = rows[(f"{sensor} lossless", "CCSDS 123")]
        assert ccsds["ratio"] >= rows[(f"{sensor} lossless", "JPEG-LS")]["ratio"]
        assert ccsds["ratio"] > rows[(f"{sensor} lossless", "npz deflate")]["ratio"]
        assert ccsds["all_products_frames_per_hour_9.6k"] > 0
    assert rows[("imspoc raw", "CCSDS 123")]["ratio"] > rows[("imspoc raw", "npz deflate")]["ratio"]
    assert result["compiled"] and result["plain_python_imspoc_size"]["encode_msamples_s"] > 0
