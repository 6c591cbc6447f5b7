"""The one-selection median (onboard/stages/robust.py) against numpy.median, bit for bit."""

from __future__ import annotations

import numpy as np
import pytest

from onboard.stages.robust import median


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(1,), (2,), (7,), (4096,), (3, 5, 8), (24, 4096), (6, 9, 2)])
def test_median_is_numpys_bit_for_bit(dtype: type, shape: tuple[int, ...]) -> None:
    rng = np.random.default_rng(len(shape) * 100 + shape[-1])
    a = rng.standard_normal(shape).astype(dtype)
    a.flat[:: 7] = np.round(a.flat[:: 7])  # ties
    for axis in range(-1, len(shape)):
        for keepdims in (False, True):
            want = np.median(a, axis=axis, keepdims=keepdims)
            got = median(a, axis=axis, keepdims=keepdims)
            assert got.dtype == want.dtype and got.shape == np.shape(want)
            assert np.array_equal(got, want), (axis, keepdims)


def test_median_of_strided_views_and_non_finite_values_is_numpys() -> None:
    rng = np.random.default_rng(5)
    a = rng.standard_normal((4, 20, 16)).astype(np.float32)
    a[0, 3, 4] = np.nan
    a[1, :, 2] = np.nan  # a whole lane
    a[2, 5, 5], a[2, 6, 5] = np.inf, -np.inf
    a[3, :11, 7] = np.inf  # more than half the lane infinite
    with np.errstate(invalid="ignore"):
        for view in (a, a.transpose(0, 2, 1), a[:, ::2, 1::3],
                     np.lib.stride_tricks.sliding_window_view(a, 5, axis=2)):
            for axis in range(view.ndim):
                assert np.array_equal(median(view, axis=axis), np.median(view, axis=axis), equal_nan=True)


def test_median_refuses_what_it_cannot_match() -> None:
    with pytest.raises(TypeError, match="floating"):
        median(np.arange(5))
    with pytest.raises(ValueError, match="empty"):
        median(np.zeros((3, 0)))
