"""The adaptive linear predictor and quantizer of CCSDS 123.0-B-2 (standard section 4), one
kernel for both directions.

Encoding reads samples and writes mapped quantizer indices (delta); decoding reads delta and
writes the reconstructed samples. The prediction of a sample depends only on earlier samples
of its band and on the P bands before it at the same place, never on the encoding order, so
the kernel walks band by band (z outermost, cache friendly) whatever order the entropy coder
emits. Integer arithmetic throughout, exactly as the standard states it (floor divisions are
arithmetic shifts; mod*_R is the register wrap-around).

Arrays are ``[z, y, x]`` int64. ``prm`` packs the scalars (see :func:`scalars`).
"""

from __future__ import annotations

import numpy as np

from ._jit import kernel
from .params import Resolved

#: Positions in the scalar vector the kernel reads.
(_SMIN, _SMAX, _SMID, _D, _P, _FULL, _LSUM, _R, _OMEGA, _TINC, _NUMIN, _NUMAX, _FID, _THETA) = range(14)


def scalars(r: Resolved) -> np.ndarray:
    """The kernel's scalar settings for ``r``."""
    return np.array([r.smin, r.smax, r.smid, r.D, r.P, int(r.full), r.local_sum, r.register_size,
                     r.omega, r.t_inc, r.nu_min, r.nu_max, r.fidelity, r.theta], dtype=np.int64)


def tables(r: Resolved) -> np.ndarray:
    """Per-band tables ``[z, 4 + C]``: absolute and relative limits, phi, psi, then the
    weight exponent offset of each of the C = P (+3 in full mode) weights."""
    nz, width = r.nz, r.P + 3 * int(r.full)
    out = np.zeros((nz, 4 + width), dtype=np.int64)
    out[:, 0] = r.abs_limits if r.abs_limits is not None else 0
    out[:, 1] = r.rel_limits if r.rel_limits is not None else 0
    out[:, 2] = r.phi
    out[:, 3] = r.psi
    if r.offsets is not None:
        offsets = np.asarray(r.offsets, dtype=np.int64)
        if r.full:  # one offset shared by the three directional weights
            out[:, 4:7] = offsets[:, :1]
            out[:, 7:] = offsets[:, 1:]
        else:
            out[:, 4:] = offsets
    return out


@kernel
def _local_sum(rep, z, y, x, nx, kind, smid):  # type: ignore[no-untyped-def]
    """sigma_z(y, x) of standard section 4.4 from the sample representatives ``rep``."""
    if kind == 0 or kind == 1:  # neighbour-oriented, wide / narrow
        if y > 0:
            if x == 0:
                return 2 * (rep[z, y - 1, x] + rep[z, y - 1, x + 1])
            if x == nx - 1:
                if kind == 0:
                    return rep[z, y, x - 1] + rep[z, y - 1, x - 1] + 2 * rep[z, y - 1, x]
                return 2 * (rep[z, y - 1, x - 1] + rep[z, y - 1, x])
            if kind == 0:
                return rep[z, y, x - 1] + rep[z, y - 1, x - 1] + rep[z, y - 1, x] + rep[z, y - 1, x + 1]
            return rep[z, y - 1, x - 1] + 2 * rep[z, y - 1, x] + rep[z, y - 1, x + 1]
    elif y > 0:  # column-oriented
        return 4 * rep[z, y - 1, x]
    if kind == 0 or kind == 2:  # wide, first line
        return 4 * rep[z, y, x - 1]
    if z > 0:  # narrow, first line
        return 4 * rep[z - 1, y, x - 1]
    return 4 * smid


@kernel
def _mod_star(value, bits):  # type: ignore[no-untyped-def]
    """mod*_R: ``value`` wrapped into a signed R-bit register."""
    if bits >= 64:
        return value
    half = np.int64(1) << (bits - 1)
    return ((value + half) & ((half << 1) - 1)) - half


