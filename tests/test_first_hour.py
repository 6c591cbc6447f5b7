"""The first hour of a new user (issue 12): every rough edge they hit, through the real CLI in
a subprocess. Each test failed on the code before the fix it names."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ONBOARD = [sys.executable, "-m", "onboard"]


def _env(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}


def _onboard(tmp_path: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([*ONBOARD, *args], capture_output=True, text=True, env=_env(tmp_path),
                          timeout=timeout, cwd=tmp_path)


def _one_line_error(proc: subprocess.CompletedProcess) -> str:
    """The error a user sees: one line, no traceback."""
    assert proc.returncode == 1, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("Error:")]
    assert len(errors) == 1, proc.stderr
    return errors[0]


def test_ctrl_c_ends_the_run_with_130_and_keeps_what_was_processed(tmp_path: Path) -> None:
    """Exit 0 after Ctrl-C told scripts the run had finished."""
    out = tmp_path / "out"
    proc = subprocess.Popen([*ONBOARD, "run", "--frames", "1000", "--quiet", "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=_env(tmp_path), cwd=tmp_path)
    try:
        # a state, not a time: the first frame's manifest is written after its products
        frames = out / "frames"
        while not (frames.is_dir() and any(frames.glob("frame_*.json"))):
            assert proc.poll() is None, proc.communicate()[1]
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert "stopped by SIGINT" in err
    done = len(list((out / "frames").glob("frame_*.json")))
    assert 1 <= done < 1000
    # every processed frame's products were written
    listed = {e["name"] for m in (out / "frames").glob("frame_*.json")
              for e in json.loads(m.read_text())["products"]}
    assert listed and listed <= {p.stem for p in (out / "products").glob("*.obp")}


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux /proc, where nothing can be created")
def test_unwritable_output_paths_fail_first_in_one_line(tmp_path: Path) -> None:
    """--out /proc/x ended in a 51-line traceback; --json /proc/x.json ran the whole job first."""
    line = _one_line_error(_onboard(tmp_path, "run", "--frames", "1", "--quiet", "--out", "/proc/x"))
    assert "/proc/x" in line
    proc = _onboard(tmp_path, "run", "--frames", "1", "--quiet", "--out", str(tmp_path / "o"),
                    "--json", "/proc/x.json")
    line = _one_line_error(proc)
    assert "/proc/x.json" in line
    assert "products in" not in proc.stdout  # nothing was run
    assert not (tmp_path / "o" / "frames").exists() or not any((tmp_path / "o" / "frames").iterdir())
    # a summary inside a folder the run makes (as the HIL harness asks) is fine
    proc = _onboard(tmp_path, "run", "--frames", "1", "--quiet", "--out", str(tmp_path / "o3"),
                    "--json", str(tmp_path / "o3" / "sub" / "s.json"))
    assert proc.returncode == 0, proc.stderr
    assert json.loads((tmp_path / "o3" / "sub" / "s.json").read_text())["frames"] == 1


def test_a_second_run_into_the_same_folder_is_refused_unless_asked_to_overwrite(tmp_path: Path) -> None:
    """A push-broom run's products silently sat beside an ImSPOC run's."""
    out = tmp_path / "out"
    first = _onboard(tmp_path, "run", "--sensor", "pushbroom", "--frames", "1", "--quiet", "--out", str(out))
    assert first.returncode == 0, first.stderr
    before = sorted(p.name for p in (out / "products").iterdir())
    line = _one_line_error(_onboard(tmp_path, "run", "--frames", "2", "--quiet", "--out", str(out)))
    assert "--overwrite" in line and str(out) in line
    assert sorted(p.name for p in (out / "products").iterdir()) == before  # untouched
    again = _onboard(tmp_path, "run", "--frames", "2", "--quiet", "--out", str(out), "--overwrite")
    assert again.returncode == 0, again.stderr
    manifests = sorted((out / "frames").glob("frame_*.json"))
    assert len(manifests) == 2
    listed = {e["name"] for m in manifests for e in json.loads(m.read_text())["products"]}
    assert {p.stem for p in (out / "products").glob("*.obp")} == listed  # this run's only


def test_calibration_paths_that_are_not_calibration_files(tmp_path: Path) -> None:
    """A folder was said not to exist; random bytes repeated numpy's advice to unpickle."""
    folder = tmp_path / "cal_dir"
    folder.mkdir()
    line = _one_line_error(_onboard(tmp_path, "run", "--frames", "1", "--quiet", "--out",
                                    str(tmp_path / "o1"), "--calibration", str(folder)))
    assert "is a folder" in line and "does not exist" not in line
    junk = tmp_path / "random.cal"
    junk.write_bytes(np.random.default_rng(0).bytes(4096))
    line = _one_line_error(_onboard(tmp_path, "run", "--frames", "1", "--quiet", "--out",
                                    str(tmp_path / "o2"), "--calibration", str(junk)))
    assert "pickle" not in line.lower() and "random.cal" in line


