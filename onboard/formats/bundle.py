"""The model bundle: a folder made on the ground by ``export/`` and verified on board.

A bundle is a folder holding model files and one ``manifest.json``::

    {
      "format": "onboard-model-bundle",
      "schema_version": 1,
      "created_utc": "2026-11-29T01:00:00Z",
      "producer": "onboard 0.1.0 export build --seed 0",
      "tools": {"onboard": "0.1.0", "torch": "2.13.0", "onnx": "1.23.2",
                "onnxruntime": "1.32.0", "tensorrt": null},
      "models": {
        "denoiser": {
          "task": "denoise",
          "inputs":  [{"name": "cube", "shape": [1, "bands", "H", "W"], "dtype": "float32",
                       "description": "reflectance, bands ascending in wavelength",
                       "normalisation": {"mean": [0.2], "std": [0.1], "axis": 1}}],
          "outputs": [{"name": "denoised", "shape": [1, "bands", "H", "W"],
                       "dtype": "float32", "normalisation": {...}}],
          "band_grid_nm": null,                       # or [900.0, 910.0, ...]: bands it was trained on
          "metadata": {"architecture": "...", "parameters": 12345},
          "artifacts": [
            {"file": "denoiser.fp32.onnx", "format": "onnx", "precision": "fp32",
             "sha256": "...", "bytes": 81234,
             "parity": {"reference": "torch", "max_abs_error": 2e-6},
             "accuracy": {"psnr_db": 38.1}},
            {"file": "denoiser.int8.onnx", "format": "onnx", "precision": "int8", ...},
            {"file": "denoiser.int8.sm87.plan", "format": "tensorrt-plan", "precision": "int8",
             "sha256": "...", "bytes": 400000,
             "source": "denoiser.int8.onnx", "source_sha256": "...",
             "tensorrt_version": "10.3.0", "compute_capability": "8.7", "device_name": "Orin"}
          ]
        }
      }
    }

Shapes list fixed sizes as positive ints and dynamic ones as names (the same name in two
places of one model means the same size). ``normalisation`` says what the model expects:
``model_input = (x - mean) / std`` along ``axis`` (one value, or one per index of that axis),
and for an output ``y = model_output * std + mean``. ``parity`` and ``accuracy`` hold what was
measured at export (numbers or short strings; free keys).

:func:`load` refuses a manifest it does not understand (another format, a schema version
this runtime does not read, a missing or ill-typed field), naming the field and what to do.
It then checks every file's size and SHA-256: a file that is missing or does not match is
unusable, with the reason in :attr:`Bundle.problems`; a model none of whose files is usable
is unavailable. :meth:`Manifest.write` is the writer ``export/`` uses.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from firmware_bridge.storage import atomic_write
from onboard import __version__
from onboard.errors import OnboardError
from onboard.formats.calfile import file_sha256

FORMAT = "onboard-model-bundle"
SCHEMA_VERSION = 1
SUPPORTED_SCHEMA_VERSIONS = (1,)
MANIFEST_NAME = "manifest.json"
#: Where the runtime looks when no bundle is configured (export/ writes the default bundle here).
DEFAULT_BUNDLE_DIR = Path(__file__).resolve().parents[1] / "models" / "default"

DTYPES = ("float32", "float16", "int8", "uint8", "int32", "int64", "bool")
PRECISIONS = ("fp32", "fp16", "int8")
ARTIFACT_FORMATS = ("onnx", "tensorrt-plan")
_PLAN_FIELDS = ("source", "source_sha256", "tensorrt_version", "compute_capability")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_DIM_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_REBUILD = "rebuild the bundle with 'onboard export build --out DIR'"


class BundleError(OnboardError, ValueError):
    """A bundle or manifest this runtime cannot use; the message says why and what to do."""


def _fail(where: str, what: str) -> BundleError:
    return BundleError(f"manifest {where}: {what}; {_REBUILD}")


def _get(d: Mapping[str, Any], key: str, where: str, kind: type | tuple[type, ...]) -> Any:
    if key not in d:
        raise _fail(where, f"missing field '{key}'")
    value = d[key]
    if isinstance(value, bool) and kind in (int, float, (int, float)):
        raise _fail(f"{where}.{key}", f"expected a number, got {value!r}")
    if not isinstance(value, kind):
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise _fail(f"{where}.{key}", f"expected {names}, got {type(value).__name__} {value!r}")
    return value


def _no_unknown(d: Mapping[str, Any], allowed: Sequence[str], where: str) -> None:
    unknown = sorted(set(d) - set(allowed))
    if unknown:
        raise _fail(where, f"unknown field(s) {', '.join(unknown)} (this runtime reads "
                           f"{', '.join(allowed)}); update the runtime or {_REBUILD}")


def _measurements(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _fail(where, f"expected a table of measurements, got {value!r}")
    for k, v in value.items():
        if not (v is None or isinstance(v, (int, float, str, bool))):
            raise _fail(f"{where}.{k}", f"expected a number or a short string, got {v!r}")
    return dict(value)


@dataclass(frozen=True)
class Normalisation:
    """``model_input = (x - mean) / std`` along ``axis``; outputs are mapped back with
    ``y = model_output * std + mean``. ``mean``/``std`` hold one value or one per index of
    ``axis`` (per band for a channels-first cube, axis 1 of (1, bands, H, W))."""

    mean: tuple[float, ...]
    std: tuple[float, ...]
    axis: int = 1

    def __post_init__(self) -> None:
        if not self.mean or len(self.mean) != len(self.std):
            raise BundleError(f"normalisation: mean {self.mean} and std {self.std} must be "
                              "non-empty and of equal length")
        if any(not np.isfinite(s) or s <= 0 for s in self.std):
            raise BundleError(f"normalisation: std must be finite and > 0, got {self.std}")

    def _broadcast(self, x: np.ndarray, values: tuple[float, ...]) -> np.ndarray:
        v = np.asarray(values, dtype=x.dtype)
        if v.size == 1:
            return v.reshape(())
        if x.shape[self.axis] != v.size:
            raise ValueError(f"normalisation has {v.size} values for axis {self.axis}, "
                             f"the array has {x.shape[self.axis]} there (shape {x.shape})")
        shape = [1] * x.ndim
        shape[self.axis] = v.size
        return v.reshape(shape)

    def apply(self, x: np.ndarray) -> np.ndarray:
        """Physical values -> what the model takes (same shape and dtype)."""
        return (x - self._broadcast(x, self.mean)) / self._broadcast(x, self.std)

    def invert(self, y: np.ndarray) -> np.ndarray:
        """What the model gives -> physical values (same shape and dtype)."""
        return y * self._broadcast(y, self.std) + self._broadcast(y, self.mean)

    def to_dict(self) -> dict[str, Any]:
        return {"mean": list(self.mean), "std": list(self.std), "axis": self.axis}

    @classmethod
    def from_dict(cls, d: Any, where: str) -> Normalisation:
        if not isinstance(d, dict):
            raise _fail(where, f"expected a table, got {d!r}")
        _no_unknown(d, ("mean", "std", "axis"), where)
        values = {}
        for key in ("mean", "std"):
            v = _get(d, key, where, (int, float, list))
            v = v if isinstance(v, list) else [v]
            if not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v):
                raise _fail(f"{where}.{key}", f"expected numbers, got {v!r}")
            values[key] = tuple(float(x) for x in v)
        axis = _get(d, "axis", where, int) if "axis" in d else 1
        try:
            return cls(values["mean"], values["std"], axis)
        except BundleError as exc:
            raise _fail(where, str(exc)) from exc


@dataclass(frozen=True)
class TensorSpec:
    """One input or output of a model: its name in the model file, shape (ints fixed, names
    dynamic), dtype name (see :data:`DTYPES`), what it holds, and its normalisation."""

    name: str
    shape: tuple[int | str, ...]
    dtype: str
    description: str = ""
    normalisation: Normalisation | None = None

    def __post_init__(self) -> None:
        if not self.name:
            raise BundleError("tensor name must not be empty")
        if self.dtype not in DTYPES:
            raise BundleError(f"tensor {self.name}: dtype {self.dtype!r} is not one of {DTYPES}")
        for d in self.shape:
            ok = (isinstance(d, int) and not isinstance(d, bool) and d > 0) or (
                isinstance(d, str) and _DIM_NAME.match(d))
            if not ok:
                raise BundleError(f"tensor {self.name}: dimension {d!r} must be a positive int "
                                  "or a dimension name such as 'H'")

    @property
    def np_dtype(self) -> np.dtype:
        return np.dtype(self.dtype)

    def check(self, array: np.ndarray, sizes: dict[str, int]) -> None:
        """Raise ValueError unless ``array`` fits this spec; bind dynamic dims in ``sizes``
        (a size already bound by another tensor of the same model must agree)."""
        if array.dtype != self.np_dtype:
            raise ValueError(f"'{self.name}' is {array.dtype}; the model takes {self.dtype}: "
                             f"convert it with .astype(np.{self.dtype})")
        if array.ndim != len(self.shape):
            raise ValueError(f"'{self.name}' has shape {array.shape}; the model takes "
                             f"{len(self.shape)} dimensions {self.shape_text}")
        for axis, (want, got) in enumerate(zip(self.shape, array.shape, strict=True)):
            if isinstance(want, str):
                want = sizes.setdefault(want, got)
            if want != got:
                raise ValueError(f"'{self.name}' has shape {array.shape}; the model takes "
                                 f"{self.shape_text} (axis {axis} must be {want})")

    @property
    def shape_text(self) -> str:
        return "(" + ", ".join(str(d) for d in self.shape) + ")"

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}
        if self.description:
            d["description"] = self.description
        if self.normalisation is not None:
            d["normalisation"] = self.normalisation.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: Any, where: str) -> TensorSpec:
        if not isinstance(d, dict):
            raise _fail(where, f"expected a table, got {d!r}")
        _no_unknown(d, ("name", "shape", "dtype", "description", "normalisation"), where)
        norm = d.get("normalisation")
        try:
            return cls(
                name=_get(d, "name", where, str),
                shape=tuple(_get(d, "shape", where, list)),
                dtype=_get(d, "dtype", where, str),
                description=_get(d, "description", where, str) if "description" in d else "",
                normalisation=None if norm is None
                else Normalisation.from_dict(norm, f"{where}.normalisation"),
            )
        except BundleError as exc:
            if str(exc).startswith("manifest "):
                raise
            raise _fail(where, str(exc)) from exc


@dataclass(frozen=True)
class Artifact:
    """One file of a model: an ONNX graph or a TensorRT plan, at one precision.

    A plan also records the cache key it was built for: the ONNX file of this bundle it was
    built from (``source`` and its ``source_sha256``), the TensorRT version and the GPU's
    compute capability ("8.7" for Orin); the runtime refuses it when any differs here."""

    file: str
    format: str
    precision: str
    sha256: str
    bytes: int
    parity: dict[str, Any] = field(default_factory=dict)
    accuracy: dict[str, Any] = field(default_factory=dict)
    source: str | None = None
    source_sha256: str | None = None
    tensorrt_version: str | None = None
    compute_capability: str | None = None
    device_name: str | None = None

    def __post_init__(self) -> None:
        p = PurePosixPath(self.file)
        if p.is_absolute() or ".." in p.parts or not self.file or "\\" in self.file:
            raise BundleError(f"artifact file {self.file!r} must be a relative path inside "
                              "the bundle")
        if self.format not in ARTIFACT_FORMATS:
            raise BundleError(f"{self.file}: format {self.format!r} is not one of "
                              f"{ARTIFACT_FORMATS}")
        if self.precision not in PRECISIONS:
            raise BundleError(f"{self.file}: precision {self.precision!r} is not one of "
                              f"{PRECISIONS}")
        if not _SHA256.match(self.sha256):
            raise BundleError(f"{self.file}: sha256 must be 64 lowercase hex digits")
        if self.bytes < 0:
            raise BundleError(f"{self.file}: bytes must be >= 0")
        if self.format == "tensorrt-plan":
            missing = [k for k in _PLAN_FIELDS if not getattr(self, k)]
            if missing:
                raise BundleError(f"{self.file}: a TensorRT plan must record "
                                  f"{', '.join(missing)}")
            if not _SHA256.match(self.source_sha256 or ""):
                raise BundleError(f"{self.file}: source_sha256 must be 64 lowercase hex digits")

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"file": self.file, "format": self.format,
                             "precision": self.precision, "sha256": self.sha256,
                             "bytes": self.bytes, "parity": dict(self.parity),
                             "accuracy": dict(self.accuracy)}
        if self.format == "tensorrt-plan":
            for k in (*_PLAN_FIELDS, "device_name"):
                d[k] = getattr(self, k)
        return d

    @classmethod
    def from_dict(cls, d: Any, where: str) -> Artifact:
        if not isinstance(d, dict):
            raise _fail(where, f"expected a table, got {d!r}")
        plan = d.get("format") == "tensorrt-plan"
        _no_unknown(d, ("file", "format", "precision", "sha256", "bytes", "parity", "accuracy",
                        *((*_PLAN_FIELDS, "device_name") if plan else ())), where)
        kwargs: dict[str, Any] = {
            "file": _get(d, "file", where, str),
            "format": _get(d, "format", where, str),
            "precision": _get(d, "precision", where, str),
            "sha256": _get(d, "sha256", where, str),
            "bytes": _get(d, "bytes", where, int),
            "parity": _measurements(d.get("parity", {}), f"{where}.parity"),
            "accuracy": _measurements(d.get("accuracy", {}), f"{where}.accuracy"),
        }
        if plan:
            for k in _PLAN_FIELDS:
                kwargs[k] = _get(d, k, where, str)
            if d.get("device_name") is not None:
                kwargs["device_name"] = _get(d, "device_name", where, str)
        try:
            return cls(**kwargs)
        except BundleError as exc:
            raise _fail(where, str(exc)) from exc

    @classmethod
    def from_file(cls, root: str | os.PathLike, file: str, *, format: str, precision: str,
                  parity: Mapping[str, Any] | None = None,
                  accuracy: Mapping[str, Any] | None = None, source: str | None = None,
                  tensorrt_version: str | None = None, compute_capability: str | None = None,
                  device_name: str | None = None) -> Artifact:
        """Describe ``root/file`` (size and SHA-256 measured now); for a plan, ``source`` is
        the ONNX file in ``root`` it was built from, whose SHA-256 is measured too."""
        root = Path(root)
        path = root / file
        if not path.is_file():
            raise BundleError(f"{path} does not exist: write the model file before describing it")
        return cls(file=file, format=format, precision=precision, sha256=file_sha256(path),
                   bytes=path.stat().st_size, parity=dict(parity or {}),
                   accuracy=dict(accuracy or {}), source=source,
                   source_sha256=file_sha256(root / source) if source else None,
                   tensorrt_version=tensorrt_version, compute_capability=compute_capability,
                   device_name=device_name)


@dataclass(frozen=True)
class ModelSpec:
    """One model: its interface (inputs and outputs in model order), the band grid it was
    trained on (None when it takes any band count), free metadata and its files."""

    name: str
    task: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    artifacts: tuple[Artifact, ...]
    band_grid_nm: tuple[float, ...] | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.inputs or not self.outputs:
            raise BundleError(f"model {self.name}: needs at least one input and one output")
        names = [t.name for t in (*self.inputs, *self.outputs)]
        if len(set(names)) != len(names):
            raise BundleError(f"model {self.name}: tensor names repeat: {names}")
        files = [a.file for a in self.artifacts]
        if len(set(files)) != len(files):
            raise BundleError(f"model {self.name}: artifact files repeat: {files}")
        onnx = {a.file: a for a in self.artifacts if a.format == "onnx"}
        for a in self.artifacts:
            if a.format == "tensorrt-plan" and a.source not in onnx:
                raise BundleError(f"model {self.name}: plan {a.file} names source {a.source!r}, "
                                  "which is not an ONNX file of this model")
        if self.band_grid_nm is not None and (
                len(self.band_grid_nm) == 0 or np.any(np.diff(self.band_grid_nm) <= 0)):
            raise BundleError(f"model {self.name}: band_grid_nm must be non-empty and ascending")

    def artifact(self, file: str) -> Artifact:
        for a in self.artifacts:
            if a.file == file:
                return a
        raise KeyError(f"model {self.name} has no file {file!r}")

    def to_dict(self) -> dict[str, Any]:
        return {"task": self.task,
                "inputs": [t.to_dict() for t in self.inputs],
                "outputs": [t.to_dict() for t in self.outputs],
                "band_grid_nm": None if self.band_grid_nm is None else list(self.band_grid_nm),
                "metadata": dict(self.metadata),
                "artifacts": [a.to_dict() for a in self.artifacts]}

    @classmethod
    def from_dict(cls, name: str, d: Any) -> ModelSpec:
        where = f"models.{name}"
        if not isinstance(d, dict):
            raise _fail(where, f"expected a table, got {d!r}")
        _no_unknown(d, ("task", "inputs", "outputs", "band_grid_nm", "metadata", "artifacts"),
                    where)
        grid = d.get("band_grid_nm")
        if grid is not None and not (isinstance(grid, list) and all(
                isinstance(x, (int, float)) and not isinstance(x, bool) for x in grid)):
            raise _fail(f"{where}.band_grid_nm", f"expected a list of numbers or null, got {grid!r}")
        metadata = d.get("metadata", {})
        if not isinstance(metadata, dict):
            raise _fail(f"{where}.metadata", f"expected a table, got {metadata!r}")
        try:
            return cls(
                name=name,
                task=_get(d, "task", where, str),
                inputs=tuple(TensorSpec.from_dict(t, f"{where}.inputs[{i}]")
                             for i, t in enumerate(_get(d, "inputs", where, list))),
                outputs=tuple(TensorSpec.from_dict(t, f"{where}.outputs[{i}]")
                              for i, t in enumerate(_get(d, "outputs", where, list))),
                artifacts=tuple(Artifact.from_dict(a, f"{where}.artifacts[{i}]")
                                for i, a in enumerate(_get(d, "artifacts", where, list))),
                band_grid_nm=None if grid is None else tuple(float(x) for x in grid),
                metadata=dict(metadata),
            )
        except BundleError as exc:
            if str(exc).startswith("manifest "):
                raise
            raise _fail(where, str(exc)) from exc


def tool_versions(*packages: str) -> dict[str, str | None]:
    """Installed versions of ``packages`` (None when absent), read from package metadata, so
    asking for torch's version never imports torch."""
    out: dict[str, str | None] = {"onboard": __version__}
    for name in packages:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


