"""Frames at their exact limits and hostile frames that pass the earlier checks (issue 22):
golden bytes per frame layout, a short frame with a valid CRC, the maximum body, the wire
limit, reserved flags, the decoder's counting."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
from cobs import cobs

from firmware_bridge import framing
from firmware_bridge.framing import (
    COUNTER,
    CRC_LEN,
    FLAG_AUTH,
    HEADER,
    MAC_LEN,
    MAX_FRAME,
    MAX_WIRE_FRAME,
    Frame,
    FrameDecoder,
    FrameError,
    crc16,
    decode,
    encode,
    wire_size,
)
from firmware_bridge.messages import MAX_BODY, Ping, StartCapture

GOLDEN = json.loads((Path(__file__).parent / "data" / "golden" / "frames.json").read_text())


def golden_frames() -> dict[str, Frame]:
    """The frames the golden file pins: one per layout (plain, authenticated, empty, odd bytes)."""
    return {
        "ping_seq1": Frame.of(Ping(), 1),
        "start_capture_seq_max": Frame.of(StartCapture(3), 0xFFFF),
        "auth_start_capture": Frame(0x03, 0x1234, StartCapture(0x01020304).pack(), FLAG_AUTH,
                                    counter=0x0102030405060708, mac=bytes(range(16))),
        "data_with_zeros": Frame(0x80, 7, b"\x00\x01\x00\xff" * 3),
    }


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_frame_bytes_are_golden(name: str) -> None:
    frame = golden_frames()[name]
    assert frame.pack().hex() == GOLDEN[name]["frame"]
    assert encode(frame).hex() == GOLDEN[name]["wire"]
    assert decode(bytes.fromhex(GOLDEN[name]["wire"])[:-1]) == frame
    assert Frame.unpack(bytes.fromhex(GOLDEN[name]["frame"])) == frame


def test_layout_constants() -> None:
    assert (HEADER.size, COUNTER.size, MAC_LEN, CRC_LEN, MAX_BODY) == (7, 8, 16, 2, 1024)
    assert (framing.PROTOCOL_VERSION, framing.DELIMITER, FLAG_AUTH, framing.KNOWN_FLAGS) == (1, b"\x00", 1, 1)
    assert MAX_FRAME == 7 + 8 + 1024 + 16 + 2
    assert MAX_WIRE_FRAME == MAX_FRAME + 5 + 1


def _with_crc(data: bytes) -> bytes:
    return data + struct.pack(">H", crc16(data))


@pytest.mark.parametrize("n", range(0, HEADER.size + CRC_LEN))
def test_short_frame_with_a_valid_crc_is_refused_as_short(n: int) -> None:
    """0-8 bytes whose last two are a valid CRC of the rest: "short", never struct.error."""
    data = _with_crc(bytes(range(1, n - 1))) if n >= CRC_LEN else bytes(n)
    with pytest.raises(FrameError) as err:
        Frame.unpack(data)
    assert err.value.reason == "short" and f"{n} bytes" in str(err.value)
    dec = FrameDecoder()
    assert dec.feed(cobs.encode(data) + b"\x00") == [] if data else True
    if data:
        assert dec.bad == {"short": 1} and dec.bytes_discarded == len(cobs.encode(data)) + 1


def test_nine_bytes_is_the_smallest_frame() -> None:
    data = _with_crc(HEADER.pack(1, 0x01, 0, 5, 0))
    assert len(data) == 9 and Frame.unpack(data) == Frame(0x01, 5)


@pytest.mark.parametrize("auth", [False, True])
def test_maximum_body_round_trips_and_one_more_is_refused(auth: bool) -> None:
    extra = {"flags": FLAG_AUTH, "counter": 2**64 - 1, "mac": b"\xff" * MAC_LEN} if auth else {}
    body = bytes((i % 255) + 1 for i in range(MAX_BODY))  # no 0x00: COBS's worst case
    frame = Frame(0x80, 1, body, **extra)
    wire = encode(frame)
    assert len(wire) == wire_size(MAX_BODY, auth)
    assert len(wire) - 1 <= MAX_WIRE_FRAME
    dec = FrameDecoder()
    assert dec.feed(wire) == [frame] and dec.frames == 1 and not dec.bad
    with pytest.raises(ValueError, match="maximum is 1024"):
        Frame(0x80, 1, body + b"\x01", **extra)
    # a hand-built frame whose header declares MAX_BODY + 1, with a valid CRC
    head = HEADER.pack(1, 0x80, extra.get("flags", 0), 1, MAX_BODY + 1)
    data = _with_crc(head + (COUNTER.pack(1) if auth else b"") + body + b"\x01" + (b"m" * MAC_LEN if auth else b""))
    with pytest.raises(FrameError) as err:
        Frame.unpack(data)
    assert err.value.reason == "oversize"


def test_worst_case_wire_frame_is_exactly_accepted() -> None:
    """The largest frame COBS can make is MAX_WIRE_FRAME - 1 bytes between delimiters; a chunk
    of MAX_WIRE_FRAME bytes still reaches COBS, one more is refused unread."""
    body = bytes((i % 255) + 1 for i in range(MAX_BODY))
    frame = Frame(0x80, 1, body, FLAG_AUTH, counter=2**64 - 1, mac=b"\xff" * MAC_LEN)
    assert len(encode(frame)) - 1 == MAX_WIRE_FRAME - 1 == MAX_FRAME + 5
    for size, reason in ((MAX_WIRE_FRAME, "cobs"), (MAX_WIRE_FRAME + 1, "oversize")):
        chunk = b"\x01" * size  # 0x01 codes: valid COBS, but not a frame
        with pytest.raises(FrameError) as err:
            decode(chunk)
        assert err.value.reason != "oversize" if reason == "cobs" else err.value.reason == "oversize"


def test_decoder_overflow_boundary() -> None:
    """A run of exactly MAX_WIRE_FRAME bytes is still one (bad) frame; one byte more is an
    overflow, discarded up to the next delimiter and counted once."""
    dec = FrameDecoder()
    dec.feed(b"\x01" * MAX_WIRE_FRAME + b"\x00")
    assert "oversize" not in dec.bad and dec.bad_frames == 1
    assert dec.bytes_discarded == MAX_WIRE_FRAME + 1
    dec = FrameDecoder()
    dec.feed(b"\x01" * (MAX_WIRE_FRAME + 1))
    dec.feed(b"\x01" * 10 + b"\x00")
    assert dec.bad == {"oversize": 1} and dec.bytes_discarded == MAX_WIRE_FRAME + 1 + 10 + 1
    good = Frame.of(Ping(), 2)
    assert dec.feed(encode(good)) == [good] and dec.last_error is not None


def test_empty_chunks_are_sync_not_errors() -> None:
    dec = FrameDecoder()
    frame = Frame.of(Ping(), 3)
    assert dec.feed(b"\x00\x00" + encode(frame) + b"\x00") == [frame]
    assert dec.bad_frames == 0 and dec.bytes_discarded == 0 and dec.last_error is None


@pytest.mark.parametrize("flags", [0x02, 0x80, 0xFF, 0x03])
def test_reserved_flag_bits_are_refused(flags: int) -> None:
    data = _with_crc(HEADER.pack(1, 0x01, flags, 1, 0))
    with pytest.raises(FrameError) as err:
        Frame.unpack(data)
    assert err.value.reason == "flags"


@pytest.mark.parametrize("version", [0, 2, 255])
def test_other_protocol_versions_are_refused(version: int) -> None:
    with pytest.raises(FrameError) as err:
        Frame.unpack(_with_crc(HEADER.pack(version, 0x01, 0, 1, 0)))
    assert err.value.reason == "version"


def test_length_must_match_exactly() -> None:
    good = Frame(0x80, 1, b"abc", FLAG_AUTH, counter=5, mac=b"m" * 16).pack()[:-CRC_LEN]
    for data in (good[:-1], good + b"x"):
        with pytest.raises(FrameError) as err:
            Frame.unpack(_with_crc(data))
        assert err.value.reason == "length"
    back = Frame.unpack(_with_crc(good))
    assert (back.counter, back.mac, back.body) == (5, b"m" * 16, b"abc")


def test_frame_invariants() -> None:
    with pytest.raises(ValueError, match="u16"):
        Frame(1, 0x10000)
    with pytest.raises(ValueError, match="u16"):
        Frame(1, -1)
    assert Frame(1, 0xFFFF).seq == 0xFFFF
    with pytest.raises(ValueError, match="u64 counter"):
        Frame(1, 1, flags=FLAG_AUTH, counter=2**64, mac=b"m" * 16)
    with pytest.raises(ValueError, match="u64 counter"):
        Frame(1, 1, flags=FLAG_AUTH, counter=-1, mac=b"m" * 16)
    with pytest.raises(ValueError, match="u64 counter"):
        Frame(1, 1, flags=FLAG_AUTH, mac=b"m" * 16)
    assert Frame(1, 1, flags=FLAG_AUTH, counter=0, mac=b"m" * 16).counter == 0
    with pytest.raises(ValueError, match="16-byte MAC"):
        Frame(1, 1, flags=FLAG_AUTH, counter=1, mac=b"m" * 15)
    with pytest.raises(ValueError, match="16-byte MAC"):
        Frame(1, 1, flags=FLAG_AUTH, counter=1)
    with pytest.raises(ValueError, match="only carried"):
        Frame(1, 1, counter=1)
    with pytest.raises(ValueError, match="only carried"):
        Frame(1, 1, mac=b"m" * 16)


def test_signed_part_is_header_counter_body() -> None:
    f = Frame(0x03, 9, b"\x00\x00\x00\x01", FLAG_AUTH, counter=7, mac=b"M" * 16)
    assert f.signed_part() == HEADER.pack(1, 3, 1, 9, 4) + COUNTER.pack(7) + b"\x00\x00\x00\x01"
    assert f.pack() == f.signed_part() + b"M" * 16 + struct.pack(">H", crc16(f.signed_part() + b"M" * 16))
    assert Frame.of(Ping(), 4).signed_part() == HEADER.pack(1, 1, 0, 4, 0)


def test_wire_size_small_bodies() -> None:
    assert wire_size(0) == 7 + 2 + 1 + 1
    assert wire_size(0, True) == 7 + 2 + 24 + 1 + 1
    assert wire_size(245) == 254 + 1 + 1  # 254 bytes: one COBS overhead byte
    assert wire_size(246) == 255 + 2 + 1  # 255 bytes: two


def test_crc_check_values() -> None:
    assert crc16(b"123456789") == 0x29B1
    assert crc16(b"") == 0xFFFF


def test_decoder_counts_accumulate() -> None:
    """Counters add up over many frames: frames, bad frames per reason, discarded bytes."""
    dec = FrameDecoder()
    good = [Frame.of(Ping(), i) for i in range(3)]
    assert dec.feed(b"".join(encode(f) for f in good)) == good and dec.frames == 3
    bad = bytearray(good[0].pack())
    bad[-1] ^= 1
    wire = cobs.encode(bytes(bad)) + b"\x00"
    dec.feed(wire + wire)
    assert dec.bad == {"crc": 2} and dec.bytes_discarded == 2 * len(wire)
    assert str(dec.last_error) == "bad frame (crc): CRC-16 mismatch (corrupted in transit)"
    dec.feed(b"\x01" * (MAX_WIRE_FRAME + 1) + b"\x00")
    assert dec.bad == {"crc": 2, "oversize": 1}
    assert dec.bytes_discarded == 2 * len(wire) + MAX_WIRE_FRAME + 1 + 1
    assert str(dec.last_error) == "bad frame (oversize): no delimiter within the maximum frame"


def test_decode_refusals_say_why() -> None:
    with pytest.raises(FrameError, match=rf"^bad frame \(oversize\): {MAX_WIRE_FRAME + 1} bytes between delimiters$"):
        decode(b"\x01" * (MAX_WIRE_FRAME + 1))
    with pytest.raises(FrameError) as err:
        decode(b"\x05\x01")  # a COBS code pointing past the end
    assert err.value.reason == "cobs" and str(err.value).startswith("bad frame (cobs): ")
    assert "None" not in str(err.value) and len(str(err.value)) > len("bad frame (cobs): ")


def test_frame_message_parses_its_body() -> None:
    assert Frame.of(StartCapture(5), 1).message() == StartCapture(5)
    assert Frame.of(Ping(), 1).message() == Ping()
