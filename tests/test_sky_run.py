"""``onboard run`` under a simulated sky (``[sky]``): the simulated sensors fly a drone or a
satellite under SPECTRL2 light that changes, and each reflectance method runs end to end
through the real command line, scored by the run's own accuracy against the simulator's
truth (the surface reflectance it rendered)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from onboard.config import ConfigError, from_dict

pytest.importorskip("pvlib")  # the sky simulator's (ground extra)

#: Sun zenith 60 deg (equinox noon at 60 N), the light at 0.8 from 0.6 s and 1.2 from 1.1 s:
#: frames at 0, 0.5, 1.0, 1.5 s see factors 1, 1, 0.8, 1.2; frame 0 holds two panels.
MISSION = """
[sky]
platform = "{platform}"
lat_deg = 60.0
lon_deg = 0.0
start_utc = "2026-03-20T12:07:00Z"
steps = [[0.6, 0.8], [1.1, 1.2]]

[reflectance]
method = "{method}"
panel_frames = [0]

[[reflectance.panel]]
name = "dark"
wavelengths_nm = [400.0, 1000.0]
reflectance = [0.05, 0.05]
region = [4, 4, 12, 12]

[[reflectance.panel]]
name = "grey"
wavelengths_nm = [400.0, 1000.0]
reflectance = [0.5, 0.5]
region = [4, 24, 12, 12]
"""


def _run(tmp_path: Path, platform: str, method: str) -> tuple[dict, dict, str]:
    """(the run's JSON summary, the last cube product's radiometry, stderr)."""
    name = f"{platform}-{method}".replace("+", "_")
    mission = tmp_path / f"{name}.toml"
    mission.write_text(MISSION.format(platform=platform, method=method))
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    proc = subprocess.run([sys.executable, "-m", "onboard", "run", "--config", str(mission), "--frames", "4",
                           "--out", str(tmp_path / name), "--quiet", "--json", str(tmp_path / f"{name}.json")],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr
    from onboard.formats.products import Product

    cube = Product.from_bytes((tmp_path / name / "products" / "cube_00000003.obp").read_bytes())
    return json.loads((tmp_path / f"{name}.json").read_text()), cube.meta["radiometry"], proc.stderr


@pytest.mark.slow
def test_every_reflectance_method_flies_under_the_sky_through_the_cli(tmp_path: Path) -> None:
    """Measured (4 frames, seed 0): RMSE of the reconstructed reflectance against the truth,
    drone lab 0.095, panel 0.036, irradiance 0.026, panel+irradiance 0.026; satellite lab
    0.092, surface-dos 0.049 (toa 0.063: a TOA reflectance, scored against the surface's)."""
    rmse, quantity = {}, {}
    for platform, methods in (("drone", ("lab", "panel", "irradiance", "panel+irradiance")),
                              ("satellite", ("lab", "toa", "surface-dos"))):
        for method in methods:
            summary, radiometry, _ = _run(tmp_path, platform, method)
            rmse[platform, method] = summary["accuracy"]["rmse_reconstructed"]
            quantity[platform, method] = radiometry["quantity"]
    # uncorrected, the sky's light (sun at 60 deg, 20 % steps) is in the reflectance
    assert rmse["drone", "lab"] > 0.06 and rmse["satellite", "lab"] > 0.06
    for method in ("panel", "irradiance", "panel+irradiance"):
        assert rmse["drone", method] < 0.5 * rmse["drone", "lab"], (method, rmse)
    assert rmse["drone", "irradiance"] < 0.04
    assert rmse["satellite", "surface-dos"] < 0.7 * rmse["satellite", "lab"], rmse
    assert quantity["satellite", "toa"] == "toa reflectance"
    assert quantity["drone", "lab"] == "lab reflectance"


@pytest.mark.slow
def test_the_run_says_it_flies_under_the_sky_and_uses_the_simulated_irradiance_sensor(tmp_path: Path) -> None:
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    mission = tmp_path / "m.toml"
    mission.write_text(MISSION.format(platform="drone", method="irradiance"))
    proc = subprocess.run([sys.executable, "-m", "onboard", "run", "--config", str(mission), "--frames", "1",
                           "--out", str(tmp_path / "o")], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout + proc.stderr
    assert "sky: simulated drone at 60, 0 deg, sun zenith 60" in out
    assert "irradiance: the simulated sensor" in out


@pytest.mark.parametrize(("sky", "message"), [
    ({"platform": "balloon"}, "platform: expected one of"),
    ({"start_utc": "yesterday"}, "not an ISO 8601 time"),
    ({"start_utc": "2026-03-20T12:00:00"}, "no time zone"),
    ({"steps": [[1.0]]}, r"steps: expected a list of \[number, number\] rows"),
    ({"clouds": [[5.0, 2.0, 1.0]]}, "0 <= start < end"),
    ({"steps": [[1.0, 0.0]]}, "factors > 0"),
    ({"lat_deg": 95.0}, "not on Earth"),
    ({"sun": 3}, "unknown key"),
])
def test_a_bad_sky_is_refused_by_name(sky: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        from_dict({"sky": sky})


def test_a_sky_config_reads_its_rows_and_time() -> None:
    c = from_dict({"sky": {"platform": "drone", "start_utc": "2026-03-20T12:00:00Z",
                           "steps": [[3, 0.8]], "clouds": [[1, 2.5, 2]]}})
    assert c.sky.steps == [[3.0, 0.8]] and c.sky.clouds == [[1.0, 2.5, 2.0]]
    assert c.sky.start_unix() == 1774008000.0
