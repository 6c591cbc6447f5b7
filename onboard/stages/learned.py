"""Learned denoising and residue stages, run through an inference engine (numpy only).

Denoising (the model is ``export.models.EigenRefiner``; why this design: its docstring):

1. :func:`decompose` is the classical stage's own front end
   (:func:`onboard.stages.denoise.decompose`): dead pixels filled,
   column stripes removed, band noise covariance measured, cube whitened, signal subspace
   kept; eigen-images ``z`` (k, H, W) in whitened units (noise standard deviation 1) and
   their classical (wavelet Wiener) estimate ``y0``.
2. :func:`refiner_input` stacks what the network takes: ``(z - y0, y0 / scale)``
   (k, 2, H, W) float32, every channel within a few units (INT8-friendly).
3. The engine returns a correction (k, 1, H, W); :func:`compose` back-projects
   ``y0 + correction`` to a cube.

Training data (``export/data.py``) goes through the same :func:`decompose` and
:func:`refiner_input`, so what the network saw in training is what it sees here.

Residue: the cube (1, B, H, W) goes to the model of the bundle whose band grid is the
cube's (reflectance; a normalisation in the manifest, if any, is applied by the engine,
:meth:`~onboard.engines.base.Engine.run_physical`; the shipped models normalise brightness
inside the graph); tillage class = most probable class.

:func:`learned_stages` builds both stages from a bundle with the engine selection of
:mod:`onboard.engines.select`, falling back to the classical stages, with the reasons,
wherever a model cannot run.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from onboard.engines.base import Engine
from onboard.engines.select import EngineOptions, Selection, select_engine
from onboard.errors import OnboardError
from onboard.formats.bundle import Bundle
from onboard.formats.types import INVALID_CLASS, Cube, ResidueMap
from onboard.stages.confidence import Domain, judge_learned
from onboard.stages.denoise import (
    SubspaceDecomposition,
    SubspaceDenoiseConfig,
    denoise_eigenimages,
    denoise_subspace,
)
from onboard.stages.denoise import decompose as subspace_decompose

#: Model names in a bundle.
DENOISER = "denoiser"
#: Task name of residue models; one per band grid, chosen by :func:`residue_model_for`.
RESIDUE_TASK = "residue"
#: Band centres of a cube and a model's band grid must agree to this (nm).
GRID_TOLERANCE_NM = 0.5


class NoiseFree(OnboardError, ValueError):
    """A cube with no measurable noise (constant, synthetic): nothing to denoise."""


@dataclass
class EigenDecomposition:
    """A cube in its signal subspace (the classical stage's
    :class:`~onboard.stages.denoise.SubspaceDecomposition`: ``mean``, ``project``, ``back``,
    eigen-images ``z`` (k, H, W) in whitened units, ``valid``) and ``y0`` (k, H, W), the
    classical (wavelet Wiener) estimate of the eigen-images."""

    parts: SubspaceDecomposition
    y0: NDArray[np.floating]

    @property
    def z(self) -> NDArray[np.floating]:
        return self.parts.z

    @property
    def rank(self) -> int:
        return int(self.parts.z.shape[0])


def decompose(cube: Cube, config: SubspaceDenoiseConfig | None = None) -> EigenDecomposition:
    """Steps 1-4 of the classical stage (:func:`onboard.stages.denoise.decompose`) and its
    eigen-image estimate ``y0``. Raises ValueError (as the classical stage does) for fewer
    than MIN_BANDS bands or too few valid pixels, :class:`NoiseFree` for a cube without
    noise."""
    config = config or SubspaceDenoiseConfig()
    parts = subspace_decompose(cube, config)
    if not parts.report.band_noise.any():
        raise NoiseFree("the cube has no measurable noise")
    return EigenDecomposition(parts, denoise_eigenimages(parts.z, config.wavelet_levels,
                                                         config.threshold_scale))


def guide_scale(y0: NDArray[np.floating]) -> NDArray[np.float64]:
    """Per eigen-image scale (k,) of the guide channel: the largest ``|y0|``, at least 1
    (the noise level), so the guide lies in [-1, 1]. The two channels share one INT8 scale
    (activations are quantised per tensor): a guide wider than the residual channel's few
    units would coarsen the residual's quantisation step, and the residual is what the
    network denoises."""
    k = y0.shape[0]
    return np.maximum(np.abs(y0.reshape(k, -1)).max(axis=1), 1.0)


def refiner_input(dec: EigenDecomposition) -> NDArray[np.float32]:
    """The network's input (k, 2, H, W) float32: ``z - y0`` and ``y0 / scale``."""
    s = guide_scale(dec.y0)[:, None, None]
    return np.stack([dec.z - dec.y0, dec.y0 / s], axis=1).astype(np.float32)


def compose(dec: EigenDecomposition, correction: NDArray, like: Cube) -> Cube:
    """The denoised cube from the eigen-images ``y0 + correction`` (correction (k, 1, H, W)
    or (k, H, W)); metadata from ``like``."""
    zhat = dec.y0 + np.asarray(correction, dtype=np.float64).reshape(dec.z.shape)
    return Cube(dec.parts.compose(zhat), like.wavelengths_nm, dec.parts.valid.copy(),
                counter=like.counter, timestamp=like.timestamp, units=like.units)


