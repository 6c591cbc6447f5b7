"""Which denoise and residue stages a session runs, per sensor and per mission setting."""

import pytest

from onboard import config as config_mod
from onboard.runtime.session import build_session
from onboard.stages.learned import LearnedDenoiser, LearnedResidue


def _session(monkeypatch, tmp_path, sensor: str, **sections: dict):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    cfg = config_mod.from_dict({"run": {"sensor": sensor}, **sections})
    return build_session(cfg)


def _stage_kinds(session) -> tuple[bool, bool]:
    """(denoise is learned, classify is learned), read from the pipeline's callables."""
    p = session.pipeline
    return (isinstance(p.denoise, LearnedDenoiser),
            isinstance(p.classify, LearnedResidue))


@pytest.mark.parametrize("sensor, want", [("imspoc", (False, True)), ("pushbroom", (True, True))])
def test_default_stages_are_those_measured_better(monkeypatch, tmp_path, sensor, want) -> None:
    s = _session(monkeypatch, tmp_path, sensor)
    assert _stage_kinds(s) == want
    if not want[0]:
        assert "denoise: classical stage ([denoise] method = 'auto' for imspoc)" in s.notes


def test_mission_settings_override_the_choice(monkeypatch, tmp_path) -> None:
    s = _session(monkeypatch, tmp_path, "imspoc", denoise={"method": "learned"},
                 residue={"method": "classical"})
    assert _stage_kinds(s) == (True, False)
    assert any(n.startswith("classify: classical stage ([residue] method = 'classical'")
               for n in s.notes)
