"""Messages: symmetric pack/unpack, strict parsing, one declaration table."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from firmware_bridge.messages import (
    MAX_BODY,
    MESSAGE_CLASSES,
    Abort,
    Ack,
    Data,
    Direction,
    Event,
    EventCode,
    Health,
    Message,
    MessageError,
    Mode,
    MsgType,
    Ping,
    RequestProduct,
    ResultCode,
    SetConfig,
    SetMode,
    Severity,
    StartCapture,
    StopCapture,
    unpack_message,
)

text = st.text(st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)))
short_text = st.text(
    st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)), max_size=12
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | short_text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(short_text, inner, max_size=3),
    max_leaves=10,
)

messages = st.one_of(
    st.just(Ping()),
    st.just(StopCapture()),
    st.just(Abort()),
    st.sampled_from(Mode).map(SetMode),
    st.integers(0, 2**32 - 1).map(StartCapture),
    st.builds(
        SetConfig,
        text.filter(lambda k: 1 <= len(k.encode()) <= 255),
        text.filter(lambda v: len(v.encode()) <= 700),
    ),
    text.filter(lambda n: 1 <= len(n.encode()) <= 255).map(RequestProduct),
    st.builds(Ack, st.integers(0, 0xFFFF), st.integers(0, 0xFF), st.sampled_from(ResultCode)),
    # Bounded so the JSON stays within MAX_BODY (oversize is tested apart).
    st.dictionaries(short_text, json_values, max_size=4).map(Health),
    st.builds(
        Event,
        st.sampled_from(EventCode),
        text.filter(lambda t: len(t.encode()) <= 500),
        st.sampled_from(Severity),
    ),
    st.binary(min_size=1, max_size=MAX_BODY).map(Data),
)


@given(messages)
def test_pack_unpack_are_inverse(msg: Message) -> None:
    body = msg.pack()
    assert len(body) <= MAX_BODY
    assert unpack_message(msg.TYPE, body) == msg
    assert unpack_message(msg.TYPE, body).pack() == body


@given(st.sampled_from(MsgType), st.binary(max_size=64))
def test_random_bodies_parse_or_raise_message_error(mtype: MsgType, body: bytes) -> None:
    try:
        msg = unpack_message(mtype, body)
    except MessageError:
        return
    assert msg.pack() == body  # whatever parses re-packs to the same bytes: no ambiguity


@pytest.mark.parametrize(
    ("mtype", "body", "match"),
    [
        (MsgType.PING, b"\x00", "must be 0 bytes"),
        (MsgType.SET_MODE, b"\x09", "mode 9 is not declared"),
        (MsgType.START_CAPTURE, b"\x00\x00\x01", "must be 4 bytes"),
        (MsgType.SET_CONFIG, b"\x00\x00\x00\x00", "key is empty"),
        (MsgType.SET_CONFIG, b"\x01a\x00\x05xy", "must be 9 bytes, got 6"),
        (MsgType.SET_CONFIG, b"\x01\xff\x00\x00", "not valid UTF-8"),
        (MsgType.REQUEST_PRODUCT, b"", "1-255"),
        (MsgType.REQUEST_PRODUCT, b"a\x00b", "NUL"),
        (MsgType.ACK, b"\x00\x01\x02\x63", "result code 99"),
        (MsgType.HEALTH, b"[1]", "JSON object"),
        (MsgType.EVENT, b"\x7f\x7f\x00", "event code 32639"),
        (MsgType.DATA, b"", "empty"),
        (0x3E, b"", "message type 62 is not declared"),
    ],
)
def test_strict_unpack_names_the_problem(mtype: int, body: bytes, match: str) -> None:
    with pytest.raises(MessageError, match=match):
        unpack_message(mtype, body)


def test_pack_refuses_what_does_not_fit() -> None:
    with pytest.raises(MessageError):
        Data(bytes(MAX_BODY + 1)).pack()
    with pytest.raises(MessageError):
        SetConfig("", "x").pack()
    with pytest.raises(MessageError):
        StartCapture(2**32).pack()
    with pytest.raises(MessageError, match="HEALTH body is 1032 bytes"):
        Health({"x": "y" * 1024}).pack()


def test_declarations_are_complete_and_ranged() -> None:
    assert set(MESSAGE_CLASSES) == set(MsgType)
    for t in MsgType:
        lo, hi = {Direction.TC: (0x01, 0x3F), Direction.TM: (0x40, 0x7F)}.get(
            t.direction, (0x80, 0xBF)
        )
        assert lo <= t <= hi, t
        assert t.summary
    assert Event(EventCode.AUTH_FAILED).severity is Severity.WARNING
