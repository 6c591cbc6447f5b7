"""The contact plan (firmware_bridge/plan.py, ``onboard downlink plan``): per-pass contents
checked against capacities computed here from the rates and the windows, the sender's own
delivery order, head-of-line blocking by a product larger than any pass, pass definitions
refused with the key named, and a spool left exactly as it was."""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
from test_downlink import FAST, ends, exchange

from firmware_bridge.cfdp.sender import DownlinkSender, transfer_packet_sizes
from firmware_bridge.link import wire_bytes
from firmware_bridge.messages import Event, EventCode
from firmware_bridge.passes import Pass, PlanError, parse_passes
from firmware_bridge.plan import plan
from firmware_bridge.spool import Spool, queued
from onboard.config import ConfigError, from_dict

T0 = dt.datetime(2026, 12, 8, 10, 0, tzinfo=dt.timezone.utc)
RATE = 9600.0  # bit/s
ONBOARD = [sys.executable, "-m", "onboard"]

# (name, kind, priority, size): put in this order, so the spool's order differs from it
PRODUCTS = [("cube_00000001", "cube", 3, 40_000), ("residue_00000001", "residue", 1, 9_000),
            ("health_00000002", "health", 0, 600), ("quicklook_00000001", "quicklook", 2, 12_000),
            ("residue_00000002", "residue", 1, 9_500)]
SEND_ORDER = ["health_00000002", "residue_00000001", "residue_00000002", "quicklook_00000001",
              "cube_00000001"]


def _spool(root: Path, products=PRODUCTS) -> Spool:
    spool = Spool(root, 10_000_000)
    rng = random.Random(0)
    for name, kind, priority, size in products:
        spool.put(name, rng.randbytes(size), priority, kind)
    return spool


def _transfer(spool: Spool) -> dict[str, int]:
    """Bytes on the link of each product's transfer (the one definition, link.wire_bytes)."""
    return {e.name: wire_bytes(transfer_packet_sizes(e)) for e in spool.entries()}


def _cost(spool: Spool) -> dict[str, int]:
    """Bytes of a pass each product takes: its transfer and the PRODUCT_DELIVERED event after it."""
    transfer = _transfer(spool)
    return {e.name: transfer[e.name] + wire_bytes([Event(EventCode.PRODUCT_DELIVERED, (
        f"delivered {e.name} ({e.kind}, priority {e.priority}, {e.size} B)")).pack()]) for e in spool.entries()}


def _window(start: dt.datetime, capacity_bytes: float) -> Pass:
    """A pass at RATE long enough to carry ``capacity_bytes``: duration = bytes x 8 / rate,
    rounded up to timedelta's microsecond (rounded to the nearest, a pass sized to the byte
    could carry a fraction of a byte less than asked)."""
    us = math.ceil(capacity_bytes * 8 / RATE * 1e6)
    return Pass(start, start + dt.timedelta(microseconds=us), RATE)


def test_each_pass_carries_what_fits_in_send_order(tmp_path: Path) -> None:
    spool = _spool(tmp_path / "spool")
    cost = _cost(spool)
    c = [cost[n] for n in SEND_ORDER]
    # pass 0 holds the first three and half the fourth; pass 1 the fourth and half the cube;
    # pass 2 the cube with 10 B to spare
    passes = [_window(T0, c[0] + c[1] + c[2] + c[3] / 2),
              _window(T0 + dt.timedelta(hours=1), c[3] + c[4] / 2),
              _window(T0 + dt.timedelta(hours=2), c[4] + 10)]
    result = plan(spool.entries(), passes, T0 - dt.timedelta(minutes=5))
    assert [[p.name for p in pp.products] for pp in result.passes] == [
        SEND_ORDER[:3], SEND_ORDER[3:4], SEND_ORDER[4:]]
    assert result.not_sent == []
    # capacity = rate x duration / 8, and each pass's bytes are the sum of its products' costs
    transfer = _transfer(spool)
    for pp, w in zip(result.passes, passes, strict=True):
        assert pp.capacity_bytes == pytest.approx(RATE * (w.end_utc - w.start_utc).total_seconds() / 8)
        assert pp.used_bytes == sum(transfer[p.name] for p in pp.products)
        assert sum(cost[p.name] for p in pp.products) <= pp.capacity_bytes
    first = result.passes[0]
    # each product starts when the one before it has left at RATE
    p1, p2 = first.products[:2]
    assert p1.start_utc == T0 and p1.seconds == pytest.approx(c[0] * 8 / RATE)
    assert (p2.start_utc - T0).total_seconds() == pytest.approx(c[0] * 8 / RATE)


