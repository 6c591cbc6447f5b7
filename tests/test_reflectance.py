"""Radiance and reflectance in the field (issue 20): the calibration's absolute gain, the sky
simulator, panels, the irradiance sensor, TOA and dark-object reflectance, and bad input
flagged, each against the truth the simulator made from physics."""

from __future__ import annotations

import calendar
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from onboard.config import ConfigError, from_dict
from onboard.formats import calfile
from onboard.formats.products import ProductKind, decode_arrays
from onboard.physics.imspoc import band_mean, default_instrument
from onboard.runtime.pipeline import Pipeline
from onboard.sources.base import band_average
from onboard.sources.irradiance import (
    IrradianceError,
    IrradianceLog,
    IrradianceReading,
    SerialIrradiance,
    read_irradiance_file,
    write_irradiance_file,
)
from onboard.sources.simulated import calibrate_imspoc
from onboard.stages import radiometric
from onboard.stages.reconstruct import Reconstructor
from onboard.stages.reflectance import Panel, ReflectanceSettings, ReflectanceStage

pytest.importorskip("pvlib")  # the sky simulator's (ground extra)
from onboard.scene.sky import Flight, PanelPlacement, Sky  # noqa: E402

START = float(calendar.timegm((2026, 3, 20, 12, 7, 0)))  # equinox noon at lon 0: zenith ~ latitude
SENSOR_NM = np.arange(400.0, 1051.0, 5.0)
DARK, GREY = (4, 4, 12, 12), (4, 24, 12, 12)


@pytest.fixture(scope="module")
def rig():
    inst = default_instrument(0)
    cal = calibrate_imspoc(inst)
    return inst, cal, Reconstructor(cal)


def _tile(grid: np.ndarray) -> np.ndarray:
    """A 64 x 64 field: soil-like (rising) on the left, vegetation-like (red edge) on the right."""
    soil = 0.12 + 0.18 * (grid - 450) / 550
    veg = np.where(grid < 700, 0.05, 0.45)
    out = np.empty((grid.size, 64, 64))
    out[:, :, :32] = soil[:, None, None]
    out[:, :, 32:] = veg[:, None, None]
    return out


@pytest.fixture(scope="module")
def floor(rig) -> float:
    """The instrument's own error on the test field under the lab lamp (lab reflectance is then
    right): what reconstruction and noise cost before any light changes."""
    inst, cal, _ = rig
    grid = inst.scene_grid()
    frame = inst.frame(_tile(grid), grid, np.random.default_rng(11))
    return _error(_cube(rig, frame), band_average(_tile(grid), grid, cal.wavelengths_nm))


def _cube(rig, frame):
    inst, cal, rec = rig
    return rec.reconstruct(radiometric.correct(frame, cal.radiometric, inst.detector_spec.max_dn - 1))[0]


def _flight_frames(rig, flight: Flight, times: list[float], panel_frames=(0,)):
    """(frame, cube, truth on the output grid) per time, frame counter = index."""
    inst, cal, _ = rig
    grid = inst.scene_grid()
    rng = np.random.default_rng(3)
    out = []
    for i, t in enumerate(times):
        refl, shade = flight.scene(_tile(grid), i)
        frame = inst.frame_radiance(flight.radiance(refl, grid, t, shade), grid, rng, counter=i, timestamp=t,
                                    pose=flight.pose(t))
        out.append((frame, _cube(rig, frame), band_average(refl, grid, cal.wavelengths_nm)))
    return out


def _log(flight: Flight, start: float, end: float) -> IrradianceLog:
    log = IrradianceLog(SENSOR_NM)
    for t, e, att in flight.irradiance_readings(start, end, 5.0, SENSOR_NM, np.random.default_rng(9)):
        log.add(IrradianceReading(t, e, att))
    return log


def _panels(grid: np.ndarray) -> list[Panel]:
    return [Panel("dark", grid, np.full(grid.size, 0.05), DARK), Panel("grey", grid, np.full(grid.size, 0.5), GREY)]


