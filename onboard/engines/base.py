"""The one interface every inference engine has (after Polygraphy's runners).

An engine runs one model file: ``run(inputs) -> outputs``, both dicts from tensor name to
array, names, shapes and dtypes as the bundle manifest's :class:`~onboard.formats.bundle.TensorSpec`
says. Constructing an engine is cheap and imports nothing heavy; :meth:`Engine.activate`
loads the model and allocates (sessions, CUDA buffers), :meth:`Engine.deactivate` frees, and
an engine is a context manager doing both. An engine that cannot be used raises
:class:`EngineError` from ``activate`` with the reason, so a selector can go on with the next.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from onboard.errors import OnboardError
from onboard.formats.bundle import TensorSpec

log = logging.getLogger("onboard.engines")


class EngineError(OnboardError, RuntimeError):
    """An engine that cannot load or run its model; the message says why and what to do."""


class Engine(ABC):
    """Base of all engines; subclasses implement ``_activate``, ``_deactivate``, ``_infer``."""

    #: Short name of the engine kind, e.g. "onnxruntime" or "tensorrt".
    kind: str = "engine"
    #: Whether ``run`` may be called from several threads at once (frames in flight,
    #: onboard/runtime/loop.py); an engine that may not is run by one thread at a time.
    concurrent: bool = True

    def __init__(self, path: str | Path, inputs: Sequence[TensorSpec],
                 outputs: Sequence[TensorSpec], precision: str = "fp32") -> None:
        self.path = Path(path)
        self.inputs = tuple(inputs)
        self.outputs = tuple(outputs)
        self.precision = precision
        #: Things that work but not as asked (e.g. a GPU provider that fell back to CPU).
        self.warnings: list[str] = []
        #: Wall time spent inside the model (``_infer``), summed over every run: what a
        #: benchmark counts as inference, apart from the stage's own numpy work around it.
        self.infer_seconds = 0.0
        self._active = False
        self._serial = threading.Lock()

    @property
    def is_active(self) -> bool:
        return self._active

    def activate(self) -> Engine:
        """Load the model and allocate; idempotent. Raises EngineError with the reason."""
        if not self._active:
            self._activate()
            self._active = True
        return self

    def deactivate(self) -> None:
        """Free what activate allocated; idempotent."""
        if self._active:
            self._active = False
            self._deactivate()

    def __enter__(self) -> Engine:
        return self.activate()

    def __exit__(self, *exc: object) -> None:
        self.deactivate()

    def warn(self, message: str) -> None:
        self.warnings.append(message)
        log.warning("%s: %s", self.label, message)

    @property
    def label(self) -> str:
        """Human name of what runs, e.g. 'onnxruntime[CPUExecutionProvider] fp32'."""
        return f"{self.kind} {self.precision}"

    def describe(self) -> dict[str, Any]:
        """For telemetry and ``onboard info``."""
        return {"engine": self.kind, "label": self.label, "file": self.path.name,
                "precision": self.precision, "warnings": list(self.warnings)}

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run the model once.

        ``inputs`` maps every input name of the manifest to an array of its dtype and shape
        (dynamic dims any size, the same name the same size); returns every output by name.
        Raises ValueError for inputs that do not fit, EngineError when the engine fails."""
        if not self._active:
            raise EngineError(f"{self.label} is not active: use 'with engine:' or activate()")
        self._check_names(inputs)
        sizes: dict[str, int] = {}
        for spec in self.inputs:
            spec.check(inputs[spec.name], sizes)
        feed = {t.name: np.ascontiguousarray(inputs[t.name]) for t in self.inputs}
        with contextlib.nullcontext() if self.concurrent else self._serial:
            t0 = time.perf_counter()
            outputs = self._infer(feed)
            self.infer_seconds += time.perf_counter() - t0
        for spec in self.outputs:
            if spec.name not in outputs:
                raise EngineError(f"{self.label} gave no output '{spec.name}'")
            try:
                spec.check(outputs[spec.name], sizes)
            except ValueError as exc:
                raise EngineError(f"{self.path.name} disagrees with its manifest: {exc}") from exc
        return {t.name: outputs[t.name] for t in self.outputs}

    def _check_names(self, inputs: Mapping[str, np.ndarray]) -> None:
        want = [t.name for t in self.inputs]
        if set(inputs) != set(want):
            raise ValueError(f"inputs {sorted(inputs)} do not match the model's {want}")

    def run_physical(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """:meth:`run` on physical values: each input is normalised as its manifest entry
        says (``(x - mean) / std``) before the model, each output mapped back after it;
        tensors without a normalisation pass unchanged. Stages call this, so the
        normalisation is defined once, in the manifest."""
        self._check_names(inputs)
        normalised = {t.name: inputs[t.name] if t.normalisation is None
                      else t.normalisation.apply(inputs[t.name]) for t in self.inputs}
        outputs = self.run(normalised)
        for spec in self.outputs:
            if spec.normalisation is not None:
                outputs[spec.name] = spec.normalisation.invert(outputs[spec.name])
        return outputs

    def check_io(self, found_inputs: Mapping[str, str], found_outputs: Mapping[str, str]) -> None:
        """Refuse a model file whose tensor names or dtypes differ from the manifest's
        (``found_*`` map name -> dtype name as the file declares them)."""
        for role, specs, found in (("inputs", self.inputs, found_inputs),
                                   ("outputs", self.outputs, found_outputs)):
            want = {t.name: t.dtype for t in specs}
            if want != dict(found):
                raise EngineError(f"{self.path.name}: the file's {role} {dict(found)} do not "
                                  f"match the manifest's {want}; rebuild the bundle")

    @abstractmethod
    def _activate(self) -> None: ...

    @abstractmethod
    def _deactivate(self) -> None: ...

    @abstractmethod
    def _infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...