def test_a_pass_under_way_counts_from_now_and_past_passes_are_dropped(tmp_path: Path) -> None:
    spool = _spool(tmp_path / "spool")
    cost = _cost(spool)
    c = [cost[n] for n in SEND_ORDER]
    past = _window(T0 - dt.timedelta(hours=1), 100_000)  # over 83 s after it began
    # from its middle: room for the first two only (a byte to spare: halving the window rounds
    # its time to the microsecond)
    current = _window(T0, 2 * (c[0] + c[1]) + 2)
    now = T0 + (current.end_utc - T0) / 2
    result = plan(spool.entries(), [current, past], now)
    assert len(result.passes) == 1
    assert [p.name for p in result.passes[0].products] == SEND_ORDER[:2]
    assert result.passes[0].capacity_bytes == pytest.approx(c[0] + c[1] + 1, abs=0.01)
    assert [p.name for p in result.not_sent] == SEND_ORDER[2:]
    for p in result.not_sent:  # the cube is larger than what is left of the pass
        assert ("full" if p.wire_bytes <= c[0] + c[1] else "more than any pass") in p.reason


def test_the_plan_order_is_the_order_the_sender_delivers(tmp_path: Path) -> None:
    spool, tx, rx, down, up, got, _ = ends(tmp_path, FAST)
    rng = random.Random(0)
    for name, kind, priority, size in PRODUCTS:
        spool.put(name, rng.randbytes(size), priority, kind)
    forecast = plan(spool.entries(), [_window(T0, 1e9)], T0, FAST)
    exchange(tx, rx, down, up, random.Random(1))
    assert [p.name for p in forecast.passes[0].products] == [f.name for f in got] == SEND_ORDER


def test_a_product_larger_than_any_pass_does_not_block_those_behind_it(tmp_path: Path) -> None:
    spool = _spool(tmp_path / "spool")
    cost = _cost(spool)
    c = [cost[n] for n in SEND_ORDER]
    # the cube (last in send order) needs more than either pass; a later, less urgent product
    # queued behind it goes in the room the cube cannot use
    spool.put("cube_00000002", bytes(100), 4, "cube")
    small = _cost(spool)["cube_00000002"]
    passes = [_window(T0, sum(c[:4]) + small), _window(T0 + dt.timedelta(hours=1), c[4] - 1)]
    result = plan(spool.entries(), passes, T0)
    assert [p.name for p in result.passes[0].products] == [*SEND_ORDER[:4], "cube_00000002"]
    assert result.passes[1].products == []
    assert [p.name for p in result.not_sent] == ["cube_00000001"]
    assert "more than any pass" in result.not_sent[0].reason


def test_a_product_too_large_for_the_rest_of_a_pass_lets_smaller_ones_by(tmp_path: Path) -> None:
    """The quick-look (third in send order) does not fit the room left after the first two;
    a small product queued after it at a lower priority does, and goes in this pass; the
    quick-look goes first in the next."""
    spool = _spool(tmp_path / "spool", PRODUCTS[:4])
    spool.put("residue_00000009", bytes(300), 5, "residue")
    cost = _cost(spool)
    head = [cost[n] for n in SEND_ORDER[:2]]
    passes = [_window(T0, sum(head) + cost["residue_00000009"] + 100),
              _window(T0 + dt.timedelta(hours=1), 100_000)]
    result = plan(spool.entries(), passes, T0)
    assert [p.name for p in result.passes[0].products] == [*SEND_ORDER[:2], "residue_00000009"]
    assert [p.name for p in result.passes[1].products] == ["quicklook_00000001", "cube_00000001"]


def test_an_empty_spool_and_no_passes(tmp_path: Path) -> None:
    empty = Spool(tmp_path / "empty", 1_000_000)
    result = plan(empty.entries(), [_window(T0, 10_000)], T0)
    assert result.not_sent == [] and result.passes[0].products == []
    spool = _spool(tmp_path / "spool")
    nowhere = plan(spool.entries(), [], T0)
    assert [p.name for p in nowhere.not_sent] == SEND_ORDER
    assert all(p.reason == "no pass ahead" for p in nowhere.not_sent)


GOOD = {"start_utc": "2026-12-08T10:00:00Z", "end_utc": "2026-12-08T10:08:00Z", "rate_bit_s": 9600}