def _placed(grid: np.ndarray, shaded: bool = False, grey: float = 0.5) -> tuple[PanelPlacement, ...]:
    return (PanelPlacement(np.full(grid.size, 0.05), DARK), PanelPlacement(np.full(grid.size, grey), GREY, shaded))


def _error(cube, truth) -> float:
    """Median absolute reflectance error over valid pixels, bands 460-900 nm (away from the
    edges), against the truth as the cube's bands see it (its spectral response: the sharp red
    edge of the test field is smoothed by any reconstruction)."""
    keep = (cube.wavelengths_nm > 460) & (cube.wavelengths_nm < 900)
    seen = np.einsum("ab,bhw->ahw", cube.response, truth)
    return float(np.median(np.abs(cube.data[keep][:, cube.valid] - seen[keep][:, cube.valid])))


# -- the calibration's radiance --------------------------------------------------------------

def test_simulated_calibration_carries_a_radiance_gain_and_round_trips_as_version_2(rig, tmp_path) -> None:
    _, cal, _ = rig
    assert cal.radiance_gain is not None and cal.format_version == 2
    assert np.all(cal.radiance_gain_uncertainty < 0.02) and np.all(cal.radiance_gain_uncertainty > 0)
    cal.write(tmp_path / "a.cal")
    back = calfile.read(tmp_path / "a.cal")
    np.testing.assert_array_equal(back.radiance_gain, cal.radiance_gain)
    np.testing.assert_array_equal(back.radiance_gain_uncertainty, cal.radiance_gain_uncertainty)
    header = json.loads(np.load(tmp_path / "a.cal")["header"].tobytes())
    assert header["version"] == 2 and "radiance" in header["provenance"]["radiance_source"]


def test_a_calibration_without_radiance_stays_version_1_and_says_only_lab_reflectance(rig, tmp_path) -> None:
    from dataclasses import replace

    _, cal, _ = rig
    old = replace(cal, radiance_gain=None, radiance_gain_uncertainty=None)
    old.write(tmp_path / "v1.cal")
    assert json.loads(np.load(tmp_path / "v1.cal")["header"].tobytes())["version"] == 1
    with pytest.raises(calfile.CalibrationFileError, match="only lab reflectance"):
        calfile.read(tmp_path / "v1.cal").lab_radiance()
    with pytest.raises(calfile.CalibrationFileError, match="both or neither"):
        replace(cal, radiance_gain_uncertainty=None)


def test_measured_radiance_matches_the_radiance_the_instrument_saw(rig) -> None:
    """A uniform scene of known radiance (a clear sky's, on a 0.3 surface) comes back in
    W m-2 sr-1 nm-1 within 3 % per band (450-900 nm), through detector noise and reconstruction."""
    inst, cal, rec = rig
    grid = inst.scene_grid()
    sky = Sky(40.0, 0.0, START)
    radiance = sky.drone_radiance(np.full((grid.size, 64, 64), 0.3), grid, START)
    frame = inst.frame_radiance(radiance, grid, np.random.default_rng(1), timestamp=START)
    cube = _cube(rig, frame)
    measured = np.median(cube.data[:, cube.valid], axis=1) * cal.lab_radiance()
    # the reconstruction's response acts on the signal over the white panel's (lab reflectance)
    lab = cal.lab_radiance()
    expected = lab * (cube.response @ (band_mean(grid, radiance[:, 0, 0], cal.wavelengths_nm) / lab))
    keep = (cal.wavelengths_nm > 460) & (cal.wavelengths_nm < 900)
    assert np.max(np.abs(measured[keep] / expected[keep] - 1)) < 0.03


# -- the drone: panels and the irradiance sensor ----------------------------------------------

