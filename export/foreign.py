"""Scenes on ground the residue models must not take for soil: real earthlib materials of
classes the shipped spectral library takes from no split (bench/bench_residue_ood.py, the
out-of-distribution rule's "other" examples, its tests).

Each foreign class is split like the library, by the hash of its spectra's sites
(``export.spectral_library.split_of``): with earthlib 1.1.0, char 9 / 7 / 5 spectra (train /
val / test, 17 sites), built 395 / 228 / 193 (20 sites), sand and gravel 60 / 6 / 7 (6 sites).
A foreign direction (the ImSPOC's: ``export.build.FOREIGN_TEST``) is fitted on the train part,
the settings compared on the val part (bench/bench_residue_foreign_cv.py), and the benches
report on the test part only.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from export import data
from export.spectral_library import GRID_NM, earthlib_candidates, split_of
from onboard.formats.types import Cube
from onboard.scene.farmland import LIBRARY_SPLIT
from onboard.scene.library import SpectralLibrary, load

#: Set name -> earthlib LEVEL_3 classes put in the place of the soils.
FOREIGN = {"sand, gravel": ("sand", "gravel"), "char": ("char",),
           "built": ("asphalt", "road", "parking_lot", "concrete_tile", "sidewalk",
                     "comp_shingle", "wood_shingle", "paint", "metal", "driveway")}
#: The sets the out-of-distribution rule is given examples of (``onboard.stages.confidence``:
#: the foreign direction); sand and gravel stay unseen (bare mineral ground, a soil to a user).
OTHER = ("char", "built")
#: Pixels scored: ground (soil fraction) at least this much of the pixel.
FOREIGN_SHARE = 0.5


def with_ground(library: SpectralLibrary, classes: tuple[str, ...], split: str = "test") -> SpectralLibrary:
    """``library`` with its soils of the library split the scene split ``split`` draws from
    (``train``, ``eval`` or ``test``) replaced by earthlib's spectra of ``classes`` of that
    split (module docstring); the other splits untouched."""
    lib_split = LIBRARY_SPLIT[split]
    c = earthlib_candidates(dict.fromkeys(classes, "soil"))
    if not np.array_equal(GRID_NM, library.wavelengths_nm):
        raise ValueError("the shipped library is not on the generator's grid: rebuild it")
    take = [i for i, site in enumerate(c.sites) if split_of(site) == lib_split]
    if not take:
        raise ValueError(f"earthlib holds no {'/'.join(classes)} spectra of the {lib_split} split")
    keep = [i for i, (k, s) in enumerate(zip(library.kinds, library.splits, strict=True))
            if not (k == "soil" and s in (lib_split, "shared"))]
    n = len(take)

    def texts(values: tuple[str, ...], extra: list[str]) -> tuple[str, ...]:
        return tuple(values[i] for i in keep) + tuple(extra)

    return replace(library, spectra=np.concatenate([library.spectra[keep], c.spectra[take]]),
                   measured=np.concatenate([library.measured[keep], c.measured[take]]),
                   kinds=texts(library.kinds, ["soil"] * n), splits=texts(library.splits, [lib_split] * n),
                   names=texts(library.names, [c.names[i] for i in take]),
                   sources=texts(library.sources, ["earthlib"] * n),
                   sites=texts(library.sites, [c.sites[i] for i in take]))


def other_cubes(kind: str, split: str, seed: int, n: int) -> list[Cube]:
    """``n`` classically denoised cubes of ``kind`` per ``OTHER`` set, scenes of ``split``
    whose ground is that set's spectra of the split, valid only where the ground (the "soil"
    fraction) is at least ``FOREIGN_SHARE`` of the pixel: the out-of-distribution rule's
    examples of foreign ground (``onboard.stages.confidence.fit_foreign``)."""
    out = []
    for name in OTHER:
        lib = with_ground(load(), FOREIGN[name], split)
        for s in data.take(data.samples(kind, split, seed, library=lib), n):  # type: ignore[arg-type]
            cube = data.denoised(s)
            out.append(replace(cube, valid=cube.valid & (s.fractions[1] >= FOREIGN_SHARE)))
    return out
