"""Clouds and their shadows over any simulated ground, with a known truth mask.

An additive option of the simulated sources (``[clouds]`` in the mission file): every tile the
simulated ImSPOC or push-broom flies over (farmland or a real cube) can be seen through a
cloud field, so the screening stage (``onboard/stages/screen.py``) is measured against truth.

**Cloud optics.** A cloud is a layer of liquid water droplets of effective radius
``EFFECTIVE_RADIUS_UM`` (10 um, a typical stratocumulus value) and optical depth ``tau``
(wavelength-independent: droplets are much larger than the wavelength). Its reflectance
``R`` and diffuse transmittance ``T`` come from the two-stream (Kubelka-Munk) solution for a
homogeneous layer (Bohren 1987, Am. J. Phys. 55, 524: with no absorption ``R = (1-g) tau /
(2 + (1-g) tau)``, asymmetry ``g = 0.85`` for water droplets): a thick cloud (tau 40) reflects
0.75, flat across the visible and near infrared. The droplets absorb a little in the short-wave
infrared; their single-scattering co-albedo in the weak-absorption limit of geometric optics
(van de Hulst 1957) is ``1 - w = (2/3) alpha r_e n^2 (1 - (1 - 1/n^2)^1.5)`` with ``n = 1.33`` and
``alpha`` the absorption coefficient of liquid water (``WATER_ABSORPTION_PER_CM``, PROSPECT-D's
``kw`` from the prosail package, sampled every 25 nm; it gives ``1 - w`` = 0.006 at 1600 nm for
10 um droplets, the value Nakajima and King 1990 use). So a thick cloud reads about 0.78 at
1000 nm, 0.6 at 1600 nm and dips at 1450 nm: bright and flat in the VNIR, bright and falling in
the SWIR, without a vegetation red edge.

**Apparent reflectance** of a surface ``Rs`` under a cloud (adding method, the light crossing
the cloud twice): ``R + T^2 Rs / (1 - R Rs)``.

**Shadows.** A cloud at ``cloud_height_m`` under a sun at ``sun_zenith_deg`` casts its shadow
``height * tan(zenith)`` away from the sun on the ground (pixels of ``gsd_m``). A shadowed
pixel keeps the diffuse skylight and the direct beam the cloud transmits:
``Rs * (f + (1 - f) T)``, ``f`` the diffuse fraction of the irradiance (:func:`diffuse_fraction`:
Rayleigh optical depth ``0.0088 lambda^-4.05`` (lambda in um, Hansen and Travis 1974), aerosol
optical depth 0.1 at 550 nm with Angstrom exponent 1.3, half of the Rayleigh and 80 % of the
aerosol scattering going down): a shadow is dark with the scene's spectral shape, lifted in
the blue.

**Truth** (``CloudyTile.clouds``, uint8): ``CLOUD`` where the optical depth is at least
``TRUTH_MIN_TAU`` (1: the cloud adds 0.07 to the reflectance and hides 13 % of the ground),
``SHADOW`` where a pixel not under a cloud receives less than half the direct beam
(a casting optical depth above 13), ``CLEAR`` elsewhere.

**Cloud fields.** A smooth Gaussian field (:func:`onboard.scene.farmland.smooth_field`) is
thresholded at the quantile that gives the tile its cover; inside, the optical depth rises from
the kind's low to its high value with the field: ``thin`` 1-5 (the ground shows through),
``thick`` 10-60, ``mixed`` a thick core (the upper half of the field inside the cloud) in
a thin margin.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from onboard.physics.atmosphere import diffuse_fraction
from onboard.scene.farmland import smooth_field
from onboard.sources.base import Tile

CLEAR, CLOUD, SHADOW = 0, 1, 2
#: Absorption coefficient of pure liquid water (cm^-1), 400-2500 nm every 25 nm: PROSPECT-D's
#: ``kw`` (prosail package, ``prosail.spectral_lib.prospectd.kw``), sampled.
WATER_ABSORPTION_NM = np.arange(400.0, 2501.0, 25.0)
WATER_ABSORPTION_PER_CM = np.array([
    5.8e-05, 8.551e-05, 0.000114, 0.0001424, 0.000238, 0.0004176, 0.000588, 0.0008386, 0.002224,
    0.002881, 0.003315, 0.004196, 0.005722, 0.01319, 0.02733, 0.0272, 0.02246, 0.0262, 0.04199,
    0.05006, 0.06407, 0.1012, 0.2976, 0.487, 0.4072, 0.2672, 0.1664, 0.1414, 0.1906, 0.2811,
    0.9769, 1.232, 1.272, 1.2, 1.116, 1.104, 1.323, 2.007, 3.226, 5.092, 17.14, 28.35, 30.54,
    26.64, 19.72, 14.32, 10.64, 8.448, 6.987, 6.186, 5.705, 5.525, 5.571, 6.051, 7.054, 8.394,
    8.789, 8.888, 10.94, 26.22, 97.22, 130.4, 117, 91.21, 69.24, 53.56, 42.28, 33.92, 27.76,
    23.42, 20.67, 19.09, 18.34, 18.43, 19.4, 21.35, 24.33, 28.38, 33.48, 40.07, 47.64, 56.86,
    68.42, 82.15, 95.3,
])
EFFECTIVE_RADIUS_UM = 10.0
ASYMMETRY = 0.85
REFRACTIVE_INDEX = 1.33
TRUTH_MIN_TAU = 1.0
#: A shadow in the truth: less than this share of the direct beam gets through the cloud.
TRUTH_SHADOW_DIRECT = 0.5
#: Optical depth range (low, high) inside a cloud of each kind.
TAU_RANGE: dict[str, tuple[float, float]] = {"thin": (1.0, 5.0), "thick": (10.0, 60.0)}
CloudKind = Literal["thin", "thick", "mixed"]


def co_albedo(wavelengths_nm: ArrayLike, effective_radius_um: float = EFFECTIVE_RADIUS_UM) -> NDArray[np.float64]:
    """Single-scattering co-albedo ``1 - w`` of cloud droplets (module docstring)."""
    alpha_per_um = np.interp(np.asarray(wavelengths_nm, float), WATER_ABSORPTION_NM, WATER_ABSORPTION_PER_CM) * 1e-4
    n2 = REFRACTIVE_INDEX**2
    return (2.0 / 3.0) * alpha_per_um * effective_radius_um * n2 * (1.0 - (1.0 - 1.0 / n2) ** 1.5)


def cloud_optics(wavelengths_nm: ArrayLike, tau: ArrayLike) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Reflectance and diffuse transmittance (B, ...) of cloud layers of optical depth ``tau``
    (any shape) at ``wavelengths_nm`` (B,): two-stream solution (module docstring)."""
    a = co_albedo(wavelengths_nm).reshape(-1, *([1] * np.ndim(tau)))
    b = (1.0 - a) * (1.0 - ASYMMETRY) / 2.0  # backscatter per unit optical depth
    t = np.asarray(tau, float)[None]
    k = np.sqrt(a * (a + 2.0 * b))
    r_inf = (a + b - k) / b
    e = np.exp(-2.0 * k * t)
    denom = 1.0 - r_inf**2 * e
    reflect = np.where(k * t < 1e-6, b * t / (1.0 + b * t), r_inf * (1.0 - e) / np.maximum(denom, 1e-12))
    transmit = np.where(k * t < 1e-6, 1.0 / (1.0 + b * t), (1.0 - r_inf**2) * np.sqrt(e) / np.maximum(denom, 1e-12))
    return reflect, transmit


