"""The settings of a CCSDS 123.0-B-2 stream: image geometry, predictor, quantizer, coder.

Names follow the standard's symbols (``P``, ``omega`` for Omega, ``register_size`` for R,
``t_inc``, ``nu_min``/``nu_max``, ``theta`` for the sample-representative resolution,
``phi``/``psi`` for damping and offset, ``u_max``, ``gamma_star``, ``gamma0``, ``k`` for the
accumulator initialisation constant). Everything a decoder needs is in the stream's header
(:mod:`.header`); these objects are what the header says, checked against the standard's ranges.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from onboard.errors import OnboardError


class Ccsds123Error(OnboardError, ValueError):
    """Settings outside CCSDS 123.0-B-2's ranges, or a stream that cannot be decoded."""


class CorruptStreamError(Ccsds123Error):
    """A compressed stream that is truncated, damaged or larger than allowed."""


#: Local sum types in the header's code order (standard section 4.4).
LOCAL_SUMS = ("wide-neighbour", "narrow-neighbour", "wide-column", "narrow-column")
#: Sample encoding orders: BSQ, or band-interleaved with a sub-frame interleaving depth M
#: (M = 1 is BIL, M = Nz is BIP).
ORDERS = ("BSQ", "BIL", "BIP", "BI")

PerBand = int | Sequence[int]


def _per_band(value: PerBand, nz: int, name: str) -> tuple[int, ...]:
    if isinstance(value, int):
        return (value,) * nz
    out = tuple(int(v) for v in value)
    if len(out) != nz:
        raise Ccsds123Error(f"{name} has {len(out)} values for {nz} bands: give one or one per band")
    return out


@dataclass(frozen=True)
class Params:
    """What to compress with; defaults are the lossless settings that suit product cubes.

    ``k`` (the accumulator initialisation constant) defaults to min(4, D - 2).
    ``absolute_error`` / ``relative_error``: None (not used), one limit for every band, or one
    per band; both None is lossless. Near-lossless guarantees |s - s'| <= min(a_z,
    floor(r_z |s_hat| / 2^D)) for every sample (standard section 4.8.2).
    """

    P: int = 3
    full: bool = True
    local_sum: str = "wide-neighbour"
    register_size: int = 64
    omega: int = 13
    t_inc: int = 64
    nu_min: int = -1
    nu_max: int = 3
    weight_exponent_offsets: tuple[tuple[int, ...], ...] | None = None
    absolute_error: PerBand | None = None
    relative_error: PerBand | None = None
    theta: int = 0
    phi: PerBand = 0
    psi: PerBand = 0
    order: str = "BIP"
    interleave: int = 0
    output_word_size: int = 1
    u_max: int = 18
    gamma_star: int = 6
    gamma0: int = 1
    k: PerBand | None = None
    user_data: int = 0

    @property
    def lossless(self) -> bool:
        return self.absolute_error is None and self.relative_error is None


@dataclass(frozen=True)
class Resolved:
    """:class:`Params` made concrete for one image: every table expanded to one value per band,
    every range checked. This is exactly what the header carries."""

    nx: int
    ny: int
    nz: int
    D: int
    signed: bool
    P: int
    full: bool
    local_sum: int
    register_size: int
    omega: int
    t_inc: int
    nu_min: int
    nu_max: int
    offsets: tuple[tuple[int, ...], ...] | None
    abs_limits: tuple[int, ...] | None
    abs_bits: int
    abs_per_band: bool
    rel_limits: tuple[int, ...] | None
    rel_bits: int
    rel_per_band: bool
    theta: int
    phi: tuple[int, ...]
    psi: tuple[int, ...]
    representative: bool
    bsq: bool
    interleave: int
    output_word_size: int
    u_max: int
    gamma_star: int
    gamma0: int
    k: tuple[int, ...]
    k_per_band: bool
    user_data: int

    @property
    def smin(self) -> int:
        return -(1 << (self.D - 1)) if self.signed else 0

    @property
    def smax(self) -> int:
        return (1 << (self.D - 1)) - 1 if self.signed else (1 << self.D) - 1

    @property
    def smid(self) -> int:
        return 0 if self.signed else 1 << (self.D - 1)

    @property
    def fidelity(self) -> int:
        """Quantizer fidelity control method: 0 lossless, 1 absolute, 2 relative, 3 both."""
        return (self.abs_limits is not None) + 2 * (self.rel_limits is not None)

    @property
    def samples(self) -> int:
        return self.nx * self.ny * self.nz


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise Ccsds123Error(message)


def _limits(value: PerBand | None, nz: int, name: str) -> tuple[tuple[int, ...] | None, int, bool]:
    if value is None:
        return None, 0, False
    limits = _per_band(value, nz, name)
    return limits, max(1, max(limits).bit_length()), not isinstance(value, int)