def test_panel_line_drifts_with_the_light_and_the_irradiance_sensor_follows_it(rig, floor) -> None:
    """The light drops 20 % after the panel frame: the empirical line alone is off by ~20 % of
    the reflectance, panel x irradiance ratio and irradiance alone stay at the instrument's
    floor; the uncorrected (lab) reflectance is off too."""
    inst, cal, _ = rig
    grid = inst.scene_grid()
    sky = Sky(30.0, 0.0, START, steps=((2.0, 0.8),))
    flight = Flight(sky, panels=_placed(grid), panel_frames=(0,))
    items = _flight_frames(rig, flight, [START, START + 3.0])
    log = _log(flight, START - 1, START + 5)
    errors = {}
    for method in ("lab", "panel", "irradiance", "panel+irradiance"):
        stage = ReflectanceStage(cal, ReflectanceSettings(method, _panels(grid), (0,)), log)
        for frame, cube, _ in items:
            out, meta, flags = stage.apply(cube, frame)
        truth = items[-1][2]
        assert flags == [] and meta["quantity"] == ("lab reflectance" if method == "lab" else "surface reflectance")
        errors[method] = _error(out, truth)
    assert errors["panel+irradiance"] < floor + 0.004 and errors["irradiance"] < floor + 0.006
    assert errors["panel"] > floor + 0.015 and errors["lab"] > floor + 0.015  # 20 % of reflectances 0.1-0.45


def test_cosine_correction_undoes_the_sensors_tilt(rig) -> None:
    """A sensor swaying 10 deg reads the direct beam at the wrong angle: corrected, its level
    irradiance agrees with the sky's global irradiance within 2 % (450-900 nm)."""
    from onboard.stages.reflectance import level_irradiance

    sky = Sky(50.0, 0.0, START)
    flight = Flight(sky, sway_deg=10.0)
    worst, raw = 0.0, 0.0
    for t in START + np.arange(0.0, 10.0, 0.7):
        att = flight.attitude(t)
        reading = IrradianceReading(t, sky.irradiance_sensor(t, SENSOR_NM, att, np.random.default_rng(0), 0.0), att)
        level, why = level_irradiance(reading, SENSOR_NM, t, 50.0, 0.0)
        assert level is not None, why
        truth = sky.light(t, SENSOR_NM).global_
        keep = (SENSOR_NM > 450) & (SENSOR_NM < 900)
        raw = max(raw, float(np.max(np.abs(reading.irradiance[keep] / truth[keep] - 1))))
        worst = max(worst, float(np.max(np.abs(level[keep] / truth[keep] - 1))))
    assert raw > 0.05 and worst < 0.02  # the tilt mattered; corrected, it no longer does


def test_panels_are_found_in_the_frame_when_no_region_is_given(rig, floor) -> None:
    """Given only their size, both panels are found where they lie, and the line they give is
    as good as with their regions; a panel that is not there is said not found."""
    inst, cal, _ = rig
    grid = inst.scene_grid()
    flight = Flight(Sky(30.0, 0.0, START), panels=_placed(grid), panel_frames=(0,))
    items = _flight_frames(rig, flight, [START, START + 1.0])
    log = _log(flight, START - 1, START + 2)
    found = [Panel(p.name, p.wavelengths_nm, p.reflectance, None, size=10) for p in _panels(grid)]
    stage = ReflectanceStage(cal, ReflectanceSettings("panel+irradiance", found, (0,)), log)
    for frame, cube, _ in items:
        out, meta, flags = stage.apply(cube, frame)
    assert flags == [] and stage.line is not None and len(stage.line.panels) == 2
    for name, (r, c, h, w) in zip(stage.line.panels, (DARK, GREY), strict=True):
        fr, fc = (int(v) for v in name.split("[")[1].split(",")[:2])
        assert r <= fr and fr + 10 <= r + h and c <= fc and fc + 10 <= c + w, name  # inside the panel
    assert "(found)" in meta["how"]
    assert _error(out, items[-1][2]) < floor + 0.004
    ghost = [Panel("white", grid, np.full(grid.size, 0.95), None, size=10)]
    frame, cube, _ = items[0]
    _, meta, flags = ReflectanceStage(cal, ReflectanceSettings("panel", ghost, (0,))).apply(cube, frame)
    assert any("panel white: not found" in f for f in flags) and meta["quantity"] == "radiance"


# -- bad input: flagged, never applied silently -----------------------------------------------

