"""The simulated calibration cache is keyed by the code that makes it."""

import shutil
from pathlib import Path

from onboard.runtime import sensors


def test_cache_key_follows_the_calibration_code(tmp_path, monkeypatch) -> None:
    """A copy of the sources gives the same digest; one changed byte in the radiometric
    stage gives another, so a calibration cached by older code is not reused."""
    src = Path(sensors.__file__).parents[1]
    copy = tmp_path / "onboard"
    for name in sensors._CALIBRATION_SOURCES:
        p = src / name
        if p.is_dir():
            shutil.copytree(p, copy / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            (copy / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(p, copy / name)
    original = sensors._source_digest()
    monkeypatch.setattr(sensors, "__file__", str(copy / "runtime" / "sensors.py"))
    assert sensors._source_digest() == original
    target = copy / "stages" / "radiometric.py"
    target.write_text(target.read_text() + "\n# changed\n")
    assert sensors._source_digest() != original


def test_cached_calibration_is_made_once_then_read(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    made = []

    def make():
        from onboard.physics.imspoc import default_instrument
        from onboard.sources.simulated import calibrate_imspoc

        made.append(1)
        return calibrate_imspoc(default_instrument(seed=3), n_bands=12)

    first, path = sensors.simulated_calibration("imspoc", "test:3:12", make)
    second, path2 = sensors.simulated_calibration("imspoc", "test:3:12", make)
    assert made == [1] and path == path2 and Path(path).parent == tmp_path / "onboard"
    assert (second.wavelengths_nm == first.wavelengths_nm).all()
