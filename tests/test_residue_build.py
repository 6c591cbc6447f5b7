"""``onboard export build --only residue``: the residue classifiers are rebuilt inside an
existing bundle and nothing else of it changes; the new entries carry the training domain
the confidence rule needs, and the learned stage reports a confidence per pixel."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")

import onboard  # noqa: E402
from onboard.engines.onnxruntime_engine import CPU_PROVIDER, OnnxRuntimeEngine  # noqa: E402
from onboard.formats import bundle as bundle_mod  # noqa: E402
from onboard.formats.types import Cube  # noqa: E402
from onboard.stages.confidence import WITHHELD, Domain  # noqa: E402
from onboard.stages.learned import LearnedResidue  # noqa: E402

DEFAULT = Path(onboard.__file__).parent / "models" / "default"


@pytest.mark.slow
def test_only_residue_keeps_the_rest_of_the_bundle(tmp_path: Path) -> None:
    out = tmp_path / "bundle"
    shutil.copytree(DEFAULT, out)
    before = json.loads((out / "manifest.json").read_text())
    subprocess.run([sys.executable, "-m", "onboard", "export", "build", "--out", str(out), "--quick",
                    "--only", "residue", "--eval-cubes", "1", "--no-tensorrt"],
                   check=True, capture_output=True, text=True, timeout=900)
    after = json.loads((out / "manifest.json").read_text())
    assert list(after["models"]) == list(before["models"])
    for name in ("denoiser", "reconstruction"):
        assert after["models"][name] == before["models"][name], name
        for a in before["models"][name]["artifacts"]:
            assert (out / a["file"]).read_bytes() == (DEFAULT / a["file"]).read_bytes()
    assert {k: v for k, v in after.items() if k != "models"} == {k: v for k, v in before.items() if k != "models"}
    assert "--only residue" in after["models"]["residue_imspoc"]["metadata"]["built"]["producer"]
    b = bundle_mod.load(out)
    assert not b.problems
    for name in ("residue_imspoc", "residue_pushbroom"):
        spec = b.model(name)
        domain = Domain.from_dict(spec.metadata["domain"])
        assert 0.0 < domain.confidence_threshold <= 1.0 or domain.confidence_threshold == WITHHELD
        assert domain.novelty_limit > 0
        assert "confident_share" in spec.artifacts[0].accuracy
    spec = b.model("residue_imspoc")
    grid = np.asarray(spec.band_grid_nm)
    a = next(x for x in b.usable("residue_imspoc", "onnx") if x.precision == "int8")
    rng = np.random.default_rng(0)
    data = (0.25 + 0.02 * rng.standard_normal((grid.size, 24, 24))).astype(np.float32)
    with OnnxRuntimeEngine(b.path(a), spec.inputs, spec.outputs, "int8", providers=[CPU_PROVIDER]) as engine:
        m = LearnedResidue(engine, grid, "residue_imspoc", Domain.from_dict(spec.metadata["domain"]))(
            Cube(data, grid, np.ones((24, 24), bool)))
    assert m.confidence is not None and m.uncertain is not None
    assert ((m.confidence >= 1 / 3 - 1e-3) & (m.confidence <= 1)).all()
    # a flat grey spectrum is no soil, residue or plant the model was trained on
    assert m.uncertain.mean() > 0.9
