"""Residue unmixing with spectra from the physics: PROSPECT-D leaves and crop residue and
prosail's dry and wet soils, the models the farmland simulator draws from.

Green leaves: chlorophyll and water; residue: no chlorophyll, brown pigments, dry matter,
little water (REFERENCES.md). Mixtures vary within each class (which residue, how wet the
soil) and in brightness, as the fields do pixel to pixel.
"""

from __future__ import annotations

import numpy as np
import pytest

from onboard.stages.residue import Endmembers, UnmixConfig, unmix_fcls
from onboard.types import ENDMEMBERS, Cube, tillage_class

prosail = pytest.importorskip("prosail", reason="prosail (the [ground] extra) makes the spectra")


@pytest.fixture(scope="module")
def physics_library() -> Endmembers:
    from prosail.spectral_library import get_spectra

    soils = get_spectra().soil

    def leaf(**kw: float) -> np.ndarray:
        return prosail.run_prospect(**kw)[1]  # (wavelength, reflectance, transmittance)

    spectra = {
        ("soil", "soil-dry"): soils.rsoil1,
        ("soil", "soil-wet"): soils.rsoil2,
        ("green", "leaf-dense"): leaf(n=1.5, cab=45, car=9, cbrown=0, cw=0.012, cm=0.009),
        ("green", "leaf-pale"): leaf(n=1.8, cab=25, car=6, cbrown=0.1, cw=0.01, cm=0.008),
        ("residue", "residue-fresh"): leaf(n=2.0, cab=0, car=1, cbrown=0.6, cw=0.001, cm=0.012),
        ("residue", "residue-old"): leaf(n=2.5, cab=0, car=0, cbrown=1.5, cw=0.0005, cm=0.015),
    }
    keys = list(spectra)
    return Endmembers(np.array([spectra[k] for k in keys]), np.arange(400.0, 2501.0),
                      tuple(k[0] for k in keys), tuple(k[1] for k in keys))


def field_pixels(lib: Endmembers, n: int, brightness_sd: float, seed: int
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Class fractions (3, n) and noisy spectra (bands, n) at SNR 100: each class's share
    split at random between its spectra (residue age, soil moisture), whole-pixel
    brightness with the given spread."""
    rng = np.random.default_rng(seed)
    fractions = rng.dirichlet([1.0, 1.0, 0.5], size=n).T
    a = np.zeros((len(lib.names), n))
    for k, cls in enumerate(ENDMEMBERS):
        members = [i for i, c in enumerate(lib.classes) if c == cls]
        a[members] = rng.dirichlet(np.ones(len(members)), size=n).T * fractions[k]
    x = lib.spectra.T @ a * np.clip(1 + brightness_sd * rng.standard_normal(n), 0.3, None)
    return fractions, x + x.mean(axis=0) / 100.0 * rng.standard_normal(x.shape)


@pytest.mark.parametrize("grid", [np.linspace(450.0, 950.0, 24), np.arange(900.0, 1701.0, 10.0)],
                         ids=["imspoc-450-950nm", "finch-900-1700nm"])
def test_physics_mixtures_at_snr_100(physics_library, grid):
    lib = physics_library.on_grid(grid)
    truth, x = field_pixels(lib, 64 * 64, brightness_sd=0.1, seed=1)
    result = unmix_fcls(Cube(x.reshape(len(grid), 64, 64).astype(np.float32), grid,
                             np.ones((64, 64), dtype=bool)), lib, UnmixConfig())
    mae = np.abs(result.fractions[0].ravel() - truth[0]).mean()
    accuracy = (result.tillage.ravel() == tillage_class(truth[0])).mean()
    # Measured: MAE 0.033 / 0.026 and accuracy 0.94 / 0.92 (visible / SWIR). The mission
    # asks MAE <= 0.10 and accuracy >= 0.80 of the whole pipeline; this stage alone, on
    # the noise it will see after denoising, must leave room for the rest.
    assert mae < 0.05, mae
    assert accuracy > 0.9, accuracy


def test_one_soil_spectrum_is_not_enough(physics_library):
    """REFERENCES.md: with soil moisture varying, a single soil spectrum gets residue MAE
    0.22-0.38 where dry and wet soil as two endmembers get 0.01-0.03. Measured here
    (FCLS, 900-1700 nm): 0.21 with dry soil only, 0.019 with both."""
    grid = np.arange(900.0, 1701.0, 10.0)
    lib = physics_library.on_grid(grid)
    truth, x = field_pixels(lib, 4096, brightness_sd=0.0, seed=2)
    cube = Cube(x.reshape(len(grid), 64, 64).astype(np.float32), grid, np.ones((64, 64), dtype=bool))
    keep = [i for i, name in enumerate(lib.names) if name != "soil-wet"]
    dry_only = Endmembers(lib.spectra[keep], grid, tuple(lib.classes[i] for i in keep),
                          tuple(lib.names[i] for i in keep))
    errors = {}
    for name, library in (("both", lib), ("dry only", dry_only)):
        result = unmix_fcls(cube, library, UnmixConfig(brightness="sum-to-one"))
        errors[name] = np.abs(result.fractions[0].ravel() - truth[0]).mean()
    assert errors["both"] < 0.03 and errors["dry only"] > 3 * errors["both"], errors