def test_a_shaded_panel_is_refused_and_said(rig) -> None:
    inst, cal, _ = rig
    grid = inst.scene_grid()
    flight = Flight(Sky(30.0, 0.0, START), panels=_placed(grid, shaded=True), panel_frames=(0,))
    (frame, cube, _), = _flight_frames(rig, flight, [START])
    stage = ReflectanceStage(cal, ReflectanceSettings("panel+irradiance", _panels(grid), (0,)),
                             _log(flight, START - 1, START + 1))
    out, meta, flags = stage.apply(cube, frame)
    assert any("panel grey" in f and "shaded: not used" in f for f in flags), flags
    assert stage.line is not None and stage.line.panels == [f"dark {list(DARK)}"]  # the unshaded panel alone
    # without the irradiance sensor the clear-sky model says how much light should fall on it
    alone = ReflectanceStage(cal, ReflectanceSettings("panel", _panels(grid), (0,)))
    _, _, flags = alone.apply(cube, frame)
    assert any("panel grey" in f and "shaded" in f for f in flags), flags


def test_a_saturated_panel_is_refused_and_with_no_panel_left_the_product_stays_radiance(rig) -> None:
    inst, cal, _ = rig
    grid = inst.scene_grid()
    sky = Sky(20.0, 0.0, START, steps=((0.0, 2.5),))  # bright enough to saturate a 0.95 panel
    flight = Flight(sky, panels=_placed(grid, grey=0.95), panel_frames=(0,))
    (frame, cube, _), = _flight_frames(rig, flight, [START])
    panels = [Panel("grey", grid, np.full(grid.size, 0.95), GREY)]
    stage = ReflectanceStage(cal, ReflectanceSettings("panel", panels, (0,)))
    out, meta, flags = stage.apply(cube, frame)
    assert any("panel grey" in f and "saturated or bad: not used" in f for f in flags), flags
    assert out.units == "radiance" and meta["quantity"] == "radiance"
    assert any("no usable reference panel" in f for f in flags)


def test_an_irradiance_sensor_that_stops_and_a_far_timestamp_are_flagged_in_products_and_events(rig) -> None:
    """Through the pipeline: the sensor stops after 2 s; the frame at 4 s gets the panel line
    without the ratio, said in its flags, its event and its products' radiometry."""
    inst, cal, _ = rig
    grid = inst.scene_grid()
    flight = Flight(Sky(30.0, 0.0, START), panels=_placed(grid), panel_frames=(0,))
    log = _log(flight, START - 1, START + 2)  # stops at 2 s
    stage = ReflectanceStage(cal, ReflectanceSettings("panel+irradiance", _panels(grid), (0,), max_gap_s=0.5), log)
    pipe = Pipeline(cal, lambda c: c, _no_residue, inst.detector_spec.max_dn - 1, reflectance=stage)
    rng = np.random.default_rng(0)
    results = []
    for i, t in enumerate((START, START + 4.0)):
        refl, shade = flight.scene(_tile(grid), i)
        frame = inst.frame_radiance(flight.radiance(refl, grid, t, shade), grid, rng, counter=i, timestamp=t,
                                    pose=flight.pose(t))
        results.append(pipe.process(frame))
    first, late = results
    assert not any("irradiance" in f for f in first.flags)
    assert any("irradiance not applied" in f and "s from the frame" in f for f in late.flags), late.flags
    event = [p for p in late.products if p.kind == ProductKind.EVENT]
    assert event and "irradiance not applied" in json.loads(event[0].payload)["detail"]
    cube_meta = next(p for p in late.products if p.kind == ProductKind.CUBE).meta["radiometry"]
    assert cube_meta["quantity"] == "surface reflectance" and "without the irradiance ratio" in cube_meta["how"]
    # a log whose clock runs 30 s apart from the camera's: nothing applied either
    shifted = IrradianceLog(SENSOR_NM, [IrradianceReading(r.timestamp + 30, r.irradiance, r.attitude_deg)
                                        for r in log.readings])
    alone = ReflectanceStage(cal, ReflectanceSettings("irradiance", max_gap_s=0.5), shifted)
    frame0 = _frame0(rig, flight)
    out, meta, flags = alone.apply(_cube(rig, frame0), frame0)
    assert meta["quantity"] == "radiance" and any("irradiance not applied" in f for f in flags)


