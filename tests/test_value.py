"""The downlink's value rule and the per-frame summary (onboard/stages/value.py): the ranks
the mission file states become spool priorities, what the rule keeps on board is never
spooled and is named in an event, storage running short drops the least valuable class
first, and the summary's numbers are those of the maps it summarises, in a few hundred bytes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from firmware_bridge.cfdp.sender import transfer_wire_bytes
from firmware_bridge.spool import Spool
from onboard.config import ConfigError, from_dict
from onboard.formats.products import Product, ProductKind
from onboard.formats.types import INVALID_CLASS, ResidueMap
from onboard.stages.screen import CLOUD, SHADOW, Screening, ScreenRule
from onboard.stages.value import VALUE_CLASSES, ValueRule, summary_product

ONBOARD = [sys.executable, "-m", "onboard"]


def test_the_mission_file_ranks_the_classes_and_selects_the_cubes() -> None:
    rule = from_dict({"value": {"order": ["summary", "residue_clear", "quicklook", "residue_cloudy", "raw", "cube"],
                                "cubes": "all", "never": ["raw"], "summary_grid": 8}}).value.rule
    assert rule.priority(ProductKind.SUMMARY, True) == rule.priority(ProductKind.EVENT, False) == 0
    assert rule.priority(ProductKind.RESIDUE, True) == 1 and rule.priority(ProductKind.RESIDUE, False) == 3
    assert rule.priority(ProductKind.QUICKLOOK, True) == 2 and rule.priority(ProductKind.CUBE, False) == 5
    cloudy = ScreenRule().held_kinds  # what the screening holds back of a cloudy frame
    assert rule.held(False, cloudy) == {ProductKind.QUICKLOOK, ProductKind.RAW}  # cubes all, raw never
    assert rule.held(True, cloudy) == {ProductKind.RAW}
    default = from_dict({}).value.rule
    assert default == ValueRule() and default.order == VALUE_CLASSES
    # by default: quick-looks last, cubes and raw frames of the frames the screening sends
    assert default.priority(ProductKind.QUICKLOOK, True) > default.priority(ProductKind.CUBE, True)
    assert default.held(True, cloudy) == set() and default.held(False, cloudy) == set(cloudy)
    assert ValueRule(cubes="none").held(True, cloudy) == {ProductKind.CUBE, ProductKind.RAW}


@pytest.mark.parametrize("table,words", [
    ({"order": ["summary", "cube"]}, "must name each of"),
    ({"order": [*VALUE_CLASSES, "cube"]}, "must name each of"),
    ({"never": ["thumbnails"]}, "unknown class 'thumbnails'"),
    ({"never": ["summary"]}, "summaries always go down"),
    ({"cubes": "cloudy"}, "cubes must be clear, all or none"),
    ({"cubes": 3}, "[value] cubes: expected str"),
    ({"order": "summary"}, "[value] order: expected list"),
    ({"never": [1]}, "list of class names"),
    ({"summary_grid": -1}, "summary_grid must be 1-16"),
    ({"rank": []}, "[value] rank: unknown key"),
])
def test_a_bad_rule_is_refused_by_name(table: dict, words: str) -> None:
    with pytest.raises(ConfigError, match=None) as err:
        from_dict({"value": table})
    assert words in str(err.value)


def _maps(rng: np.random.Generator) -> tuple[ResidueMap, Screening]:
    """A 60 x 50 residue map (so that cells differ in size) with an invalid corner and a
    cloud over the top rows."""
    residue = rng.uniform(0, 1, (60, 50)).astype(np.float32)
    fractions = np.stack([residue, (1 - residue) / 2, (1 - residue) / 2])
    tillage = np.zeros((60, 50), np.uint8)
    tillage[:10, :10] = INVALID_CLASS
    fractions[:, :10, :10] = np.nan
    uncertain = rng.uniform(0, 1, (60, 50)) < 0.3
    mask = np.zeros((60, 50), np.uint8)
    mask[:20] |= CLOUD
    mask[30:35] |= SHADOW
    res = ResidueMap(tillage, fractions, counter=7, timestamp=1.8e9, method="learned:residue_imspoc (cpu)",
                     uncertain=uncertain)
    return res, Screening(mask, 0.33, 0.08, 0.0, 0.03, 0.0, True, "vnir")


def test_the_summary_holds_each_cells_statistics() -> None:
    res, scr = _maps(np.random.default_rng(0))
    product = summary_product(res, scr, "imspoc-x", 3, (45.1, 1.2, 500.0, 0.0, 1.0, 90.0))
    body = json.loads(product.payload)
    assert product.kind == ProductKind.SUMMARY and product.frame_counter == 7 and product.created_utc == 1.8e9
    assert body["pose"] == [45.1, 1.2, 500.0, 0.0, 1.0, 90.0] and body["grid"] == 3
    assert body["screen"] == {"worth_sending": True, "cloud": 33, "shadow": 8, "haze": 0, "invalid": 3,
                              "blur_px": None}
    assert body["method"] == "learned:residue_imspoc"
    rows, cols = [0, 20, 40, 60], [0, 17, 34, 50]  # 60 and 50 in three: 20/20/20, 17/17/16
    valid = res.tillage != INVALID_CLASS
    for i in range(3):
        for j in range(3):
            cell = np.s_[rows[i]:rows[i + 1], cols[j]:cols[j + 1]]
            v = valid[cell]
            assert body["valid"][i][j] == round(100 * v.mean())
            assert body["cloud"][i][j] == (100 if i == 0 else 0)
            f = res.fractions[0][cell][v]
            assert body["residue"][i][j] == round(100 * f.mean())
            assert body["residue_sd"][i][j] == round(100 * f.std())
            assert body["uncertain"][i][j] == round(100 * (res.uncertain[cell] & v).sum() / v.sum())


def test_a_cells_mean_is_rounded_from_its_exact_value() -> None:
    """Residue fractions on eighths: many cells' means fall on a half percent, where a
    single-precision sum (numpy's nanmean of float32, the old per-cell loop) tipped some
    roundings either way; the summary rounds the exact mean, half to even."""
    from fractions import Fraction

    rng = np.random.default_rng(0)
    eighths = rng.integers(0, 9, (66, 72))
    fractions = np.stack([eighths / 8, 1 - eighths / 8, 0 * eighths]).astype(np.float32)
    res = ResidueMap(np.zeros((66, 72), np.uint8), fractions, counter=1)
    body = json.loads(summary_product(res, Screening(np.zeros((66, 72), np.uint8), 0.0, 0.0, 0.0, 0.0, 0.0,
                                                     True, "vnir"), "imspoc-x", 13, None).payload)
    rows, cols = np.cumsum([0] + [6] * 1 + [5] * 12), np.cumsum([0] + [6] * 7 + [5] * 6)
    ties = 0
    for i in range(13):
        for j in range(13):
            cell = eighths[rows[i]:rows[i + 1], cols[j]:cols[j + 1]]
            exact = Fraction(int(cell.sum()) * 100, 8 * cell.size)
            ties += exact.denominator == 2
            assert body["residue"][i][j] == round(exact), (i, j, exact)
    assert ties > 10  # the case this test is about


def test_a_cell_with_no_valid_pixel_is_null_and_the_summary_is_small() -> None:
    res, scr = _maps(np.random.default_rng(1))
    res.tillage[:] = INVALID_CLASS
    res.fractions[:] = np.nan
    body = json.loads(summary_product(res, scr, "imspoc-x", 4, None).payload)
    assert body["pose"] is None and body["residue"] == [[None] * 4] * 4 and body["valid"] == [[0] * 4] * 4
    # a 4 x 4 summary crosses a 9.6 kbit/s link in under a second, a 16 x 16 in a few
    res, scr = _maps(np.random.default_rng(2))
    for grid, most in ((4, 1200), (16, 6000)):
        p = summary_product(res, scr, "imspoc-default", grid, (45.0, 1.0, 500.0, 0.0, 0.0, 0.0))
        assert transfer_wire_bytes(len(p.to_bytes()), p.name) < most


def test_storage_short_drops_the_least_valuable_class_first(tmp_path: Path) -> None:
    """The spool evicts the largest priority number first: with the rule's priorities a new
    summary pushes out the quick-look (last class), not the cube, and says so."""
    rule = ValueRule()
    spool = Spool(tmp_path / "spool", 10_000)
    for kind, size in ((ProductKind.CUBE, 4000), (ProductKind.QUICKLOOK, 3000), (ProductKind.RESIDUE, 2500)):
        spool.put(f"{kind.value}_00000001", bytes(size), rule.priority(kind, True), kind.value)
    events = spool.put("summary_00000002", bytes(900), rule.priority(ProductKind.SUMMARY, True), "summary")
    assert [(e.what, e.name) for e in events] == [("evicted", "quicklook_00000001"), ("queued", "summary_00000002")]
    assert "evicted quicklook_00000001" in events[0].message().text
    assert [e.name for e in spool.entries()] == ["summary_00000002", "residue_00000001", "cube_00000001"]


def test_a_run_spools_by_the_rule_and_keeps_the_rest_on_board(tmp_path: Path) -> None:
    """``onboard run`` under ``[value] cubes = "none"`` and quick-looks ranked above residue
    maps: every frame has a summary of priority 0, the ranks are the file's, and the cubes are
    archived, marked held in the frame's manifest and named in its event."""
    (tmp_path / "mission.toml").write_text(
        '[value]\ncubes = "none"\norder = ["summary", "quicklook", "residue_clear", "residue_cloudy", "cube", "raw"]\n')
    out = tmp_path / "out"
    run = subprocess.run([*ONBOARD, "run", "--frames", "2", "--out", str(out), "--quiet",
                          "--config", str(tmp_path / "mission.toml")], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    products = {p.stem: Product.from_bytes(p.read_bytes()) for p in (out / "products").glob("*.obp")}
    for n in range(2):
        frame = f"{n:08d}"
        assert products[f"summary_{frame}"].priority == 0
        assert products[f"quicklook_{frame}"].priority == 1 and products[f"residue_{frame}"].priority == 2
        manifest = json.loads((out / "frames" / f"frame_{frame}.json").read_text())
        held = {p["name"]: p["held"] for p in manifest["products"]}
        assert held[f"cube_{frame}"] and not held[f"summary_{frame}"] and not held[f"residue_{frame}"]
        event = json.loads(products[f"event_{frame}"].payload)
        assert "cube stay on board" in event["detail"] and "[value] rule" in event["detail"]


def test_the_ground_writes_each_summary_as_one_line(tmp_path: Path) -> None:
    from ground.export import write_user_formats

    res, scr = _maps(np.random.default_rng(3))
    p = Product.from_bytes(summary_product(res, scr, "imspoc-x", 4, None).to_bytes())
    lines: list[tuple[str, dict]] = []
    assert write_user_formats(p, tmp_path, p.name, lambda f, rec: lines.append((f, rec))) == ["summaries.jsonl"]
    ((file, record),) = lines
    assert record["name"] == "summary_00000007" and record["data"] == json.loads(p.payload)
