"""The sample-adaptive entropy coder of CCSDS 123.0-B-2 (standard section 5.4.3).

Each band keeps an accumulator of its past mapped indices; a counter common to all bands
(it depends only on the sample's place t) sets the adaptation rate; each delta becomes a
length-limited Golomb power-of-two codeword. Because a band's statistics depend only on its
own earlier samples, the coder walks any encoding order (BSQ, or band-interleaved with depth M)
from one list of flat indices (:func:`order`), and the encoder and decoder share the
statistics (:func:`_adapt`).

Bits are written most significant first into a zero-filled byte buffer, so runs of zeros
only advance the position.
"""

from __future__ import annotations

import numpy as np

from ._jit import kernel
from .params import Resolved


def order(r: Resolved) -> np.ndarray:
    """Flat indices ``z * Ny * Nx + y * Nx + x`` in the stream's encoding order."""
    idx = np.arange(r.samples, dtype=np.int64).reshape(r.nz, r.ny, r.nx)
    if r.bsq:
        return idx.ravel()
    m = r.interleave
    parts = [idx[z0:z0 + m].transpose(1, 2, 0).reshape(r.ny, -1) for z0 in range(0, r.nz, m)]
    return np.concatenate(parts, axis=1).ravel()


def k_prime(r: Resolved) -> np.ndarray:
    """k'_z: the accumulator initialisation parameter of each band (5.4.3.2.3.2)."""
    k = np.asarray(r.k, dtype=np.int64)
    return np.where(k <= 30 - r.D, k, 2 * k + r.D - 30)


def max_bits(r: Resolved) -> int:
    """The most bits the body can take: D per first sample, at most U_max + D per other."""
    return r.nz * r.D + (r.samples - r.nz) * (r.u_max + r.D)


@kernel
def _counters(n, gamma0, gamma_star):  # type: ignore[no-untyped-def]
    """Gamma(t) for t < n (Gamma(0) unused)."""
    out = np.zeros(max(n, 2), dtype=np.int64)
    out[1] = np.int64(1) << gamma0
    top = (np.int64(1) << gamma_star) - 1
    for t in range(2, n):
        out[t] = (out[t - 1] + 1) >> 1 if out[t - 1] == top else out[t - 1] + 1
    return out


@kernel
def _adapt(acc, kp, prev, t, gam, gamma_star, D):  # type: ignore[no-untyped-def]
    """The accumulator at sample t (t >= 1) from the one before and the previous delta, and the
    codeword parameter k it gives: (accumulator, k)."""
    if t == 1:
        acc = (((np.int64(3) << (kp + 6)) - 49) * gam[1]) >> 7
    elif gam[t - 1] == (np.int64(1) << gamma_star) - 1:
        acc = (acc + prev + 1) >> 1
    else:
        acc = acc + prev
    g = gam[t]
    bound = acc + ((49 * g) >> 7)
    k = 0
    if 2 * g <= bound:
        while k < D - 2 and (g << (k + 1)) <= bound:
            k += 1
    return acc, k


@kernel
def _put(buf, pos, value, n):  # type: ignore[no-untyped-def]
    """Write the ``n`` low bits of ``value`` at bit ``pos``; the new position."""
    while n > 0:
        free = 8 - (pos & 7)
        take = min(free, n)
        bits = (value >> (n - take)) & ((np.int64(1) << take) - 1)
        buf[pos >> 3] |= np.uint8(bits << (free - take))
        pos += take
        n -= take
    return pos


@kernel
def _get(buf, pos, n):  # type: ignore[no-untyped-def]
    """The ``n`` bits at bit ``pos`` (the caller checks they are there)."""
    value = np.int64(0)
    while n > 0:
        avail = 8 - (pos & 7)
        take = min(avail, n)
        bits = (np.int64(buf[pos >> 3]) >> (avail - take)) & ((np.int64(1) << take) - 1)
        value = (value << take) | bits
        pos += take
        n -= take
    return value


@kernel
def encode(delta, seq, kp, D, u_max, gamma0, gamma_star, buf, pos):  # type: ignore[no-untyped-def]
    """Code ``delta`` (``[z, t]``) in the order ``seq`` into ``buf`` from bit ``pos``; the end
    position."""
    nz, nt = delta.shape
    gam = _counters(nt, gamma0, gamma_star)
    acc = np.zeros(nz, dtype=np.int64)
    for n in range(seq.shape[0]):
        z, t = divmod(seq[n], nt)
        d = delta[z, t]
        if t == 0:
            pos = _put(buf, pos, d, D)
            continue
        acc[z], k = _adapt(acc[z], kp[z], delta[z, t - 1], t, gam, gamma_star, D)
        zeros = d >> k
        if zeros < u_max:
            pos = _put(buf, pos + zeros, (np.int64(1) << k) | (d & ((np.int64(1) << k) - 1)), k + 1)
        else:
            pos = _put(buf, pos + u_max, d, D)
    return pos


@kernel
def decode(buf, nbits, pos, seq, kp, D, u_max, gamma0, gamma_star, delta):  # type: ignore[no-untyped-def]
    """Decode into ``delta`` (``[z, t]``) in the order ``seq`` from bit ``pos`` of the first
    ``nbits``: (end position, -1) or (position, n) where the n-th sample ran out of bits."""
    nz, nt = delta.shape
    gam = _counters(nt, gamma0, gamma_star)
    acc = np.zeros(nz, dtype=np.int64)
    for n in range(seq.shape[0]):
        z, t = divmod(seq[n], nt)
        if t == 0:
            if pos + D > nbits:
                return pos, n
            delta[z, 0] = _get(buf, pos, D)
            pos += D
            continue
        acc[z], k = _adapt(acc[z], kp[z], delta[z, t - 1], t, gam, gamma_star, D)
        zeros = 0
        while True:
            if pos >= nbits:
                return pos, n
            if (buf[pos >> 3] >> (7 - (pos & 7))) & 1:
                break
            zeros += 1
            pos += 1
            if zeros == u_max:
                break
        if zeros == u_max:
            if pos + D > nbits:
                return pos, n
            delta[z, t] = _get(buf, pos, D)
            pos += D
        else:
            pos += 1
            if pos + k > nbits:
                return pos, n
            delta[z, t] = (np.int64(zeros) << k) | _get(buf, pos, k)
            pos += k
    return pos, -1