def _frame0(rig, flight):
    inst = rig[0]
    grid = inst.scene_grid()
    return inst.frame_radiance(flight.radiance(_tile(grid), grid, START), grid, np.random.default_rng(2),
                               counter=5, timestamp=START, pose=flight.pose(START))


def _no_residue(cube):
    from onboard.formats.types import INVALID_CLASS, ResidueMap

    shape = cube.valid.shape
    return ResidueMap(np.full(shape, INVALID_CLASS, np.uint8), np.full((3, *shape), np.nan, np.float32),
                      counter=cube.counter, timestamp=cube.timestamp, method="test")


# -- the satellite: TOA and dark object -------------------------------------------------------

@pytest.mark.parametrize("zenith", [20.0, 60.0])
def test_toa_reflectance_from_time_and_position_matches_the_skys(rig, floor, zenith) -> None:
    inst, cal, _ = rig
    grid = inst.scene_grid()
    sky = Sky(zenith, 0.0, START)
    (frame, cube, _), = _flight_frames(rig, Flight(sky, platform="satellite"), [START])
    out, meta, flags = ReflectanceStage(cal, ReflectanceSettings("toa")).apply(cube, frame)
    truth = band_average(sky.toa_reflectance(sky.toa_radiance(_tile(grid), grid, START), START, grid), grid,
                         cal.wavelengths_nm)
    assert meta["quantity"] == "toa reflectance" and abs(meta["sun_zenith_deg"] - sky.sun(START)[0]) < 0.05
    assert _error(out, truth) < floor + 0.004
    assert _error(cube, truth) > floor + 0.015  # lab reflectance is not the TOA reflectance


def test_dark_object_surface_reflectance_beats_toa_over_dark_ground_and_carries_its_uncertainty(rig) -> None:
    _, cal, _ = rig
    sky = Sky(40.0, 0.0, START)
    (frame, cube, truth), = _flight_frames(rig, Flight(sky, platform="satellite"), [START])
    toa, _, _ = ReflectanceStage(cal, ReflectanceSettings("toa")).apply(cube, frame)
    out, meta, flags = ReflectanceStage(cal, ReflectanceSettings("surface-dos")).apply(cube, frame)
    assert meta["quantity"] == "surface reflectance" and "dark object" in meta["how"]
    assert len(meta["uncertainty_absolute"]) == cal.wavelengths_nm.size and 0 < meta["aerosol_550"] < 0.4
    blue = cal.wavelengths_nm < 520  # where the path radiance matters most
    assert np.median(np.abs(out.data[blue][:, out.valid] - truth[blue][:, out.valid])) < \
        np.median(np.abs(toa.data[blue][:, out.valid] - truth[blue][:, out.valid]))


# -- configuration, sources, command line --------------------------------------------------------

def test_reflectance_section_is_checked_by_name() -> None:
    ok = from_dict({"reflectance": {"method": "panel", "panel_frames": [0], "panel": [
        {"name": "p", "wavelengths_nm": [400, 1000], "reflectance": [0.5, 0.5], "region": [1, 2, 3, 4]}]}})
    assert ok.reflectance.panels[0]["region"] == [1, 2, 3, 4]
    for bad, match in (({"method": "sunshine"}, "method: expected one of"),
                       ({"panel": [{"name": "p"}]}, "needs name, wavelengths_nm"),
                       ({"panel": [{"name": "p", "wavelengths_nm": [400, 1000], "reflectance": [0.5, 0.5],
                                    "region": [1, 2, 3, 4], "size": 4}]}, "region or size"),
                       ({"max_gap_s": -1.0}, "max_gap_s: must be > 0"),
                       ({"site_lat_deg": 4.0}, "give both or neither"),
                       ({"irradiance_port": "/dev/ttyUSB0"}, "irradiance_wavelengths_nm"),
                       ({"colour": 1}, "unknown key")):
        with pytest.raises(ConfigError, match=match):
            from_dict({"reflectance": bad})