@dataclass(frozen=True)
class CloudGeometry:
    """Where shadows fall: cloud height, ground pixel size and the sun's position (azimuth
    clockwise from the top of the frame). Defaults: low cumulus at 1 km seen at 30 m."""

    cloud_height_m: float = 1000.0
    gsd_m: float = 30.0
    sun_zenith_deg: float = 40.0
    sun_azimuth_deg: float = 135.0

    def shadow_offset_px(self) -> tuple[int, int]:
        """(rows, cols) from a cloud to its shadow: away from the sun."""
        d = self.cloud_height_m * np.tan(np.radians(self.sun_zenith_deg)) / self.gsd_m
        az = np.radians(self.sun_azimuth_deg)
        return int(round(d * np.cos(az))), int(round(-d * np.sin(az)))


def optical_depth(rng: np.random.Generator, shape: tuple[int, int], cover: float, kind: CloudKind,
                  scale_px: float = 10.0) -> NDArray[np.float64]:
    """A cloud field (rows, cols) of optical depth, 0 outside clouds, ``cover`` of it cloudy."""
    if not 0.0 <= cover <= 1.0:
        raise ValueError(f"cloud cover must be 0-1, got {cover}")
    field = smooth_field(rng, shape, scale_px)
    if cover <= 0.0:
        return np.zeros(shape)
    edge = np.quantile(field, 1.0 - cover) if cover < 1.0 else field.min() - 1e-9
    inside = field > edge
    # 0 at the cloud's edge, 1 at its densest point
    depth = np.zeros(shape)
    depth[inside] = (field[inside] - edge) / max(float(field.max() - edge), 1e-9)
    if kind == "mixed":
        lo_thin, hi_thin = TAU_RANGE["thin"]
        lo_thick, hi_thick = TAU_RANGE["thick"]
        tau = np.where(depth < 0.5, lo_thin + (hi_thin - lo_thin) * depth / 0.5,
                       lo_thick + (hi_thick - lo_thick) * (depth - 0.5) / 0.5)
    else:
        lo, hi = TAU_RANGE[kind]
        tau = lo + (hi - lo) * depth
    return np.where(inside, tau, 0.0)


