"""The drone_survey HIL scenario (hil/drone.py) as CI runs it, a perfect-pose variant that
must put every frame's corners within a ground pixel of the truth, and proof that its
criteria can fail: a payload that understates the pose noise, one that interpolates across
a GPS dropout. Each run is the real payload process beside the emulated autopilot."""

from __future__ import annotations

from pathlib import Path

import pytest
import tomllib

pytest.importorskip("pymavlink")
pytest.importorskip("pyproj")

from hil.drone import DroneRunner, from_dict  # noqa: E402
from hil.scenario import ScenarioError  # noqa: E402

SCENARIO = Path(__file__).parents[1] / "hil" / "scenarios" / "drone_survey.toml"


def run(change=None) -> dict:
    doc = tomllib.loads(SCENARIO.read_text())
    if change is not None:
        change(doc)
    return DroneRunner(from_dict(doc, "drone_survey")).run()


def failed(report: dict) -> set[str]:
    return {r["criterion"] for r in report["criteria"] if not r["passed"]}


@pytest.mark.slow
def test_drone_survey_passes_over_udp_and_a_serial_link() -> None:
    report = run()
    assert report["passed"], [r for r in report["criteria"] if not r["passed"]]
    for m in report["measures"]:
        assert m["triggers"] >= 20 and m["georeferenced"] >= 18
        assert m["dropout_frames"] >= 2


@pytest.mark.slow
def test_with_a_perfect_pose_every_frame_is_within_a_ground_pixel() -> None:
    def perfect(doc: dict) -> None:
        doc["transports"] = ["udp"]
        doc["faults"] = {"gps_dropout": doc["faults"]["gps_dropout"]}
        doc["criteria"] = {"max_error_px": 1.0, "every_trigger_answered": True, "min_georeferenced_share": 0.8}

    report = run(perfect)
    assert report["passed"], [r for r in report["criteria"] if not r["passed"]]
    assert report["measures"][0]["error_px"]["max"] <= 1.0


@pytest.mark.slow
def test_the_criteria_can_fail() -> None:
    def careless(doc: dict) -> None:
        doc["transports"] = ["udp"]
        # the payload claims a pose ten times better than it is, and bridges a 1.5 s dropout
        doc["payload"]["mavlink"].update(position_sigma_m=0.05, attitude_sigma_deg=0.02, max_pose_gap_s=5.0)

    assert {"max_error_over_expected", "dropout_frames_not_georeferenced"} <= failed(run(careless))


def test_a_bad_drone_scenario_is_refused_by_name() -> None:
    doc = tomllib.loads(SCENARIO.read_text())
    with pytest.raises(ScenarioError, match="speeed_m_s: unknown key"):
        from_dict({**doc, "survey": {"speeed_m_s": 3}}, "x")
    with pytest.raises(ScenarioError, match="max_eror_px"):
        from_dict({**doc, "criteria": {"max_eror_px": 1}}, "x")
    with pytest.raises(ScenarioError, match="transports"):
        from_dict({**doc, "transports": ["tcp"]}, "x")
    with pytest.raises(ScenarioError, match=r"\[faults\] position_sigma_m: expected float"):
        from_dict({**doc, "faults": {"position_sigma_m": "big"}}, "x")