def test_irradiance_file_round_trips_and_bad_files_are_refused(tmp_path) -> None:
    log = IrradianceLog(SENSOR_NM, [IrradianceReading(10.0 + i, np.full(SENSOR_NM.size, 1.0 + i), (1.0, 2.0, 3.0))
                                    for i in range(3)])
    back = read_irradiance_file(write_irradiance_file(tmp_path / "e.npz", log))
    assert [r.timestamp for r in back.readings] == [10.0, 11.0, 12.0]
    reading, gap = back.nearest(11.4)
    assert reading is not None and reading.timestamp == 11.0 and gap == pytest.approx(0.4)
    np.savez(tmp_path / "bad.npz", timestamps=np.array([2.0, 1.0]), wavelengths_nm=SENSOR_NM,
             irradiance=np.ones((2, SENSOR_NM.size)), attitude_deg=np.zeros((2, 3)))
    with pytest.raises(IrradianceError, match="not in time order"):
        read_irradiance_file(tmp_path / "bad.npz")
    with pytest.raises(IrradianceError, match="does not exist"):
        read_irradiance_file(tmp_path / "none.npz")


def test_serial_irradiance_sensor_lines_over_a_pseudo_terminal() -> None:
    import pty

    controller, device = pty.openpty()
    wl = np.array([500.0, 600.0, 700.0])
    sensor = SerialIrradiance(os.ttyname(device), wl)
    try:
        os.write(controller, b"IRR,100.0,1,2,3,1.5,1.4,1.2\nGARBAGE\nIRR,100.2,0,0,0,1.5,1.4\nIRR,100.4,0,0,")
        added = 0
        for _ in range(200):  # wait for the state, not for a time
            added += sensor.poll()
            if added >= 1 and sensor.rejected >= 2:
                break
        assert added == 1 and sensor.rejected == 2  # the short line and the garbage, not guessed
        os.write(controller, b"0,1.6,1.5,1.3\n")
        for _ in range(200):
            if sensor.poll():
                break
        assert [r.timestamp for r in sensor.log.readings] == [100.0, 100.4]
        np.testing.assert_allclose(sensor.log.readings[1].irradiance, [1.6, 1.5, 1.3])
    finally:
        sensor.close()
        os.close(controller)
        os.close(device)


