"""Telecommand security: key file rules, counter persistence, and an adversarial campaign
of forged, replayed, tampered, truncated and unauthenticated telecommands."""

from __future__ import annotations

import logging
import os
import pickle
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware_bridge.auth import (
    DATA,
    TELECOMMAND,
    AuthKey,
    CounterStore,
    CounterStoreError,
    KeyFileError,
    UplinkSigner,
    load_key,
    provision,
    sign,
    write_key,
)
from firmware_bridge.dispatch import AnswerBudget, CommandDispatcher, CommandRefused, EventLimiter
from firmware_bridge.framing import FLAG_AUTH, MAC_LEN, Frame, FrameDecoder, crc16, encode
from firmware_bridge.messages import (
    Ack,
    Data,
    Direction,
    Event,
    EventCode,
    Message,
    Mode,
    MsgType,
    Ping,
    RequestProduct,
    ResultCode,
    SetConfig,
    SetMode,
    StartCapture,
    StopCapture,
)

SECRET = bytes(range(32))


@pytest.fixture
def key_path(tmp_path: Path) -> Path:
    path = tmp_path / "bridge.key"
    write_key(path, SECRET)
    return path


def test_key_file_0644_is_refused_with_the_fix(key_path: Path) -> None:
    os.chmod(key_path, 0o644)
    with pytest.raises(KeyFileError, match=r"mode 0644.*chmod 600"):
        load_key(key_path)


@pytest.mark.parametrize("mode", [0o600, 0o400])
def test_owner_only_key_file_loads(key_path: Path, mode: int) -> None:
    os.chmod(key_path, mode)
    key = load_key(key_path)
    assert key.mac(b"x") == AuthKey(SECRET).mac(b"x")