@dataclass(frozen=True)
class Manifest:
    """What a bundle holds; :meth:`to_dict` and :meth:`from_dict` are exact inverses."""

    models: dict[str, ModelSpec]
    tools: dict[str, str | None] = field(default_factory=tool_versions)
    producer: str = f"onboard {__version__}"
    created_utc: str = field(
        default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    schema_version: int = SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "schema_version": self.schema_version,
                "created_utc": self.created_utc, "producer": self.producer,
                "tools": dict(self.tools),
                "models": {n: m.to_dict() for n, m in self.models.items()}}

    @classmethod
    def from_dict(cls, d: Any, source: str = "manifest") -> Manifest:
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            got = d.get("format") if isinstance(d, dict) else type(d).__name__
            raise BundleError(f"{source} is not an onboard model bundle manifest (format "
                              f"{got!r}, expected {FORMAT!r}); {_REBUILD}")
        version = d.get("schema_version")
        if version not in SUPPORTED_SCHEMA_VERSIONS:
            raise BundleError(
                f"{source} is schema version {version!r}; this runtime reads versions "
                f"{', '.join(map(str, SUPPORTED_SCHEMA_VERSIONS))}: {_REBUILD} with this "
                "software's export, or update the runtime")
        _no_unknown(d, ("format", "schema_version", "created_utc", "producer", "tools",
                        "models"), "top level")
        tools = _get(d, "tools", "top level", dict)
        for k, v in tools.items():
            if v is not None and not isinstance(v, str):
                raise _fail(f"tools.{k}", f"expected a version string or null, got {v!r}")
        models = _get(d, "models", "top level", dict)
        if not models:
            raise _fail("models", "the bundle holds no model")
        return cls(models={n: ModelSpec.from_dict(n, m) for n, m in models.items()},
                   tools=dict(tools), producer=_get(d, "producer", "top level", str),
                   created_utc=_get(d, "created_utc", "top level", str), schema_version=version)

    def write(self, root: str | os.PathLike) -> Path:
        """Write ``root/manifest.json`` atomically after checking it reads back the same and
        every file it names is in ``root`` with the recorded size and SHA-256."""
        root = Path(root)
        text = json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n"
        if Manifest.from_dict(json.loads(text)) != self:
            raise BundleError("manifest does not read back as written (a value JSON cannot "
                              "hold?)")
        problems = _verify_files(root, self)
        if problems:
            raise BundleError("manifest does not match the files in "
                              f"{root}: " + "; ".join(f"{f}: {r}" for f, r in problems.items()))
        path = root / MANIFEST_NAME
        atomic_write(path, text.encode(), mode=0o644)
        return path