@pytest.mark.parametrize("change,words", [
    ({"rate_bit_s": 0}, "#1 rate_bit_s"),
    ({"rate_bit_s": "fast"}, "#1 rate_bit_s"),
    ({"rate_bit_s": float("nan")}, "#1 rate_bit_s"),
    ({"end_utc": "2026-12-08T09:00:00Z"}, "#1 end_utc: 2026-12-08T09:00:00+00:00 is not after"),
    ({"start_utc": "tomorrow"}, "#1 start_utc: expected an ISO 8601"),
    ({"start_utc": dt.date(2026, 12, 8)}, "#1 start_utc: expected a date and time"),
    ({"rate_bits": 9600}, "#1 rate_bits: unknown key"),
    ({"end_utc": None}, "#1 end_utc: missing"),
])
def test_bad_pass_definitions_are_refused_with_the_key_named(change, words) -> None:
    table = {k: v for k, v in {**GOOD, **change}.items() if v is not None}
    with pytest.raises(ConfigError, match=words.replace("+", r"\+")) as err:
        from_dict({"downlink": {"pass": [table]}})
    assert str(err.value).startswith("[[downlink.pass]] #1")


def test_overlapping_passes_and_a_stray_key_are_refused() -> None:
    second = {**GOOD, "start_utc": "2026-12-08T10:07:00Z", "end_utc": "2026-12-08T10:20:00Z"}
    with pytest.raises(PlanError, match="overlaps"):
        parse_passes([GOOD, second])
    with pytest.raises(ConfigError, match=r"\[downlink\] passes: unknown key"):
        from_dict({"downlink": {"passes": [GOOD]}})


def test_toml_datetimes_and_offsets_are_read_as_utc(tmp_path: Path) -> None:
    (tmp_path / "m.toml").write_text(
        "[[downlink.pass]]\nstart_utc = 2026-12-08T11:00:00+01:00\n"
        "end_utc = 2026-12-08T10:05:00\nrate_bit_s = 9600\n")
    from onboard.config import load

    (p,) = load(tmp_path / "m.toml").downlink.passes
    assert p.start_utc == T0 and p.end_utc == T0 + dt.timedelta(minutes=5)


def _listing(root: Path) -> dict[str, tuple[int, int, bytes]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns,
                                       p.read_bytes() if p.is_file() else b"")
            for p in sorted(root.rglob("*"))}


def test_the_command_line_plans_without_touching_the_spool(tmp_path: Path) -> None:
    root = tmp_path / "spool"
    spool = _spool(root)
    (root / "queue" / "99.0000000099.cube.partial.tmp").write_bytes(b"half")  # left by a cut
    cost = _cost(spool)
    c = [cost[n] for n in SEND_ORDER]
    seconds = (c[0] + c[1] + 100) * 8 / RATE
    mission = tmp_path / "mission.toml"
    mission.write_text(f'[[downlink.pass]]\nstart_utc = "2026-12-08T10:00:00Z"\n'
                       f'end_utc = "{(T0 + dt.timedelta(seconds=seconds)).isoformat()}"\n'
                       f"rate_bit_s = {RATE}\n")
    before = _listing(root)
    args = [*ONBOARD, "downlink", "plan", "--spool", str(root), "--config", str(mission),
            "--now", "2026-12-08T09:00:00Z"]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    as_json = subprocess.run([*args, "--json"], capture_output=True, text=True, timeout=120, env=env)
    text = subprocess.run(args, capture_output=True, text=True, timeout=120, env=env)
    assert as_json.returncode == 0 and text.returncode == 0, as_json.stderr + text.stderr
    assert _listing(root) == before
    out = json.loads(as_json.stdout)
    assert [p["name"] for p in out["passes"][0]["products"]] == SEND_ORDER[:2]
    transfer = _transfer(spool)
    assert out["passes"][0]["used_bytes"] == transfer[SEND_ORDER[0]] + transfer[SEND_ORDER[1]]
    assert [p["name"] for p in out["not_sent"]] == SEND_ORDER[2:]
    assert "not sent before the last pass ends: 3 product(s)" in text.stdout
    assert f"{transfer[SEND_ORDER[1]]:>11,d} B" in text.stdout
    assert len(queued(root)) == len(PRODUCTS)


