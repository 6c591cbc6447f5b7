"""Messages at their exact limits and hostile bodies that pass the earlier checks (issue 22):
golden bytes per message type, every truncation of SET_CONFIG, the 1-255 limits, MAX_BODY."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from firmware_bridge.messages import (
    MAX_BODY,
    Abort,
    Ack,
    Data,
    Event,
    EventCode,
    Health,
    Message,
    MessageError,
    Mode,
    MsgType,
    Ping,
    PoseState,
    RequestArea,
    RequestProduct,
    ResultCode,
    SetConfig,
    SetMode,
    SetPasses,
    Severity,
    StartCapture,
    StopCapture,
    protocol_tables,
    unpack_message,
)

GOLDEN = json.loads((Path(__file__).parent / "data" / "golden" / "messages.json").read_text())


def golden_messages() -> dict[str, Message]:
    """One message per type (two where the layout has a variant), as the golden file pins them."""
    return {
        "ping": Ping(), "stop_capture": StopCapture(), "abort": Abort(),
        "set_mode_safe": SetMode(Mode.SAFE),
        "start_capture": StartCapture(0x01020304),
        "start_capture_max": StartCapture(0xFFFFFFFF),
        "set_config": SetConfig("run.deadline_s", "1.5"),
        "set_config_utf8": SetConfig("clé", "größe"),
        "request_product": RequestProduct("residue_00000007"),
        "request_area": RequestArea(-123456789, -1800000000, 0, 1800000000, ("cube",), 0, 0, 0xFFFF),
        "set_passes": SetPasses(((1796724000, 1796724570, 9600), (1796730000, 1796730600, 115200))),
        # body from struct.pack(">Q13d", ...) by hand: a point on the equator 500 km up, heading east
        "pose": PoseState(1796673600000000, (6378137.0, 0.0, 500000.0), (0.0, 7600.0, -1.5),
                          (1.0, 0.0, 0.0, 0.0), (0.0, -0.0011, 0.0)),
        "ack": Ack(0xBEEF, 0x05, ResultCode.BAD_ARGUMENT),
        "health": Health({"b": [1, 2.5, None], "a": "ok", "z": True}),
        "event": Event(EventCode.SPOOL_EVICTED, "cube_00000003 evicted"),
        "event_severity": Event(EventCode.MODE_CHANGED, "", Severity.ERROR),
        "data": Data(b"\x00\x01\xfe\xff"),
    }


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_message_bytes_are_golden(name: str) -> None:
    msg = golden_messages()[name]
    assert msg.pack().hex() == GOLDEN[name]["body"]
    assert int(msg.TYPE) == GOLDEN[name]["type"]
    assert unpack_message(GOLDEN[name]["type"], bytes.fromhex(GOLDEN[name]["body"])) == msg


def test_golden_covers_every_type() -> None:
    assert {v["type"] for v in GOLDEN.values()} == {int(t) for t in MsgType}


def test_message_type_numbers_and_directions() -> None:
    assert {t.name: (int(t), t.direction.value) for t in MsgType} == {
        "PING": (1, "TC"), "SET_MODE": (2, "TC"), "START_CAPTURE": (3, "TC"), "STOP_CAPTURE": (4, "TC"),
        "SET_CONFIG": (5, "TC"), "REQUEST_PRODUCT": (6, "TC"), "ABORT": (7, "TC"), "SET_PASSES": (8, "TC"),
        "POSE": (9, "TC"), "REQUEST_AREA": (0x0A, "TC"),
        "ACK": (0x40, "TM"),
        "HEALTH": (0x41, "TM"), "EVENT": (0x42, "TM"), "DATA": (0x80, "both")}
    assert [int(r) for r in ResultCode] == list(range(9))
    assert [int(m) for m in Mode] == [0, 1, 2] and [int(s) for s in Severity] == [0, 1, 2]
    assert {e.name: (int(e), e.severity.name) for e in EventCode} == {
        "AUTH_FAILED": (1, "WARNING"), "REPLAY_REFUSED": (2, "WARNING"),
        "UNAUTHENTICATED_REFUSED": (3, "WARNING"), "UNKNOWN_COMMAND": (4, "WARNING"),
        "BAD_ARGUMENT": (5, "WARNING"), "BAD_FRAMES": (6, "WARNING"), "HANDLER_ERROR": (7, "ERROR"),
        "MODE_CHANGED": (0x10, "INFO"), "CAPTURE_STARTED": (0x11, "INFO"), "CAPTURE_STOPPED": (0x12, "INFO"),
        "CONFIG_CHANGED": (0x13, "INFO"), "ABORTED": (0x14, "WARNING"), "SPOOL_EVICTED": (0x20, "WARNING"),
        "PRODUCT_QUEUED": (0x21, "INFO"), "PRODUCT_DELIVERED": (0x22, "INFO"),
        "PASS_PLANNED": (0x23, "INFO"), "AREA_MATCHED": (0x24, "INFO")}


def test_protocol_tables_rows() -> None:
    t = protocol_tables()
    assert "| 0x05 | SET_CONFIG | TC | Set one configuration key to a string value. |" in t
    assert "| 4 | BAD_ARGUMENT | Body malformed or a value out of range; not executed. |" in t
    assert "| 0x0020 | SPOOL_EVICTED | WARNING |" in t and "| 2 | SAFE |" in t
    assert t.endswith("|\n") and t.count("\n\n") == 3


# --- SET_CONFIG: every truncation and the key/value limits --------------------------------------


def test_every_truncation_of_set_config_is_a_message_error() -> None:
    """Each prefix of a valid SET_CONFIG body (and the body plus a byte) raises MessageError,
    never struct.error: the dispatcher has already advanced the counter when it parses."""
    body = SetConfig("run.deadline_s", "1.5").pack()
    for n in range(len(body)):
        with pytest.raises(MessageError):
            SetConfig.unpack(body[:n])
    with pytest.raises(MessageError, match="must be 20 bytes, got 21"):
        SetConfig.unpack(body + b"x")


@pytest.mark.parametrize("klen", [1, 2, 254, 255])
def test_set_config_bodies_ending_right_after_the_key(klen: int) -> None:
    """A body holding the key and 0 or 1 byte of the value length: MessageError."""
    for tail in (b"", b"\x00"):
        body = bytes([klen]) + b"k" * klen + tail
        with pytest.raises(MessageError, match="ends inside the key or value length|at least 4"):
            SetConfig.unpack(body)


def test_smallest_set_config_is_four_bytes() -> None:
    assert SetConfig.unpack(b"\x01a\x00\x00") == SetConfig("a", "")
    with pytest.raises(MessageError, match="3 bytes; at least 4"):
        SetConfig.unpack(b"\x01a\x00")
    with pytest.raises(MessageError, match="key is empty"):
        SetConfig.unpack(b"\x00\x00\x00\x00")


def test_set_config_key_limits() -> None:
    for n in (1, 255):
        msg = SetConfig("k" * n, "v")
        assert SetConfig.unpack(msg.pack()) == msg
    for n in (0, 256):
        with pytest.raises(MessageError, match=f"1-255 UTF-8 bytes, got {n}"):
            SetConfig("k" * n, "v").pack()


def test_set_config_fills_max_body_exactly() -> None:
    value = "v" * (MAX_BODY - 1 - 1 - 2)
    msg = SetConfig("k", value)
    assert len(msg.pack()) == MAX_BODY and SetConfig.unpack(msg.pack()) == msg
    with pytest.raises(MessageError, match="1025 bytes; the maximum is 1024"):
        SetConfig("k", value + "v").pack()


def test_set_config_value_and_key_must_be_utf8_without_nul() -> None:
    with pytest.raises(MessageError, match="config value is not valid UTF-8"):
        SetConfig.unpack(b"\x01a\x00\x01\xff")
    with pytest.raises(MessageError, match="config key is not valid UTF-8"):
        SetConfig.unpack(b"\x01\xff\x00\x00")
    with pytest.raises(MessageError, match="config value contains a NUL"):
        SetConfig.unpack(b"\x01a\x00\x01\x00")


# --- REQUEST_PRODUCT and the other bodies at their bounds ---------------------------------------


def test_request_product_name_limits() -> None:
    for n in (1, 255):
        assert RequestProduct.unpack(b"p" * n) == RequestProduct("p" * n)
        assert RequestProduct("p" * n).pack() == b"p" * n
    for n in (0, 256):
        with pytest.raises(MessageError, match=f"1-255 bytes, got {n}"):
            RequestProduct.unpack(b"p" * n)
        with pytest.raises(MessageError, match=f"1-255 UTF-8 bytes, got {n}"):
            RequestProduct("p" * n).pack()


def test_request_area_bounds() -> None:
    """The box at its exact limits passes; a degree of 1e-7 past any of them, a window ending
    before it starts, an empty, repeated or ill-formed kind, or a body one byte short of the
    fixed part or with 256 bytes of kinds is refused, both packing and unpacking."""
    edge = RequestArea(-900_000_000, -1_800_000_000, 900_000_000, 1_800_000_000, ("c" * 32,), 5, 5, 0xFFFF)
    assert RequestArea.unpack(edge.pack()) == edge
    point = RequestArea.from_degrees(43.6, 1.4, 43.6, 1.4, ("cube",))  # a point is a box too
    assert RequestArea.unpack(point.pack()).box_deg == (43.6, 1.4, 43.6, 1.4)
    bad = {
        "latitudes": RequestArea(-900_000_001, 0, 0, 0, ("cube",)),
        "latitudes ": RequestArea(10, 0, 9, 0, ("cube",)),  # south above north
        "longitudes": RequestArea(0, -10, 0, -11, ("cube",)),  # across the antimeridian
        "longitudes  ": RequestArea(0, 0, 0, 1_800_000_001, ("cube",)),
        "window": RequestArea(0, 0, 0, 0, ("cube",), 10, 9),
        "kinds": RequestArea(0, 0, 0, 0, ()),
        "kinds ": RequestArea(0, 0, 0, 0, ("cube", "cube")),
        "kinds  ": RequestArea(0, 0, 0, 0, ("Cube",)),
        "kinds   ": RequestArea(0, 0, 0, 0, ("",)),
    }
    head = RequestArea(0, 0, 0, 0, ("cube",)).pack()[:-4]
    for what, msg in bad.items():
        with pytest.raises(MessageError, match=what.strip()):
            msg.pack()
        body = struct.pack(">iiiiIIH", msg.south_e7, msg.west_e7, msg.north_e7, msg.east_e7,
                           msg.since_utc, msg.until_utc, msg.max_count) + ",".join(msg.kinds).encode()
        if len(body) > len(head):
            with pytest.raises(MessageError, match=what.strip()):
                RequestArea.unpack(body)
    for body in (head, head + b"k" * 256):
        with pytest.raises(MessageError, match="REQUEST_AREA body must be 27-281 bytes"):
            RequestArea.unpack(body)
    with pytest.raises(MessageError, match="kinds is not valid UTF-8"):
        RequestArea.unpack(head + b"\xff")


def test_start_capture_limits() -> None:
    assert StartCapture(0).pack() == b"\0\0\0\0" and StartCapture().frame_count == 0
    for bad in (-1, 2**32):
        with pytest.raises(MessageError, match="does not fit in u32"):
            StartCapture(bad).pack()
    for n in (3, 5):
        with pytest.raises(MessageError, match=f"START_CAPTURE body must be 4 bytes, got {n}"):
            StartCapture.unpack(b"\1" * n)


@pytest.mark.parametrize("cls,size", [(Ping, 0), (StopCapture, 0), (Abort, 0), (SetMode, 1), (Ack, 4)])
def test_fixed_size_bodies_are_exact(cls: type[Message], size: int) -> None:
    for n in (size - 1, size + 1):
        if n >= 0:
            with pytest.raises(MessageError, match=f"must be {size} bytes, got {n}"):
                cls.unpack(b"\x00" * n)


def test_enum_values_out_of_range() -> None:
    with pytest.raises(MessageError, match="mode 3 is not declared"):
        SetMode.unpack(b"\x03")
    with pytest.raises(MessageError, match="result code 9 is not declared"):
        Ack.unpack(b"\x00\x01\x02\x09")
    assert Ack.unpack(b"\x00\x01\xff\x08") == Ack(1, 0xFF, ResultCode.NO_KEY)
    with pytest.raises(MessageError, match="event code 8 is not declared"):
        Event.unpack(b"\x00\x08\x00")
    with pytest.raises(MessageError, match="severity 3 is not declared"):
        Event.unpack(b"\x00\x01\x03")
    with pytest.raises(MessageError, match="message type 11 is not declared"):
        unpack_message(11, b"")


def test_event_bounds() -> None:
    assert Event.unpack(b"\x00\x01\x01") == Event(EventCode.AUTH_FAILED, "", Severity.WARNING)
    with pytest.raises(MessageError, match="2 bytes; at least 3"):
        Event.unpack(b"\x00\x01")
    assert Event(EventCode.HANDLER_ERROR).severity == Severity.ERROR
    text = "t" * (MAX_BODY - 3)
    assert len(Event(EventCode.ABORTED, text).pack()) == MAX_BODY
    with pytest.raises(MessageError, match="maximum is 1024"):
        Event(EventCode.ABORTED, text + "t").pack()
    with pytest.raises(MessageError, match="event text contains a NUL"):
        Event.unpack(b"\x00\x01\x01a\x00")


def test_health_bounds() -> None:
    assert Health.unpack(b"{}") == Health({})
    for body, match in ((b"[]", "must be a JSON object, got list"), (b"{", "not JSON"),
                        (b"\xff", "not valid UTF-8")):
        with pytest.raises(MessageError, match=match):
            Health.unpack(body)
    big = Health({"k": "v" * (MAX_BODY - 8)})
    assert len(big.pack()) == MAX_BODY
    with pytest.raises(MessageError, match="maximum is 1024"):
        Health({"k": "v" * (MAX_BODY - 7)}).pack()
    with pytest.raises(ValueError):
        Health({"x": float("nan")}).pack()


def test_data_bounds() -> None:
    assert Data.unpack(b"\x00") == Data(b"\x00")
    assert len(Data(b"d" * MAX_BODY).pack()) == MAX_BODY
    with pytest.raises(MessageError, match="1025 bytes; the maximum is 1024"):
        Data(b"d" * (MAX_BODY + 1)).pack()
    with pytest.raises(MessageError, match="DATA payload is empty"):
        Data(b"").pack()
    with pytest.raises(MessageError, match="DATA body is empty"):
        Data.unpack(b"")


def test_ack_layout() -> None:
    assert Ack(1, 2, ResultCode.OK).pack() == struct.pack(">HBB", 1, 2, 0)
    assert SetMode(Mode.OPERATE).pack() == b"\x01"


@pytest.mark.parametrize("call,match", [
    (lambda: Ack.unpack(b"\0"), r"^ACK body must be 4 bytes, got 1$"),
    (lambda: SetMode.unpack(b""), r"^SET_MODE body must be 1 bytes, got 0$"),
    (lambda: Ping.unpack(b"\0"), r"^PING body must be 0 bytes, got 1$"),
    (lambda: Abort.unpack(b"\0"), r"^ABORT body must be 0 bytes, got 1$"),
    (lambda: Data(b"d" * 1025).pack(), r"^DATA body is 1025 bytes; the maximum is 1024$"),
    (lambda: Event(EventCode.ABORTED, "t" * 1022).pack(), r"^EVENT body is 1025 bytes"),
    (lambda: SetConfig("k", "v" * 1021).pack(), r"^SET_CONFIG body is 1025 bytes"),
    (lambda: SetConfig.unpack(b"\x01a\x00\x02b"), r"^SET_CONFIG body must be 6 bytes, got 5$"),
    (lambda: Health.unpack(b"\xff"), r"^HEALTH body is not valid UTF-8"),
    (lambda: RequestProduct.unpack(b"\xff"), r"^product name is not valid UTF-8"),
    (lambda: Event.unpack(b"\xff\xff\x00"), r"^event code 65535 is not declared"),
    (lambda: Event.unpack(b"\x00\x01\xff"), r"^severity 255 is not declared"),
    (lambda: SetConfig.unpack(b"\x01a\xff\xff"), r"^SET_CONFIG body must be 65539 bytes, got 4$"),
])
def test_refusals_name_the_message(call, match: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(MessageError, match=match):
        call()


def test_a_value_too_long_for_its_length_field_is_a_message_error() -> None:
    """65 536 bytes do not fit SET_CONFIG's u16 length nor a frame: MessageError, not struct.error."""
    for n in (40_000, 70_000):
        with pytest.raises(MessageError, match="maximum is 1024"):
            SetConfig("k", "v" * n).pack()


