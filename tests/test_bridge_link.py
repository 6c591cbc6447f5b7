"""The link over real pyserial ports: loop://, socket://, and pseudo-terminal pairs between
two processes through the link emulator (bit errors, frame drops, a cut)."""

from __future__ import annotations

import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
import serial

from firmware_bridge.auth import CounterStore, UplinkSigner, provision
from firmware_bridge.dispatch import CommandDispatcher
from firmware_bridge.framing import Frame, encode, wire_size
from firmware_bridge.link import RADIO_9600, UART_115200, UNPACED, ByteRate, Link, PayloadEndpoint
from firmware_bridge.linkemu import Impairments, LinkEmulator
from firmware_bridge.messages import (
    Abort,
    Ack,
    Data,
    Event,
    EventCode,
    Health,
    Mode,
    MsgType,
    Ping,
    RequestProduct,
    ResultCode,
    SetMode,
)

# One definition of the test traffic, executed here and in the child process.
PAYLOAD_SRC = textwrap.dedent(
    """
    import random

    def payload(i: int) -> bytes:
        rng = random.Random(i)
        return i.to_bytes(4, "big") + rng.randbytes(rng.randrange(60, 700))
    """
)
_ns: dict = {}
exec(PAYLOAD_SRC, _ns)
payload = _ns["payload"]

SENDER = PAYLOAD_SRC + textwrap.dedent(
    """
    import sys, time
    from firmware_bridge.link import ByteRate, Link
    path, count, rate = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    with Link.open(path, rate=ByteRate(rate)) as link:
        for i in range(count):
            link.send_data(payload(i))
        time.sleep(link.backlog_s())
    """
)


def test_byte_rates() -> None:
    assert UART_115200.bytes_per_s == 11520  # 10 bits a byte with 8N1
    assert RADIO_9600.bytes_per_s == 1200
    assert ByteRate.uart(9600, parity=True, stop_bits=2).bytes_per_s == 9600 / 12


def test_drain_time_counts_every_wire_byte() -> None:
    bodies = [b"\x01" * 245] * 10  # 245-byte body: 11 bytes of overhead, 256 on the wire
    assert RADIO_9600.drain_time_s(bodies) == pytest.approx(10 * 256 / 1200)
    assert RADIO_9600.drain_time_s([1024]) == pytest.approx(wire_size(1024) / 1200)
    assert UNPACED.drain_time_s([1024] * 100) == 0.0


def test_loop_round_trip_and_pacing_with_a_fake_clock() -> None:
    now = [100.0]
    slept: list[float] = []

    def sleep(s: float) -> None:
        slept.append(s)
        now[0] += s

    port = serial.serial_for_url("loop://", timeout=0.01)
    link = Link(port, ByteRate(1000.0), clock=lambda: now[0], sleep=sleep)
    sent = [link.send(Data(bytes([i + 1]) * 100)) for i in range(5)]
    wire = [len(encode(f)) for f in sent]
    # The first frame starts after idle (one flush 0x00); each next one waits for the previous.
    assert sum(slept) == pytest.approx((1 + sum(wire[:-1])) / 1000.0)
    assert link.backlog_s() == pytest.approx(wire[-1] / 1000.0)
    one = len(encode(Frame(0, 0, b"x")))
    assert link.drain_time_s([b"x"]) == pytest.approx((wire[-1] + one) / 1000.0)
    got = [link.receive(1.0) for _ in sent]
    assert got == sent
    assert link.receive(0.0) is None


def test_reader_resynchronises_after_garbage_on_loop() -> None:
    with Link.open("loop://", rate=UNPACED) as link:
        link.port.write(b"\x13\x37garbage\x00\xff" * 3)
        frame = link.send(Health({"temp_c": 40.5}))
        assert link.receive(1.0) == frame
        # Three garbage runs, plus the trailing 0xFF closed off by the sender's idle flush.
        assert link.decoder.bad_frames == 4
        assert link.decoder.bytes_discarded == 3 * 11 + 1  # every garbage byte + the flush


def test_socket_url() -> None:
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]

    def echo() -> None:
        conn, _ = server.accept()
        with conn:
            while data := conn.recv(4096):
                conn.sendall(data)

    t = threading.Thread(target=echo, daemon=True)
    t.start()
    with Link.open(f"socket://127.0.0.1:{port}", rate=UNPACED) as link:
        sent = [
            link.send(Event(EventCode.MODE_CHANGED, "IDLE -> OPERATE")),
            link.send_data(b"\x08" * 900),
        ]
        assert [link.receive(2.0) for _ in sent] == sent
    server.close()
    t.join(2)


