"""Framing: round trips, error detection, resynchronisation, sizes."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware_bridge.framing import (
    FLAG_AUTH,
    MAC_LEN,
    MAX_WIRE_FRAME,
    Frame,
    FrameDecoder,
    FrameError,
    crc16,
    decode,
    encode,
    wire_size,
)
from firmware_bridge.messages import MAX_BODY

bodies = st.binary(min_size=0, max_size=MAX_BODY)


@st.composite
def frames(draw: st.DrawFn) -> Frame:
    body = draw(bodies)
    seq = draw(st.integers(0, 0xFFFF))
    mtype = draw(st.integers(0, 0xFF))
    if draw(st.booleans()):
        counter = draw(st.integers(0, 2**64 - 1))
        return Frame(
            mtype, seq, body, FLAG_AUTH, counter, draw(st.binary(min_size=16, max_size=16))
        )
    return Frame(mtype, seq, body)


def test_crc_is_ccitt_false_check_value() -> None:
    # The catalogued check value of CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF).
    assert crc16(b"123456789") == 0x29B1


@given(frames())
def test_any_frame_round_trips(frame: Frame) -> None:
    wire = encode(frame)
    assert wire.endswith(b"\x00") and b"\x00" not in wire[:-1]
    assert decode(wire[:-1]) == frame
    assert len(wire) <= wire_size(len(frame.body), frame.authenticated)


@given(st.lists(frames(), max_size=8), st.integers(1, 64))
def test_stream_of_frames_in_any_chunking(frames_: list[Frame], chunk: int) -> None:
    stream = b"".join(encode(f) for f in frames_)
    dec = FrameDecoder()
    got = []
    for i in range(0, len(stream), chunk):
        got += dec.feed(stream[i : i + chunk])
    assert got == frames_
    assert dec.bad_frames == 0


def _all_single_bit_errors_detected(frame: Frame) -> int:
    """Flip every bit of the wire frame (delimiter excluded); each must be refused."""
    wire = bytearray(encode(frame))
    n = 0
    for i in range(len(wire) - 1):
        for b in range(8):
            wire[i] ^= 1 << b
            dec = FrameDecoder()
            # A flip that makes a 0x00 splits the frame: every piece must be refused.
            assert dec.feed(bytes(wire)) == [], (i, b)
            assert dec.bad_frames >= 1
            wire[i] ^= 1 << b
            n += 1
    return n


@pytest.mark.parametrize(
    "frame",
    [
        Frame(0x01, 0, b""),
        Frame(0x80, 0xFFFF, bytes(range(256)) * 2),
        Frame(0x05, 7, b"\x00" * 300),
        Frame(0x02, 1, b"\x01", FLAG_AUTH, 2**64 - 1, b"\xaa" * MAC_LEN),
    ],
)
def test_every_single_bit_error_is_detected_exhaustively(frame: Frame) -> None:
    assert _all_single_bit_errors_detected(frame) == 8 * (len(encode(frame)) - 1)


@settings(max_examples=40, deadline=None)
@given(frames().filter(lambda f: len(f.body) < 200), st.data())
def test_single_bit_errors_detected_random(frame: Frame, data: st.DataObject) -> None:
    wire = bytearray(encode(frame))
    bit = data.draw(st.integers(0, 8 * (len(wire) - 1) - 1))
    wire[bit // 8] ^= 1 << (bit % 8)
    dec = FrameDecoder()
    assert dec.feed(bytes(wire)) == []
    assert dec.bad_frames >= 1


@settings(max_examples=300)
@given(st.binary(max_size=3000))
def test_random_bytes_never_crash_the_decoder(junk: bytes) -> None:
    dec = FrameDecoder()
    for frame in dec.feed(junk):  # a valid frame by chance is allowed, a crash is not
        assert isinstance(frame, Frame)
    try:
        decode(junk.replace(b"\x00", b"\x01"))
    except FrameError as exc:
        assert exc.reason in {"cobs", "short", "crc", "version", "flags", "length", "oversize"}


@given(st.binary(max_size=500), frames())
def test_resynchronises_after_garbage(junk: bytes, frame: Frame) -> None:
    dec = FrameDecoder()
    got = dec.feed(junk + b"\x00" + encode(frame))
    assert got[-1] == frame
    assert dec.bytes_discarded <= len(junk) + 1


def test_overlong_run_without_delimiter_is_discarded_and_counted() -> None:
    dec = FrameDecoder()
    good = Frame(0x01, 3, b"")
    assert dec.feed(b"\x07" * (3 * MAX_WIRE_FRAME)) == []
    assert dec.feed(b"\x07\x00" + encode(good)) == [good]
    assert dec.bad["oversize"] == 1
    assert dec.bytes_discarded == 3 * MAX_WIRE_FRAME + 2


def test_header_checks_name_the_problem() -> None:
    ok = Frame(0x01, 1, b"abc").pack()

    def recrc(raw: bytes) -> bytes:
        return raw + crc16(raw).to_bytes(2, "big")

    with pytest.raises(FrameError, match="version 2"):
        Frame.unpack(recrc(b"\x02" + ok[1:-2]))
    with pytest.raises(FrameError, match="reserved flag"):
        Frame.unpack(recrc(ok[:2] + b"\x80" + ok[3:-2]))
    with pytest.raises(FrameError, match="header implies"):
        Frame.unpack(recrc(ok[:-3]))
    with pytest.raises(FrameError, match="maximum body"):
        Frame.unpack(recrc(ok[:5] + b"\xff\xff" + ok[7:-2]))
    with pytest.raises(ValueError, match="maximum"):
        Frame(0x80, 0, bytes(MAX_BODY + 1))
