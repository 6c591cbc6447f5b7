"""The residue stages' out-of-distribution rule (onboard/stages/confidence.py) on ground the
shipped models never saw: test-split scenes whose soils are replaced by the test part of real
earthlib char and built surfaces (export/foreign.py) must be mostly flagged, while the same
scenes on their own unseen test soils are flagged rarely (the limits sit at the validation
split's quantiles)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("earthlib")

import onboard  # noqa: E402
from export import data  # noqa: E402
from export.foreign import FOREIGN, FOREIGN_SHARE, with_ground  # noqa: E402
from onboard.formats import bundle as bundle_mod  # noqa: E402
from onboard.formats.types import ENDMEMBERS  # noqa: E402
from onboard.scene.library import load  # noqa: E402
from onboard.stages.confidence import (  # noqa: E402
    DARK_QUANTILE,
    FOREIGN_QUANTILE,
    NOVELTY_QUANTILE,
    Domain,
    fit_limits,
)

DEFAULT = Path(onboard.__file__).parent / "models" / "default"
CUBES = 8
#: How many times the validation false-flag budget of a record's limits (the share of
#: in-distribution validation pixels its quantiles flag) the whole rule must flag of test-split
#: char and built ground. Not the validation part's shares (push-broom char / built 59 / 30 %,
#: ImSPOC 87 / 62 % with the shipped records, 24 scenes per set): floors 20 points under those
#: failed on the test part (push-broom 14 / 25 %, ImSPOC 41 / 44 %, bench_residue_ood.py), where
#: the validation part's 7 char spectra overstate the rule (docs/residue_ceiling.md).
FOREIGN_OVER_BUDGET = 10


def _flagged(kind: str, ground: tuple[str, ...] | None, endmember: str = "soil", foreign_only: bool = False,
             cubes: int = CUBES) -> float:
    """Share of the valid pixels of ``cubes`` test scenes at least ``FOREIGN_SHARE`` of
    ``endmember`` that the shipped model's rule flags (``foreign_only``: its foreign test
    alone); ``ground``: earthlib classes in the place of the test soils."""
    domain = Domain.from_dict(bundle_mod.load(DEFAULT).model(f"residue_{kind}").metadata["domain"])
    real = load().only(("earthlib", "usgs1995"))
    lib = real if ground is None else with_ground(real, ground)
    hit = total = 0
    for s in data.take(data.samples(kind, "test", 900, library=lib), cubes):  # type: ignore[arg-type]
        cube = data.denoised(s)
        ok = (cube.valid & np.isfinite(cube.data).all(axis=0)
              & (s.fractions[ENDMEMBERS.index(endmember)] >= FOREIGN_SHARE))
        flags = (domain.foreign_score(cube) > domain.foreign_limit) if foreign_only else domain.out_of_distribution(cube)
        hit += int((flags & ok).sum())
        total += int(ok.sum())
    return hit / total


@pytest.mark.parametrize("kind", ["pushbroom", "imspoc"])
def test_foreign_ground_is_flagged_and_unseen_soils_are_not(kind: str) -> None:
    # test-split char and built (the ImSPOC's foreign test saw their train part, its limit
    # the validation soils): ``FOREIGN_OVER_BUDGET`` x the limits' validation false flags
    domain = Domain.from_dict(bundle_mod.load(DEFAULT).model(f"residue_{kind}").metadata["domain"])
    budget = 1 - NOVELTY_QUANTILE + DARK_QUANTILE + (1 - FOREIGN_QUANTILE if domain.foreign is not None else 0)
    foreign = _flagged(kind, FOREIGN["char"] + FOREIGN["built"])
    assert foreign > FOREIGN_OVER_BUDGET * budget, foreign
    # unseen soils of the test split: about the validation split's 1 % of false flags
    assert _flagged(kind, None) < 0.05


@pytest.mark.parametrize("kind", ["pushbroom", "imspoc"])
def test_foreign_test_spares_unseen_residue(kind: str) -> None:
    """The foreign test must not take crop residue it never saw for foreign ground: on the
    test split's residue-dominated pixels it flags at most the 5 % its setting was chosen for
    on held-out train-split residues (bench/bench_residue_foreign_cv.py; the push-broom's
    previous record, shape and level at ridge 1e-4, flagged 30 % of them). 16 cubes, 4
    fields: the previous record flagged 4 % of the first 2 fields' and 66 % of the third's."""
    assert _flagged(kind, None, endmember="residue", foreign_only=True, cubes=16) <= 0.05


def test_limits_are_validation_quantiles() -> None:
    """``fit_limits`` flags the share of the fitting pixels its quantiles say (each test's,
    and at most their sum together), and an older bundle's record (no dark limit) reads as no
    darkness test. The ImSPOC record: the one with a foreign test (``FOREIGN_TEST``)."""
    spec = bundle_mod.load(DEFAULT).model("residue_imspoc")
    domain = Domain.from_dict(spec.metadata["domain"])
    cubes = [data.denoised(s) for s in data.take(data.samples("imspoc", "eval", 7), 3)]
    fitted = fit_limits(domain, cubes)
    ok = np.concatenate([(c.valid & np.isfinite(c.data).all(axis=0)).ravel() for c in cubes])
    novel = np.concatenate([(fitted.novelty(c) > fitted.novelty_limit).ravel() for c in cubes])[ok]
    flagged = np.concatenate([fitted.out_of_distribution(c).ravel() for c in cubes])[ok]
    assert novel.mean() == pytest.approx(1 - NOVELTY_QUANTILE, abs=2e-3)
    foreign = np.concatenate([(fitted.foreign_score(c) > fitted.foreign_limit).ravel() for c in cubes])[ok]
    assert foreign.mean() == pytest.approx(1 - FOREIGN_QUANTILE, abs=2e-3)
    most = 1 - NOVELTY_QUANTILE + DARK_QUANTILE + 1 - FOREIGN_QUANTILE
    assert 1 - NOVELTY_QUANTILE - 2e-3 <= flagged.mean() <= most + 2e-3
    old = {k: v for k, v in fitted.to_dict().items() if k != "dark_limit"}
    assert Domain.from_dict(old).dark_limit == 0.0
    assert Domain.from_dict(fitted.to_dict()).dark_limit == pytest.approx(fitted.dark_limit)


@pytest.mark.slow
def test_only_residue_ood_refits_the_rule_and_nothing_else(tmp_path: Path) -> None:
    """``onboard export build --only residue_ood`` (real CLI): the residue models' network
    files, confidence thresholds and build records stay; their domain records get validation
    limits and, where ``FOREIGN_TEST`` gives one, a foreign direction; the bundle still
    verifies."""
    pytest.importorskip("torch")
    from export.build import FOREIGN_TEST

    out = tmp_path / "bundle"
    shutil.copytree(DEFAULT, out)
    before = json.loads((out / "manifest.json").read_text())
    subprocess.run([sys.executable, "-m", "onboard", "export", "build", "--out", str(out), "--quick",
                    "--only", "residue_ood", "--eval-cubes", "1", "--no-tensorrt"],
                   check=True, capture_output=True, text=True, timeout=900)
    after = json.loads((out / "manifest.json").read_text())
    assert {k: v for k, v in after.items() if k != "models"} == {k: v for k, v in before.items() if k != "models"}
    for name, old in before["models"].items():
        new = after["models"][name]
        assert new["artifacts"] == old["artifacts"], name
        if not name.startswith("residue_"):
            assert new == old, name
            continue
        assert new["metadata"]["built"] == old["metadata"]["built"]
        assert "--only residue_ood" in new["metadata"]["ood_built"]["producer"]
        d_old, d_new = Domain.from_dict(old["metadata"]["domain"]), Domain.from_dict(new["metadata"]["domain"])
        assert d_new.confidence_threshold == d_old.confidence_threshold
        assert 0.0 < d_new.dark_limit < 1.0 and d_new.novelty_limit > 0
        if FOREIGN_TEST[name.removeprefix("residue_")] is None:
            assert d_new.foreign is None and "foreign" not in new["metadata"]["domain"]
        else:
            assert d_new.foreign is not None and np.isfinite(d_new.foreign_limit)
    assert not bundle_mod.load(out).problems