def overcast(reflectance: NDArray, wavelengths_nm: NDArray, tau: NDArray[np.float64],
             geometry: CloudGeometry) -> tuple[NDArray[np.float32], NDArray[np.uint8]]:
    """The apparent reflectance (B, rows, cols) of the ground ``reflectance`` under the cloud
    field ``tau`` of shape (rows + |dy|, cols + |dx|) (the margin holds the clouds whose
    shadows fall inside), and the truth mask (rows, cols)."""
    b, h, w = reflectance.shape
    dy, dx = geometry.shadow_offset_px()
    # the tile's own window in the padded field; the shadow at p comes from the cloud at p - offset
    y0, x0 = max(dy, 0), max(dx, 0)
    here = tau[y0:y0 + h, x0:x0 + w]
    caster = tau[y0 - dy:y0 - dy + h, x0 - dx:x0 - dx + w]
    r_c, t_c = cloud_optics(wavelengths_nm, here)
    _, t_cast = cloud_optics(wavelengths_nm, caster)
    f = diffuse_fraction(wavelengths_nm, geometry.sun_zenith_deg)[:, None, None]
    lit = reflectance * (f + (1.0 - f) * t_cast)
    out = np.where(here[None] > 0, r_c + t_c**2 * lit / (1.0 - r_c * lit), lit)
    truth = np.full((h, w), CLEAR, np.uint8)
    _, t_mid = cloud_optics([550.0], caster)
    truth[t_mid[0] < TRUTH_SHADOW_DIRECT] = SHADOW
    truth[here >= TRUTH_MIN_TAU] = CLOUD
    return out.astype(np.float32), truth


@dataclass(frozen=True)
class CloudyTile:
    """A tile seen through clouds: what the simulated sources take (``sources/base.Tile``),
    with the truth mask ``clouds`` (rows, cols) uint8 and the optical depth ``tau``."""

    reflectance: NDArray[np.float32]
    wavelengths_nm: NDArray[np.float64]
    fractions: NDArray[np.float32] | None
    tillage: NDArray[np.uint8] | None
    clouds: NDArray[np.uint8]
    tau: NDArray[np.float64]
    cover: float


def cloudy(tiles: Iterator[Tile], cover: float | tuple[float, float], kind: CloudKind, seed: int = 0,
           geometry: CloudGeometry | None = None) -> Iterator[CloudyTile]:
    """Each of ``tiles`` under a new cloud field: ``cover`` the cloudy share of the field
    around the tile, fixed or drawn uniformly in a (low, high) range per tile."""
    rng = np.random.default_rng(seed)
    geometry = geometry or CloudGeometry()
    dy, dx = geometry.shadow_offset_px()
    for tile in tiles:
        _, h, w = tile.reflectance.shape
        c = float(rng.uniform(*cover)) if isinstance(cover, tuple) else float(cover)
        tau = optical_depth(rng, (h + abs(dy), w + abs(dx)), c, kind)
        refl, truth = overcast(tile.reflectance, tile.wavelengths_nm, tau, geometry)
        y0, x0 = max(dy, 0), max(dx, 0)
        yield CloudyTile(refl, tile.wavelengths_nm, tile.fractions, tile.tillage, truth,
                         tau[y0:y0 + h, x0:x0 + w], c)
