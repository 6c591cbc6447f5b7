"""CCSDS 123.0-B-2 bit-exact against an independent implementation: the streams NTNU's
verification model produced (tests/data/ccsds123/README.md says how), checked both ways."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from onboard.compress.ccsds123 import Params, decode, encode

DATA = Path(__file__).parent / "data" / "ccsds123"
VECTORS = json.loads((DATA / "vectors.json").read_text())
ROOT = Path(__file__).resolve().parents[1]


def _cube(v: dict) -> np.ndarray:
    nbytes = {8: 1, 16: 2, 32: 4}[8 if v["D"] <= 8 else 16 if v["D"] <= 16 else 32]
    dtype = np.dtype(f">{'i' if v['signed'] else 'u'}{nbytes}")
    return np.fromfile(DATA / v["input"], dtype=dtype).reshape(v["shape"]).astype(np.int64)


def _params(v: dict) -> Params:
    p = dict(v["params"])
    for key in ("k", "absolute_error", "relative_error", "phi", "psi"):
        if isinstance(p.get(key), list):
            p[key] = tuple(p[key])
    if "weight_exponent_offsets" in p:
        p["weight_exponent_offsets"] = tuple(tuple(row) for row in p["weight_exponent_offsets"])
    return Params(**p)


def _limit(v: dict, z: int) -> int:
    """The largest error the settings allow in band z (relative limits at the largest |s_hat|)."""
    p = v["params"]
    if "absolute_error" not in p and "relative_error" not in p:
        return 0
    bound = 1 << 40
    if "absolute_error" in p:
        a = p["absolute_error"]
        bound = min(bound, a[z] if isinstance(a, list) else a)
    if "relative_error" in p:
        r = p["relative_error"]
        r = r[z] if isinstance(r, list) else r
        bound = min(bound, (r * ((1 << v["D"]) - 1)) >> v["D"])
    return bound


@pytest.mark.parametrize("v", VECTORS, ids=[v["name"] for v in VECTORS])
def test_encoder_is_bit_exact_with_the_verification_model(v: dict) -> None:
    expected = (DATA / v["stream"]).read_bytes()
    ours = encode(_cube(v), _params(v), dynamic_range=v["D"], signed=v["signed"])
    assert ours == expected


@pytest.mark.parametrize("v", VECTORS, ids=[v["name"] for v in VECTORS])
def test_decoder_inverts_the_verification_models_stream(v: dict) -> None:
    cube = _cube(v)
    got = decode((DATA / v["stream"]).read_bytes())
    assert got.cube.shape == cube.shape
    err = np.abs(got.cube.astype(np.int64) - cube)
    limits = np.array([_limit(v, z) for z in range(cube.shape[0])])
    assert (err <= limits[:, None, None]).all()
    if limits.any():
        assert err.any()  # the model quantized: a near-lossless vector is not lossless by accident
    else:
        assert not err.any()


def test_plain_python_kernels_give_the_same_bytes() -> None:
    """One definition, two ways to run it: with numba off the same stream comes out."""
    v = next(x for x in VECTORS if x["name"].startswith("s16"))
    code = ("import sys, numpy as np; sys.path.insert(0, 'tests');"
            "import test_ccsds123_conformance as t; from onboard.compress import ccsds123 as c;"
            f"v = [x for x in t.VECTORS if x['name'] == {v['name']!r}][0];"
            "assert not c.COMPILED;"
            "s = c.encode(t._cube(v), t._params(v), dynamic_range=v['D'], signed=v['signed']);"
            "sys.stdout.write(s.hex() + ' ' + str((c.decode(s).cube.astype(int) - t._cube(v)).__abs__().max()))")
    env = dict(os.environ, ONBOARD_NUMBA="0", PYTHONPATH=str(ROOT))
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True).stdout
    stream_hex, max_err = out.split()
    assert bytes.fromhex(stream_hex) == (DATA / v["stream"]).read_bytes()
    assert int(max_err) <= v["params"]["absolute_error"]