def test_protocol_table_headers() -> None:
    lines = protocol_tables().splitlines()
    heads = [lines[i:i + 2] for i, ln in enumerate(lines[:-1]) if lines[i + 1].startswith("|---")]
    assert heads == [["| type | name | direction | meaning |", "|---|---|---|---|"],
                     ["| code | name | meaning |", "|---|---|---|"],
                     ["| code | name | severity | meaning |", "|---|---|---|---|"],
                     ["| mode | name | meaning |", "|---|---|---|"]]
    assert lines[2] == "| 0x01 | PING | TC | Liveness check; answered by ACK OK. |"
    assert len(lines) == 2 + len(MsgType) + 3 + len(ResultCode) + 3 + len(EventCode) + 3 + len(Mode)


def test_set_passes_bounds() -> None:
    one = struct.pack(">III", 100, 200, 9600)
    assert SetPasses.unpack(b"\x00") == SetPasses(())  # clears the plan
    assert SetPasses.unpack(b"\x01" + one) == SetPasses(((100, 200, 9600),))
    with pytest.raises(MessageError, match="empty"):
        SetPasses.unpack(b"")
    with pytest.raises(MessageError, match="must be 25 bytes"):
        SetPasses.unpack(b"\x02" + one)  # count says two, one given
    with pytest.raises(MessageError, match="must be 13 bytes"):
        SetPasses.unpack(b"\x01" + one + b"\x00")
    for start, end, rate in ((200, 200, 9600), (300, 200, 9600), (100, 200, 0)):
        with pytest.raises(MessageError, match="end must be after start and the rate > 0"):
            SetPasses.unpack(b"\x01" + struct.pack(">III", start, end, rate))
    with pytest.raises(MessageError, match="at most 85"):
        SetPasses(((0, 1, 1),) * 86).pack()
    assert len(SetPasses(((0, 1, 1),) * 85).pack()) == 1 + 85 * 12 <= MAX_BODY