def test_a_folder_that_is_not_a_spool_is_one_line_and_left_alone(tmp_path: Path) -> None:
    folder = tmp_path / "nothing"
    folder.mkdir()
    proc = subprocess.run([*ONBOARD, "downlink", "plan", "--spool", str(folder)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and "is not a spool" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr and list(folder.iterdir()) == []


def test_a_pass_delivers_what_the_plan_forecast(tmp_path: Path) -> None:
    """A real class 2 exchange (cfdp-py at both ends) through a channel that carries the
    pass's capacity in link-frame bytes (exact COBS of each packet, the Finished PDUs' ACKs
    included) and nothing after: the ground gets exactly the products the plan put in the
    pass, in its order."""
    spool, tx, rx, down, up, got, _ = ends(tmp_path, FAST)
    rng = random.Random(0)
    for name, kind, priority, size in PRODUCTS:
        spool.put(name, rng.randbytes(size), priority, kind)
    cost = _cost(spool)
    c = [cost[n] for n in SEND_ORDER]
    window = _window(T0, c[0] + c[1] + c[2] + c[3] / 2)
    forecast = plan(spool.entries(), [window], T0, FAST)
    budget = forecast.passes[0].capacity_bytes
    while tx.busy and budget > 0:
        tx.step()
        for packet in down:
            budget -= wire_bytes([packet])
            if budget >= 0:
                rx.on_packet(packet)
        down.clear()
        rx.poll()
        for packet in up:
            tx.on_packet(packet)
        up.clear()
    assert budget < 0, "the pass should end before the spool is empty"
    assert [f.name for f in got] == [p.name for p in forecast.passes[0].products] == SEND_ORDER[:3]


def test_a_sender_told_the_room_left_skips_what_does_not_fit_as_the_plan_does(tmp_path: Path) -> None:
    """The sender with a contact plan (``room``: the bytes the channel still carries) starts
    no transfer that the pass would cut: the quick-look does not fit after the first two, a
    small product queued behind it does; the ground gets what the plan forecast, in its order,
    and the quick-look and the cube stay queued, whole, for the next pass."""
    spool, _, rx, down, up, got, _ = ends(tmp_path, FAST)
    rng = random.Random(0)
    for name, kind, priority, size in PRODUCTS[:4]:
        spool.put(name, rng.randbytes(size), priority, kind)
    spool.put("residue_00000009", rng.randbytes(300), 5, "residue")
    cost = _cost(spool)
    # room for the first two and the small one, with 200 B for the Finished PDUs' ACKs, which
    # the plan does not count
    window = _window(T0, cost["health_00000002"] + cost["residue_00000001"] + cost["residue_00000009"] + 200)
    forecast = plan(spool.entries(), [window], T0, FAST)
    budget = forecast.passes[0].capacity_bytes
    tx = DownlinkSender(spool, down.append, FAST, room=lambda: budget)
    while tx.step():
        for packet in down:
            budget -= wire_bytes([packet])
            assert budget >= 0, "the sender started a transfer the pass cuts"
            rx.on_packet(packet)
        down.clear()
        rx.poll()
        for packet in up:
            tx.on_packet(packet)
        up.clear()
    assert [f.name for f in got] == [p.name for p in forecast.passes[0].products] == [
        "health_00000002", "residue_00000001", "residue_00000009"]
    assert [e.name for e in spool.entries()] == ["quicklook_00000001", "cube_00000001"]
    assert tx.turnaround_s > 0  # the Finished PDUs' round trip, measured for the next plan


def test_the_contact_plan_gives_the_room_left_and_survives_a_reboot(tmp_path: Path) -> None:
    from firmware_bridge.passes import ContactPlan, from_unix

    mission = [_window(T0, 12_000)]  # 10 s at 9600 bit/s
    kept = tmp_path / "contact_plan.json"
    contact = ContactPlan(mission, kept)
    assert contact.room_bytes(T0 - dt.timedelta(seconds=1)) == 0.0  # between passes
    assert contact.room_bytes(T0 + dt.timedelta(seconds=4)) == pytest.approx(6 * RATE / 8)
    assert ContactPlan([]).room_bytes(T0) is None  # no plan: the link is always up
    start = int(T0.timestamp()) + 3600
    by_telecommand = from_unix([(start, start + 600, 1200)])
    contact.replace(by_telecommand)
    rebooted = ContactPlan(mission, kept)  # the ground's plan, not the mission file's
    assert rebooted.passes == by_telecommand and rebooted.problem == ""
    assert rebooted.current(T0 + dt.timedelta(seconds=3700)).rate_bit_s == 1200
    kept.write_text("[[1, 0, 5]]")  # end before start: not used, and said
    damaged = ContactPlan(mission, kept)
    assert damaged.passes == mission and "unreadable" in damaged.problem
    with pytest.raises(PlanError, match="overlaps"):
        from_unix([(start, start + 600, 1200), (start + 300, start + 900, 1200)])


def test_health_takes_at_most_its_share_of_a_slow_link() -> None:
    from firmware_bridge.passes import adapted_period_s

    # a 1.93 KB health product every 10 s takes 16 % of 9.6 kbit/s (issue 18); at a 2 %
    # share it goes every 80 s there, and still every 10 s on a 115.2 kbit/s UART
    assert adapted_period_s(10.0, 1930, 1200, 0.02) == pytest.approx(1930 / 24)
    assert adapted_period_s(10.0, 1930, 11_520, 0.02) == 10.0
    assert 1930 / adapted_period_s(10.0, 1930, 1200, 0.02) <= 0.02 * 1200