def _receive_all(link: Link, proc: subprocess.Popen, emu: LinkEmulator) -> list:
    frames = []
    quiet = 0
    while quiet < 2:
        f = link.receive(0.3)
        if f is not None:
            frames.append(f)
            quiet = 0
        elif (
            proc.poll() is not None
            and emu.stats["a_to_b"].bytes_out
            + sum(getattr(emu.stats["a_to_b"], k) for k in ("bytes_dropped", "bytes_cut"))
            >= emu.stats["a_to_b"].bytes_in
        ):
            quiet += 1
    return frames


def _check_intact(frames: list, count: int) -> list[int]:
    indices = []
    for f in frames:
        assert f.msg_type == MsgType.DATA
        i = int.from_bytes(f.body[:4], "big")
        assert i < count and f.body == payload(i), "a corrupted frame was accepted"
        indices.append(i)
    assert indices == sorted(set(indices)), "duplicated or reordered"
    return indices


def test_two_processes_over_pty_with_ber_drops_and_a_cut() -> None:
    """Payload process -> emulator (115200 baud pacing, BER 1e-5, 2 % frame drops, a 0.5 s
    cut) -> this process. Every frame arrives intact or is refused; none corrupted accepted;
    every loss is explained by an injected fault."""
    count = 150
    imp = Impairments(bytes_per_s=11520, latency_s=0.005, bit_error_rate=1e-5, frame_drop=0.02)
    with LinkEmulator(imp, seed=7) as emu, Link.open(emu.b_path, rate=UNPACED) as rx:
        proc = subprocess.Popen(
            [sys.executable, "-c", SENDER, emu.a_path, str(count), "11520"],
        )
        emu.cut(0.5, after_s=1.5)
        frames = _receive_all(rx, proc, emu)
        assert proc.wait(10) == 0
    assert emu.error is None
    got = _check_intact(frames, count)
    st = emu.stats["a_to_b"]
    lost = count - len(got)
    # Each lost frame was dropped, cut or hit by a bit flip (one flip can spoil two frames
    # by hitting a delimiter; a cut spoils the frames it overlaps).
    cut_frames = st.bytes_cut // 70 + 2  # the smallest frame here is 75 bytes on the wire
    assert st.frames_dropped <= lost <= st.frames_dropped + 2 * st.bits_flipped + cut_frames
    assert st.bytes_cut > 0 and st.frames_dropped > 0
    assert rx.decoder.bad_frames >= 1  # the cut leaves at least one partial frame behind
    print(
        f"sent {count}, intact {len(got)}, dropped {st.frames_dropped}, "
        f"flipped bits {st.bits_flipped}, bad frames {dict(rx.decoder.bad)}, cut {st.bytes_cut} B"
    )


def test_heavy_bit_errors_are_all_detected_over_pty() -> None:
    """BER 2e-4 (about 40 % of frames hit): every hit frame is refused, none accepted."""
    count = 400
    imp = Impairments(bytes_per_s=1e6, bit_error_rate=2e-4)
    with LinkEmulator(imp, seed=11) as emu, Link.open(emu.b_path, rate=UNPACED) as rx:
        proc = subprocess.Popen([sys.executable, "-c", SENDER, emu.a_path, str(count), "1e6"])
        frames = _receive_all(rx, proc, emu)
        assert proc.wait(10) == 0
    got = _check_intact(frames, count)
    st = emu.stats["a_to_b"]
    assert st.bits_flipped > 100
    assert rx.decoder.bad_frames >= 100
    assert count - len(got) <= st.bits_flipped


PAYLOAD_PROCESS = textwrap.dedent(
    """
    import sys, time
    from firmware_bridge.link import PayloadEndpoint
    from firmware_bridge.messages import MsgType

    path, key_file, counter_file = sys.argv[1:4]
    state = {"running": True, "uplinked": []}

    def request(msg):
        endpoint.link.send_data(b"product:" + msg.name.encode())

    def abort(msg):
        state["running"] = False

    handlers = {MsgType.SET_MODE: lambda m: None, MsgType.REQUEST_PRODUCT: request,
                MsgType.ABORT: abort}
    endpoint = PayloadEndpoint.open(path, handlers, state["uplinked"].append,
                                    key_file=key_file, counter_file=counter_file)
    while state["running"]:
        endpoint.poll(0.1)
    # Echo what was uplinked as DATA so the test can see the seam worked.
    for packet in state["uplinked"]:
        endpoint.link.send_data(b"echo:" + packet)
    time.sleep(endpoint.link.backlog_s() + 0.05)
    endpoint.close()
    """
)


