"""Cloud screening (onboard/stages/screen.py) against clouds simulated from physics
(onboard/scene/clouds.py), on a real cloud-free cube, and on bad input."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from export import real_cubes
from onboard.config import ConfigError, from_dict
from onboard.formats.products import ProductKind, decode_arrays
from onboard.formats.types import Cube
from onboard.physics.imspoc import default_instrument
from onboard.physics.pushbroom import finch_like
from onboard.runtime.session import build_session
from onboard.scene import clouds
from onboard.scene.farmland import FarmlandScene
from onboard.sources.base import band_average
from onboard.stages.screen import CLOUD, HAZE, INVALID, SHADOW, ScreenRule, screen

VNIR_OUT = np.linspace(460.0, 990.0, 24)  # an ImSPOC-like output grid
SWIR_OUT = finch_like().wavelengths_nm


def _cube(refl: np.ndarray, wl: np.ndarray) -> Cube:
    return Cube(refl.astype(np.float32), np.asarray(wl, float), np.ones(refl.shape[1:], bool))


@pytest.fixture(scope="module")
def farmland() -> FarmlandScene:
    return FarmlandScene.generate(size=128, seed=3, split="test")


def test_cloud_optics_follow_the_two_stream_limits() -> None:
    """Without absorption (visible) R + T = 1 and R is Bohren's (1-g) tau / (2 + (1-g) tau); a
    thick cloud is flat across the VNIR; droplets absorb at 1650 nm (R + T < 1, R lower)."""
    for tau in (0.5, 3.0, 40.0):
        r, t = clouds.cloud_optics([550.0], tau)
        assert r[0] + t[0] == pytest.approx(1.0, abs=1e-3)
        assert r[0] == pytest.approx(0.15 * tau / (2 + 0.15 * tau), rel=1e-3)
    r, t = clouds.cloud_optics(np.arange(450.0, 901.0, 10.0), 40.0)
    assert r.max() / r.min() < 1.01 and 0.7 < r.mean() < 0.8
    r, t = clouds.cloud_optics([1250.0, 1650.0], 40.0)
    assert r[0] + t[0] > r[1] + t[1] + 0.05 and 0.8 < r[1] / r[0] < 1.0
    assert clouds.co_albedo([1600.0])[0] == pytest.approx(0.006, rel=0.1)  # Nakajima & King 1990, r_e 10 um


def test_shadows_fall_away_from_the_sun_and_are_blue_lifted(farmland: FarmlandScene) -> None:
    """One thick cloud: its shadow is the cloud moved by height * tan(zenith) away from the sun,
    and a shadowed pixel keeps more of its blue than of its NIR (skylight)."""
    geometry = clouds.CloudGeometry(cloud_height_m=600.0, gsd_m=30.0, sun_zenith_deg=45.0, sun_azimuth_deg=180.0)
    dy, dx = geometry.shadow_offset_px()
    assert (dy, dx) == (-20, 0)  # sun at the bottom of the frame: shadow towards the top
    tile = farmland.tile(VNIR_OUT, 0, 0, (64, 64))
    tau = np.zeros((64 + 20, 64))
    tau[50:60, 20:30] = 30.0  # the tile's rows 50-59 (the padded field starts at the tile's top)
    out, truth = clouds.overcast(tile.reflectance, VNIR_OUT, tau, geometry)
    assert set(zip(*np.nonzero(truth == clouds.CLOUD), strict=True)) == {(r, c) for r in range(50, 60) for c in range(20, 30)}
    assert set(zip(*np.nonzero(truth == clouds.SHADOW), strict=True)) == {(r, c) for r in range(30, 40) for c in range(20, 30)}
    kept = out[:, 30:40, 20:30] / tile.reflectance[:, 30:40, 20:30]
    assert kept[0].mean() > kept[-1].mean() + 0.1 and kept.max() < 0.55  # tau 30: T = 0.31
    assert np.array_equal(out[:, :20], tile.reflectance[:, :20])


@pytest.mark.parametrize("wl,out_nm", [(np.arange(400.0, 1051.0, 5.0), VNIR_OUT),
                                       (np.arange(880.0, 1721.0, 5.0), SWIR_OUT)], ids=["vnir", "swir"])
@pytest.mark.parametrize("cover", [0.0, 0.3, 0.6, 0.9])
def test_thick_clouds_of_known_cover_are_measured(farmland: FarmlandScene, wl, out_nm, cover: float) -> None:
    """Thick clouds (optical depth 10-60) of a known cover over held-out farmland, the scene
    averaged over each band: the measured cover is within 0.05 of the truth (the cloud's
    edge, at the lowest optical depth, may be missed) and no more than 2 % of the frame is a
    false cloud (bright moist soils come closest in the push-broom's bands: the 1000/1250 nm
    flatness test keeps them out)."""
    rng = np.random.default_rng(int(cover * 10))
    tile = farmland.tile(wl, 32, 32, (64, 64))
    dy, dx = clouds.CloudGeometry().shadow_offset_px()
    tau = clouds.optical_depth(rng, (64 + abs(dy), 64 + abs(dx)), cover, "thick")
    refl, truth = clouds.overcast(tile.reflectance, wl, tau, clouds.CloudGeometry())
    s = screen(_cube(band_average(refl, wl, out_nm), out_nm))
    true_cloud = truth == clouds.CLOUD
    said = (s.mask & CLOUD) > 0
    assert abs(s.cloud_share - true_cloud.mean()) <= 0.05
    assert (said & ~true_cloud).mean() <= 0.02
    if abs(true_cloud.mean() - 0.7) > 0.08:
        assert s.worth_sending == (true_cloud.mean() < 0.7)


def test_thin_clouds_show_in_the_visible(farmland: FarmlandScene) -> None:
    """Thin clouds (optical depth 1-5) over 60 % of the frame: the visible tests find most of
    them as cloud or haze (the blue is lifted): at least 40 % of them (measured 49 %; the
    thinnest, optical depth 1-2, add 0.07-0.13 to the reflectance, less than the spread of the
    soils' brightness, and pass as clear)."""
    wl = np.arange(400.0, 1051.0, 5.0)
    tile = farmland.tile(wl, 0, 0, (64, 64))
    dy, dx = clouds.CloudGeometry().shadow_offset_px()
    tau = clouds.optical_depth(np.random.default_rng(5), (64 + abs(dy), 64 + abs(dx)), 0.6, "thin")
    refl, truth = clouds.overcast(tile.reflectance, wl, tau, clouds.CloudGeometry())
    s = screen(_cube(band_average(refl, wl, VNIR_OUT), VNIR_OUT))
    true_cloud = truth == clouds.CLOUD
    assert ((s.mask[true_cloud] & (CLOUD | HAZE)) > 0).mean() >= 0.4


def test_shadow_of_a_thick_cloud_is_flagged(farmland: FarmlandScene) -> None:
    wl = np.arange(400.0, 1051.0, 5.0)
    tile = farmland.tile(wl, 0, 0, (64, 64))
    geometry = clouds.CloudGeometry(cloud_height_m=600.0, gsd_m=30.0, sun_zenith_deg=45.0, sun_azimuth_deg=180.0)
    tau = np.zeros((84, 64))
    tau[50:60, 20:30] = 40.0
    refl, truth = clouds.overcast(tile.reflectance, wl, tau, geometry)
    s = screen(_cube(band_average(refl, wl, VNIR_OUT), VNIR_OUT))
    assert ((s.mask[truth == clouds.SHADOW] & SHADOW) > 0).mean() >= 0.9
    assert ((s.mask[truth == clouds.CLOUD] & CLOUD) > 0).all()


@pytest.mark.realdata
@pytest.mark.skipif(real_cubes.folder() is None, reason="../shared/data/real_cubes is not present")
def test_cloud_free_real_cube_has_few_false_clouds() -> None:
    """The real AVIRIS Jasper Ridge cube holds no cloud. In reflectance (its counts / 10 000,
    AVIRIS's reflectance scale: the brightest pixel 0.54), averaged over each band of both
    sensors, at most 1 % of the pixels are called cloud (measured 0.0 %). Scaled to [0, 1] as
    ``onboard export scene`` scales it (1.84 times brighter than the ground is) the push-broom's
    brightness test passes bright vegetation: 15.6 % false cloud (bench/bench_screen.py), which
    says the test needs reflectance, not a stretched cube. ABU urban is left out: its values
    are radiance-like (blue above red) on an assumed band grid."""
    loadmat = pytest.importorskip("scipy.io").loadmat
    rc = real_cubes.load("jasper")
    counts = loadmat(str(real_cubes.folder() / real_cubes.FILES["jasper"]))["Y"]
    reflectance = (rc.data * (counts.max() - counts.min()) + counts.min()) / 10_000
    for out_nm in (VNIR_OUT, SWIR_OUT):
        s = screen(_cube(band_average(reflectance, rc.wavelengths_nm, out_nm), out_nm))
        assert s.cloud_share <= 0.01, (out_nm[0], s.cloud_share)
        assert s.worth_sending


def test_invalid_and_non_finite_pixels_are_flagged_and_not_counted() -> None:
    """Invalid pixels (dead, saturated) and NaN spectra get the INVALID bit and no other; the
    cloud share counts valid pixels only; a frame with too few valid pixels is not worth sending."""
    refl = np.full((24, 10, 10), 0.8, np.float32)  # a white, bright, flat frame: all cloud
    cube = _cube(refl, VNIR_OUT)
    cube.valid[:2] = False
    cube.data[:, 2:4, :] = np.nan
    s = screen(cube)
    assert (s.mask[:4] == INVALID).all() and (s.mask[4:] == CLOUD).all()
    assert s.cloud_share == 1.0 and s.invalid_share == pytest.approx(0.4) and not s.worth_sending
    half = cube.data.copy()
    half[:, 4:7] = 0.05 * np.linspace(1, 3, 24)[:, None, None]  # dark red soil on 3 rows
    s = screen(replace(cube, data=half))
    assert s.cloud_share == pytest.approx(0.5)
    assert s.worth_sending == (0.5 < ScreenRule().max_cloud_share)
    assert not screen(replace(cube, data=half), ScreenRule(max_cloud_share=0.4)).worth_sending
    nothing = replace(cube, valid=np.zeros((10, 10), bool))
    assert not screen(nothing).worth_sending and screen(nothing).invalid_share == 1.0


def test_screen_and_clouds_sections_refuse_bad_values() -> None:
    for section in ({"screen": {"max_cloud_share": 1.5}}, {"clouds": {"cover": -0.1}},
                    {"clouds": {"cover_max": 0.5}}, {"clouds": {"cover": 0.6, "cover_max": 0.5}}):
        with pytest.raises(ConfigError, match="screen|clouds"):
            from_dict(section)


def _session(sensor: str, **clouds_section):
    return build_session(from_dict({"run": {"sensor": sensor, "seed": 2}, "scene": {"size": 192, "seed": 2},
                                    "clouds": {"seed": 2, **clouds_section}}))


@pytest.mark.slow
@pytest.mark.parametrize("sensor", ["imspoc", "pushbroom"])
def test_pipeline_screens_simulated_thick_clouds_and_ships_the_mask(sensor: str) -> None:
    """Raw frames of thick clouds over 50 % of the farmland, through calibration,
    reconstruction, denoising and screening: the frame's cloud share is within 0.08 of the
    truth (noise and the reconstruction's smoothing blur the cloud edges), the residue product
    carries the mask and every product the frame's screening."""
    session = _session(sensor, cover=0.5, kind="thick")
    for _, (frame, truth) in zip(range(2), session.source, strict=False):
        result = session.pipeline.process(frame)
        assert result.screening is not None and truth.clouds is not None
        true_share = float((truth.clouds == clouds.CLOUD).mean())
        assert abs(result.screening.cloud_share - true_share) <= 0.08
        residue = next(p for p in result.products if p.kind == ProductKind.RESIDUE)
        np.testing.assert_array_equal(decode_arrays(residue.payload, residue.kind)["screen"], result.screening.mask)
        assert all(p.meta["screen"] == result.screening.summary() for p in result.products
                   if p.kind not in (ProductKind.EVENT, ProductKind.SUMMARY))
        summary = json.loads(next(p for p in result.products if p.kind == ProductKind.SUMMARY).payload)
        assert summary["screen"]["cloud"] == round(100 * result.screening.cloud_share)  # in its body
        assert "screen" in result.seconds


def test_nan_frame_from_a_stage_is_marked_invalid_with_an_event() -> None:
    """A denoiser that returns NaN over part of the frame (a failed stage, a corrupt input):
    those pixels are screened invalid, the residue product is still written, and an event tells
    the ground how many pixels."""
    session = _session("imspoc")
    pipeline = session.pipeline
    denoise = pipeline.denoise

    def broken(cube: Cube) -> Cube:
        out = denoise(cube)
        data = out.data.copy()
        data[:, :8] = np.nan
        return replace(out, data=data)

    pipeline.denoise = broken
    frame, _ = next(iter(session.source))
    result = pipeline.process(frame)
    assert result.screening is not None
    assert ((result.screening.mask[:8] & INVALID) > 0).all()
    kinds = [p.kind for p in result.products]
    assert ProductKind.RESIDUE in kinds
    event = next(p for p in result.products if p.kind == ProductKind.EVENT)
    assert b"hold NaN or inf after denoising" in event.payload


def test_saturated_detector_pixels_are_screened_invalid() -> None:
    """A frame whose detector saturates over a block (a specular glint): the thumbnail pixels
    there are invalid in the cube and INVALID in the mask, and are not called cloud."""
    inst = default_instrument(seed=2)  # the instrument the session flies (same seed)
    session = _session("imspoc")
    frame, _ = next(iter(session.source))
    n, (h, w) = len(inst.layout), inst.thumb_shape
    glint = np.zeros((n, h, w))
    glint[:, :10] = 1.0  # the top ten rows of every thumbnail: the same ground
    pixels = frame.pixels.copy()
    pixels[inst.layout.place(glint) > 0] = inst.detector_spec.max_dn
    result = session.pipeline.process(replace(frame, pixels=pixels))
    assert result.screening is not None
    share = float((pixels >= session.pipeline.saturation_dn).mean())
    assert result.screening.saturated_share == pytest.approx(share) and share > 0.1
    assert result.screening.summary()["saturated_share"] == pytest.approx(share, abs=1e-4)
    invalid = (result.screening.mask & INVALID) > 0
    assert invalid.any() and not ((result.screening.mask[invalid] & CLOUD) > 0).any()


@pytest.mark.parametrize("cloudy_frames,held", [("residue", {"quicklook", "cube"}), ("all", set()),
                                                ("events", {"residue", "quicklook", "cube"})])
def test_a_frame_not_worth_sending_holds_back_what_the_rule_says(cloudy_frames: str, held: set[str]) -> None:
    """Thick clouds over 90 % of the frame: not worth sending under the < 70 % rule. The
    products the mission's ``cloudy_frames`` holds back are archived (in ``products``) but
    listed in ``held``, and the frame's event says which and why; a clear frame holds nothing."""
    session = build_session(from_dict({"run": {"seed": 2}, "scene": {"size": 192, "seed": 2},
                                       "clouds": {"seed": 2, "cover": 0.9, "kind": "thick"},
                                       "screen": {"cloudy_frames": cloudy_frames}}))
    frame, _ = next(iter(session.source))
    result = session.pipeline.process(frame)
    assert result.screening is not None and not result.screening.worth_sending
    assert {"residue", "quicklook", "cube"} <= {p.kind.value for p in result.products}
    assert {name.split("_")[0] for name in result.held} == held
    told = [p for p in result.products if p.kind == ProductKind.EVENT and b"not worth sending" in p.payload]
    assert len(told) == bool(held)
    clear = _session("imspoc", cover=0.0).pipeline.process(next(iter(_session("imspoc", cover=0.0).source))[0])
    assert clear.screening is not None and clear.screening.worth_sending and clear.held == []


def test_the_mask_rides_the_compact_residue_coding_and_a_cloudy_frame_holds_its_raw_product() -> None:
    """With ``[products] residue_coding = "ccsds123"`` the residue payload still carries the
    screening mask; a frame not worth sending holds back its raw frame too."""
    session = build_session(from_dict({"run": {"seed": 2}, "scene": {"size": 192, "seed": 2},
                                       "clouds": {"seed": 2, "cover": 0.9, "kind": "thick"},
                                       "products": {"residue_coding": "ccsds123", "raw": True}}))
    frame, _ = next(iter(session.source))
    result = session.pipeline.process(frame)
    assert result.screening is not None and not result.screening.worth_sending
    residue = next(p for p in result.products if p.kind == ProductKind.RESIDUE)
    assert residue.meta["coding"] == "ccsds123"
    np.testing.assert_array_equal(decode_arrays(residue.payload, residue.kind)["screen"], result.screening.mask)
    assert "raw_00000000" in result.held and residue.name not in result.held
