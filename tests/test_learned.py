"""The learned runtime stages (onboard.stages.learned) on the committed default bundle.

No torch: the runtime path is numpy + ONNX Runtime. Each stage is checked against a direct
ONNX Runtime session fed by hand (the stage must add nothing but its documented pre- and
post-processing), and the fallbacks are checked to say why they fall back.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

import onboard
from onboard.engines.onnxruntime_engine import CPU_PROVIDER, OnnxRuntimeEngine
from onboard.engines.select import EngineOptions
from onboard.formats import bundle as bundle_mod
from onboard.formats.types import INVALID_CLASS, Cube, ResidueMap
from onboard.stages.denoise import SubspaceDenoiseConfig, denoise_subspace
from onboard.stages.learned import (
    DENOISER,
    LearnedDenoiser,
    LearnedResidue,
    compose,
    decompose,
    learned_stages,
    refiner_input,
    residue_model_for,
)

BUNDLE = Path(onboard.__file__).parent / "models" / "default"  # the committed bundle


@pytest.fixture(scope="module")
def bundle() -> bundle_mod.Bundle:
    b = bundle_mod.load(BUNDLE)
    assert not b.problems, b.problems
    return b


def low_rank_cube(wavelengths: np.ndarray, shape=(48, 40), sigma=0.004, seed=0) -> Cube:
    """Three smooth spectra mixed in Voronoi parcels plus Gaussian noise: a spectrally
    low-rank cube like a farmland's, made here so the test needs no scene simulator."""
    rng = np.random.default_rng(seed)
    lam = (wavelengths - wavelengths.min()) / np.ptp(wavelengths)
    spectra = np.stack([0.1 + 0.3 * lam, 0.3 - 0.1 * lam, 0.05 + 0.4 / (1 + np.exp(-(lam - 0.5) * 12))])
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w]
    cy, cx = rng.uniform(0, h, 8), rng.uniform(0, w, 8)
    label = np.argmin((yy[None] - cy[:, None, None]) ** 2 + (xx[None] - cx[:, None, None]) ** 2, 0)
    mix = rng.dirichlet(np.ones(3), 8)[label]
    clean = np.einsum("hwk,kb->bhw", mix, spectra)
    noisy = clean + sigma * rng.standard_normal(clean.shape)
    return Cube(noisy.astype(np.float32), wavelengths.astype(float), np.ones(shape, bool))


def _session(b: bundle_mod.Bundle, model: str, precision: str) -> tuple[ort.InferenceSession, str]:
    a = next(a for a in b.usable(model, "onnx") if a.precision == precision)
    return ort.InferenceSession(str(b.path(a)), providers=["CPUExecutionProvider"]), str(b.path(a))


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_learned_denoiser_is_the_direct_session(bundle, precision):
    spec = bundle.model(DENOISER)
    sess, path = _session(bundle, DENOISER, precision)
    cube = low_rank_cube(np.linspace(450, 1000, 30))
    config = SubspaceDenoiseConfig(destripe="none")
    with OnnxRuntimeEngine(path, spec.inputs, spec.outputs, precision,
                           providers=[CPU_PROVIDER]) as engine:
        got = LearnedDenoiser(engine, config)(cube)
    dec = decompose(cube, config)
    correction = sess.run(None, {"eigenimages": refiner_input(dec)})[0]
    want = compose(dec, correction, cube)
    np.testing.assert_array_equal(got.data, want.data)
    np.testing.assert_array_equal(got.valid, cube.valid)
    # and it denoises: closer to the clean cube than the input (noise sd 0.004 on ~0.3)
    clean = low_rank_cube(np.linspace(450, 1000, 30), sigma=0.0).data
    assert np.sqrt(np.mean((got.data - clean) ** 2)) < 0.5 * np.sqrt(np.mean((cube.data - clean) ** 2))


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_learned_residue_is_the_direct_session(bundle, precision):
    name = next(n for n, m in bundle.manifest.models.items() if m.task == "residue")
    spec = bundle.model(name)
    grid = np.asarray(spec.band_grid_nm)
    assert residue_model_for(bundle, grid) == name
    sess, path = _session(bundle, name, precision)
    cube = low_rank_cube(grid, seed=1)
    cube.valid[3, 5] = False
    cube.data[:, 7, 9] = np.nan
    with OnnxRuntimeEngine(path, spec.inputs, spec.outputs, precision,
                           providers=[CPU_PROVIDER]) as engine:
        got = LearnedResidue(engine, grid, name)(cube)
    norm = spec.inputs[0].normalisation
    x = np.where(cube.valid[None] & np.isfinite(cube.data), cube.data, 0.0)[None].astype(np.float32)
    feed = x if norm is None else norm.apply(x)
    prob, frac = sess.run(["probabilities", "fractions"], {"cube": feed})
    ok = np.ones(cube.valid.shape, bool)
    ok[3, 5] = ok[7, 9] = False
    np.testing.assert_array_equal(got.fractions[:, ok], frac[0][:, ok])
    np.testing.assert_array_equal(got.tillage[ok], np.argmax(prob[0], 0)[ok])
    assert got.tillage[3, 5] == got.tillage[7, 9] == INVALID_CLASS
    assert np.isnan(got.fractions[:, 3, 5]).all() and np.isnan(got.fractions[:, 7, 9]).all()
    f = got.fractions[:, ok]
    assert (f >= 0).all()
    np.testing.assert_allclose(f.sum(0), 1.0, atol=0.02)  # softmax; INT8 output steps of 1/127


def test_residue_refuses_another_band_grid(bundle):
    name = next(n for n, m in bundle.manifest.models.items() if m.task == "residue")
    spec = bundle.model(name)
    a = bundle.usable(name, "onnx")[0]
    grid = np.asarray(spec.band_grid_nm)
    with OnnxRuntimeEngine(bundle.path(a), spec.inputs, spec.outputs, a.precision,
                           providers=[CPU_PROVIDER]) as engine:
        stage = LearnedResidue(engine, grid, name)
        with pytest.raises(ValueError, match="trained on"):
            stage(low_rank_cube(grid + 7.0))


def _fallback_classify(cube: Cube) -> ResidueMap:
    shape = cube.valid.shape
    return ResidueMap(np.zeros(shape, np.uint8), np.full((3, *shape), 1 / 3, np.float32),
                      method="fallback")


def test_stages_fall_back_with_reasons(bundle):
    def fallback(cube):
        return denoise_subspace(cube)

    none = learned_stages(None, np.linspace(450, 1000, 24), fallback, _fallback_classify)
    assert none.denoise is fallback and none.classify is _fallback_classify
    assert any("no model bundle" in n for n in none.notes)

    odd = learned_stages(bundle, np.linspace(500, 600, 7), fallback, _fallback_classify,
                         EngineOptions(engine="onnxruntime-cpu"))
    try:
        assert isinstance(odd.denoise, LearnedDenoiser)
        assert odd.classify is _fallback_classify
        assert any("no residue model for this 7-band grid" in n for n in odd.notes)
    finally:
        odd.close()

    classical = learned_stages(bundle, np.linspace(450, 1000, 24), fallback, _fallback_classify,
                               EngineOptions(engine="classical"))
    assert classical.denoise is fallback
    assert "classical" in classical.notes[0]


def test_runtime_stage_imports_no_torch():
    code = ("import sys, onboard.stages.learned, onboard.engines.select; "
            "bad = [m for m in ('torch', 'scipy', 'export') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)
