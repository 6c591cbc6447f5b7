"""Build the farmland spectral library the simulator ships (ground side; needs ``prosail``).

Regenerate the shipped file with::

    onboard export spectra -o onboard/scene/data/spectral_library.npz

Everything comes from the maintained ``prosail`` package (version recorded in the file),
nothing is downloaded, and the build is deterministic (same prosail, same bytes):

* soil: prosail's two soil spectra, ``rsoil1`` (a dry soil) and ``rsoil2`` (a wet soil);
* green vegetation: canopies from PROSAIL (PROSPECT-D leaves, 4SAIL canopy at LAI 3-5 over
  the wet soil, sun at 30 degrees, nadir view), varying chlorophyll, carotenoids, water,
  dry matter and LAI. A pixel fully covered by green vegetation is a canopy, not a single
  leaf: the canopy's multiple scattering lifts the near-infrared plateau above a leaf's;
* crop residue: a thick mat of dry leaves: PROSPECT-D's single-leaf reflectance r and
  transmittance t of a senescent leaf (little or no chlorophyll, brown pigments, dry matter,
  little water), stacked to infinite depth,
  ``R = (1 + r^2 - t^2 - sqrt((1 + r^2 - t^2)^2 - 4 r^2)) / (2 r)``
  (the Stokes limit of many layers), varying age (brown pigments, dry matter, structure)
  and moisture.

Each green and residue variant is assigned to the ``train`` or the ``eval`` split, so that
evaluation scenes use spectra no model or library was fitted on (REFERENCES.md: a
simulator with no endmember variability tells nothing).

The file (``numpy.savez_compressed``, float32 reflectance 0-1, 400-2500 nm at 1 nm, 2101
samples, about 100 KB) holds ``wavelengths_nm`` (B,), ``soil`` (2, B) (dry, wet),
``green`` (G, B), ``residue`` (R, B), ``*_names`` and ``*_split`` (one per variant), and
``meta``: UTF-8 JSON with the format and generator versions, the command, prosail's
version and every variant's parameters.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

#: Version of this generator's recipe; bump it whenever a spectrum would change.
GENERATOR_VERSION = 2
#: Layout of the file; ``onboard.scene.library`` refuses versions it does not know.
FORMAT_VERSION = 2
COMMAND = "onboard export spectra -o onboard/scene/data/spectral_library.npz"

#: (label, N, cab ug/cm2, car ug/cm2, cbrown, cw cm, cm g/cm2, lai, split) of each canopy.
GREEN = (
    ("green-cab30-cw10-lai3", 1.5, 30, 7, 0.0, 0.010, 0.008, 3.0, "train"),
    ("green-cab45-cw12-lai4", 1.5, 45, 8, 0.0, 0.012, 0.009, 4.0, "train"),
    ("green-cab60-cw15-lai5", 1.6, 60, 10, 0.0, 0.015, 0.010, 5.0, "train"),
    ("green-cab40-cw08-lai3", 1.4, 40, 8, 0.1, 0.008, 0.007, 3.0, "train"),
    ("green-cab35-cw13-lai4", 1.7, 35, 7, 0.0, 0.013, 0.011, 4.0, "eval"),
    ("green-cab55-cw09-lai3", 1.5, 55, 9, 0.05, 0.009, 0.008, 3.5, "eval"),
)
#: (label, N, cab, car, cbrown, cw cm, cm g/cm2, split) of each residue (dry leaf mat).
RESIDUE = (
    ("residue-fresh-dry", 2.0, 0.5, 2.0, 0.4, 0.0010, 0.012, "train"),
    ("residue-fresh-moist", 2.0, 0.5, 2.0, 0.4, 0.0040, 0.012, "train"),
    ("residue-aged-dry", 2.3, 0.0, 1.0, 1.0, 0.0008, 0.016, "train"),
    ("residue-aged-moist", 2.3, 0.0, 1.0, 1.0, 0.0035, 0.016, "train"),
    ("residue-weathered", 2.5, 0.0, 0.5, 1.5, 0.0015, 0.020, "train"),
    ("residue-straw-bright", 1.8, 0.0, 1.5, 0.2, 0.0010, 0.010, "train"),
    ("residue-mid-damp", 2.2, 0.2, 1.2, 0.7, 0.0025, 0.014, "eval"),
    ("residue-old-dark", 2.6, 0.0, 0.5, 1.8, 0.0012, 0.022, "eval"),
)
#: PROSAIL canopy geometry and structure shared by every green variant.
CANOPY = {"lidfa_deg": 57.0, "hspot": 0.05, "tts_deg": 30.0, "tto_deg": 0.0, "psi_deg": 0.0,
          "background": "prosail rsoil2 (wet soil), rsoil=1, psoil=0"}


def stack_to_infinity(r: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Reflectance of an infinitely thick stack of layers of reflectance r, transmittance t."""
    b = 1.0 + r * r - t * t
    return (b - np.sqrt(np.maximum(b * b - 4.0 * r * r, 0.0))) / (2.0 * np.maximum(r, 1e-9))


