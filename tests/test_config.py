"""Mission configuration: defaults, overrides, and refusals that name the key."""

import pytest

from onboard import config
from onboard.config import ConfigError


def test_defaults_and_overrides(tmp_path) -> None:
    assert config.load(None).run.frames == 5
    p = tmp_path / "m.toml"
    p.write_text('[run]\nframes = 3\nsensor = "pushbroom"\n[imspoc]\nexposure_s = 0.02\n')
    c = config.load(p)
    assert c.run.frames == 3 and c.run.sensor == "pushbroom" and c.imspoc.exposure_s == 0.02


@pytest.mark.parametrize(
    "text, message",
    [
        ("[run]\nframez = 3\n", r"\[run\] framez: unknown key"),
        ("[rnu]\nframes = 3\n", r"unknown section \[rnu\]"),
        ('[run]\nframes = "3"\n', r"\[run\] frames: expected int, got str"),
        ("[run]\nframes = true\n", r"\[run\] frames: expected int, got bool"),
        ('[run]\nsensor = "lidar"\n', r"\[run\] sensor: expected one of"),
        ("[run]\nframes = -1\n", r"\[run\] frames: must be > 0"),
        ("[imspoc]\nn_bands = 2\n", r"\[imspoc\] n_bands: expected int >= 5"),
        ("[run\nframes = 1\n", "not valid TOML"),
    ],
)
def test_bad_config_is_refused_naming_the_key(tmp_path, text: str, message: str) -> None:
    p = tmp_path / "m.toml"
    p.write_text(text)
    with pytest.raises(ConfigError, match=message):
        config.load(p)


def test_missing_file(tmp_path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        config.load(tmp_path / "absent.toml")


def test_the_readmes_mission_file_is_accepted_as_written(tmp_path) -> None:
    """Users copy the README's sample mission file: every key in it must be one the loader
    knows, with a value it accepts (a renamed key would otherwise be refused at their launch)."""
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    [block] = [b for b in (s.split("```")[0] for s in readme.split("```toml\n")[1:]) if "[run]" in b]
    p = tmp_path / "mission.toml"
    p.write_text(block)
    c = config.load(p)
    assert c.products.cube_coding == "ccsds123" and c.screen.max_cloud_share == 0.7
