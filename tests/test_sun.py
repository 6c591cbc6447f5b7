"""The runtime's solar geometry and solar spectrum (onboard/physics/sun.py) against the
published algorithms and data they come from, through pvlib (ground extra)."""

from __future__ import annotations

import calendar

import numpy as np
import pytest

from onboard.physics.sun import (
    SOLAR_SPECTRUM_FILE,
    earth_sun_distance_au,
    incidence_cosine,
    solar_irradiance,
    sun_position,
)

pvlib = pytest.importorskip("pvlib")
pd = pytest.importorskip("pandas")


@pytest.mark.parametrize("lat,lon", [(45.0, 10.0), (-30.0, 150.0), (60.0, -100.0), (0.0, 0.0)])
def test_sun_position_and_distance_agree_with_nrel_spa(lat, lon) -> None:
    """Within 0.03 deg of NREL's SPA (zenith; azimuth 0.1 deg with the sun up, not overhead) and 1e-4 AU, over a
    year sampled every 7.3 h."""
    start = calendar.timegm((2026, 1, 1, 0, 0, 0))
    t = np.arange(start, start + 365 * 86400, 7.3 * 3600)
    spa = pvlib.solarposition.spa_python(pd.DatetimeIndex(pd.to_datetime(t, unit="s", utc=True)), lat, lon)
    zen, az = sun_position(t, lat, lon)
    up = (zen < 85) & (zen > 5)  # azimuth is ill-defined with the sun overhead
    assert np.max(np.abs(zen - spa["zenith"].to_numpy())) < 0.03
    assert np.max(np.abs((az - spa["azimuth"].to_numpy() + 180) % 360 - 180)[up]) < 0.1
    spa_d = pvlib.solarposition.nrel_earthsun_distance(pd.DatetimeIndex(pd.to_datetime(t, unit="s", utc=True)))
    assert np.max(np.abs(earth_sun_distance_au(t) - spa_d.to_numpy())) < 1e-4


def test_solar_spectrum_is_astm_g173_binned() -> None:
    """The shipped file is what export/solar.py makes from pvlib's ASTM G173, and its integral
    over 300-2500 nm is about 1300 W m-2 (the solar constant less what lies outside)."""
    from export.solar import g173_binned

    wl, e0 = g173_binned()
    with np.load(SOLAR_SPECTRUM_FILE) as f:
        np.testing.assert_allclose(f["irradiance_w_m2_nm"], e0, rtol=1e-6)
        np.testing.assert_allclose(f["wavelengths_nm"], wl)
    assert 1250 < float(np.sum(e0) * 5.0) < 1330
    np.testing.assert_allclose(solar_irradiance(np.array([550.0, 555.0, 560.0]))[1], np.interp(555.0, wl, e0),
                               rtol=0.02)


def test_incidence_cosine_follows_the_bodys_tilt() -> None:
    assert incidence_cosine(30.0, 180.0) == pytest.approx((np.cos(np.radians(30)), 1.0))
    # nose up 10 deg heading north: the back faces 10 deg further south, toward a southern sun
    assert incidence_cosine(30.0, 180.0, pitch_deg=10.0)[0] == pytest.approx(np.cos(np.radians(20)))
    # right wing down heading north: the back faces east, toward a morning sun in the east
    assert incidence_cosine(30.0, 90.0, roll_deg=10.0)[0] == pytest.approx(np.cos(np.radians(20)))
    assert incidence_cosine(30.0, 90.0, roll_deg=10.0, yaw_deg=180.0)[0] == pytest.approx(np.cos(np.radians(40)))
