"""The out-of-distribution mask decided in float32 (``Domain.out_of_distribution``) is the
double-precision rule's, pixel for pixel: on real-spectra test scenes of both sensors with the
shipped domain records, on pixels no float32 path can read (NaN, infinite, negative, zero and
tiny levels), and with each limit placed exactly on, one double step beside, and within float32
rounding of a pixel's double-precision value, where only the recheck in double can decide."""

from __future__ import annotations

from dataclasses import replace
from functools import cache
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("earthlib")

import onboard  # noqa: E402
from export import data  # noqa: E402
from onboard.formats import bundle as bundle_mod  # noqa: E402
from onboard.formats.types import Cube  # noqa: E402
from onboard.scene.library import load  # noqa: E402
from onboard.stages.confidence import Domain, level  # noqa: E402
from onboard.stages.residue import usable_bands  # noqa: E402

DEFAULT = Path(onboard.__file__).parent / "models" / "default"


def _reference(d: Domain, cube: Cube) -> np.ndarray:
    """The rule straight from its double-precision definitions."""
    return ((d.novelty(cube) > d.novelty_limit) | (level(cube) < d.dark_limit)
            | (d.foreign_score(cube) > d.foreign_limit))


@cache
def _scene(kind: str) -> tuple[Domain, Cube, Cube]:
    """The shipped domain, a denoised real-spectra test scene and the same with a few pixels
    no float32 path can read."""
    domain = Domain.from_dict(bundle_mod.load(DEFAULT).model(f"residue_{kind}").metadata["domain"])
    s = data.take(data.samples(kind, "test", 900, library=load().only(("earthlib", "usgs1995"))), 1)[0]  # type: ignore[arg-type]
    cube = data.denoised(s)
    x = cube.data.copy()
    x[3, 0, 0] = np.nan
    x[:, 0, 1] = np.inf
    x[:, 0, 2] = 0.0
    x[:, 0, 3] = 1e-7
    x[:, 0, 4] = -x[:, 0, 4]
    x[::2, 0, 5] *= -1.0  # mixed signs: a level from cancelling terms
    x[:, 0, 6] *= 0.05  # dark
    return domain, cube, replace(cube, data=x)


def _foreign_with_level(d: Domain) -> Domain:
    """``d`` with a foreign direction that reads the log of the level too (the shipped ImSPOC
    direction reads the shape alone, the push-broom has none), limit at the median score."""
    shape = d.foreign[:-1] if d.foreign is not None else d.components[0] * 3.0
    return replace(d, foreign=np.append(shape, 0.7), foreign_limit=0.0)


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")  # the infinite pixel
@pytest.mark.parametrize("kind", ["imspoc", "pushbroom"])
def test_the_mask_is_the_double_precision_rule_s_even_at_the_limits(kind: str) -> None:
    shipped, clean, cube = _scene(kind)
    b = cube.data.shape[0]
    x = cube.data.reshape(b, -1)[usable_bands(cube.wavelengths_nm)]
    with_level = _foreign_with_level(shipped)
    with_level = replace(with_level, foreign_limit=float(np.median(with_level.foreign_score(cube))))
    domains = [shipped, with_level]
    # each limit on a pixel's own double-precision value, a double step beside it and within
    # float32 rounding of it: the float32 screen cannot decide these pixels, the recheck must
    for d in (shipped, with_level):
        tests = [("novelty_limit", d.novelty(cube)), ("dark_limit", level(cube))]
        for field, values in tests + [("foreign_limit", d.foreign_score(cube))] * (d.foreign is not None):
            v = float(values.ravel()[77])
            alone = replace(d, novelty_limit=np.inf, dark_limit=-np.inf, foreign_limit=np.inf)  # one test decides
            for base in (d, alone):
                for limit in (v, np.nextafter(v, np.inf), np.nextafter(v, -np.inf), v * (1 + 3e-8), v * (1 - 3e-8)):
                    domains.append(replace(base, **{field: float(limit)}))
            on_limit = replace(alone, **{field: v})
            assert on_limit._screen(x)[1][77], f"{field} on pixel 77's value: its decision must be rechecked"
    for d in domains:
        for c in (cube, clean):  # clean: the one pixel on a limit may be the only one rechecked
            np.testing.assert_array_equal(d.out_of_distribution(c), _reference(d, c))
    assert 0.3 < _reference(with_level, cube).mean() < 0.7  # both decisions are exercised


@pytest.mark.parametrize("kind", ["imspoc", "pushbroom"])
def test_a_pixel_s_double_values_do_not_depend_on_its_neighbours(kind: str) -> None:
    """What the recheck rests on: a few pixels taken out of the cube get the very bits they
    get in it (the whole-cube BLAS products gave some of them another last bit)."""
    shipped, clean, _ = _scene(kind)
    d = _foreign_with_level(shipped)
    b = clean.data.shape[0]
    rng = np.random.default_rng(5)
    for m in (2, 3, 7, 40):
        cols = rng.choice(clean.valid.size, m, replace=False)
        part = Cube(clean.data.reshape(b, -1)[:, cols][:, None, :], clean.wavelengths_nm, np.ones((1, m), bool))
        for f in (d.novelty, level, d.foreign_score):
            np.testing.assert_array_equal(f(part).ravel(), f(clean).ravel()[cols])
