"""Build the farmland spectral library the simulator ships (ground side; needs ``prosail``).

    onboard export spectra -o onboard/scene/data/spectral_library.npz

Everything comes from the maintained ``prosail`` package, nothing is downloaded:

* soil: prosail's two soil spectra, a dry and a wet soil (400-2500 nm at 1 nm);
* green vegetation: canopies from PROSAIL (PROSPECT-D leaves, SAIL canopy at LAI 3-5 over
  the dark wet soil, sun at 30 degrees, nadir view), varying chlorophyll, water and LAI;
* crop residue: a thick mat of dry leaves: PROSPECT-D's single-leaf reflectance r and
  transmittance t of a senescent leaf (no chlorophyll, brown pigments, dry matter, little
  water), stacked to infinite depth, ``R = (1 + r^2 - t^2 - sqrt((1 + r^2 - t^2)^2 - 4 r^2)) / (2 r)``
  (the Stokes/Kubelka-Munk limit of many layers), varying age (brown pigments, dry matter)
  and moisture.

Variants are assigned to a training or an evaluation split so evaluation scenes use spectra
no model was trained on (REFERENCES.md: a simulator with no endmember variability tells
nothing). The file stores float32 spectra at 5 nm (421 samples) with the parameters of each.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

#: (label, N, cab, car, cbrown, cw, cm, lai, split) of each green canopy.
GREEN = (
    ("green-cab30-cw10-lai3", 1.5, 30, 7, 0.0, 0.010, 0.008, 3.0, "train"),
    ("green-cab45-cw12-lai4", 1.5, 45, 8, 0.0, 0.012, 0.009, 4.0, "train"),
    ("green-cab60-cw15-lai5", 1.6, 60, 10, 0.0, 0.015, 0.010, 5.0, "train"),
    ("green-cab40-cw08-lai3", 1.4, 40, 8, 0.1, 0.008, 0.007, 3.0, "train"),
    ("green-cab35-cw13-lai4", 1.7, 35, 7, 0.0, 0.013, 0.011, 4.0, "eval"),
    ("green-cab55-cw09-lai3", 1.5, 55, 9, 0.05, 0.009, 0.008, 3.5, "eval"),
)
#: (label, N, cab, car, cbrown, cw, cm, split) of each residue (dry leaf) variant.
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
STEP_NM = 5


def _stack_to_infinity(r: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Reflectance of an infinitely thick stack of layers of reflectance r, transmittance t."""
    b = 1.0 + r * r - t * t
    return (b - np.sqrt(np.maximum(b * b - 4.0 * r * r, 0.0))) / (2.0 * np.maximum(r, 1e-9))


def build() -> dict[str, np.ndarray]:
    """The library as arrays (see the module docstring)."""
    import prosail

    wl_full = np.arange(400, 2501)
    keep = (wl_full - 400) % STEP_NM == 0
    soil_lib = prosail.spectral_lib.soil
    soil = np.stack([soil_lib.rsoil1, soil_lib.rsoil2])[:, keep]
    green = []
    for _, n, cab, car, cbrown, cw, cm, lai, _ in GREEN:
        green.append(prosail.run_prosail(n, cab, car, cbrown, cw, cm, lai, 57.0, 0.05, 30.0, 0.0, 0.0,
                                         prospect_version="D", rsoil=1.0, psoil=0.0)[keep])
    residue = []
    for _, n, cab, car, cbrown, cw, cm, _ in RESIDUE:
        _, r, t = prosail.run_prospect(n, cab, car, cbrown, cw, cm, prospect_version="D")
        residue.append(_stack_to_infinity(r, t)[keep])
    meta = {
        "generator": "export/spectral_library.py",
        "command": "onboard export spectra -o onboard/scene/data/spectral_library.npz",
        "prosail_version": getattr(prosail, "__version__", "unknown"),
        "step_nm": STEP_NM,
        "green_parameters": ["label", "N", "cab", "car", "cbrown", "cw", "cm", "lai", "split"],
        "green": GREEN,
        "residue_parameters": ["label", "N", "cab", "car", "cbrown", "cw", "cm", "split"],
        "residue": RESIDUE,
        "soil": ["prosail rsoil1 (dry)", "prosail rsoil2 (wet)"],
    }
    return {
        "wavelengths_nm": wl_full[keep].astype(np.float32),
        "soil": soil.astype(np.float32),
        "green": np.stack(green).astype(np.float32),
        "residue": np.stack(residue).astype(np.float32),
        "green_split": np.array([g[-1] for g in GREEN]),
        "residue_split": np.array([r[-1] for r in RESIDUE]),
        "green_names": np.array([g[0] for g in GREEN]),
        "residue_names": np.array([r[0] for r in RESIDUE]),
        "meta": np.frombuffer(json.dumps(meta).encode(), np.uint8),
    }


def write(path: str | Path) -> Path:
    """Build and write the library (compressed .npz)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **build())
    return path
