"""CCSDS 123 codec: round trips on random cubes and settings, the near-lossless bound on every
sample, and damaged streams (truncated, flipped, lying headers) refused with the place."""

from __future__ import annotations

import random
import tracemalloc

import numpy as np
import pytest
from fuzzing import mutate
from hypothesis import given, settings
from hypothesis import strategies as st

from onboard.compress.ccsds123 import Ccsds123Error, CorruptStreamError, Params, decode, encode
from onboard.compress.ccsds123.params import LOCAL_SUMS


def _field(rng: np.random.Generator, shape: tuple[int, int, int], lo: int, hi: int) -> np.ndarray:
    """Spatially and spectrally correlated integers in [lo, hi] with a few extreme samples."""
    nz, ny, nx = shape
    base = rng.normal(0, 1, (ny, nx)).cumsum(0).cumsum(1)
    x = base[None] * rng.uniform(0.5, 1.5, (nz, 1, 1)) + rng.normal(0, 0.5, shape)
    x = (x - x.min()) / (np.ptp(x) + 1e-9)
    out = np.round(lo + (hi - lo) * x).astype(np.int64)
    out.flat[rng.integers(0, out.size, 3)] = [lo, hi, lo]
    return out


@st.composite
def _case(draw: st.DrawFn) -> tuple[np.ndarray, Params, int, bool]:
    nz, ny, nx = draw(st.integers(1, 5)), draw(st.integers(1, 6)), draw(st.integers(1, 7))
    D = draw(st.integers(2, 18))
    signed = draw(st.booleans())
    lo, hi = (-(1 << (D - 1)), (1 << (D - 1)) - 1) if signed else (0, (1 << D) - 1)
    cube = _field(np.random.default_rng(draw(st.integers(0, 2**32 - 1))), (nz, ny, nx), lo, hi)
    near = draw(st.booleans()) and D >= 3
    top = (1 << min(D - 1, 16)) - 1
    abs_err = draw(st.none() | st.integers(0, min(top, 9)) | st.lists(st.integers(0, min(top, 9)), min_size=nz, max_size=nz).map(tuple)) if near else None
    rel_err = draw(st.none() | st.integers(0, top)) if near else None
    theta = draw(st.integers(0, 4))
    order = draw(st.sampled_from(["BSQ", "BIL", "BIP", "BI"]))
    params = Params(
        P=draw(st.integers(0, 15)), full=nx > 1 and draw(st.booleans()),
        local_sum=draw(st.sampled_from(LOCAL_SUMS if nx > 1 else LOCAL_SUMS[2:])),
        omega=(omega := draw(st.integers(4, 19))), register_size=draw(st.integers(max(32, D + omega + 2), 64)),
        t_inc=1 << draw(st.integers(4, 11)), nu_min=(nu := draw(st.integers(-6, 9))), nu_max=draw(st.integers(nu, 9)),
        absolute_error=abs_err, relative_error=rel_err, theta=theta,
        phi=draw(st.integers(0, (1 << theta) - 1)),
        psi=draw(st.integers(0, (1 << theta) - 1)) if (abs_err is not None or rel_err is not None) else 0,
        order=order, interleave=draw(st.integers(1, nz)), output_word_size=draw(st.integers(1, 8)),
        u_max=draw(st.integers(8, 32)), gamma0=(g0 := draw(st.integers(1, 8))),
        gamma_star=draw(st.integers(max(4, g0 + 1), 11)), k=draw(st.integers(0, min(D - 2, 14))),
    )
    return cube, params, D, signed


def _bound(cube: np.ndarray, p: Params, D: int) -> np.ndarray:
    """Largest error allowed per band: a_z, and r_z |s_hat| / 2^D at the largest |s_hat|."""
    nz = cube.shape[0]
    bound = np.full(nz, 1 << 40)
    if p.absolute_error is not None:
        bound = np.minimum(bound, np.broadcast_to(np.asarray(p.absolute_error), (nz,)))
    if p.relative_error is not None:
        bound = np.minimum(bound, (int(p.relative_error) * (1 << D)) >> D)
    return bound if not p.lossless else np.zeros(nz, dtype=int)


@settings(max_examples=120, deadline=None)
@given(_case())
def test_round_trip_is_exact_or_within_the_limit_on_every_sample(case: tuple[np.ndarray, Params, int, bool]) -> None:
    cube, params, D, signed = case
    stream = encode(cube, params, dynamic_range=D, signed=signed)
    got = decode(stream)
    assert got.cube.shape == cube.shape
    err = np.abs(got.cube.astype(np.int64) - cube)
    assert (err <= _bound(cube, params, D)[:, None, None]).all()
    assert len(stream) % params.output_word_size == 0


def test_near_lossless_holds_the_absolute_limit_and_codes_smaller() -> None:
    cube = _field(np.random.default_rng(3), (12, 32, 32), 0, 4095)
    lossless = encode(cube, Params())
    for a in (1, 4, 16):
        stream = encode(cube, Params(absolute_error=a))
        err = np.abs(decode(stream).cube.astype(int) - cube)
        assert err.max() == a  # every sample within a, and the limit used
        assert len(stream) < len(lossless)
    per_band = tuple(range(12))
    err = np.abs(decode(encode(cube, Params(absolute_error=per_band))).cube.astype(int) - cube)
    assert (err.max(axis=(1, 2)) <= np.array(per_band)).all()


