"""Test scenes on ground the residue models never saw: real earthlib materials of classes the
shipped spectral library takes from no split (bench/bench_residue_ood.py, tests of the
out-of-distribution rule)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from export.spectral_library import GRID_NM, earthlib_candidates
from onboard.scene.library import SpectralLibrary

#: Set name -> earthlib LEVEL_3 classes put in the place of the test soils.
FOREIGN = {"sand, gravel": ("sand", "gravel"), "char": ("char",),
           "built": ("asphalt", "road", "parking_lot", "concrete_tile", "sidewalk",
                     "comp_shingle", "wood_shingle", "paint", "metal", "driveway")}
#: Pixels scored: ground (soil fraction) at least this much of the pixel.
FOREIGN_SHARE = 0.5


def with_ground(library: SpectralLibrary, classes: tuple[str, ...]) -> SpectralLibrary:
    """``library`` with its test-split soils replaced by earthlib's spectra of ``classes``."""
    c = earthlib_candidates(dict.fromkeys(classes, "soil"))
    if not np.array_equal(GRID_NM, library.wavelengths_nm):
        raise ValueError("the shipped library is not on the generator's grid: rebuild it")
    keep = [i for i, (k, s) in enumerate(zip(library.kinds, library.splits, strict=True))
            if not (k == "soil" and s in ("test", "shared"))]
    n = len(c.names)

    def texts(values: tuple[str, ...], extra: list[str]) -> tuple[str, ...]:
        return tuple(values[i] for i in keep) + tuple(extra)

    return replace(library, spectra=np.concatenate([library.spectra[keep], c.spectra]),
                   measured=np.concatenate([library.measured[keep], c.measured]),
                   kinds=texts(library.kinds, ["soil"] * n), splits=texts(library.splits, ["test"] * n),
                   names=texts(library.names, c.names), sources=texts(library.sources, ["earthlib"] * n),
                   sites=texts(library.sites, c.sites))