def resolve(p: Params, shape: tuple[int, int, int], D: int, signed: bool) -> Resolved:
    """``p`` for an image of ``shape`` (bands, lines, columns) and ``D``-bit samples, checked."""
    nz, ny, nx = shape
    _check(p.order in ORDERS, f"order {p.order!r} must be one of {ORDERS}")
    _check(p.local_sum in LOCAL_SUMS, f"local_sum {p.local_sum!r} must be one of {LOCAL_SUMS}")
    offsets = None
    if p.weight_exponent_offsets is not None:
        offsets = tuple(tuple(int(v) for v in row) for row in p.weight_exponent_offsets)
    abs_limits, abs_bits, abs_band = _limits(p.absolute_error, nz, "absolute_error")
    rel_limits, rel_bits, rel_band = _limits(p.relative_error, nz, "relative_error")
    phi = _per_band(p.phi, nz, "phi")
    psi = _per_band(p.psi, nz, "psi")
    r = Resolved(
        nx=nx, ny=ny, nz=nz, D=D, signed=signed, P=p.P, full=p.full,
        local_sum=LOCAL_SUMS.index(p.local_sum), register_size=p.register_size, omega=p.omega,
        t_inc=p.t_inc, nu_min=p.nu_min, nu_max=p.nu_max, offsets=offsets,
        abs_limits=abs_limits, abs_bits=abs_bits, abs_per_band=abs_band,
        rel_limits=rel_limits, rel_bits=rel_bits, rel_per_band=rel_band,
        theta=p.theta, phi=phi, psi=psi,
        representative=bool(p.theta or any(phi) or any(psi)),
        bsq=p.order == "BSQ", interleave={"BIL": 1, "BIP": nz, "BSQ": 0}.get(p.order, p.interleave),
        output_word_size=p.output_word_size, u_max=p.u_max, gamma_star=p.gamma_star,
        gamma0=p.gamma0, k=_per_band(min(4, D - 2) if p.k is None else p.k, nz, "k"),
        k_per_band=not isinstance(p.k, int | None),
        user_data=p.user_data,
    )
    validate(r)
    return r


def validate(r: Resolved) -> None:
    """Raise :class:`Ccsds123Error` unless every setting is inside the standard's range (the
    encoder checks what it is asked; the decoder checks what a header says)."""
    shape = (r.nz, r.ny, r.nx)
    _check(all(1 <= n <= 1 << 16 for n in shape), f"image {shape} must be 1..65536 in every dimension")
    _check(2 <= r.D <= 32, f"dynamic range D={r.D} must be 2..32 bits")
    _check(0 <= r.P <= 15, f"P={r.P} prediction bands must be 0..15")
    _check(not (r.full and r.nx == 1), "full prediction needs at least 2 columns (standard 4.3.1): use full=False")
    _check(r.nx > 1 or r.local_sum >= 2, "neighbour-oriented local sums need at least 2 columns: use a column-oriented sum")
    _check(4 <= r.omega <= 19, f"omega={r.omega} must be 4..19")
    _check(max(32, r.D + r.omega + 2) <= r.register_size <= 64, f"register_size={r.register_size} must be max(32, D + omega + 2)..64")
    _check(r.t_inc in [1 << n for n in range(4, 12)], f"t_inc={r.t_inc} must be a power of two 16..2048")
    _check(-6 <= r.nu_min <= r.nu_max <= 9, f"nu_min={r.nu_min}, nu_max={r.nu_max} must satisfy -6 <= nu_min <= nu_max <= 9")
    _check(r.bsq or 1 <= r.interleave <= r.nz, f"sub-frame interleaving depth {r.interleave} must be 1..{r.nz}")
    _check(1 <= r.output_word_size <= 8, f"output_word_size={r.output_word_size} must be 1..8 bytes")
    _check(8 <= r.u_max <= 32, f"u_max={r.u_max} must be 8..32")
    _check(1 <= r.gamma0 <= 8, f"gamma0={r.gamma0} must be 1..8")
    _check(max(4, r.gamma0 + 1) <= r.gamma_star <= 11, f"gamma_star={r.gamma_star} must be max(4, gamma0 + 1)..11")
    _check(all(0 <= v <= min(r.D - 2, 14) for v in r.k), f"accumulator constant k must be 0..min(D - 2, 14) = {min(r.D - 2, 14)}")
    if r.offsets is not None:
        width = r.P + (1 if r.full else 0)
        _check(len(r.offsets) == r.nz and all(len(row) == width for row in r.offsets), f"weight_exponent_offsets must be {r.nz} x {width}")
        _check(all(-6 <= v <= 5 for row in r.offsets for v in row), "weight exponent offsets must be -6..5")
    for name, limits, bits in (("absolute_error", r.abs_limits, r.abs_bits), ("relative_error", r.rel_limits, r.rel_bits)):
        if limits is not None:
            _check(len(limits) == r.nz and min(limits) >= 0, f"{name} must be one value >= 0 per band")
            _check(1 <= bits <= min(r.D - 1, 16), f"{name} bit depth {bits} must be 1..min(D - 1, 16) = {min(r.D - 1, 16)}")
            _check(max(limits) < 1 << bits, f"{name} {max(limits)} does not fit its {bits} bits")
    _check(0 <= r.theta <= 4, f"theta={r.theta} must be 0..4")
    top = (1 << r.theta) - 1
    _check(all(0 <= v <= top for v in r.phi + r.psi), f"phi and psi must be 0..2^theta - 1 = {top}")
    _check(r.fidelity != 0 or not any(r.psi), "psi must be 0 when lossless (standard 4.9.2)")
    _check(0 <= r.user_data <= 255, "user_data must be one byte")
