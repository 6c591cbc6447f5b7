"""One error root: every exception class the project defines derives from OnboardError (the
bridge's from BridgeError); no two share a name."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from collections import Counter

import pytest

from onboard.errors import BridgeError, OnboardError

PACKAGES = ("onboard", "firmware_bridge", "ground", "calibration", "export", "hil")


def _project_exceptions() -> list[type[BaseException]]:
    found: dict[str, type[BaseException]] = {}
    for pkg_name in PACKAGES:
        pkg = importlib.import_module(pkg_name)
        for info in pkgutil.walk_packages(pkg.__path__, pkg_name + "."):
            if info.name.endswith("__main__"):
                continue
            try:
                module = importlib.import_module(info.name)
            except ModuleNotFoundError as exc:  # an optional third-party library (tensorrt)
                if (exc.name or "").split(".")[0] in PACKAGES:
                    raise
                continue
            for _, obj in inspect.getmembers(module, inspect.isclass):
                if issubclass(obj, BaseException) and obj.__module__ == info.name:
                    found[f"{obj.__module__}.{obj.__qualname__}"] = obj
    return list(found.values())


def test_every_project_exception_has_the_root() -> None:
    classes = _project_exceptions()
    assert len(classes) >= 15  # the walk found the packages' errors
    for cls in classes:
        if cls in (OnboardError, BridgeError):
            continue
        assert issubclass(cls, OnboardError), cls
        if cls.__module__.startswith("firmware_bridge"):
            assert issubclass(cls, BridgeError), cls


def test_no_two_project_exceptions_share_a_name() -> None:
    names = Counter(cls.__name__ for cls in _project_exceptions())
    assert [n for n, k in names.items() if k > 1] == []


@pytest.mark.parametrize("cls", [OnboardError, BridgeError])
def test_the_roots_are_plain_exceptions(cls: type[Exception]) -> None:
    assert issubclass(cls, Exception) and not issubclass(cls, (ValueError, RuntimeError))
