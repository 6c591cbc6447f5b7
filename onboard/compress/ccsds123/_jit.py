"""One definition of every kernel, compiled by numba where it is installed.

The CCSDS 123 recursion is sequential per sample, so plain Python runs it at tens of
thousands of samples a second; numba (the optional ``compress`` extra) compiles the same
functions to machine code, cached on disk (``cache=True``) so a flight computer pays the
compile once. ``ONBOARD_NUMBA=0`` in the environment forces the plain-Python path (the
benchmark measures both; a test checks both give the same bytes).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])


def _numba_jit() -> Callable[[Any], Any] | None:
    if os.environ.get("ONBOARD_NUMBA", "1") == "0":
        return None
    try:
        import numba
    except ImportError:
        return None
    return numba.njit(cache=True, nogil=True)  # type: ignore[no-any-return]


_JIT = _numba_jit()

#: True when the kernels run compiled.
COMPILED = _JIT is not None


def kernel(func: F) -> F:
    """``func`` compiled by numba where available, else ``func`` itself."""
    return func if _JIT is None else _JIT(func)  # type: ignore[no-any-return]