def test_default_dynamic_range_is_the_fewest_bits() -> None:
    cube = np.full((2, 3, 4), 700, dtype=np.uint16)
    cube[0, 0, 0] = 1023
    assert decode(encode(cube)).settings.D == 10
    flat = np.zeros((2, 3, 4), dtype=np.uint16)  # a blank frame with a near-lossless setting
    got = decode(encode(flat, Params(absolute_error=9)))
    assert got.settings.D == 5 and not got.cube.any()
    signed = np.array([[[-3, 2]]], dtype=np.int16)
    got = decode(encode(signed, Params(full=False)))
    assert got.settings.D == 3 and got.cube.dtype == np.int8 and (got.cube == signed).all()


@pytest.mark.parametrize("bad", [dict(P=16), dict(omega=3), dict(register_size=30), dict(t_inc=100),
                                 dict(nu_min=4, nu_max=3), dict(u_max=7), dict(gamma0=5, gamma_star=5),
                                 dict(k=15), dict(absolute_error=1 << 16), dict(theta=2, phi=4),
                                 dict(psi=1, theta=1), dict(order="BIS"), dict(absolute_error=(1, 2))])
def test_settings_outside_the_standard_are_refused(bad: dict) -> None:
    cube = np.arange(3 * 4 * 5, dtype=np.uint16).reshape(3, 4, 5)
    with pytest.raises(Ccsds123Error):
        encode(cube, Params(**bad))


def test_samples_outside_the_stated_range_are_refused() -> None:
    with pytest.raises(Ccsds123Error, match="do not fit 8-bit"):
        encode(np.full((1, 2, 2), 300, dtype=np.uint16), dynamic_range=8)
    with pytest.raises(Ccsds123Error, match="integer cube"):
        encode(np.zeros((2, 2, 2), dtype=np.float32))


@pytest.fixture(scope="module")
def stream() -> bytes:
    return encode(_field(np.random.default_rng(1), (6, 10, 12), 0, 65535), Params(output_word_size=2))


def test_every_truncation_is_refused_with_the_place(stream: bytes) -> None:
    head = 19
    for cut in range(len(stream)):
        with pytest.raises(CorruptStreamError) as info:
            decode(stream[:cut])
        if cut > head + 12 * 6:  # past the header and the bound on the least a body takes
            assert "sample" in str(info.value)


def test_truncation_names_the_sample_where_the_bits_ran_out(stream: bytes) -> None:
    with pytest.raises(CorruptStreamError, match=r"bits ran out at sample \d+ \(band \d, line \d+, column \d+\)"):
        decode(stream[: len(stream) * 3 // 4])


def test_extra_or_dirty_fill_bytes_are_refused(stream: bytes) -> None:
    with pytest.raises(CorruptStreamError, match="samples end at byte"):
        decode(stream + b"\x00\x00")
    padded = encode(np.zeros((1, 1, 2), dtype=np.uint8), Params(output_word_size=8))
    with pytest.raises(CorruptStreamError, match="fill bits"):
        decode(padded[:-1] + b"\x01")


def test_damaged_streams_raise_only_the_codecs_error(stream: bytes) -> None:
    """Seeded byte edits anywhere: a clear refusal or a decoded cube of the declared shape;
    an entropy-coded body has no redundancy, so some damage decodes to wrong values (the
    product's checksum catches those), but never another exception, never a hang."""
    rng = random.Random(16)
    refused = 0
    for _ in range(400):
        blob = mutate(stream, rng, edits=3, insert_max=4, delete_max=4)
        try:
            got = decode(blob)
        except CorruptStreamError:
            refused += 1
            continue
        s = got.settings
        assert got.cube.shape == (s.nz, s.ny, s.nx)
    assert refused > 300


def test_a_header_declaring_a_huge_image_is_refused_before_allocating(stream: bytes) -> None:
    huge = bytearray(stream)
    huge[1:7] = b"\xff\xff" * 3  # 65535^3 samples
    tracemalloc.start()
    with pytest.raises(CorruptStreamError, match="over the limit"):
        decode(bytes(huge))
    with pytest.raises(CorruptStreamError, match="need at least"):
        decode(bytes(huge), max_samples=1 << 50)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 1 << 24  # the header declared 2 PiB of samples


def test_headers_of_other_coders_are_refused(stream: bytes) -> None:
    hybrid = bytearray(stream)
    hybrid[10] |= 0b0000_0010  # entropy coder type 1: hybrid
    with pytest.raises(CorruptStreamError, match="hybrid entropy coder"):
        decode(bytes(hybrid))
    reserved = bytearray(stream)
    reserved[7] |= 0b0100_0000
    with pytest.raises(CorruptStreamError, match="reserved bits"):
        decode(bytes(reserved))