def test_key_never_shown(key_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    key = load_key(key_path)
    logging.getLogger("test").warning("loaded %s %r", key, key)
    for shown in (repr(key), str(key), caplog.text):
        assert SECRET.hex() not in shown and "redacted" in shown
    with pytest.raises(TypeError, match="not picklable"):
        pickle.dumps(key)
    key_path.write_text("zz" + SECRET.hex())
    with pytest.raises(KeyFileError) as info:
        load_key(key_path)
    assert SECRET.hex() not in str(info.value)


def test_short_or_missing_key_refused(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="cannot read key file"):
        load_key(tmp_path / "absent.key")
    with pytest.raises(KeyFileError, match="at least 16"):
        write_key(tmp_path / "short.key", b"\x01" * 8)


def test_rfc4231_case_2_truncated() -> None:
    # RFC 4231 test case 2 (key "Jefe"), HMAC-SHA256 truncated to 16 bytes. The RFC's key is
    # shorter than our minimum, so build the key object around the length check.
    key = AuthKey.__new__(AuthKey)
    key._secret = b"Jefe"  # type: ignore[attr-defined]
    tag = key.mac(b"what do ya want for nothing?")
    assert tag == bytes.fromhex("5bdcc146bf60754e6a042426089575c7")


def test_counter_persists_and_refuses_going_back(tmp_path: Path) -> None:
    store = CounterStore.create(tmp_path / "tc.counter")
    assert store.last() == 0
    store.advance(5)
    store.advance(2**64 - 1)
    assert CounterStore(tmp_path / "tc.counter").last() == 2**64 - 1
    with pytest.raises(CounterStoreError, match="does not advance"):
        store.advance(7)
    assert [p.name for p in tmp_path.iterdir()] == ["tc.counter"]  # no temporary left over


def test_key_file_owned_by_another_user_is_refused(
    key_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whoever owns the key file can replace the key: it must be this process's user's."""
    owner = key_path.stat().st_uid
    monkeypatch.setattr(os, "geteuid", lambda: owner + 1)
    with pytest.raises(KeyFileError, match=rf"owned by uid {owner}, not by this process.*chown"):
        load_key(key_path)


def test_key_file_symlink_is_refused(key_path: Path, tmp_path: Path) -> None:
    """A link could be pointed elsewhere by whoever can write its folder: never followed."""
    link = tmp_path / "link.key"
    link.symlink_to(key_path)
    with pytest.raises(KeyFileError, match="symbolic link"):
        load_key(link)
    counter = CounterStore.create(tmp_path / "real.counter").path
    (tmp_path / "link.counter").symlink_to(counter)
    with pytest.raises(CounterStoreError, match="symbolic link"):
        CounterStore(tmp_path / "link.counter")


def test_missing_counter_file_is_refused_with_the_recovery(key_path: Path, tmp_path: Path) -> None:
    """A lost counter file used to count from 0 again, and every recorded frame replayed."""
    with pytest.raises(CounterStoreError, match=r"does not exist.*re-key.*set-counter"):
        CounterStore(tmp_path / "lost.counter")
    with pytest.raises(CounterStoreError, match="does not exist"):
        CommandDispatcher.from_files({}, key_path, tmp_path / "lost.counter")


def test_provision_creates_the_counter_with_the_key(tmp_path: Path) -> None:
    key = provision(tmp_path / "a.key", tmp_path / "a.counter")
    other = provision(tmp_path / "b.key", tmp_path / "b.counter", load_key(tmp_path / "a.key")._secret)
    assert key.mac(b"x") == other.mac(b"x") == load_key(tmp_path / "b.key").mac(b"x")
    assert os.stat(tmp_path / "a.key").st_mode & 0o777 == 0o600
    store = CounterStore(tmp_path / "a.counter")
    assert (store.last(TELECOMMAND), store.last(DATA)) == (0, 0)
    with pytest.raises(CounterStoreError, match="exists"):  # never reset a counter
        provision(tmp_path / "c.key", tmp_path / "a.counter")
    assert not (tmp_path / "c.key").exists()


def test_auth_command_line_provisions_and_restores(tmp_path: Path) -> None:
    def auth(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "firmware_bridge.keytool", *map(str, args)],
                              capture_output=True, text=True, timeout=60)

    assert auth("provision", tmp_path / "p.key", tmp_path / "p.counter").returncode == 0
    done = auth("provision", tmp_path / "f.key", tmp_path / "f.counter",
                "--same-key-as", tmp_path / "p.key")
    assert done.returncode == 0, done.stderr
    assert load_key(tmp_path / "f.key").mac(b"y") == load_key(tmp_path / "p.key").mac(b"y")
    (tmp_path / "p.counter").unlink()  # lost
    restored = auth("set-counter", tmp_path / "p.counter", "--telecommand", 41, "--data", 7)
    assert restored.returncode == 0, restored.stderr
    store = CounterStore(tmp_path / "p.counter")
    assert (store.last(TELECOMMAND), store.last(DATA)) == (41, 7)
    again = auth("set-counter", tmp_path / "p.counter", "--telecommand", 0, "--data", 0)
    assert again.returncode == 1 and "exists" in again.stderr
    assert CounterStore(tmp_path / "p.counter").last(TELECOMMAND) == 41


def test_signer_reserves_counters_and_never_reuses_one_after_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "fc.counter"
    signer = UplinkSigner(AuthKey(SECRET), CounterStore.create(path), reserve=64)
    assert [signer.sign(Ping(), i).counter for i in range(3)] == [1, 2, 3]
    assert CounterStore(path).last(TELECOMMAND) == 64  # one write reserved the block
    assert signer.sign(Data(b"x"), 3).counter == 1  # the data channel counts on its own
    restarted = UplinkSigner(AuthKey(SECRET), CounterStore(path), reserve=64)
    assert restarted.sign(Ping(), 0).counter == 65  # the rest of the block is skipped
    assert CounterStore(path).last(TELECOMMAND) == 128


def test_version_1_counter_file_still_loads(tmp_path: Path) -> None:
    """A counter file from before DATA frames were signed: its telecommand counter stands."""
    path = tmp_path / "old.counter"
    path.write_text('{"format": "firmware_bridge.counter", "version": 1, "last": 12}')
    store = CounterStore(path)
    assert (store.last(TELECOMMAND), store.last(DATA)) == (12, 0)


def test_corrupt_counter_file_is_an_error_not_zero(tmp_path: Path) -> None:
    path = tmp_path / "tc.counter"
    path.write_text('{"format": "firmware_bridge.counter", "version": 1, "last": "12"}')
    with pytest.raises(CounterStoreError, match="replays cannot be refused"):
        CounterStore(path)
    path.write_bytes(b"\x00\x01garbage")
    with pytest.raises(CounterStoreError, match="unreadable"):
        CounterStore(path)


_ADVANCER = """
import sys
from firmware_bridge.auth import CounterStore
store = CounterStore(sys.argv[1])
print("ready", flush=True)
while True:
    store.advance(store.last() + 1)
"""


def test_counter_survives_kill_9_mid_write(tmp_path: Path) -> None:
    """kill -9 a process that advances the counter as fast as it can; the file is always
    readable afterwards and never goes back."""
    path = tmp_path / "tc.counter"
    CounterStore.create(path)
    rng = random.Random(3)
    last = 0
    for _ in range(5):
        proc = subprocess.Popen(
            [sys.executable, "-c", _ADVANCER, str(path)], stdout=subprocess.PIPE, text=True
        )
        assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
        time.sleep(rng.uniform(0.02, 0.15))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        now = CounterStore(path).last()
        assert now >= last
        last = now
    assert last > 0


# -- the dispatcher under attack ------------------------------------------------------------


class Payload:
    """Handlers that record what was executed."""

    def __init__(self) -> None:
        self.executed: list[Message] = []

    def handle(self, msg: Message) -> ResultCode | None:
        self.executed.append(msg)
        if isinstance(msg, StartCapture) and msg.frame_count == 13:
            raise CommandRefused(ResultCode.BUSY)
        if isinstance(msg, RequestProduct) and msg.name == "boom":
            raise RuntimeError("handler bug")
        return None


def _dispatcher(tmp_path: Path, payload: Payload, key: AuthKey) -> CommandDispatcher:
    tc_types = [t for t in MsgType if t.direction is Direction.TC]
    return CommandDispatcher(
        {t: payload.handle for t in tc_types},
        key=key,
        counters=CounterStore.create(tmp_path / "payload.counter"),
        events=EventLimiter(interval_s=0.0),
        answers=AnswerBudget(per_s=0.0, burst=10 * ATTACKS),  # these tests count every ACK
    )


def _result(replies: list[Message]) -> ResultCode:
    ack = replies[0]
    assert isinstance(ack, Ack)
    return ack.result


def _recrc(raw: bytes) -> bytes:
    return raw + crc16(raw).to_bytes(2, "big")


def test_dispatcher_basic_paths(tmp_path: Path) -> None:
    key = AuthKey(SECRET)
    payload = Payload()
    disp = _dispatcher(tmp_path, payload, key)
    signer = UplinkSigner(key, CounterStore.create(tmp_path / "fc.counter"))
    assert _result(disp.dispatch(Frame.of(Ping(), 1))) == ResultCode.OK
    replies = disp.dispatch(Frame.of(SetMode(Mode.OPERATE), 2))
    assert _result(replies) == ResultCode.NOT_AUTHENTICATED
    assert isinstance(replies[1], Event) and replies[1].code == EventCode.UNAUTHENTICATED_REFUSED
    assert _result(disp.dispatch(signer.sign(SetMode(Mode.OPERATE), 3))) == ResultCode.OK
    assert _result(disp.dispatch(signer.sign(StartCapture(13), 4))) == ResultCode.BUSY
    replies = disp.dispatch(signer.sign(RequestProduct("boom"), 5))
    assert _result(replies) == ResultCode.FAILED
    assert isinstance(replies[1], Event) and "handler bug" in replies[1].text
    counter = signer.last() + 1
    bad_body = sign_raw(Frame(MsgType.SET_MODE, 6, b"\x07", FLAG_AUTH, counter, bytes(16)), key)
    assert _result(disp.dispatch(bad_body)) == ResultCode.BAD_ARGUMENT
    assert disp.counters is not None and disp.counters.last() == counter  # consumed anyway
    unknown = sign_raw(Frame(0x3E, 7, b"", FLAG_AUTH, counter + 1, bytes(16)), key)
    assert _result(disp.dispatch(unknown)) == ResultCode.UNKNOWN_COMMAND
    nokey = CommandDispatcher({})
    assert _result(nokey.dispatch(signer.sign(Ping(), 8))) == ResultCode.NO_KEY
    assert [type(m).__name__ for m in payload.executed] == [
        "Ping",
        "SetMode",
        "StartCapture",
        "RequestProduct",
    ]


def test_uplinked_data_frames_are_authenticated_on_their_own_channel(tmp_path: Path) -> None:
    """DATA frames (the ground's CFDP PDUs) pass only with the key and a fresh counter on the
    data channel, which the flight computer's telecommand counter does not touch."""
    key = AuthKey(SECRET)
    disp = _dispatcher(tmp_path, Payload(), key)
    ground = UplinkSigner(key, CounterStore.create(tmp_path / "ground.counter"))
    fc = UplinkSigner(key, CounterStore.create(tmp_path / "fc.counter"))
    pdu = Data(b"\x18\x00cfdp")
    for _ in range(3):  # the flight computer is well ahead on its own channel
        assert _result(disp.dispatch(fc.sign(Ping(), 1))) == ResultCode.OK
    first = ground.sign(pdu, 2)
    assert first.counter == 1
    assert disp.accept_data(first) == (True, None)
    assert disp.counters is not None
    assert CounterStore(disp.counters.path).last(DATA) == 1  # persisted before accepted
    refused = {
        "unsigned": Frame.of(pdu, 3),
        "wrong key": sign(pdu, 4, AuthKey(bytes(reversed(SECRET))), 99),
        "replayed": first,
        "tampered": Frame(MsgType.DATA, 2, b"\x18\x00CFDP", FLAG_AUTH, 2, first.mac),
    }
    for frame in refused.values():
        accepted, event = disp.accept_data(frame)
        assert not accepted and isinstance(event, Event)
    assert dict(disp.data_results) == {ResultCode.OK: 1, ResultCode.NOT_AUTHENTICATED: 1,
                                       ResultCode.BAD_AUTH: 2, ResultCode.REPLAY: 1}
    assert disp.accept_data(ground.sign(pdu, 5))[0]
    assert (disp.counters.last(TELECOMMAND), disp.counters.last(DATA)) == (3, 2)
    # a DATA frame re-typed as a telecommand (or back) breaks its MAC
    retyped = Frame(MsgType.PING, first.seq, b"", FLAG_AUTH, 10, first.mac)
    assert _result(disp.dispatch(retyped)) == ResultCode.BAD_AUTH
    bench = CommandDispatcher({}, allow_unauthenticated=(MsgType.PING, MsgType.DATA))
    assert bench.accept_data(Frame.of(pdu, 6)) == (True, None)  # a bench link without a key


def test_frames_that_do_not_authenticate_get_a_bounded_number_of_answers(tmp_path: Path) -> None:
    """A flood of unauthenticated, forged or replayed frames used to get one ACK each (an ACK
    is longer than the shortest frame and goes ahead of DATA): now at most the answer
    budget, while authenticated commands are always answered."""
    now = [0.0]
    key = AuthKey(SECRET)
    disp = CommandDispatcher({MsgType.SET_MODE: lambda m: None}, key=key,
                             counters=CounterStore.create(tmp_path / "p.counter"),
                             events=EventLimiter(1.0, clock=lambda: now[0]),
                             answers=AnswerBudget(5.0, 10.0, clock=lambda: now[0]))
    signer = UplinkSigner(key, CounterStore.create(tmp_path / "fc.counter"))
    genuine = signer.sign(SetMode(Mode.OPERATE), 0)
    assert _result(disp.dispatch(genuine)) == ResultCode.OK
    flood = [Frame.of(SetMode(Mode.SAFE), 1), Frame.of(Ping(), 2), genuine,
             sign(SetMode(Mode.SAFE), 3, AuthKey(bytes(16)), 7)]
    answers = events = 0
    for i in range(4000):  # 1000 frames a second for 4 s
        now[0] = i / 1000
        replies = disp.dispatch(flood[i % len(flood)])
        answers += sum(isinstance(r, Ack) for r in replies)
        events += sum(isinstance(r, Event) for r in replies)
    assert answers <= 10 + 5 * 4
    assert events <= 3 * 4 + 3  # one a second per event code
    assert disp.unanswered == 4000 - answers
    assert sum(disp.results.values()) == 4001  # every one counted
    fresh = signer.sign(SetMode(Mode.IDLE), 4)
    assert [type(r) for r in disp.dispatch(fresh)] == [Ack]  # still answered at once


def sign_raw(frame: Frame, key: AuthKey) -> Frame:
    """Re-sign a frame exactly as given (the attacker cannot; a test harness can)."""
    return Frame(
        frame.msg_type,
        frame.seq,
        frame.body,
        FLAG_AUTH,
        frame.counter,
        key.mac(frame.signed_part()),
    )


def test_event_limiter_counts_what_it_suppresses() -> None:
    now = [0.0]
    lim = EventLimiter(1.0, clock=lambda: now[0])
    assert lim.event(EventCode.AUTH_FAILED, "a") is not None
    assert lim.event(EventCode.AUTH_FAILED, "b") is None
    assert lim.event(EventCode.REPLAY_REFUSED, "c") is not None  # per code
    now[0] = 1.5
    ev = lim.event(EventCode.AUTH_FAILED, "d")
    assert ev is not None and ev.text == "d (+1 suppressed)"


ATTACKS = 12_000


def test_adversarial_campaign(tmp_path: Path) -> None:
    """12 000 hostile frames (forged MACs, wrong keys, replays, stale counters, tampered
    headers/bodies/counters, truncations, unauthenticated commands) interleaved with genuine
    commands: every hostile frame is refused, every genuine one executes exactly once, the
    persisted counter is exactly the last genuine one."""
    rng = random.Random(1234)
    key = AuthKey(SECRET)
    wrong = AuthKey(bytes(reversed(SECRET)))
    payload = Payload()
    disp = _dispatcher(tmp_path, payload, key)
    signer = UplinkSigner(key, CounterStore.create(tmp_path / "fc.counter"))
    decoder = FrameDecoder()
    commands: list[Message] = [
        SetMode(Mode.OPERATE),
        StartCapture(5),
        StopCapture(),
        SetConfig("gain", "2"),
        RequestProduct("residue_00000042"),
    ]
    captured: list[Frame] = []
    genuine: list[Message] = []
    refused_by_dispatcher: dict[ResultCode, int] = {}
    refused_by_framing = 0

    def deliver(wire: bytes) -> list[ResultCode]:
        return [_result(disp.dispatch(f)) for f in decoder.feed(wire)]

    def hostile(wire: bytes) -> None:
        nonlocal refused_by_framing
        bad_before = decoder.bad_frames
        results = deliver(wire)
        if not results:
            assert decoder.bad_frames == bad_before + 1
            refused_by_framing += 1
        for r in results:
            assert r not in (ResultCode.OK, ResultCode.BUSY, ResultCode.FAILED), r
            refused_by_dispatcher[r] = refused_by_dispatcher.get(r, 0) + 1

    for i in range(ATTACKS):
        if i % 60 == 0:  # a genuine command now and then
            msg = rng.choice(commands)
            frame = signer.sign(msg, i & 0xFFFF)
            assert deliver(encode(frame)) == [ResultCode.OK]
            genuine.append(msg)
            captured.append(frame)
        seq = rng.randrange(0x10000)
        fresh = signer.last() + rng.randrange(1, 2**40)
        msg = rng.choice(commands)
        kind = i % 8
        if kind == 0:  # forged: fresh counter, random MAC
            f = Frame(int(msg.TYPE), seq, msg.pack(), FLAG_AUTH, fresh, rng.randbytes(MAC_LEN))
            hostile(encode(f))
        elif kind == 1:  # signed with the wrong key, even with the maximum counter
            hostile(encode(sign(msg, seq, wrong, rng.choice([fresh, 2**64 - 1]))))
        elif kind == 2:  # exact replay of a captured genuine frame
            hostile(encode(rng.choice(captured)))
        elif kind == 3:  # genuine frame with one header/counter/body byte changed, CRC fixed
            raw = bytearray(rng.choice(captured).pack()[:-2])
            pos = rng.randrange(1, len(raw) - MAC_LEN)  # keep the version byte
            raw[pos] ^= rng.randrange(1, 256)
            hostile(_cobs(_recrc(bytes(raw))))
        elif kind == 4:  # wire-level truncation of a genuine frame
            wire = encode(rng.choice(captured))
            hostile(wire[: rng.randrange(1, len(wire) - 1)] + b"\x00")
        elif kind == 5:  # consistent truncation: body cut, length fixed, CRC fixed
            g = rng.choice(captured)
            body = g.body[: rng.randrange(0, max(1, len(g.body)))]
            f = Frame(g.msg_type, g.seq, body, FLAG_AUTH, g.counter, g.mac)
            hostile(encode(f))
        elif kind == 6:  # unauthenticated command that needs authentication
            hostile(encode(Frame.of(msg, seq)))
        else:  # MAC stripped: genuine content as a plain frame, or a random non-PING type
            g = rng.choice(captured)
            mtype = rng.choice([g.msg_type, rng.randrange(2, 256)])
            hostile(encode(Frame(mtype, seq, g.body)))

    assert payload.executed == genuine
    assert disp.counters is not None
    assert disp.counters.last() == signer.last()
    assert CounterStore(tmp_path / "payload.counter").last() == signer.last()
    total_refused = refused_by_framing + sum(refused_by_dispatcher.values())
    assert total_refused == ATTACKS
    assert set(refused_by_dispatcher) >= {
        ResultCode.BAD_AUTH,
        ResultCode.REPLAY,
        ResultCode.NOT_AUTHENTICATED,
    }
    # Still working after the campaign.
    assert deliver(encode(signer.sign(StopCapture(), 1))) == [ResultCode.OK]
    print(
        f"hostile frames: {ATTACKS}, refused by framing {refused_by_framing}, "
        f"by dispatcher { {r.name: n for r, n in refused_by_dispatcher.items()} }"
    )


def _cobs(raw: bytes) -> bytes:
    from cobs import cobs

    return cobs.encode(raw) + b"\x00"


@settings(max_examples=300, deadline=None)
@given(
    mtype=st.integers(0, 255),
    seq=st.integers(0, 0xFFFF),
    body=st.binary(max_size=64),
    auth=st.booleans(),
    counter=st.integers(0, 2**64 - 1),
    mac=st.binary(min_size=MAC_LEN, max_size=MAC_LEN),
)
def test_any_frame_gets_one_ack_and_never_runs_unauthenticated(
    tmp_path_factory: pytest.TempPathFactory,
    mtype: int,
    seq: int,
    body: bytes,
    auth: bool,
    counter: int,
    mac: bytes,
) -> None:
    payload = Payload()
    disp = _dispatcher(tmp_path_factory.mktemp("d"), payload, AuthKey(SECRET))
    frame = Frame(mtype, seq, body, FLAG_AUTH, counter, mac) if auth else Frame(mtype, seq, body)
    replies = disp.dispatch(frame)
    assert isinstance(replies[0], Ack) and replies[0].acked_seq == seq
    assert all(isinstance(r, Event) for r in replies[1:])
    # A random MAC is right with probability 2^-128; only PING runs without one.
    assert payload.executed in ([], [Ping()])
    assert payload.executed == [] or (not auth and mtype == MsgType.PING and body == b"")
    assert disp.counters is not None and disp.counters.last() == 0