class FlightComputer:
    """This test's flight computer: sorts what the payload sends into ACKs, events, data."""

    def __init__(self, link: Link, signer: UplinkSigner) -> None:
        self.link = link
        self.signer = signer
        self.acks: dict[int, Ack] = {}
        self.events: list[Event] = []
        self.data: list[bytes] = []

    def pump(self, done, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while not done() and time.monotonic() < deadline:
            f = self.link.receive(0.1)
            if f is None:
                continue
            msg = f.message()
            if isinstance(msg, Ack):
                self.acks[msg.acked_seq] = msg
            elif isinstance(msg, Event):
                self.events.append(msg)
            elif isinstance(msg, Data):
                self.data.append(msg.payload)
        assert done(), "the payload did not answer in time"

    def wait_ready(self, timeout: float = 10.0) -> None:
        """PING until answered: the payload's pyserial discards input received before it
        opened its port, as a UART driver may, so the first frames can be lost."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            frame = self.link.send(Ping())
            try:
                self.pump(lambda f=frame: f.seq in self.acks, timeout=0.5)
                return
            except AssertionError:
                continue
        raise AssertionError("the payload never answered PING")

    def command(self, msg, signed: bool = True, event: EventCode | None = None) -> ResultCode:
        frame = self.link.send(msg, signer=self.signer if signed else None)
        return self.result_of(frame, event)

    def result_of(self, frame: Frame, event: EventCode | None = None) -> ResultCode:
        n_events = len(self.events)
        self.pump(
            lambda: (
                frame.seq in self.acks
                and (event is None or any(e.code == event for e in self.events[n_events:]))
            )
        )
        return self.acks.pop(frame.seq).result


def test_payload_endpoint_in_another_process(tmp_path: Path) -> None:
    """The flight computer (here) commands the payload (a child process) over a pty pair:
    authenticated commands run, unauthenticated and replayed ones are refused with events,
    uplinked DATA reaches the payload's on_data only when signed, requested products come
    down as DATA."""
    key_file = tmp_path / "bridge.key"
    secret = bytes(range(100, 132))
    provision(key_file, tmp_path / "payload.counter", secret)
    signer = UplinkSigner(provision(tmp_path / "fc.key", tmp_path / "fc.counter", secret),
                          CounterStore(tmp_path / "fc.counter"))
    with LinkEmulator(Impairments(bytes_per_s=11520, latency_s=0.002)) as emu:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-c",
                PAYLOAD_PROCESS,
                emu.a_path,
                str(key_file),
                str(tmp_path / "payload.counter"),
            ]
        )
        try:
            with Link.open(emu.b_path) as link:
                fc = FlightComputer(link, signer)
                fc.wait_ready()
                assert fc.command(Ping(), signed=False) == ResultCode.OK
                refused = fc.command(
                    SetMode(Mode.OPERATE), signed=False, event=EventCode.UNAUTHENTICATED_REFUSED
                )
                assert refused == ResultCode.NOT_AUTHENTICATED
                good = link.send(SetMode(Mode.OPERATE), signer=signer)
                assert fc.result_of(good) == ResultCode.OK
                link.send_frame(good)  # the identical frame again: a replay
                assert fc.result_of(good, EventCode.REPLAY_REFUSED) == ResultCode.REPLAY
                uplink = b"\x18\x00\xc0\x00\x00\x07cfdp-ack"  # stands for a CFDP PDU packet
                link.send_data(b"forged" + uplink)  # unsigned: refused
                link.send_data(uplink, signer=signer)
                assert fc.command(RequestProduct("residue_00000001")) == ResultCode.OK
                assert fc.command(Abort()) == ResultCode.OK
                fc.pump(lambda: len(fc.data) == 2)
                assert fc.data == [b"product:residue_00000001", b"echo:" + uplink]
            assert proc.wait(10) == 0
        finally:
            proc.kill()
    store = CounterStore(tmp_path / "payload.counter")
    assert store.last() == signer.last() and store.last("data") == 1


def test_garbage_between_processes_is_counted_not_fatal() -> None:
    with LinkEmulator(Impairments(bytes_per_s=1e6)) as emu:
        with Link.open(emu.a_path, rate=UNPACED) as a, Link.open(emu.b_path, rate=UNPACED) as b:
            a.port.write(bytes(range(1, 256)) * 8 + b"\x00")  # 2 KiB without a delimiter
            frame = a.send(Ping())
            assert b.receive(2.0) == frame
            assert b.decoder.bad["oversize"] == 1


def test_endpoint_reports_bad_frames_and_counts_unexpected_telemetry() -> None:
    with LinkEmulator(Impairments(bytes_per_s=1e6)) as emu:
        with Link.open(emu.a_path, rate=UNPACED) as pl, Link.open(emu.b_path, rate=UNPACED) as fc:
            uplinked: list[bytes] = []
            bench = CommandDispatcher({}, allow_unauthenticated=(MsgType.PING, MsgType.DATA))
            endpoint = PayloadEndpoint(pl, bench, uplinked.append)
            fc.port.write(b"\x01\x02\x03\x00" * 2)  # two bad frames
            fc.send(Health({"from": "fc"}))  # telemetry has no business going this way
            ping = fc.send(Ping())
            fc.send_data(b"\x18\x00pdu")
            deadline = time.monotonic() + 5
            while len(uplinked) < 1 and time.monotonic() < deadline:
                endpoint.poll(0.1)
            assert uplinked == [b"\x18\x00pdu"]
            assert endpoint.unexpected == 1
            replies = [fc.receive(2.0), fc.receive(2.0)]
            msgs = [f.message() for f in replies if f is not None]
            assert Ack(ping.seq, MsgType.PING, ResultCode.OK) in msgs
            bad = [m for m in msgs if isinstance(m, Event) and m.code == EventCode.BAD_FRAMES]
            assert bad and bad[0].text.startswith("2 bad frames")


def test_control_frames_overtake_queued_data() -> None:
    """Three DATA threads keep the line busy; an ACK sent meanwhile goes out right after the
    DATA frame already on the line (one more of slack for thread scheduling), not behind
    the queue."""
    with Link.open("loop://", rate=ByteRate(50_000.0)) as link:
        started = threading.Event()
        order: list[int] = []

        def download() -> None:
            for i in range(20):
                link.send_data(bytes([i + 1]) * 1000)  # 20 ms each at this rate
                started.set()

        def read() -> None:  # loop:// holds only a few KiB: keep it drained
            while len(order) < 61 and (f := link.receive(2.0)) is not None:
                order.append(f.msg_type)

        threads = [threading.Thread(target=download) for _ in range(3)]
        threads.append(threading.Thread(target=read))
        for t in threads:
            t.start()
        started.wait(5)
        time.sleep(0.05)
        data_before = link.frames_sent
        link.send(Ack(7, MsgType.SET_MODE, ResultCode.OK))
        for t in threads:
            t.join(10)
    assert len(order) == 61
    assert order.index(MsgType.ACK) <= data_before + 2, (order.index(MsgType.ACK), data_before)


def test_on_data_failure_is_reported_not_fatal() -> None:
    with LinkEmulator(Impairments(bytes_per_s=1e6)) as emu:
        with Link.open(emu.a_path, rate=UNPACED) as pl, Link.open(emu.b_path, rate=UNPACED) as fc:

            def on_data(packet: bytes) -> None:
                raise ValueError("not a CFDP PDU")

            bench = CommandDispatcher({}, allow_unauthenticated=(MsgType.PING, MsgType.DATA))
            endpoint = PayloadEndpoint(pl, bench, on_data)
            fc.send_data(b"\x01junk")
            ping = fc.send(Ping())
            deadline = time.monotonic() + 5
            while endpoint.dispatcher.results[ResultCode.OK] < 1 and time.monotonic() < deadline:
                endpoint.poll(0.1)
            assert endpoint.data_errors == 1
            msgs = [f.message() for f in (fc.receive(2.0), fc.receive(2.0)) if f is not None]
            assert Ack(ping.seq, MsgType.PING, ResultCode.OK) in msgs
            assert any(isinstance(m, Event) and "not a CFDP PDU" in m.text for m in msgs)