def build() -> dict[str, np.ndarray]:
    """The library as the arrays written to the file (see the module docstring)."""
    import prosail

    wavelengths = np.arange(400, 2501)
    soil_lib = prosail.spectral_lib.soil
    soil = np.stack([soil_lib.rsoil1, soil_lib.rsoil2])
    g = CANOPY
    green = [prosail.run_prosail(n, cab, car, cbrown, cw, cm, lai, g["lidfa_deg"], g["hspot"],
                                 g["tts_deg"], g["tto_deg"], g["psi_deg"], prospect_version="D",
                                 rsoil=1.0, psoil=0.0)
             for _, n, cab, car, cbrown, cw, cm, lai, _ in GREEN]
    residue = []
    for _, n, cab, car, cbrown, cw, cm, _ in RESIDUE:
        _, r, t = prosail.run_prospect(n, cab, car, cbrown, cw, cm, prospect_version="D")
        residue.append(stack_to_infinity(r, t))
    spectra = {"soil": soil, "green": np.stack(green), "residue": np.stack(residue)}
    for name, s in spectra.items():
        if s.shape[1] != wavelengths.size or not np.isfinite(s).all() or s.min() < 0 or s.max() > 1:
            raise RuntimeError(f"prosail gave {name} spectra that are not reflectance on "
                               f"400-2500 nm at 1 nm (shape {s.shape}); check its version")
    meta = {
        "format_version": FORMAT_VERSION,
        "generator": "export/spectral_library.py",
        "generator_version": GENERATOR_VERSION,
        "command": COMMAND,
        "prosail_version": getattr(prosail, "__version__", "unknown"),
        "step_nm": 1,
        "soil": ["prosail rsoil1 (dry)", "prosail rsoil2 (wet)"],
        "green_model": "PROSAIL (PROSPECT-D + 4SAIL) canopy reflectance",
        "green_parameters": ["label", "N", "cab", "car", "cbrown", "cw", "cm", "lai", "split"],
        "green": GREEN,
        "canopy": CANOPY,
        "residue_model": "PROSPECT-D leaf r, t stacked to infinite depth",
        "residue_parameters": ["label", "N", "cab", "car", "cbrown", "cw", "cm", "split"],
        "residue": RESIDUE,
    }
    return {
        "wavelengths_nm": wavelengths.astype(np.float32),
        **{name: s.astype(np.float32) for name, s in spectra.items()},
        "soil_names": np.array(["soil-dry", "soil-wet"]),
        "green_names": np.array([v[0] for v in GREEN]),
        "residue_names": np.array([v[0] for v in RESIDUE]),
        "green_split": np.array([v[-1] for v in GREEN]),
        "residue_split": np.array([v[-1] for v in RESIDUE]),
        "meta": np.frombuffer(json.dumps(meta).encode(), np.uint8),
    }


def write(path: str | Path) -> Path:
    """Build the library and write it to ``path`` (compressed .npz); returns the path."""
    path = Path(path)
    if path.suffix != ".npz":
        raise ValueError(f"{path}: the spectral library is an .npz file; give a path ending in .npz")
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **build())
    return path