@kernel
def run(s, delta, decode, prm, tab):  # type: ignore[no-untyped-def]
    """Predict every sample; encode (``decode`` False: ``s`` to ``delta``) or decode (``delta``
    to ``s``). Returns -1, or in decoding the flat index ``z * Ny * Nx + t`` of the first
    delta that no sample in range could have produced (a damaged stream)."""
    nz, ny, nx = s.shape
    smin, smax, smid, D = prm[_SMIN], prm[_SMAX], prm[_SMID], prm[_D]
    P, full, kind, R, omega = prm[_P], prm[_FULL], prm[_LSUM], prm[_R], prm[_OMEGA]
    t_inc, nu_min, nu_max, fid, theta = prm[_TINC], prm[_NUMIN], prm[_NUMAX], prm[_FID], prm[_THETA]
    width = P + 3 * full
    wmin = -(np.int64(1) << (omega + 2))
    wmax = (np.int64(1) << (omega + 2)) - 1
    rep = np.empty((nz, ny, nx), dtype=np.int64)  # sample representatives s''
    dc = np.empty((nz, ny, nx), dtype=np.int64)  # central local differences d
    weights = np.zeros(width, dtype=np.int64)
    u = np.zeros(width, dtype=np.int64)
    lo = np.int64(smin) << (omega + 2)
    hi = (np.int64(smax) << (omega + 2)) + (np.int64(1) << (omega + 1))
    for z in range(nz):
        nb = min(z, P)  # P*_z
        spec = 3 * full  # first spectral component
        ncomp = spec + nb
        a_lim, r_lim, phi, psi = tab[z, 0], tab[z, 1], tab[z, 2], tab[z, 3]
        weights[:] = 0
        if nb > 0:  # default initialisation (4.6.3.2)
            weights[spec] = (np.int64(7) << omega) >> 3
            for i in range(1, nb):
                weights[spec + i] = weights[spec + i - 1] >> 3
        for y in range(ny):
            for x in range(nx):
                t = y * nx + x
                if t == 0:
                    stilde = 2 * s[z - 1, 0, 0] if (P > 0 and z > 0) else 2 * smid
                    shat = stilde >> 1
                    top = min(shat - smin, smax - shat)
                    if decode:
                        d = delta[z, 0, 0]
                        if d > (shat - smin) + (smax - shat):
                            return z * ny * nx
                        q = _unmap(d, top, shat - smin <= smax - shat, stilde)
                        s[z, 0, 0] = shat + q
                    else:
                        delta[z, 0, 0] = _map(s[z, 0, 0] - shat, top, stilde)
                    rep[z, 0, 0] = s[z, 0, 0]
                    continue
                sigma = _local_sum(rep, z, y, x, nx, kind, smid)
                if full:
                    if y > 0:
                        north = 4 * rep[z, y - 1, x] - sigma
                        u[0] = north
                        u[1] = 4 * rep[z, y, x - 1] - sigma if x > 0 else north
                        u[2] = 4 * rep[z, y - 1, x - 1] - sigma if x > 0 else north
                    else:
                        u[0] = 0
                        u[1] = 0
                        u[2] = 0
                for i in range(nb):
                    u[spec + i] = dc[z - 1 - i, y, x]
                dhat = np.int64(0)
                for j in range(ncomp):
                    dhat += weights[j] * u[j]
                wide = _mod_star(dhat + ((sigma - 4 * smid) << omega), R)
                shigh = min(max(wide + (np.int64(smid) << (omega + 2)) + (np.int64(1) << (omega + 1)), lo), hi)
                stilde = shigh >> (omega + 1)
                shat = stilde >> 1
                m = np.int64(0)
                if fid == 1:
                    m = a_lim
                elif fid >= 2:
                    m = (r_lim * abs(shat)) >> D
                    if fid == 3:
                        m = min(m, a_lim)
                step = 2 * m + 1
                below = (shat - smin + m) // step
                above = (smax - shat + m) // step
                if decode:
                    d = delta[z, y, x]
                    if d > below + above:
                        return z * ny * nx + t
                    q = _unmap(d, min(below, above), below <= above, stilde)
                    sprime = min(max(shat + q * step, smin), smax)
                    s[z, y, x] = sprime
                else:
                    res = s[z, y, x] - shat
                    q = (abs(res) + m) // step
                    if res < 0:
                        q = -q
                    delta[z, y, x] = _map(q, min(below, above), stilde)
                    sprime = s[z, y, x] if m == 0 else min(max(shat + q * step, smin), smax)
                if phi == 0 and psi == 0:
                    srep = sprime
                else:
                    sq = 1 if q > 0 else (-1 if q < 0 else 0)
                    num = (4 * ((np.int64(1) << theta) - phi) * ((sprime << omega) - ((sq * m * psi) << (omega - theta)))
                           + phi * shigh - (phi << (omega + 1)))
                    srep = ((num >> (omega + theta + 1)) + 1) >> 1
                rep[z, y, x] = srep
                dc[z, y, x] = 4 * srep - sigma
                err = 2 * sprime - stilde
                rho = min(max(nu_min + (t - nx) // t_inc, nu_min), nu_max) + D - omega
                for j in range(ncomp):
                    v = u[j] if err >= 0 else -u[j]
                    sh = rho + tab[z, 4 + j]
                    v = v >> sh if sh >= 0 else v << -sh
                    weights[j] = min(max(weights[j] + ((v + 1) >> 1), wmin), wmax)
    return -1


@kernel
def _map(q, top, stilde):  # type: ignore[no-untyped-def]
    """The mapped quantizer index delta of quantizer index ``q`` (4.11)."""
    aq = abs(q)
    if aq > top:
        return aq + top
    signed_q = -q if stilde & 1 else q
    if 0 <= signed_q <= top:
        return 2 * aq
    return 2 * aq - 1


@kernel
def _unmap(d, top, up, stilde):  # type: ignore[no-untyped-def]
    """Inverse of :func:`_map`; ``up`` says the open side is above the prediction."""
    if d > 2 * top:
        return d - top if up else top - d
    parity = -1 if stilde & 1 else 1
    if d & 1:
        return -parity * ((d + 1) >> 1)
    return parity * (d >> 1)