def test_a_calibration_file_s_band_grid_is_said_to_win_over_n_bands(tmp_path: Path) -> None:
    """The README's [imspoc] n_bands = 24 was silently overridden by a 10-band calibration."""
    from onboard.physics.imspoc import default_instrument
    from onboard.sources.simulated import calibrate_imspoc

    cal = tmp_path / "ten.cal"
    calibrate_imspoc(default_instrument(seed=0), n_bands=10).write(cal)
    mission = tmp_path / "m.toml"
    mission.write_text("[imspoc]\nn_bands = 24\n")
    proc = _onboard(tmp_path, "run", "--frames", "1", "--quiet", "--out", str(tmp_path / "o"),
                    "--config", str(mission), "--calibration", str(cal))
    assert proc.returncode == 0, proc.stderr
    assert "sets 10 bands; [imspoc] n_bands (24) applies only to a simulated calibration" in proc.stderr


def test_run_help_shows_the_default_output_folder(tmp_path: Path) -> None:
    proc = _onboard(tmp_path, "run", "--help")
    assert proc.returncode == 0
    assert "onboard-out" in " ".join(proc.stdout.split())


def test_progress_is_plain_lines_when_not_on_a_terminal(tmp_path: Path) -> None:
    """A redirected progress bar became one endless carriage-return line."""
    proc = _onboard(tmp_path, "run", "--frames", "2", "--out", str(tmp_path / "o"))
    assert proc.returncode == 0, proc.stderr
    assert "\r" not in proc.stderr
    assert [ln for ln in proc.stderr.splitlines() if ln.startswith("frame ")] == ["frame 1/2", "frame 2/2"]


def test_info_says_a_missing_engine_once(tmp_path: Path) -> None:
    """'tensorrt not installed' was repeated for every model of the bundle."""
    proc = _onboard(tmp_path, "info")
    assert proc.returncode == 0, proc.stderr
    engines = json.loads(_onboard(tmp_path, "info", "--json").stdout)["engines"]
    for e in engines:
        if not e["available"]:
            assert proc.stdout.count(e["detail"]) == 1, e["name"]


def _without(tmp_path: Path, *modules: str) -> dict[str, str]:
    """An environment whose interpreter cannot import ``modules``: a runtime-only install."""
    site = tmp_path / "block"
    site.mkdir(exist_ok=True)
    # None in sys.modules is Python's own way to make a module unimportable
    (site / "sitecustomize.py").write_text(f"import sys\nsys.modules.update(dict.fromkeys({modules!r}))\n")
    env = _env(tmp_path)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(site), env.get("PYTHONPATH", "")) if p)
    return env


def test_export_build_without_torch_names_the_extra(tmp_path: Path) -> None:
    proc = subprocess.run([*ONBOARD, "export", "build", "--out", str(tmp_path / "m")],
                          capture_output=True, text=True, env=_without(tmp_path, "torch"),
                          timeout=120, cwd=tmp_path)
    line = _one_line_error(proc)
    assert "'torch'" in line and "onboard[export]" in line
    assert not (tmp_path / "m").exists()


def test_a_drain_estimate_writes_nothing(tmp_path: Path) -> None:
    """--estimate on a folder that is not a spool reported 0 products and created queue/ in it."""
    folder = tmp_path / "not_a_spool"
    folder.mkdir()
    proc = subprocess.run([sys.executable, "-m", "firmware_bridge.cfdp", str(folder), "--estimate"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and "not a spool" in proc.stderr, proc.stderr
    assert list(folder.iterdir()) == []


def test_any_onboard_error_from_a_subcommand_is_one_line(monkeypatch) -> None:
    """The command line turns the error root into one line in one place (issue 12)."""
    import types

    import click
    from click.testing import CliRunner

    from onboard import cli as cli_mod
    from onboard.errors import BridgeError, OnboardError

    class Refused(BridgeError, ValueError):
        pass

    @click.command()
    def boom() -> None:
        raise Refused("the spool at /x is full: free space or raise [link] quota_mb")

    @click.command()
    def bug() -> None:
        raise KeyError("not ours")

    module = types.ModuleType("fake_subcommands")
    module.boom, module.bug = boom, bug  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "fake_subcommands", module)
    monkeypatch.setitem(cli_mod.SUBCOMMANDS, "boom", ("fake_subcommands", "boom", None, "x"))
    monkeypatch.setitem(cli_mod.SUBCOMMANDS, "bug", ("fake_subcommands", "bug", None, "x"))
    result = CliRunner().invoke(cli_mod.cli, ["boom"])
    assert result.exit_code == 1
    assert result.output.strip() == "Error: the spool at /x is full: free space or raise [link] quota_mb"
    assert issubclass(Refused, OnboardError)
    result = CliRunner().invoke(cli_mod.cli, ["bug"])
    assert isinstance(result.exception, KeyError)  # a bug is not dressed up as a user error
