"""Usage: python make_vectors.py OUT_DIR [VM_DIR]. Run NTNU's CCSDS 123.0-B-2 verification model on small cubes, with headers written by
onboard's encoder, and collect inputs + VM bitstreams as test vectors."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

from onboard.compress.ccsds123 import Params, encode
from onboard.compress.ccsds123 import header as hd
from onboard.compress.ccsds123.params import resolve

VM = Path(sys.argv[2]) if len(sys.argv) > 2 else Path("/tmp/vm")  # the model, unpacked (git archive)
OUT = Path(sys.argv[1])
OUT.mkdir(parents=True, exist_ok=True)

def cube(seed, shape, D, signed):
    rng = np.random.default_rng(seed)
    nz, ny, nx = shape
    base = rng.normal(0, 1, (ny, nx)).cumsum(0).cumsum(1)
    spec = np.linspace(0.6, 1.3, nz)[:, None, None] * (1 + 0.1 * rng.normal(size=(nz, 1, 1)))
    x = base[None] * spec + rng.normal(0, 0.3, shape)
    x = (x - x.min()) / (np.ptp(x) + 1e-9)
    lo, hi = (-(1 << (D - 1)), (1 << (D - 1)) - 1) if signed else (0, (1 << D) - 1)
    span = hi - lo
    v = lo + span * (0.1 + 0.8 * x)
    v[0, 0, :2] = lo  # extremes exercise the clipping and mapping edges
    v[-1, -1, -1] = hi
    return np.clip(np.round(v), lo, hi).astype(np.int64)

CASES = [
    dict(name="u16_lossless_bip_full", shape=(6, 8, 10), D=16, signed=False, params=dict()),
    dict(name="u12_lossless_bsq_reduced", shape=(5, 9, 7), D=12, signed=False,
         params=dict(P=2, full=False, local_sum="narrow-column", omega=10, register_size=40, t_inc=16, nu_min=-2, nu_max=5, order="BSQ", k=(0, 1, 2, 3, 4))),
    dict(name="s16_abs3_bil_narrow", shape=(4, 6, 11), D=16, signed=True,
         params=dict(P=1, local_sum="narrow-neighbour", absolute_error=3, theta=3, phi=2, psi=5, order="BIL", omega=16)),
    dict(name="u8_absrel_bi3_widecol", shape=(7, 10, 6), D=8, signed=False,
         params=dict(P=4, full=False, local_sum="wide-column", absolute_error=(0, 1, 2, 3, 2, 1, 0), relative_error=20, order="BI", interleave=3, output_word_size=4, u_max=12, gamma_star=5, gamma0=2, k=3)),
    dict(name="u16_p0_bsq", shape=(3, 5, 5), D=16, signed=False, params=dict(P=0, order="BSQ", k=0)),
    dict(name="u14_rel_bip_offsets", shape=(5, 7, 8), D=14, signed=False,
         params=dict(P=2, relative_error=(40, 60, 80, 100, 120), theta=2, phi=(0, 1, 2, 3, 1), psi=(1, 1, 2, 3, 0),
                     weight_exponent_offsets=tuple(tuple(((z + j) % 7) - 3 for j in range(3)) for z in range(5)))),
    dict(name="u20_lossless_bip", shape=(4, 6, 6), D=20, signed=False, params=dict(P=3, omega=19, register_size=48)),
]

manifest = []
for case in CASES:
    c = cube(len(manifest) + 1, case["shape"], case["D"], case["signed"])
    p = Params(**case["params"])
    r = resolve(p, c.shape, case["D"], case["signed"])
    head = hd.pack(r)
    bits = 8 if case["D"] <= 8 else 16 if case["D"] <= 16 else 32
    fmt = f"{'s' if case['signed'] else 'u'}{bits}be"
    nz, ny, nx = c.shape
    raw = VM / "raw_images" / f"{case['name']}-{fmt}-{nz}x{ny}x{nx}.raw"
    c.astype(f">{'i' if case['signed'] else 'u'}{bits // 8}").tofile(raw)
    (VM / "h.bin").write_bytes(head)
    shutil.rmtree(VM / "output", ignore_errors=True)
    (VM / "output").mkdir()
    subprocess.run([sys.executable, "ccsds123_0_b_2_high_level_model.py", str(raw), "--header", "h.bin"], cwd=VM, check=True,
                   env={"PYTHONPATH": "/tmp/vmdeps", "PATH": "/usr/bin:/bin"}, capture_output=True)
    vm_stream = (VM / "output" / "z-output-bitstream.bin").read_bytes()
    ours = encode(c, p, dynamic_range=case["D"], signed=case["signed"])
    shutil.copy(raw, OUT / raw.name)
    (OUT / f"{case['name']}.c123").write_bytes(vm_stream)
    print(case["name"], len(vm_stream), "bit-exact" if ours == vm_stream else "DIFFERENT", flush=True)
    manifest.append(dict(name=case["name"], input=raw.name, stream=f"{case['name']}.c123", shape=list(c.shape), D=case["D"], signed=case["signed"], params={k: v for k, v in case["params"].items()}))
(OUT / "vectors.json").write_text(json.dumps(manifest, indent=1))
