"""Per-pixel confidence of the residue maps, the out-of-distribution rule, and the residue
product's format (version 2: uncertain pixels, guess, confidence)."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from onboard.formats.products import (
    FORMAT_VERSION,
    Product,
    ProductFormatError,
    ProductKind,
    decode_arrays,
)
from onboard.formats.types import INVALID_CLASS, UNCERTAIN_CLASS, Cube, ResidueMap
from onboard.scene.farmland import FarmlandScene, nominal_endmembers
from onboard.scene.library import load
from onboard.stages.classify import classify_classical
from onboard.stages.confidence import (
    FOREIGN_QUANTILE,
    WITHHELD,
    fit_domain,
    fit_foreign,
    fit_limits,
    interval_confidence,
    threshold_for,
)
from onboard.stages.package import frame_products
from onboard.stages.residue import UnmixConfig

GRID = np.arange(452.5, 1000, 10.0)
ROOT = Path(__file__).resolve().parents[1]


def test_threshold_is_the_lowest_that_reaches_the_target() -> None:
    rng = np.random.default_rng(0)
    conf = rng.uniform(0.34, 1.0, 20000)
    correct = rng.uniform(size=conf.size) < conf  # calibrated: right with probability conf
    t = threshold_for(conf, correct, 0.9)
    kept = conf >= t
    assert correct[kept].mean() >= 0.9
    # a lower threshold would miss the target: the rule keeps as many pixels as it can
    lower = conf >= t - 0.02
    assert correct[lower].mean() < 0.9 + 0.005 and 0.15 < kept.mean() < 0.4
    assert threshold_for(np.array([0.5, 0.6]), np.array([False, False])) == WITHHELD


def test_a_threshold_kept_by_few_pixels_is_withheld() -> None:
    # 5 % of the pixels sure and right, the rest a coin toss: the target is met only by a
    # threshold keeping 5 %, too few to vouch for it (the ImSPOC's case on the test split)
    conf = np.r_[np.full(50, 0.99), np.linspace(0.4, 0.9, 950)]
    correct = np.r_[np.ones(50, bool), np.arange(950) % 2 == 0]
    assert threshold_for(conf, correct, 0.92) == WITHHELD > 1.0
    t = threshold_for(conf, correct, 0.92, min_share=0.04)  # allowed: under 6 % kept
    assert 50 < (conf >= t).sum() < 60 and correct[conf >= t].mean() >= 0.92


def test_interval_confidence_is_the_probability_of_the_class_interval() -> None:
    # mid-interval of the wide conservation class: almost sure; at a threshold: a coin toss
    c = interval_confidence(np.array([0.6, 0.30 + 1e-9, 0.225, np.nan]), sigma=0.05)
    assert c[0] > 0.99 and c[1] == pytest.approx(0.5, abs=0.01)
    # the reduced class (0.15-0.30) at its centre: P(|e| < 0.075) for sd 0.05 = 0.866
    assert c[2] == pytest.approx(0.866, abs=0.005) and np.isnan(c[3])


def _cube(scene: FarmlandScene, row: int, noise: float, rng: np.random.Generator) -> tuple[Cube, object]:
    t = scene.tile(GRID, row, 0, (48, 48))
    data = (t.reflectance + noise * rng.standard_normal(t.reflectance.shape)).astype(np.float32)
    return Cube(data, GRID, np.ones((48, 48), dtype=bool)), t


def test_out_of_distribution_spectra_are_flagged() -> None:
    """Domain fitted on training scenes: held-out scenes of the same materials stay mostly
    inside the limit; a material no scene has (a narrow deep absorption at 650 nm, as no
    soil, residue or leaf shows) is outside it."""
    rng = np.random.default_rng(1)
    fields = [FarmlandScene.generate(size=96, seed=k, split="train") for k in range(8)]
    domain = fit_domain([_cube(f, r, 0.003, rng)[0] for f in fields for r in (0, 48)])
    test = FarmlandScene.generate(size=96, seed=2, split="test")
    cube, _ = _cube(test, 0, 0.003, rng)
    assert (domain.novelty(cube) > domain.novelty_limit).mean() < 0.3
    odd = cube.data.copy()
    odd[np.abs(GRID - 650) < 30] *= 0.3
    flagged = domain.novelty(Cube(odd, GRID, cube.valid)) > domain.novelty_limit
    assert flagged.mean() > 0.95
    again = type(domain).from_dict(domain.to_dict())
    np.testing.assert_allclose(again.novelty(cube), domain.novelty(cube), atol=1e-4)


def test_foreign_direction_flags_ground_like_its_examples() -> None:
    """``fit_foreign``: ground a little off the known materials on one side (a broad shallow
    absorption, 15 % deep at 800 nm) stays near the training subspace, so the novelty test
    misses it; the direction fitted against examples of it, with its limit at the
    validation quantile, flags it, about ``1 - FOREIGN_QUANTILE`` of the validation pixels
    and few of unseen known ground."""
    rng = np.random.default_rng(3)
    notch = (1 - 0.15 * np.exp(-0.5 * ((GRID - 800) / 60) ** 2))[:, None, None]

    def foreign(c: Cube) -> Cube:
        return Cube((c.data * notch).astype(np.float32), GRID, c.valid)

    fields = [FarmlandScene.generate(size=96, seed=k, split="train") for k in range(4)]
    train = [_cube(f, r, 0.003, rng)[0] for f in fields for r in (0, 48)]
    domain = fit_domain(train)
    val = [_cube(FarmlandScene.generate(size=96, seed=k, split="eval"), 0, 0.003, rng)[0] for k in range(3)]
    fitted = fit_limits(fit_foreign(domain, train, [foreign(c) for c in train], 1e-4), val)
    # the shape alone (the ImSPOC's setting): the level's weight is 0, the notch still flagged
    shape_only = fit_limits(fit_foreign(domain, train, [foreign(c) for c in train], 1.0, with_level=False), val)
    assert shape_only.foreign is not None and shape_only.foreign[-1] == 0.0
    test = _cube(FarmlandScene.generate(size=96, seed=5, split="test"), 0, 0.003, rng)[0]
    assert (domain.novelty(foreign(test)) > domain.novelty_limit).mean() < 0.3
    for d in (fitted, shape_only):
        assert (d.foreign_score(foreign(test)) > d.foreign_limit).mean() > 0.9
        assert (d.foreign_score(test) > d.foreign_limit).mean() < 0.1
    on_val = np.concatenate([(fitted.foreign_score(c) > fitted.foreign_limit).ravel() for c in val])
    assert on_val.mean() == pytest.approx(1 - FOREIGN_QUANTILE, abs=2e-3)
    again = type(fitted).from_dict(json.loads(json.dumps(fitted.to_dict())))
    np.testing.assert_allclose(again.foreign_score(test), fitted.foreign_score(test), rtol=1e-6, atol=1e-6)
    # a record from before the foreign test (no "foreign") reads as no foreign test
    old = {k: v for k, v in fitted.to_dict().items() if not k.startswith("foreign")}
    assert not type(fitted).from_dict(old).out_of_distribution(foreign(test)).all()
    assert np.isneginf(type(fitted).from_dict(old).foreign_score(test)).all()


def test_classical_confidence_separates_right_from_wrong() -> None:
    """On a held-out (test split) scene with known truth, the classical stage's confident
    pixels are right more often than its uncertain ones, and its confidence says so."""
    rng = np.random.default_rng(3)
    scene = FarmlandScene.generate(size=128, seed=5, split="test")
    cube, tile = _cube(scene, 0, 0.005, rng)
    m = classify_classical(cube, nominal_endmembers(GRID), UnmixConfig(brightness="sum-to-one"))
    assert m.confidence is not None and m.uncertain is not None
    right = m.tillage == tile.tillage
    assert 0 < m.uncertain.mean() < 1
    assert right[~m.uncertain].mean() > right[m.uncertain].mean() + 0.1
    assert np.corrcoef(m.confidence.ravel(), right.ravel())[0, 1] > 0.1


def _map() -> ResidueMap:
    tillage = np.array([[0, 1], [2, INVALID_CLASS]], dtype=np.uint8)
    fractions = np.full((3, 2, 2), 1 / 3, np.float32)
    fractions[:, 1, 1] = np.nan
    return ResidueMap(tillage, fractions, counter=7, confidence=np.array([[0.9, 0.4], [0.8, np.nan]], np.float32),
                      uncertain=np.array([[False, True], [False, False]]),
                      extra={"confidence_threshold": 0.6, "uncertain_share": 1 / 3, "out_of_distribution_share": 0.0})


def test_residue_product_marks_uncertain_pixels_and_keeps_the_guess() -> None:
    cube = Cube(np.full((3, 2, 2), 0.2, np.float32), np.array([500.0, 600.0, 700.0]), np.ones((2, 2), bool), counter=7)
    product = frame_products(cube, _map(), "imspoc", {}, quicklook=False, with_cube=False)[0]
    back = Product.from_bytes(product.to_bytes())
    arrays = decode_arrays(back.payload)
    np.testing.assert_array_equal(arrays["tillage"], [[0, UNCERTAIN_CLASS], [2, INVALID_CLASS]])
    np.testing.assert_array_equal(arrays["guess"], [[0, 1], [2, INVALID_CLASS]])
    assert arrays["confidence"][0, 0] == pytest.approx(0.9) and np.isnan(arrays["confidence"][1, 1])
    assert back.meta["confidence_threshold"] == 0.6 and back.meta["uncertain_share"] == pytest.approx(1 / 3)


def _with_version(blob: bytes, version: int) -> bytes:
    return blob[:4] + bytes([version]) + blob[5:]


def test_newer_product_format_is_refused_older_is_read() -> None:
    blob = Product(ProductKind.EVENT, 1, 0.0, b"{}", "json").to_bytes()
    assert blob[4] == 2 and FORMAT_VERSION == 3
    with pytest.raises(ProductFormatError, match="version 4 is newer than the versions this software reads \\(1, 2, 3\\)"):
        Product.from_bytes(_with_version(blob, 4))
    assert Product.from_bytes(_with_version(blob, 1)).kind == ProductKind.EVENT


def test_the_previous_reader_refuses_a_version_2_product(tmp_path: Path) -> None:
    """The reader of format 1 (products.py as it was before format 2, from git) refuses a
    product of this software with a message naming the versions."""
    old = tmp_path / "products_v1.py"
    done = subprocess.run(["git", "-C", str(ROOT), "show", "e0eb24a:onboard/products.py"],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"the previous products.py is not in this checkout's history: {done.stderr.strip()}")
    old.write_text(done.stdout)
    spec = importlib.util.spec_from_file_location("products_v1", old)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["products_v1"] = module
    spec.loader.exec_module(module)
    blob = Product(ProductKind.EVENT, 1, 0.0, b"{}", "json").to_bytes()
    with pytest.raises(module.ProductFormatError, match="version 2; this software reads version 1"):
        module.Product.from_bytes(blob)


def test_ood_bench_puts_foreign_ground_in_the_test_scenes_only(tmp_path: Path) -> None:
    pytest.importorskip("earthlib", reason="the bench reads earthlib (pip install 'onboard[ground]')")
    from export.foreign import with_ground
    from export.spectral_library import earthlib_candidates, split_of

    real = load().only(("earthlib", "usgs1995"))
    char = with_ground(real, ("char",))
    test_soils = [char.names[i] for i in char.indices("soil", "test")]
    c = earthlib_candidates({"char": "soil"})
    by_split = {k: {n for n, site in zip(c.names, c.sites, strict=True) if split_of(site) == k}
                for k in ("train", "val", "test")}
    # the test scenes hold the test part of char only: its train part taught the rule
    assert test_soils and set(test_soils) == by_split["test"] and by_split["train"]
    for split in ("train", "val"):  # what trained and chose the model is untouched
        assert [char.names[i] for i in char.indices("soil", split)] == \
            [real.names[i] for i in real.indices("soil", split) if real.splits[i] != "shared"]
    out = tmp_path / "ood.json"
    subprocess.run([sys.executable, str(ROOT / "bench" / "bench_residue_ood.py"), "--cubes", "1",
                    "--sensor", "pushbroom", "--json", str(out)], check=True, timeout=600,
                   capture_output=True)
    results = json.loads(out.read_text())["results"]
    assert set(results) == {"real test soils (reference)", "sand, gravel", "char", "built"}
    for r in (v["pushbroom"] for v in results.values()):
        assert r["pixels"] > 0 and r["ood_share"] <= r["uncertain_share"] + 1e-9
        assert r["uncertain_share"] + r["confident_share"] == pytest.approx(1.0)
    # unseen soils of a known class: the rule (limits at validation quantiles) rarely fires
    assert results["real test soils (reference)"]["pushbroom"]["ood_share"] < 0.05
