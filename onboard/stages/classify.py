"""The classical residue stage as the pipeline runs it: unmixing with the cube's own
spectral response, then a small spatial context.

* Response: a reconstructed cube sees every spectrum through the reconstruction's resolution
  matrix (``Cube.response``); the endmembers are passed through the same matrix before
  unmixing, so smoothing by the regularisation is not mistaken for a change of material.
  Measured on the default ImSPOC (6 held-out frames): residue MAE 0.090 -> 0.051.
* Context: fractions are averaged over the valid pixels of a ``context_px`` square window
  (the same spatial context the learned classifier has). A tillage class describes a
  field, and per-pixel reconstruction noise of a 24-band snapshot is ~0.03 in reflectance:
  5 x 5 takes tillage accuracy from 66 % to 85 % on the same frames.
* Water bands: the bands inside ``WATER_BANDS_NM`` are left out of the unmixing (neither the
  atmosphere nor the real libraries leave anything trustworthy there).
* Confidence: from the residue cover and the stage's error (``CLASSICAL_SIGMA``), see
  onboard/stages/confidence.py; a pixel below ``CLASSICAL_THRESHOLD`` is uncertain.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from onboard.formats.types import INVALID_CLASS, Cube, ResidueMap, tillage_class
from onboard.stages.confidence import judge_classical
from onboard.stages.filters import box_mean
from onboard.stages.residue import Endmembers, UnmixConfig, unmix_fcls, usable_bands

#: Standard deviation of the classical residue cover's error: 1.25 x (Gaussian sd from a
#: mean absolute error) its residue MAE on the validation scenes (0.05-0.08).
CLASSICAL_SIGMA = 0.08
#: Confidence below which a classical pixel is uncertain.
CLASSICAL_THRESHOLD = 0.7


def seen_through(endmembers: Endmembers, response: np.ndarray | None) -> Endmembers:
    """The endmembers as a cube with this spectral ``response`` (bands, bands) reads them."""
    if response is None:
        return endmembers
    return Endmembers(endmembers.spectra @ response.T, endmembers.wavelengths_nm, endmembers.classes,
                      endmembers.names)


def classify_classical(cube: Cube, endmembers: Endmembers, config: UnmixConfig, context_px: int = 5) -> ResidueMap:
    """Residue map of a cube (see the module docstring). ``context_px``: odd window side, 1
    for none. Invalid pixels stay NaN / INVALID_CLASS and do not feed their neighbours."""
    if context_px < 1 or context_px % 2 == 0:
        raise ValueError(f"context_px must be an odd number >= 1, got {context_px}")
    library = seen_through(endmembers, cube.response)
    keep = usable_bands(cube.wavelengths_nm)
    if not keep.all():
        library = Endmembers(library.spectra[:, keep], library.wavelengths_nm[keep], library.classes,
                             library.names)
        cube = replace(cube, data=cube.data[keep], wavelengths_nm=cube.wavelengths_nm[keep], response=None)
    m = unmix_fcls(cube, library, config)
    if context_px == 1:
        return judge_classical(m, CLASSICAL_SIGMA, CLASSICAL_THRESHOLD)
    ok = np.isfinite(m.fractions).all(0)
    smooth = box_mean(np.where(ok, m.fractions, 0.0), ok.astype(float), context_px // 2)
    fractions = np.where(ok, smooth, np.nan).astype(np.float32)
    tillage = np.where(ok, tillage_class(np.nan_to_num(fractions[0])), INVALID_CLASS).astype(np.uint8)
    return judge_classical(ResidueMap(tillage, fractions, counter=m.counter, timestamp=m.timestamp,
                                      method=f"{m.method}, {context_px}x{context_px} context",
                                      extra=m.extra), CLASSICAL_SIGMA, CLASSICAL_THRESHOLD)
