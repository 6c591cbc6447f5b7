"""The runtime owns the compute libraries' thread pools (onboard/threads.py): a Python caller
of the library, without the ``onboard`` command line and its environment variables, gets one
BLAS thread once it builds a session, and ONNX Runtime sessions with one intra-op thread and
no spinning; ``[run] threads = 0`` gives the libraries back their defaults; ``onboard info``
reports the pools. Each case runs in a fresh process (the pools are per process)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import onboard
from onboard.config import ConfigError, from_dict
from onboard.threads import ENVIRONMENT

DENOISER = Path(onboard.__file__).parent / "models" / "default" / "denoiser.fp32.onnx"

LIBRARY_CALLER = f"""
import json
import numpy
from threadpoolctl import threadpool_info, threadpool_limits
from onboard.config import Config, override
from onboard.engines.onnxruntime_engine import CPU_PROVIDER, OnnxRuntimeEngine
from onboard.formats.bundle import TensorSpec
from onboard.runtime.session import build_session


def blas():
    return sorted({{p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"}})


def ort_options():
    spec_in = (TensorSpec("eigenimages", ("k", 2, "H", "W"), "float32"),)
    spec_out = (TensorSpec("correction", ("k", 1, "H", "W"), "float32"),)
    with OnnxRuntimeEngine({str(DENOISER)!r}, spec_in, spec_out, providers=[CPU_PROVIDER]) as e:
        o = e._session.get_session_options()
        try:
            spinning = o.get_session_config_entry("session.intra_op.allow_spinning")
        except RuntimeError:  # not set: ONNX Runtime's default, spinning
            spinning = None
        return {{"intra": o.intra_op_num_threads, "inter": o.inter_op_num_threads,
                 "spinning": spinning}}


threadpool_limits(3)  # BLAS as a multi-threaded default leaves it, whatever this machine has
out = {{"before": blas(), "ort_before": ort_options()}}
config = Config()
override(config, "run", "sensor", "pushbroom")
override(config, "engine", "engine", "classical")
build_session(config)
out["owned"] = blas()
override(config, "run", "threads", 0)
build_session(config)
out["defaults"], out["ort_defaults"] = blas(), ort_options()
print(json.dumps(out))
"""


def test_a_library_caller_gets_the_owned_pools_without_the_command_line(tmp_path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ENVIRONMENT}
    env["XDG_CACHE_HOME"] = str(tmp_path)
    done = subprocess.run([sys.executable, "-c", LIBRARY_CALLER], env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    got = json.loads(done.stdout.splitlines()[-1])
    assert got["before"] == [3]
    # an ONNX Runtime session opened by a library caller: one thread per pool, no spinning
    assert got["ort_before"] == {"intra": 1, "inter": 1, "spinning": "0"}
    assert got["owned"] == [1]  # build_session limited BLAS ([run] threads = 1)
    # [run] threads = 0: the pool as it was, ONNX Runtime choosing its threads and spinning
    assert got["defaults"] == [3]
    assert got["ort_defaults"] == {"intra": 0, "inter": 0, "spinning": None}


def test_threads_setting_is_checked() -> None:
    assert from_dict({"run": {"threads": 4}}).run.threads == 4
    for bad in (-1, 2000):
        with pytest.raises(ConfigError, match=r"\[run\] threads"):
            from_dict({"run": {"threads": bad}})


def test_info_reports_the_pools(tmp_path) -> None:
    done = subprocess.run([sys.executable, "-m", "onboard", "info", "--json"], capture_output=True,
                          text=True, timeout=300, env={**os.environ, "XDG_CACHE_HOME": str(tmp_path)})
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)["threads"]
    assert report["threads"] == 1
    assert report["onnxruntime"] == {"intra_op_threads": 1, "inter_op_threads": 1, "spinning": False}
    blas = [p for p in report["pools"] if p["api"] == "blas"]
    assert blas and all(p["threads"] == 1 for p in blas) and all(p["library"] for p in blas)