def _cli(*args, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "XDG_CACHE_HOME": str(cwd / "cache")}
    return subprocess.run([sys.executable, "-m", "onboard", *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=600)


@pytest.mark.slow
def test_products_and_ground_export_say_which_quantity_they_hold(tmp_path) -> None:
    spectral = pytest.importorskip("spectral")
    for method in ("lab", "radiance"):
        mission = tmp_path / f"{method}.toml"
        mission.write_text(f'[reflectance]\nmethod = "{method}"\n')
        run = _cli("run", "--frames", "1", "--out", tmp_path / method, "--quiet", "--config", mission, cwd=tmp_path)
        assert run.returncode == 0, run.stderr
        cube = tmp_path / method / "products" / "cube_00000000.obp"
        from onboard.formats.products import Product

        product = Product.from_bytes(cube.read_bytes())
        radiometry = product.meta["radiometry"]
        assert radiometry["quantity"] == {"lab": "lab reflectance", "radiance": "radiance"}[method]
        bands = decode_arrays(product.payload)["data"].shape[0]
        assert len(radiometry["uncertainty_relative"]) == (bands if method == "radiance" else 0)
        proc = _cli("ground", "export", tmp_path / method, "-o", tmp_path / f"user-{method}", cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
        meta = spectral.open_image(str(tmp_path / f"user-{method}" / "cube_00000000.hdr")).metadata
        assert meta["quantity"] == radiometry["quantity"]
        assert meta["data units"] == ("W m-2 sr-1 nm-1" if method == "radiance" else "lab reflectance (0-1)")


def test_info_says_whether_a_calibration_has_a_radiance_gain(rig, tmp_path) -> None:
    from onboard.info import collect

    golden = Path(__file__).parent / "data" / "golden" / "tiny_imspoc.cal"  # a version-1 file still reads
    old = collect(calibration=golden)["calibration"]
    assert old["version"] == 1 and old["radiance_gain_uncertainty_max"] is None
    rig[1].write(tmp_path / "v2.cal")
    new = collect(calibration=tmp_path / "v2.cal")["calibration"]
    assert new["version"] == 2 and 0 < new["radiance_gain_uncertainty_max"] < 0.02


def test_pushbroom_toa_reflectance_from_orbit(tmp_path) -> None:
    """The FINCH-like push-broom (900-1700 nm) under the sky from orbit: TOA reflectance against
    the sky's truth, outside the strong water bands, within 0.01 (median)."""
    from onboard.physics.pushbroom import finch_like
    from onboard.sources.base import SimulatedPushbroom
    from onboard.sources.simulated import calibrate_pushbroom

    pb = finch_like(cross_track=32)
    cal = calibrate_pushbroom(pb)
    assert cal.radiance_gain is not None  # the simulated calibration measures one per band
    assert np.shape(cal.radiance_gain) == pb.wavelengths_nm.shape and np.all(np.asarray(cal.radiance_gain) > 0)
    sky = Sky(35.0, 0.0, START)
    wl = pb.wavelengths_nm
    field_ = np.broadcast_to((0.2 + 0.2 * (wl - 900) / 800)[:, None, None], (wl.size, 16, 32)).copy()

    class Tile:
        reflectance, wavelengths_nm, fractions, tillage = field_, wl, None, None

    lines, truth = next(iter(SimulatedPushbroom(pb, iter([Tile()]), start_time=START,
                                                flight=Flight(sky, platform="satellite"))))
    pipe = Pipeline(cal, lambda c: c, _no_residue, pb.detector_spec.max_dn - 1,
                    reflectance=ReflectanceStage(cal, ReflectanceSettings("toa")))
    result = pipe.process(lines)
    assert result.radiometry["quantity"] == "toa reflectance"
    expected = sky.toa_reflectance(sky.toa_radiance(truth.reflectance, wl, START), START, wl)
    clear = ((wl > 1000) & (wl < 1100)) | ((wl > 1180) & (wl < 1300)) | ((wl > 1500) & (wl < 1650))
    err = np.abs(result.cube.data[clear][:, result.cube.valid] - expected[clear][:, result.cube.valid])
    assert np.median(err) < 0.01


@pytest.mark.slow
def test_a_run_with_an_irradiance_file_far_from_its_frames_flags_every_frame(tmp_path) -> None:
    """``onboard run`` reads the mission's irradiance file; its readings are hours from the
    simulated frames (taken now): not applied, each frame's event says so, the cube stays radiance."""
    log = IrradianceLog(SENSOR_NM, [IrradianceReading(START + i, np.full(SENSOR_NM.size, 1.2), (0.0, 0.0, 0.0))
                                    for i in range(5)])
    write_irradiance_file(tmp_path / "dls.npz", log)
    mission = tmp_path / "m.toml"
    mission.write_text(f'[reflectance]\nmethod = "irradiance"\nirradiance_file = "{tmp_path / "dls.npz"}"\n'
                       "site_lat_deg = 45.0\nsite_lon_deg = 5.0\n")
    run = _cli("run", "--frames", "2", "--out", tmp_path / "o", "--quiet", "--config", mission, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    from onboard.formats.products import Product

    events = [Product.from_bytes(p.read_bytes()) for p in sorted((tmp_path / "o" / "products").glob("event_*.obp"))]
    details = [json.loads(e.payload)["detail"] for e in events]
    assert len(details) == 2 and all("irradiance not applied" in d and "s from the frame" in d for d in details)
    cube = Product.from_bytes((tmp_path / "o" / "products" / "cube_00000001.obp").read_bytes())
    assert cube.meta["radiometry"]["quantity"] == "radiance"
    bad = tmp_path / "bad.toml"
    bad.write_text(f'[reflectance]\nmethod = "irradiance"\nirradiance_file = "{tmp_path / "absent.npz"}"\n')
    refused = _cli("run", "--frames", "1", "--out", tmp_path / "o2", "--quiet", "--config", bad, cwd=tmp_path)
    assert refused.returncode != 0 and "absent.npz does not exist" in refused.stderr