def _verify_files(root: Path, manifest: Manifest) -> dict[str, str]:
    """File name -> why it is unusable, for every file that is missing, of another size or
    SHA-256, or a plan built from an ONNX file other than the one this bundle holds."""
    problems: dict[str, str] = {}
    for model in manifest.models.values():
        for a in model.artifacts:
            path = root / a.file
            if not path.is_file():
                problems[a.file] = f"file {a.file} is missing from the bundle"
                continue
            size = path.stat().st_size
            digest = file_sha256(path)
            if digest != a.sha256:
                problems[a.file] = (f"sha256 mismatch: {a.file} is {digest[:12]}… ({size} bytes), "
                                    f"the manifest says {a.sha256[:12]}… ({a.bytes} bytes): the "
                                    f"file is corrupt or was replaced; {_REBUILD}")
        for a in model.artifacts:
            if a.format != "tensorrt-plan" or a.source is None or a.source_sha256 is None:
                continue
            source = model.artifact(a.source)
            if source.sha256 != a.source_sha256:
                problems.setdefault(a.file, (
                    f"stale plan: built from a {a.source} with sha256 {a.source_sha256[:12]}…, "
                    f"the bundle's is {source.sha256[:12]}…; rebuild the plan"))
    return problems


@dataclass
class Bundle:
    """A verified bundle on disk. ``problems`` maps each unusable file to the reason."""

    root: Path
    manifest: Manifest
    manifest_sha256: str
    problems: dict[str, str]

    def path(self, artifact: Artifact) -> Path:
        return self.root / artifact.file

    def model(self, name: str) -> ModelSpec:
        if name not in self.manifest.models:
            raise KeyError(f"bundle {self.root} has no model {name!r}; it has "
                           f"{', '.join(sorted(self.manifest.models))}")
        return self.manifest.models[name]

    def usable(self, model: str, format: str | None = None) -> list[Artifact]:
        """The model's files that passed verification, optionally of one format."""
        return [a for a in self.model(model).artifacts
                if a.file not in self.problems and (format is None or a.format == format)]

    def unavailable_reason(self, model: str) -> str | None:
        """None when the model has a usable file, else why it has none."""
        spec = self.model(model)
        if self.usable(model):
            return None
        if not spec.artifacts:
            return f"model {model} lists no files"
        return "; ".join(self.problems[a.file] for a in spec.artifacts)

    def as_dict(self) -> dict[str, Any]:
        """For ``onboard info`` and telemetry: files with checksums and their state."""
        return {
            "root": str(self.root), "manifest_sha256": self.manifest_sha256,
            "schema_version": self.manifest.schema_version,
            "created_utc": self.manifest.created_utc, "producer": self.manifest.producer,
            "tools": self.manifest.tools,
            "models": {
                name: {"task": m.task,
                       "unavailable": self.unavailable_reason(name),
                       "files": [{"file": a.file, "format": a.format, "precision": a.precision,
                                  "sha256": a.sha256, "bytes": a.bytes,
                                  "ok": a.file not in self.problems,
                                  "problem": self.problems.get(a.file)}
                                 for a in m.artifacts]}
                for name, m in self.manifest.models.items()},
        }


