"""The CCSDS 123.0-B-2 header (standard section 5.3): image, predictor and entropy-coder
metadata, so that a stream is self-describing and any conformant decoder reads it.

Written: the essential image subpart (no supplementary information tables), the predictor
primary structure (default weight initialisation; weight exponent offsets in the header when
used), the quantization structures (no periodic error-limit updating), the sample
representative structure and the sample-adaptive entropy coder structure, every table that
the standard lets one place in the header placed there, so no side file is needed.
"""

from __future__ import annotations

from .params import Ccsds123Error, CorruptStreamError, Resolved, validate


class _Writer:
    def __init__(self) -> None:
        self.bits: list[str] = []

    def put(self, value: int, n: int) -> None:
        self.bits.append(format(value & ((1 << n) - 1), f"0{n}b") if n else "")

    def align(self) -> None:
        self.put(0, -len("".join(self.bits)) % 8)

    def tobytes(self) -> bytes:
        text = "".join(self.bits)
        assert len(text) % 8 == 0
        return int(text, 2).to_bytes(len(text) // 8, "big") if text else b""


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def get(self, n: int, what: str) -> int:
        if self.pos + n > 8 * len(self.data):
            raise CorruptStreamError(f"CCSDS 123 header truncated in {what} (byte {self.pos // 8} of {len(self.data)})")
        value = 0
        for i in range(self.pos, self.pos + n):
            value = (value << 1) | ((self.data[i >> 3] >> (7 - (i & 7))) & 1)
        self.pos += n
        return value

    def reserved(self, n: int, what: str) -> None:
        if self.get(n, what):
            raise CorruptStreamError(f"CCSDS 123 header: reserved bits set in {what} (byte {(self.pos - 1) // 8}): not a stream of this standard, or damaged")

    def signed(self, n: int, what: str) -> int:
        v = self.get(n, what)
        return v - (1 << n) if v >> (n - 1) else v

    def align(self, what: str) -> None:
        self.reserved(-self.pos % 8, what)


def pack(r: Resolved) -> bytes:
    """The header bytes for ``r``."""
    w = _Writer()
    # Image metadata, essential subpart (12 bytes).
    w.put(r.user_data, 8)
    for n in (r.nx, r.ny, r.nz):
        w.put(n, 16)  # 2^16 is written as 0
    w.put(int(r.signed), 1)
    w.put(0, 1)
    w.put(int(r.D > 16), 1)
    w.put(r.D, 4)
    w.put(int(r.bsq), 1)
    w.put(r.interleave, 16)
    w.put(0, 2)
    w.put(r.output_word_size, 3)
    w.put(0, 2)  # entropy coder: sample-adaptive
    w.put(0, 1)
    w.put(r.fidelity, 2)
    w.put(0, 2)
    w.put(0, 4)  # no supplementary information tables
    # Predictor metadata, primary structure (5 bytes).
    w.put(0, 1)
    w.put(int(r.representative), 1)
    w.put(r.P, 4)
    w.put(int(not r.full), 1)
    w.put(int(r.offsets is not None), 1)
    w.put(r.local_sum, 2)
    w.put(r.register_size, 6)
    w.put(r.omega - 4, 4)
    w.put(r.t_inc.bit_length() - 1 - 4, 4)
    w.put(r.nu_min + 6, 4)
    w.put(r.nu_max + 6, 4)
    w.put(int(r.offsets is not None), 1)  # offset table in the header
    w.put(0, 1)  # default weight initialisation
    w.put(0, 1)
    w.put(0, 5)
    if r.offsets is not None:
        for z, row in enumerate(r.offsets):
            for v in row[: min(z, r.P) + int(r.full)]:
                w.put(v, 4)
        w.align()
    if r.fidelity:
        if not r.bsq:
            w.put(0, 8)  # no periodic error-limit updating
        for limits, bits, per_band in ((r.abs_limits, r.abs_bits, r.abs_per_band), (r.rel_limits, r.rel_bits, r.rel_per_band)):
            if limits is None:
                continue
            w.put(0, 1)
            w.put(int(per_band), 1)
            w.put(0, 2)
            w.put(bits, 4)
            for v in limits if per_band else limits[:1]:
                w.put(v, bits)
            w.align()
    if r.representative:
        phi_band = len(set(r.phi)) > 1
        psi_band = len(set(r.psi)) > 1
        w.put(0, 5)
        w.put(r.theta, 3)
        for band, values in ((phi_band, r.phi), (psi_band, r.psi)):
            w.put(0, 1)
            w.put(int(band), 1)
            w.put(int(band), 1)  # a band-varying table goes in the header
            w.put(0, 1)
            w.put(0 if band else values[0], 4)
        for band, values in ((phi_band, r.phi), (psi_band, r.psi)):
            if band:
                for v in values:
                    w.put(v, r.theta)
                w.align()
    # Sample-adaptive entropy coder (2 bytes and the accumulator table).
    w.put(r.u_max, 5)
    w.put(r.gamma_star - 4, 3)
    w.put(r.gamma0, 3)
    w.put(15 if r.k_per_band else r.k[0], 4)
    w.put(int(r.k_per_band), 1)
    if r.k_per_band:
        for v in r.k:
            w.put(v, 4)
        w.align()
    return w.tobytes()


def parse(data: bytes) -> tuple[Resolved, int]:
    """The settings a stream's header states and the header's length in bytes; a header of
    another coder or with settings outside the standard raises :class:`CorruptStreamError`."""
    rd = _Reader(data)
    user_data = rd.get(8, "image metadata")
    nx, ny, nz = ((rd.get(16, "image size") or 1 << 16) for _ in range(3))
    signed = bool(rd.get(1, "sample type"))
    rd.reserved(1, "image metadata")
    large = rd.get(1, "dynamic range")
    D = (rd.get(4, "dynamic range") or 16) + 16 * large
    bsq = bool(rd.get(1, "sample encoding order"))
    interleave = rd.get(16, "sub-frame interleaving depth")
    if not bsq and interleave == 0:
        interleave = 1 << 16
    rd.reserved(2, "image metadata")
    word = rd.get(3, "output word size") or 8
    coder = rd.get(2, "entropy coder type")
    if coder != 0:
        raise CorruptStreamError(f"stream uses the {('hybrid', 'block-adaptive', 'reserved')[coder - 1]} entropy coder; this decoder reads the sample-adaptive coder only")
    rd.reserved(1, "image metadata")
    fidelity = rd.get(2, "quantizer fidelity control")
    rd.reserved(2, "image metadata")
    if rd.get(4, "supplementary table count"):
        raise CorruptStreamError("stream carries supplementary information tables, which this decoder does not read")
    rd.reserved(1, "predictor metadata")
    representative = bool(rd.get(1, "sample representative flag"))
    P = rd.get(4, "prediction bands")
    full = not rd.get(1, "prediction mode")
    has_offsets = rd.get(1, "weight exponent offset flag")
    local_sum = rd.get(2, "local sum type")
    register_size = rd.get(6, "register size") or 64
    omega = rd.get(4, "weight resolution") + 4
    t_inc = 1 << (rd.get(4, "weight update interval") + 4)
    nu_min = rd.get(4, "weight update parameter") - 6
    nu_max = rd.get(4, "weight update parameter") - 6
    offsets_in_header = rd.get(1, "weight exponent offset table flag")
    if rd.get(1, "weight initialisation method") or rd.get(1, "weight initialisation table flag") or rd.get(5, "weight initialisation resolution"):
        raise CorruptStreamError("stream uses custom weight initialisation, which this decoder does not read")
    offsets = None
    if has_offsets:
        if not offsets_in_header:
            raise CorruptStreamError("stream's weight exponent offsets are in a side table, not in the header: this decoder needs them in the header")
        rows = []
        for z in range(nz):
            row = [rd.signed(4, "weight exponent offsets") for _ in range(min(z, P) + int(full))]
            rows.append(tuple(row + [0] * (P + int(full) - len(row))))
        rd.align("weight exponent offsets")
        offsets = tuple(rows)
    limits: list[tuple[tuple[int, ...] | None, int, bool]] = [(None, 0, False), (None, 0, False)]
    if fidelity:
        if not bsq:
            rd.reserved(1, "error limit update")
            if rd.get(1, "error limit update"):
                raise CorruptStreamError("stream uses periodic error-limit updating, which this decoder does not read")
            rd.reserved(6, "error limit update")
        for i in (0, 1):
            if not fidelity & (1 << i):
                continue
            rd.reserved(1, "error limits")
            per_band = bool(rd.get(1, "error limit assignment"))
            rd.reserved(2, "error limits")
            bits = rd.get(4, "error limit bit depth") or 16
            values = tuple(rd.get(bits, "error limits") for _ in range(nz if per_band else 1))
            rd.align("error limits")
            limits[i] = (values if per_band else values * nz, bits, per_band)
    theta, phi, psi = 0, (0,) * nz, (0,) * nz
    if representative:
        rd.reserved(5, "sample representative")
        theta = rd.get(3, "sample representative resolution")
        tables = []
        for what in ("damping", "offset"):
            rd.reserved(1, what)
            band = rd.get(1, what)
            in_header = rd.get(1, what)
            rd.reserved(1, what)
            fixed = rd.get(4, what)
            if band and not in_header:
                raise CorruptStreamError(f"stream's {what} table is a side table, not in the header: this decoder needs it in the header")
            tables.append((band, fixed))
        reps: list[tuple[int, ...]] = []
        for band, fixed in tables:
            if band:
                reps.append(tuple(rd.get(theta, "damping/offset table") for _ in range(nz)))
                rd.align("damping/offset table")
            else:
                reps.append((fixed,) * nz)
        phi, psi = reps
    u_max = rd.get(5, "entropy coder") or 32
    gamma_star = rd.get(3, "entropy coder") + 4
    gamma0 = rd.get(3, "entropy coder") or 8
    k_const = rd.get(4, "accumulator initialisation")
    k_in_header = rd.get(1, "accumulator initialisation")
    if k_const == 15:
        if not k_in_header:
            raise CorruptStreamError("stream's accumulator initialisation table is a side table, not in the header")
        k = tuple(rd.get(4, "accumulator table") for _ in range(nz))
        rd.align("accumulator table")
    else:
        k = (k_const,) * nz
    r = Resolved(
        nx=nx, ny=ny, nz=nz, D=D, signed=signed, P=P, full=full, local_sum=local_sum,
        register_size=register_size, omega=omega, t_inc=t_inc, nu_min=nu_min, nu_max=nu_max,
        offsets=offsets, abs_limits=limits[0][0], abs_bits=limits[0][1], abs_per_band=limits[0][2],
        rel_limits=limits[1][0], rel_bits=limits[1][1], rel_per_band=limits[1][2],
        theta=theta, phi=phi, psi=psi, representative=representative, bsq=bsq,
        interleave=0 if bsq else interleave, output_word_size=word, u_max=u_max,
        gamma_star=gamma_star, gamma0=gamma0, k=k, k_per_band=k_const == 15, user_data=user_data,
    )
    try:
        validate(r)
    except Ccsds123Error as exc:
        raise CorruptStreamError(f"CCSDS 123 header states settings outside the standard: {exc}") from exc
    return r, rd.pos // 8
