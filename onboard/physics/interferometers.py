"""A bank of Fabry-Perot interferometers: the parameters a characterisation produces.

Each interferometer k has a constant optical path difference ``opd_um[k]`` and phase
``phase_rad[k]``, an additive ``offset[k]``, and a gain and a reflectivity that vary smoothly
with wavenumber, stored as Chebyshev series on the mapped domain
``t = (2 sigma - (a + b)) / (b - a)`` for ``sigma`` in ``sigma_domain = (a, b)`` (1/µm).
Chebyshev coefficients are well conditioned where raw monomials in sigma are not.

A thickness wedge across a thumbnail is the OPD's gradient ``opd_gradient_um_per_px[k]``
(d/drow, d/dcol) about the thumbnail's centre.

``harmonics`` selects the model: ``None`` is the exact Airy function, ``K`` the Fourier
series truncated after K harmonics (see :mod:`onboard.physics.fabry_perot`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numpy.polynomial import chebyshev
from numpy.typing import ArrayLike, NDArray

from onboard.physics import fabry_perot

#: Reflectivity is kept strictly below 1 so the Airy function stays finite.
MAX_REFLECTIVITY = 0.995

#: ``opd_gradient_um_per_px``'s default, "no wedge": ``__post_init__`` replaces it by zeros of the
#: bank's size (a sentinel, not None, so the field is an array for every reader).
_NO_WEDGE: NDArray[np.float64] = np.zeros((0, 2))


@dataclass
class InterferometerBank:
    """Per-interferometer Fabry-Perot parameters, N interferometers.

    opd_um: (N,) µm. phase_rad: (N,). offset: (N,) in response units.
    gain_cheb: (N, Dg+1), reflectivity_cheb: (N, Dr+1): Chebyshev coefficients on the
    mapped ``sigma_domain``. opd_gradient_um_per_px: (N, 2), OPD change per pixel along
    (rows, cols) of the thumbnail, about its centre.
    """

    opd_um: NDArray[np.float64]
    phase_rad: NDArray[np.float64]
    gain_cheb: NDArray[np.float64]
    reflectivity_cheb: NDArray[np.float64]
    offset: NDArray[np.float64]
    sigma_domain: tuple[float, float]
    harmonics: int | None = None
    opd_gradient_um_per_px: NDArray[np.float64] = field(default_factory=lambda: _NO_WEDGE)

    def __post_init__(self) -> None:
        n = self.opd_um.shape[0]
        self.opd_um = np.asarray(self.opd_um, dtype=float)
        self.phase_rad = np.broadcast_to(np.asarray(self.phase_rad, dtype=float), (n,)).copy()
        self.offset = np.broadcast_to(np.asarray(self.offset, dtype=float), (n,)).copy()
        self.gain_cheb = np.atleast_2d(np.asarray(self.gain_cheb, dtype=float))
        self.reflectivity_cheb = np.atleast_2d(np.asarray(self.reflectivity_cheb, dtype=float))
        if self.opd_gradient_um_per_px is _NO_WEDGE:
            self.opd_gradient_um_per_px = np.zeros((n, 2))
        for name in ("gain_cheb", "reflectivity_cheb", "opd_gradient_um_per_px"):
            if getattr(self, name).shape[0] != n:
                raise ValueError(f"{name} has {getattr(self, name).shape[0]} rows for {n} interferometers")
        a, b = self.sigma_domain
        if not b > a > 0:
            raise ValueError(f"sigma_domain must be 0 < a < b (1/µm), got {self.sigma_domain}")

    def __len__(self) -> int:
        return int(self.opd_um.shape[0])

    @classmethod
    def constant(
        cls,
        opd_um: ArrayLike,
        reflectivity: ArrayLike,
        gain: ArrayLike = 1.0,
        phase_rad: ArrayLike = 0.0,
        offset: ArrayLike = 0.0,
        sigma_domain: tuple[float, float] = (0.5, 3.0),
        harmonics: int | None = None,
    ) -> InterferometerBank:
        """A bank whose gain and reflectivity do not depend on wavenumber."""
        opd = np.atleast_1d(np.asarray(opd_um, dtype=float))
        n = opd.shape[0]
        return cls(
            opd_um=opd,
            phase_rad=np.broadcast_to(phase_rad, (n,)),
            gain_cheb=np.broadcast_to(np.asarray(gain, dtype=float), (n,))[:, None],
            reflectivity_cheb=np.broadcast_to(np.asarray(reflectivity, dtype=float), (n,))[:, None],
            offset=np.broadcast_to(offset, (n,)),
            sigma_domain=sigma_domain,
            harmonics=harmonics,
        )

    def mapped(self, sigma: ArrayLike) -> NDArray[np.float64]:
        """Wavenumber mapped onto the Chebyshev domain [-1, 1]."""
        a, b = self.sigma_domain
        return (2.0 * np.asarray(sigma, dtype=float) - (a + b)) / (b - a)

    def gain(self, sigma: ArrayLike) -> NDArray[np.float64]:
        """Gain, (N, S) for S wavenumbers."""
        return np.asarray(chebyshev.chebval(self.mapped(sigma), self.gain_cheb.T), dtype=np.float64)

    def reflectivity(self, sigma: ArrayLike) -> NDArray[np.float64]:
        """Reflectivity, (N, S), clipped to the physical [0, MAX_REFLECTIVITY]."""
        r = chebyshev.chebval(self.mapped(sigma), self.reflectivity_cheb.T)
        return np.clip(r, 0.0, MAX_REFLECTIVITY)

    def response(
        self, sigma: ArrayLike, opd_shift_um: ArrayLike = 0.0
    ) -> NDArray[np.float64]:
        """Each interferometer's response at each wavenumber: (N, S).

        ``opd_shift_um`` (broadcast against (N, 1)) adds to the OPD, e.g. the wedge at a pixel.
        """
        s = np.atleast_1d(np.asarray(sigma, dtype=float))
        opd = self.opd_um[:, None] + np.asarray(opd_shift_um, dtype=float)
        return np.asarray(fabry_perot.response(
            s[None, :],
            opd,
            self.reflectivity(s),
            gain=self.gain(s),
            phase=self.phase_rad[:, None],
            offset=self.offset[:, None],
            harmonics=self.harmonics,
        ), dtype=np.float64)

    def opd_shift(self, drow: ArrayLike, dcol: ArrayLike) -> NDArray[np.float64]:
        """OPD shift (N, ...) at pixel offsets (drow, dcol) from the thumbnail centre."""
        g = self.opd_gradient_um_per_px
        dr = np.asarray(drow, dtype=float)
        dc = np.asarray(dcol, dtype=float)
        extra = (1,) * np.broadcast(dr, dc).ndim
        return g[:, 0].reshape(-1, *extra) * dr + g[:, 1].reshape(-1, *extra) * dc

    def arrays(self) -> dict[str, NDArray]:
        """The bank as named arrays (for the calibration file)."""
        return {
            "opd_um": self.opd_um,
            "phase_rad": self.phase_rad,
            "gain_cheb": self.gain_cheb,
            "reflectivity_cheb": self.reflectivity_cheb,
            "offset": self.offset,
            "sigma_domain": np.asarray(self.sigma_domain, dtype=float),
            "opd_gradient_um_per_px": self.opd_gradient_um_per_px,
            "harmonics": np.asarray(-1 if self.harmonics is None else self.harmonics),
        }

    @classmethod
    def from_arrays(cls, a: dict[str, NDArray]) -> InterferometerBank:
        h = int(a["harmonics"])
        return cls(
            opd_um=np.asarray(a["opd_um"], dtype=float),
            phase_rad=np.asarray(a["phase_rad"], dtype=float),
            gain_cheb=np.asarray(a["gain_cheb"], dtype=float),
            reflectivity_cheb=np.asarray(a["reflectivity_cheb"], dtype=float),
            offset=np.asarray(a["offset"], dtype=float),
            sigma_domain=(float(a["sigma_domain"][0]), float(a["sigma_domain"][1])),
            harmonics=None if h < 0 else h,
            opd_gradient_um_per_px=np.asarray(a["opd_gradient_um_per_px"], dtype=float),
        )