class LearnedDenoiser:
    """Cube -> Cube through an active engine running the bundle's ``denoiser``."""

    def __init__(self, engine: Engine, config: SubspaceDenoiseConfig | None = None) -> None:
        self.engine = engine
        self.config = config or SubspaceDenoiseConfig()
        self.input_name = engine.inputs[0].name
        self.output_name = engine.outputs[0].name

    def correction(self, dec: EigenDecomposition) -> NDArray[np.float32]:
        return self.engine.run_physical({self.input_name: refiner_input(dec)})[self.output_name]

    def __call__(self, cube: Cube) -> Cube:
        try:
            dec = decompose(cube, self.config)
        except NoiseFree:  # the classical stage passes such a cube through, filled
            return denoise_subspace(cube, self.config)
        return compose(dec, self.correction(dec), cube)


def residue_model_for(bundle: Bundle, wavelengths_nm: NDArray) -> str | None:
    """Name of the bundle's residue model trained on this band grid, or None."""
    lam = np.asarray(wavelengths_nm, dtype=float)
    for name, spec in bundle.manifest.models.items():
        grid = spec.band_grid_nm
        if (spec.task == RESIDUE_TASK and grid is not None and len(grid) == len(lam)
                and np.allclose(grid, lam, rtol=0, atol=GRID_TOLERANCE_NM)):
            return name
    return None


class LearnedResidue:
    """Cube -> ResidueMap through an active engine running a residue model of the bundle.

    ``band_grid_nm``: the grid the model was trained on; a cube on another grid is refused
    (ValueError) rather than classified wrongly. ``domain``: the model's training domain
    (its manifest metadata), for the per-pixel confidence (onboard/stages/confidence.py)."""

    def __init__(self, engine: Engine, band_grid_nm: NDArray, name: str = "residue",
                 domain: Domain | None = None) -> None:
        self.engine = engine
        self.domain = domain
        self.band_grid_nm = np.asarray(band_grid_nm, dtype=float)
        self.name = name
        self.input_name = engine.inputs[0].name
        outputs = {t.name for t in engine.outputs}
        if outputs != {"probabilities", "fractions"}:
            raise ValueError(f"residue model {name} gives {sorted(outputs)}; expected "
                             "probabilities and fractions: rebuild the bundle")

    def __call__(self, cube: Cube) -> ResidueMap:
        lam = cube.wavelengths_nm
        if lam.shape != self.band_grid_nm.shape or not np.allclose(
                lam, self.band_grid_nm, rtol=0, atol=GRID_TOLERANCE_NM):
            raise ValueError(f"residue model {self.name} was trained on {len(self.band_grid_nm)} "
                             f"bands {self.band_grid_nm[0]:.0f}-{self.band_grid_nm[-1]:.0f} nm; "
                             f"the cube has {cube.bands} bands {lam[0]:.0f}-{lam[-1]:.0f} nm: "
                             "use a bundle with a model for this instrument")
        finite = np.isfinite(cube.data)
        x = np.where(cube.valid[None] & finite, cube.data, 0.0)
        out = self.engine.run_physical({self.input_name: x[None].astype(np.float32, copy=False)})
        prob, frac = out["probabilities"][0], out["fractions"][0]
        bad = ~(cube.valid & finite.all(axis=0))
        tillage = np.argmax(prob, axis=0).astype(np.uint8)
        tillage[bad] = INVALID_CLASS
        frac = frac.astype(np.float32, copy=True)
        frac[:, bad] = np.nan
        return judge_learned(ResidueMap(tillage, frac, counter=cube.counter, timestamp=cube.timestamp,
                                        method=f"learned:{self.name} ({self.engine.label})",
                                        probabilities=prob.astype(np.float32)), cube, self.domain)


@dataclass
class LearnedStages:
    """The denoise and classify functions for the pipeline, and how they were chosen.

    ``selections``: one per model tried (engine, file, skipped candidates and reasons);
    ``notes``: one line per stage saying what runs and, for a fallback, why."""

    denoise: Callable[[Cube], Cube]
    classify: Callable[[Cube], ResidueMap]
    selections: list[Selection]
    notes: list[str]

    def close(self) -> None:
        for s in self.selections:
            s.close()


def learned_stages(bundle: Bundle | None, wavelengths_nm: NDArray,
                   fallback_denoise: Callable[[Cube], Cube],
                   fallback_classify: Callable[[Cube], ResidueMap],
                   options: EngineOptions | None = None,
                   config: SubspaceDenoiseConfig | None = None) -> LearnedStages:
    """Learned stages where the bundle has a model that loads here, else the fallbacks.

    ``wavelengths_nm``: the band grid of the cubes the pipeline will produce (picks the
    residue model). Close the result to free the engines."""
    selections: list[Selection] = []
    notes: list[str] = []
    denoise, classify = fallback_denoise, fallback_classify
    sel = select_engine(bundle, DENOISER, options)
    selections.append(sel)
    if sel.engine is not None:
        denoise = LearnedDenoiser(sel.engine, config)
    notes.append(f"denoise: {sel.summary()}")
    name = residue_model_for(bundle, wavelengths_nm) if bundle is not None else None
    if name is None:
        why = ("no model bundle" if bundle is None else
               f"bundle {bundle.root} has no residue model for this {len(wavelengths_nm)}-band grid")
        notes.append(f"classify: classical stages ({why})")
    else:
        sel = select_engine(bundle, name, options)
        selections.append(sel)
        if sel.engine is not None:
            assert bundle is not None
            spec = bundle.model(name)
            domain = Domain.from_dict(spec.metadata["domain"]) if "domain" in spec.metadata else None
            classify = LearnedResidue(sel.engine, np.asarray(spec.band_grid_nm), name, domain)
        notes.append(f"classify: {sel.summary()}")
    return LearnedStages(denoise, classify, selections, notes)
