"""The ImSPOC forward model: layout, transfer operator, wedge, detector statistics."""

import numpy as np
import pytest

from onboard.physics import fabry_perot
from onboard.physics.detector import Detector, DetectorSpec
from onboard.physics.imspoc import ThumbnailLayout, band_edges_nm, imspoc_uv2, transfer_matrix
from onboard.physics.interferometers import InterferometerBank


def test_layout_extract_place_round_trip() -> None:
    layout = ThumbnailLayout.grid(3, 4, (5, 6), gap=1, margin=2, order="column")
    thumbs = np.arange(12 * 30, dtype=float).reshape(12, 5, 6)
    image = layout.place(thumbs, fill=-1)
    np.testing.assert_array_equal(layout.extract(image), thumbs)
    assert (image == -1).sum() == image.size - thumbs.size
    # "column" order: interferometer 1 sits below interferometer 0
    assert layout.corners[1][0] > layout.corners[0][0] and layout.corners[1][1] == layout.corners[0][1]
    with pytest.raises(ValueError, match="detector"):
        layout.extract(np.zeros((3, 3)))


def test_uv2_preset_matches_device_json() -> None:
    inst = imspoc_uv2()
    assert len(inst.layout) == 11 * 29 and inst.layout.thumb_shape == (96, 96)
    assert inst.layout.detector_shape == (1096, 2808)
    steps = np.diff(np.sort(inst.bank.opd_um))
    assert np.median(steps) == pytest.approx(0.175, rel=0.02)


def test_transfer_matrix_integrates_the_response_over_each_band() -> None:
    bank = InterferometerBank.constant([0.0, 2.0, 9.0], reflectivity=0.4, gain=1.2, phase_rad=0.1)
    wl = np.linspace(500, 900, 41)
    a = transfer_matrix(bank, wl)
    edges = band_edges_nm(wl)
    for b in (3, 20, 37):
        lam = np.linspace(edges[b], edges[b + 1], 4001)
        # integrate the pointwise response over wavelength (trapezoid): the band's (k, b) entry
        # integrates it over wavenumber; over a 10 nm band the two weightings differ < 1e-4
        t = fabry_perot.response(1000 / lam[None, :], bank.opd_um[:, None], 0.4, 1.2, 0.1)
        want = np.trapezoid(t, lam, axis=1)
        np.testing.assert_allclose(a[:, b], want, rtol=2e-3)


def test_wedge_taylor_expansion_matches_exact_per_pixel_operator(imspoc) -> None:
    wl = imspoc.scene_grid()
    rng = np.random.default_rng(1)
    h, w = imspoc.thumb_shape
    radiance = rng.uniform(0.1, 0.5, (len(wl), h, w))
    got = imspoc.signal_e_s(radiance, wl)
    drow, dcol = imspoc.layout.centre_offsets()
    for (i, j) in [(0, 0), (h // 2, w - 1), (h - 1, 3)]:
        shift = imspoc.bank.opd_shift(drow[i, 0], dcol[0, j]).ravel()
        a = transfer_matrix(imspoc.bank, wl, imspoc.band_nm, shift)
        exact = imspoc.photo_rate_e_s * a @ radiance[:, i, j]
        # third-order Taylor remainder: < 1e-3 of the signal (see imspoc module docstring)
        np.testing.assert_allclose(got[:, i, j], exact, rtol=1e-3)


def test_detector_noise_statistics_match_the_model() -> None:
    spec = DetectorSpec(shape=(200, 200), prnu=0.0, dead_fraction=0, hot_fraction=0,
                        dark_current_e_s=0.0, read_noise_e=10.0, electrons_per_dn=2.0)
    det = Detector(spec)
    rate = np.full(spec.shape, 1.0e5)
    dn = det.expose(rate, 0.01, np.random.default_rng(0)).astype(float)
    signal_e = 1000.0
    assert dn.mean() == pytest.approx(signal_e / 2 + spec.bias_dn, abs=0.5)
    # variance in DN^2: (shot + read^2) / gain^2 (+ 1/12 quantisation)
    assert dn.var() == pytest.approx((signal_e + 100) / 4 + 1 / 12, rel=0.05)


def test_saturation_and_defects() -> None:
    spec = DetectorSpec(shape=(100, 100), dead_fraction=0.01, hot_fraction=0.01)
    det = Detector(spec)
    dn = det.expose(np.full(spec.shape, 1e9), 1.0, np.random.default_rng(0))
    assert dn[~det.dead].min() >= 0.95 * spec.max_dn - 1 and dn.max() == spec.max_dn
    assert (dn[det.dead] == 0).all()
