"""The flight runtime's solar spectrum, made from a published one (ground side, pvlib).

ASTM G173-03's extraterrestrial column (Gueymard 2004; pvlib.spectrum.get_reference_spectra)
averaged over 5 nm bins, 300-2500 nm, written as ``onboard/physics/data/solar_g173.npz``
(``wavelengths_nm``, ``irradiance_w_m2_nm`` at 1 AU) for :mod:`onboard.physics.sun`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from onboard.physics.imspoc import band_mean
from onboard.physics.sun import SOLAR_SPECTRUM_FILE

BIN_NM = 5.0
RANGE_NM = (300.0, 2500.0)


def g173_binned() -> tuple[np.ndarray, np.ndarray]:
    """(centres nm, mean W m-2 nm-1) of ASTM G173-03's extraterrestrial spectrum in 5 nm bins."""
    from pvlib.spectrum import get_reference_spectra

    ref = get_reference_spectra()
    wl = ref.index.to_numpy(float)
    e0 = ref["extraterrestrial"].to_numpy(float)
    centres = np.arange(RANGE_NM[0] + BIN_NM / 2, RANGE_NM[1], BIN_NM)
    return centres, band_mean(wl, e0, centres)


def write_solar_spectrum(path: str | Path = SOLAR_SPECTRUM_FILE) -> Path:
    """Write the binned spectrum where the runtime reads it; returns the path."""
    wl, e0 = g173_binned()
    path = Path(path)
    np.savez_compressed(path, wavelengths_nm=wl.astype(np.float32), irradiance_w_m2_nm=e0.astype(np.float32))
    return path
