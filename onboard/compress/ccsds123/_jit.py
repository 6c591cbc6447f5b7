"""One definition of every kernel, compiled by numba where it is installed.

The CCSDS 123 recursion is sequential per sample, so plain Python runs it at tens of
thousands of samples a second; numba (the optional ``compress`` extra) compiles the same
functions to machine code, cached on disk (``cache=True``) so a flight computer pays the
compile once. Nothing imports numba until the codec is first used (:func:`compile_kernels`),
so a runtime that never compresses never loads it. ``ONBOARD_NUMBA=0`` in the environment
forces the plain-Python path (the benchmark measures both; a test checks both give the same
bytes).
"""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Callable
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])

#: True when the kernels run compiled (numba installed and not switched off).
COMPILED = os.environ.get("ONBOARD_NUMBA", "1") != "0" and importlib.util.find_spec("numba") is not None

_KERNELS: list[Callable[..., Any]] = []
_compiled = False


def kernel(func: F) -> F:
    """Register ``func`` as a kernel: plain Python until :func:`compile_kernels` swaps it, in its
    module, for numba's compiled version (kernels call each other through module globals,
    which numba reads when it compiles the caller)."""
    _KERNELS.append(func)
    return func


def compile_kernels() -> None:
    """Swap every registered kernel for its numba dispatcher, once (compilation itself happens
    at a kernel's first call, or loads from numba's cache)."""
    global _compiled
    if _compiled:
        return
    _compiled = True
    if not COMPILED:
        return
    import numba

    for func in _KERNELS:
        setattr(sys.modules[func.__module__], func.__name__, numba.njit(cache=True, nogil=True)(func))
