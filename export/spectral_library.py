"""Build the farmland spectral library the simulator ships (ground side; needs ``prosail``
and ``earthlib``).

Regenerate the shipped file with::

    onboard export spectra -o onboard/scene/data/spectral_library.npz

Nothing is downloaded: every source is a file of an installed package or of the shared data
folder, and the build is deterministic (same sources, same bytes). Sources:

* ``earthlib`` (PyPI, MIT code; its ``data/spectra.sli`` ENVI library with ``spectra.csv``
  metadata, 400-2450 nm at 10 nm): soils (ICRAF-ISRIC soil database, CC BY 4.0, and ASD
  field soils and dirt), non-photosynthetic vegetation (litter, bark, wood, npv: the crop
  residue class) and PROSAIL canopies (green);
* the USGS 1995 spectral library (public domain; ``USGS_1995_Library.mat`` of the shared
  data folder, or ``ONBOARD_USGS1995``): its three dry grasses (Dry_Long_Grass AV87-2,
  Tumbleweed dry, Cheatgrass) as residue, its eleven leaves and canopies as green. The file
  has no channel centres: AVIRIS's 224 channels are taken as evenly spaced over 370-2500 nm
  (about 9.5 nm; the published list deviates by a few nm, far below the 10 nm grid's
  sampling of these smooth spectra), and samples flagged bad (negative or above 1) are bridged;
* ``prosail`` (the project's own physics): prosail's dry soil, the PROSPECT-D residue mats
  (single-leaf r, t stacked to infinite depth,
  ``R = (1 + r^2 - t^2 - sqrt((1 + r^2 - t^2)^2 - 4 r^2)) / (2 r)``) and PROSAIL canopies
  of the previous library, band-averaged (10 nm boxcar) onto the grid.

Grid: 400-2450 nm at 10 nm (206 samples), earthlib's own sampling; finer would invent detail.

Water-band gaps. earthlib has no samples at 1360-1450 and 1800-1950 nm (the atmospheric
water-vapour bands). They are bridged by a straight line between the last measured samples on
each side, and ``measured`` (N, S) records, per spectrum and sample, what was measured. A line
is not what a soil or a leaf does there (both absorb), so no residue stage may read those
bands: ``onboard.stages.residue.WATER_BANDS_NM`` are excluded from the classical unmixing and
zeroed inside the learned classifier's graph. A real airborne or orbital sensor sees
atmospheric absorption there anyway, so nothing usable is lost.

Split. Every spectrum is assigned to ``train`` (60 %), ``val`` (20 %) or ``test`` (20 %) by a
hash of its *site* (latitude and longitude to 0.01 degree where the metadata has them, else
its name), so that spectra of one site, or repeated measurements under one name, never straddle
two splits. The hash (SHA-256 of ``"onboard-residue-split:" + site``) does not depend on the
order of the sources or on the other spectra. ``train`` feeds training and the classical
stage's endmember bundles; ``val`` the build's model choice and thresholds; ``test`` only the
reported numbers. The project's simulated spectra keep their former split (its ``eval``
variants go alternately to val and test), and prosail's single soil is ``shared`` by every
split (as in the simulated numbers published before; its moisture and brightness vary).

Compact subset. The file ships at most ``CAPS[kind][split]`` spectra per kind and split
(all of the smaller sources). Inside a split, spectra are taken one per site first, then a
second per site, and so on, each round in hash order of the names, so the subset spans as
many sites as the cap allows. Soils: 4185 candidates from 605 sites -> 240 / 60 / 120.

Training library. The push-broom classifier trains on more than the shipped subset:
``training_library()`` takes every train-split spectrum of the same sources, soils one per
site (caps ``TRAINING_CAPS``: the train split uncapped, nothing of val or test;
``TRAINING_PER_SITE``: a site's first soil in the subset's order; with earthlib 1.1.0: 400
soils from 400 sites instead of 240, 1233 green instead of 70, the same 59 residues). Soils
one per site, as the shipped validation and test subsets are drawn (their caps take one per
site first): every soil (2140) weighs the sites with many spectra (ICRAF profiles) over the
rest, and trained a
push-broom model no better on validation than the shipped subset (74.8 % against 74.9 %)
and an ImSPOC one worse (45.8 against 53.0 %); soils one per site: push-broom 76.6 % / MAE
0.070 (the ImSPOC keeps the shipped subset). The library is built in memory from the installed packages when a
model is built (``onboard export build``, seconds) and never shipped. Validation and test scenes still draw from the shipped file, so the model
choice and the reported numbers see the same spectra whichever library trained the model.

Moisture: ``wet_ratio`` (S,) is a saturated soil's reflectance over the same soil's dry one,
and the simulator's wet version of any soil is that soil times the ratio:
``WET_DARKENING * exp(-k_w(lambda) * WET_WATER_CM)``. The factor is Lekner and Dorf's (1988)
water-film darkening (light trapped by total internal reflection in the film: about half for
soil grains of index ~1.5 under water of 1.33), flat with wavelength; the exponential is the
liquid water's own absorption (PROSPECT-D's specific absorption coefficient k_w, an equivalent
water thickness of 0.02 cm), which deepens the 970, 1200, 1450 and 1940 nm bands. (prosail's
two soils, used before as dry and wet, are two different soils: their ratio, 0.11 in the
visible and 0.3 in the short-wave infrared, applied to every real soil, moved soils towards
vegetation-like shapes no moistening makes.)

The file (``numpy.savez_compressed``): ``wavelengths_nm`` (S,) float32, ``spectra`` (N, S)
float32 reflectance, ``measured`` (N, S) bool, ``kinds``, ``splits``, ``names``,
``sources``, ``sites`` (N,) str, ``wet_ratio`` (S,) float32, and ``meta``: UTF-8 JSON with the
format and generator versions, the command, the source versions and licences, the rules.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from onboard.scene.library import SpectralLibrary

#: Version of this generator's recipe; bump it whenever a spectrum would change.
GENERATOR_VERSION = 4
#: Layout of the file; ``onboard.scene.library`` refuses versions it does not know.
FORMAT_VERSION = 3
COMMAND = "onboard export spectra -o onboard/scene/data/spectral_library.npz"
GRID_NM = np.arange(400.0, 2451.0, 10.0)
SPLIT_SHARES = (("train", 0.6), ("val", 0.8), ("test", 1.0))
#: Most spectra shipped per kind and split (the compact subset's rule, module docstring).
CAPS = {"soil": {"train": 240, "val": 60, "test": 120},
        "residue": {"train": 200, "val": 60, "test": 60},
        "green": {"train": 60, "val": 15, "test": 30}}
#: The training library's rule (``training_library``): every train-split spectrum, soils one
#: per site (``TRAINING_PER_SITE``), nothing of val or test.
TRAINING_CAPS = {kind: {"val": 0, "test": 0} for kind in CAPS}
TRAINING_PER_SITE = {"soil": 1}
USGS_PATH = Path(os.environ.get("ONBOARD_USGS1995",
                                "/work/shared/data/spectral_libraries/USGS_1995_Library.mat"))
USGS_RESIDUE = ("Dry_Long_Grass AV87-2", "Tumbleweed ANP92-2C Dry", "Cheatgrass ANP92-11A mix")
USGS_GREEN = ("Aspen_Leaf-A DW92-2", "Aspen_Leaf-B DW92-3", "Blackbrush ANP92-9A leavs",
              "Fir_Tree IH91-2 Complete", "Juniper_Bush IH91-4B whol", "Lawn_Grass GDS91 (Green)",
              "Maple_Leaves DW92-1", "Pinon_Pine ANP92-14A ndl", "Rabbitbrush ANP92-27 whol",
              "Sage_Brush IH91-1B Whole", "Walnut_Leaf SUN (Green)")
#: earthlib (LEVEL_3 class -> our kind).
EARTHLIB_KINDS = {"soil": "soil", "dirt": "soil", "litter": "residue", "bark": "residue",
                  "wood": "residue", "npv": "residue", "canopy": "green"}

#: (label, N, cab ug/cm2, car ug/cm2, cbrown, cw cm, cm g/cm2, lai, split) of each canopy.
GREEN = (
    ("green-cab30-cw10-lai3", 1.5, 30, 7, 0.0, 0.010, 0.008, 3.0, "train"),
    ("green-cab45-cw12-lai4", 1.5, 45, 8, 0.0, 0.012, 0.009, 4.0, "train"),
    ("green-cab60-cw15-lai5", 1.6, 60, 10, 0.0, 0.015, 0.010, 5.0, "train"),
    ("green-cab40-cw08-lai3", 1.4, 40, 8, 0.1, 0.008, 0.007, 3.0, "train"),
    ("green-cab35-cw13-lai4", 1.7, 35, 7, 0.0, 0.013, 0.011, 4.0, "val"),
    ("green-cab55-cw09-lai3", 1.5, 55, 9, 0.05, 0.009, 0.008, 3.5, "test"),
)
#: (label, N, cab, car, cbrown, cw cm, cm g/cm2, split) of each residue (dry leaf mat).
RESIDUE = (
    ("residue-fresh-dry", 2.0, 0.5, 2.0, 0.4, 0.0010, 0.012, "train"),
    ("residue-fresh-moist", 2.0, 0.5, 2.0, 0.4, 0.0040, 0.012, "train"),
    ("residue-aged-dry", 2.3, 0.0, 1.0, 1.0, 0.0008, 0.016, "train"),
    ("residue-aged-moist", 2.3, 0.0, 1.0, 1.0, 0.0035, 0.016, "train"),
    ("residue-weathered", 2.5, 0.0, 0.5, 1.5, 0.0015, 0.020, "train"),
    ("residue-straw-bright", 1.8, 0.0, 1.5, 0.2, 0.0010, 0.010, "train"),
    ("residue-mid-damp", 2.2, 0.2, 1.2, 0.7, 0.0025, 0.014, "val"),
    ("residue-old-dark", 2.6, 0.0, 0.5, 1.8, 0.0012, 0.022, "test"),
)
#: PROSAIL canopy geometry and structure shared by every green variant.
#: Water-film darkening of a saturated soil (Lekner and Dorf 1988) and its water thickness.
WET_DARKENING = 0.55
WET_WATER_CM = 0.02
CANOPY = {"lidfa_deg": 57.0, "hspot": 0.05, "tts_deg": 30.0, "tto_deg": 0.0, "psi_deg": 0.0,
          "background": "prosail rsoil2 (wet soil), rsoil=1, psoil=0"}


@dataclass
class Candidates:
    """Spectra of one source on ``GRID_NM``: (n, S) reflectance and measured mask, and per
    spectrum its kind, name, site and split (None: assign from the site's hash)."""

    spectra: np.ndarray
    measured: np.ndarray
    kinds: list[str]
    names: list[str]
    sites: list[str]
    splits: list[str | None]
    source: str


def stack_to_infinity(r: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Reflectance of an infinitely thick stack of layers of reflectance r, transmittance t."""
    b = 1.0 + r * r - t * t
    return (b - np.sqrt(np.maximum(b * b - 4.0 * r * r, 0.0))) / (2.0 * np.maximum(r, 1e-9))


def _hash(text: str) -> float:
    """A reproducible number in [0, 1) for a text (independent of any other spectrum)."""
    return int(hashlib.sha256(text.encode()).hexdigest()[:12], 16) / float(1 << 48)


def split_of(site: str) -> str:
    """The split of every spectrum of a site (module docstring)."""
    u = _hash("onboard-residue-split:" + site)
    return next(name for name, edge in SPLIT_SHARES if u < edge)


def bridge(wavelengths_nm: np.ndarray, spectrum: np.ndarray, ok: np.ndarray) -> np.ndarray:
    """The spectrum on ``GRID_NM``: measured samples (``ok``) interpolated, gaps bridged by a
    straight line between the nearest measured samples (flat beyond the ends)."""
    return np.interp(GRID_NM, wavelengths_nm[ok], spectrum[ok])


def _measured_mask(wavelengths_nm: np.ndarray, ok: np.ndarray) -> np.ndarray:
    """Grid samples within half the source's sampling step of a measured sample (else
    bridged)."""
    have = wavelengths_nm[ok]
    nearest = np.min(np.abs(GRID_NM[:, None] - have[None, :]), axis=1)
    return nearest <= 0.5 * float(np.median(np.diff(wavelengths_nm))) + 1e-6


def earthlib_candidates(classes: dict[str, str] = EARTHLIB_KINDS) -> Candidates:
    """earthlib's spectra of the LEVEL_3 ``classes`` (class -> our kind) on ``GRID_NM``."""
    import earthlib
    import pandas as pd

    data = Path(earthlib.__file__).parent / "data"
    meta = pd.read_csv(data / "spectra.csv")
    raw = np.fromfile(data / "spectra.sli", dtype="<f4").reshape(len(meta), -1).astype(float)
    header = (data / "spectra.sli.hdr").read_text()
    wl_text = header.split("wavelength =")[1].split("{")[1].split("}")[0]
    wl = 1000.0 * np.array([float(v) for v in wl_text.split(",")])
    if wl.size != raw.shape[1]:
        raise RuntimeError(f"earthlib: {wl.size} wavelengths for {raw.shape[1]} samples")
    ok = np.ones(wl.size, dtype=bool)
    spectra, names, kinds, sites = [], [], [], []
    for row, values in zip(meta.itertuples(index=False), raw, strict=True):
        kind = classes.get(row.LEVEL_3)
        if kind is None or not (values > 0).all() or values.max() > 1.0:
            continue  # not farmland, or not a valid reflectance spectrum
        spectra.append(bridge(wl, values, ok))
        names.append(f"earthlib:{row.SOURCE}:{row.NAME}")
        kinds.append(kind)
        has_site = np.isfinite(row.LAT) and np.isfinite(row.LON)
        sites.append(f"{row.LAT:.2f},{row.LON:.2f}" if has_site else f"name:{row.NAME}")
    mask = np.broadcast_to(_measured_mask(wl, ok), (len(spectra), GRID_NM.size))
    return Candidates(np.array(spectra), np.array(mask), kinds, names, sites,
                      [None] * len(spectra), f"earthlib {earthlib.__version__}")


def usgs_candidates(path: Path = USGS_PATH) -> Candidates:
    import scipy.io

    if not path.is_file():
        raise FileNotFoundError(f"the USGS 1995 library {path} is missing: set ONBOARD_USGS1995")
    mat = scipy.io.loadmat(path)
    names = [bytes(r).decode("ascii", "replace").strip() for r in mat["names"]]
    wl = np.linspace(370.0, 2500.0, mat["datalib"].shape[0])
    spectra, masks, kinds, labels = [], [], [], []
    for kind, wanted in (("residue", USGS_RESIDUE), ("green", USGS_GREEN)):
        for name in wanted:
            values = mat["datalib"][:, names.index(name)].astype(float)
            ok = (values > 0) & (values <= 1.0)
            spectra.append(bridge(wl, values, ok))
            masks.append(_measured_mask(wl, ok))
            kinds.append(kind)
            labels.append(f"usgs1995:{name}")
    sites = [f"name:{n.split(' ')[0]}" for n in labels]
    return Candidates(np.array(spectra), np.array(masks), kinds, labels, sites, [None] * len(labels),
                      "usgs1995 (USGS spectral library 1995, AVIRIS-resampled)")


def prosail_candidates() -> tuple[Candidates, np.ndarray]:
    """The project's simulated spectra and the wet/dry soil ratio, on ``GRID_NM``."""
    import prosail

    from onboard.scene.library import resample

    fine = np.arange(400.0, 2501.0)
    soil = prosail.spectral_lib.soil
    g = CANOPY
    green = [prosail.run_prosail(n, cab, car, cbrown, cw, cm, lai, g["lidfa_deg"], g["hspot"],
                                 g["tts_deg"], g["tto_deg"], g["psi_deg"], prospect_version="D",
                                 rsoil=1.0, psoil=0.0)
             for _, n, cab, car, cbrown, cw, cm, lai, _ in GREEN]
    residue = []
    for _, n, cab, car, cbrown, cw, cm, _ in RESIDUE:
        _, r, t = prosail.run_prospect(n, cab, car, cbrown, cw, cm, prospect_version="D")
        residue.append(stack_to_infinity(r, t))
    fine_spectra = np.concatenate([[soil.rsoil1], green, residue])
    if fine_spectra.shape[1] != fine.size or not np.isfinite(fine_spectra).all():
        raise RuntimeError("prosail did not give spectra on 400-2500 nm at 1 nm; check its version")
    spectra = resample(fine_spectra, fine, GRID_NM, method="band")
    kw = prosail.spectral_lib.prospectd.kw
    wet = WET_DARKENING * np.exp(-kw * WET_WATER_CM)
    wet_ratio = resample(np.stack([wet]), fine, GRID_NM, method="band")[0]
    kinds = ["soil"] + ["green"] * len(GREEN) + ["residue"] * len(RESIDUE)
    names = ["prosail:soil-dry"] + [f"prosail:{v[0]}" for v in GREEN] + [f"prospect-d:{v[0]}" for v in RESIDUE]
    splits: list[str | None] = ["shared"] + [v[-1] for v in GREEN] + [v[-1] for v in RESIDUE]
    return (Candidates(spectra, np.ones(spectra.shape, dtype=bool), kinds, names, list(names), splits,
                       f"prosail {getattr(prosail, '__version__', 'unknown')}"), wet_ratio)


def compact(c: Candidates, caps_of: dict[str, dict[str, int]] = CAPS,
            per_site: dict[str, int] | None = None) -> list[int]:
    """Indices of the spectra shipped from one source (module docstring: the subset's rule);
    a split missing from ``caps_of[kind]`` is taken whole, at most ``per_site[kind]`` spectra
    of a site (kinds not in it: all)."""
    splits = [s or split_of(site) for s, site in zip(c.splits, c.sites, strict=True)]
    c.splits = list(splits)
    chosen = []
    for kind, caps in caps_of.items():
        for split in ("train", "val", "test", "shared"):
            idx = [i for i in range(len(splits)) if c.kinds[i] == kind and splits[i] == split]
            order = sorted(idx, key=lambda i: _hash(c.names[i] + f"#{i}"))
            rank, seen = {}, {}  # i-th spectrum of its site, in hash order
            for i in order:
                rank[i] = seen.get(c.sites[i], 0)
                seen[c.sites[i]] = rank[i] + 1
            order.sort(key=lambda i: (rank[i], _hash(c.names[i] + f"#{i}")))
            most = (per_site or {}).get(kind)
            order = [i for i in order if most is None or rank[i] < most]
            chosen += order[:caps.get(split, len(order))]
    return sorted(chosen)


def build(caps: dict[str, dict[str, int]] = CAPS, per_site: dict[str, int] | None = None
          ) -> dict[str, np.ndarray]:
    """The library as the arrays written to the file (see the module docstring); ``caps``
    and ``per_site``: the subset's rule (``TRAINING_CAPS``, ``TRAINING_PER_SITE``: the
    training library)."""
    simulated, wet_ratio = prosail_candidates()
    sources = [earthlib_candidates(), usgs_candidates(), simulated]
    parts = [(c, compact(c, caps, per_site)) for c in sources]
    spectra = np.concatenate([c.spectra[i] for c, i in parts])
    if not np.isfinite(spectra).all() or spectra.min() <= 0 or spectra.max() > 1.02:
        raise RuntimeError("a source gave spectra that are not reflectance; check its version")

    def column(attr: str) -> np.ndarray:
        return np.array([getattr(c, attr)[k] for c, idx in parts for k in idx])

    meta = {
        "format_version": FORMAT_VERSION,
        "generator": "export/spectral_library.py",
        "generator_version": GENERATOR_VERSION,
        "command": COMMAND,
        "sources": {c.source: int(len(i)) for c, i in parts},
        "licences": {"earthlib": "code MIT; ICRAF-ISRIC soils CC BY 4.0",
                     "usgs1995": "public domain (USGS)", "prosail": "project physics"},
        "grid_nm": [float(GRID_NM[0]), float(GRID_NM[-1]), 10.0],
        "split_rule": "sha256('onboard-residue-split:' + site): train < 0.6 <= val < 0.8 <= test",
        "caps": caps, **({"per_site": per_site} if per_site else {}),
        "bridge": "straight line across unmeasured samples (see 'measured'); residue stages "
                  "ignore onboard.stages.residue.WATER_BANDS_NM",
        "wet_ratio": f"{WET_DARKENING} x exp(-k_w(PROSPECT-D) x {WET_WATER_CM} cm)",
        "green": GREEN, "residue": RESIDUE, "canopy": CANOPY,
    }
    return {
        "wavelengths_nm": GRID_NM.astype(np.float32),
        "spectra": spectra.astype(np.float32),
        "measured": np.concatenate([c.measured[i] for c, i in parts]).astype(bool),
        "kinds": column("kinds"), "splits": column("splits"), "names": column("names"),
        "sites": column("sites"),
        "sources": np.array([c.source.split(" ")[0] for c, idx in parts for _ in idx]),
        "wet_ratio": wet_ratio.astype(np.float32),
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


@functools.lru_cache(maxsize=1)
def training_library() -> SpectralLibrary:
    """One spectrum of every train-split site of the sources (and the ``shared`` prosail
    soil), none of the validation or test splits: what the push-broom classifier trains on
    (module docstring, "Training library"). Built in memory at build time, never shipped."""
    from onboard.scene.library import load

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "training_library.npz"
        np.savez_compressed(path, **build(TRAINING_CAPS, TRAINING_PER_SITE))
        return load(str(path))