def load(root: str | os.PathLike) -> Bundle:
    """Read, validate and verify the bundle in folder ``root``.

    Raises :class:`BundleError` when the folder or its manifest cannot be used at all; files
    that fail verification are reported in :attr:`Bundle.problems` instead."""
    root = Path(root)
    path = root / MANIFEST_NAME
    if not root.is_dir():
        raise BundleError(f"model bundle {root} is not a folder; {_REBUILD}")
    if not path.is_file():
        raise BundleError(f"model bundle {root} has no {MANIFEST_NAME}; {_REBUILD}")
    raw = path.read_bytes()
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(f"{path} is not valid JSON ({exc}); {_REBUILD}") from exc
    manifest = Manifest.from_dict(data, source=str(path))
    return Bundle(root=root, manifest=manifest, manifest_sha256=file_sha256(path),
                  problems=_verify_files(root, manifest))


def default_bundle_dir() -> Path | None:
    """The bundle shipped with the runtime, or None when there is none."""
    return DEFAULT_BUNDLE_DIR if (DEFAULT_BUNDLE_DIR / MANIFEST_NAME).is_file() else None


def find_bundle(configured: str | os.PathLike | None) -> tuple[Bundle | None, str | None]:
    """The bundle the runtime should use: ``configured`` when given, else the shipped one.

    Returns ``(bundle, None)``, or ``(None, reason)`` when there is none or it is refused, so
    the pipeline runs its classical stages and says why instead of stopping."""
    root = Path(configured) if configured is not None else default_bundle_dir()
    if root is None:
        return None, (f"no model bundle: none configured and none shipped in "
                      f"{DEFAULT_BUNDLE_DIR}; the classical stages run")
    try:
        return load(root), None
    except BundleError as exc:
        return None, str(exc)
