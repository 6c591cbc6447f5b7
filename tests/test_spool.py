"""The downlink spool: order, quota eviction with events, atomic files, recovery, counters."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from firmware_bridge.messages import Event, EventCode, Severity
from firmware_bridge.spool import Spool, SpoolError
from firmware_bridge.storage import SlotRecord


def blob(i: int, size: int) -> bytes:
    return bytes((i + k) % 251 for k in range(size))


def test_delivery_order_is_priority_then_age(tmp_path: Path) -> None:
    sp = Spool(tmp_path, 10_000)
    puts = [("cube_1", 3, "cube"), ("health_1", 0, "health"), ("quicklook_1", 2, "quicklook"),
            ("residue_1", 1, "residue"), ("health_2", 0, "health"), ("cube_2", 3, "cube")]
    for i, (name, prio, kind) in enumerate(puts):
        [event] = sp.put(name, blob(i, 10), prio, kind)
        assert event.what == "queued"
    order = [e.name for e in sp.entries()]
    assert order == ["health_1", "health_2", "residue_1", "quicklook_1", "cube_1", "cube_2"]
    # delivered ones leave, in that order, and survive a reopen
    sp.delivered(sp.next())
    assert [e.name for e in Spool(tmp_path, 10_000).entries()] == order[1:]


def test_quota_evicts_lowest_priority_oldest_first_with_events(tmp_path: Path) -> None:
    sp = Spool(tmp_path, 1000)
    sp.put("cube_1", blob(1, 300), 3, "cube")
    sp.put("cube_2", blob(2, 300), 3, "cube")
    sp.put("quicklook_1", blob(3, 300), 2, "quicklook")
    events = sp.put("residue_1", blob(4, 350), 1, "residue")  # needs 250 B more: one cube
    assert [(e.what, e.name) for e in events] == [("evicted", "cube_1"), ("queued", "residue_1")]
    events = sp.put("health_1", blob(5, 400), 0, "health")  # 350 B more: cube_2, then quicklook
    assert [(e.what, e.name) for e in events] == [
        ("evicted", "cube_2"), ("evicted", "quicklook_1"), ("queued", "health_1")]
    assert sp.used_bytes == 750 <= sp.quota_bytes
    msg = events[0].message()
    assert isinstance(msg, Event) and msg.code == EventCode.SPOOL_EVICTED
    assert msg.severity == Severity.WARNING and "cube_2" in msg.text
    assert Event.unpack(msg.pack()) == msg  # fits a telemetry frame
    assert events[-1].message().code == EventCode.PRODUCT_QUEUED


def test_a_less_important_product_never_evicts_a_more_important_one(tmp_path: Path) -> None:
    sp = Spool(tmp_path, 1000)
    sp.put("residue_1", blob(1, 800), 1, "residue")
    [event] = sp.put("cube_1", blob(2, 300), 3, "cube")
    assert event.what == "refused" and "quota" in event.reason
    assert event.message().code == EventCode.SPOOL_EVICTED
    assert [e.name for e in sp.entries()] == ["residue_1"]
    [event] = sp.put("big", blob(3, 2000), 0, "health")  # larger than the whole quota
    assert event.what == "refused"


def test_the_product_in_flight_is_not_evicted(tmp_path: Path) -> None:
    sp = Spool(tmp_path, 1000)
    sp.put("cube_1", blob(1, 600), 3, "cube")
    assert sp.next().name == "cube_1"
    [event] = sp.put("cube_2", blob(2, 600), 3, "cube")
    assert event.what == "refused"
    sp.release()
    events = sp.put("cube_2", blob(2, 600), 3, "cube")
    assert [(e.what, e.name) for e in events] == [("evicted", "cube_1"), ("queued", "cube_2")]


def test_repeated_put_is_idempotent_but_new_content_is_kept(tmp_path: Path) -> None:
    sp = Spool(tmp_path, 10_000)
    assert len(sp.put("event_7", b"a", 0, "event")) == 1
    assert sp.put("event_7", b"a", 0, "event") == []
    assert [e.what for e in sp.put("event_7", b"b", 0, "event")] == ["queued"]
    assert len(sp) == 2


def test_recovery_discards_partial_writes_and_keeps_whole_files(tmp_path: Path) -> None:
    sp = Spool(tmp_path, 10_000)
    sp.put("residue_1", blob(1, 100), 1, "residue")
    # a power cut during a put leaves its temporary file behind
    (sp.queue_dir / "01.0000000001.residue.residue_2.tmp").write_bytes(b"half")
    again = Spool(tmp_path, 10_000)
    assert again.recovery.partial_files_discarded == 1
    assert again.recovery.partial_bytes_discarded == 4
    assert again.recovery.entries == 1
    assert [e.name for e in again.entries()] == ["residue_1"]
    assert again.entries()[0].path.read_bytes() == blob(1, 100)
    assert not list(sp.queue_dir.glob("*.tmp"))
    # sequence numbers keep growing after a restart
    again.put("residue_3", blob(3, 10), 1, "residue")
    assert [e.name for e in again.entries()] == ["residue_1", "residue_3"]


def test_transaction_numbers_never_repeat_across_restarts(tmp_path: Path) -> None:
    numbers = [Spool(tmp_path, 100).reserve_transaction() for _ in range(5)]
    assert numbers == [0, 1, 2, 3, 4]
    state = json.loads(SlotRecord(tmp_path / "state.bin").read() or b"")
    assert state["next_transaction"] == 5


def test_unreadable_state_and_stray_files_are_clear_errors(tmp_path: Path) -> None:
    Spool(tmp_path, 100)
    (tmp_path / "queue" / "notes.txt").write_text("x")
    with pytest.raises(SpoolError, match="unexpected file .*notes.txt"):
        Spool(tmp_path, 100)
    os.remove(tmp_path / "queue" / "notes.txt")
    (tmp_path / "state.bin").write_bytes(b"{garbage")
    with pytest.raises(SpoolError, match="unreadable"):
        Spool(tmp_path, 100)


@pytest.mark.parametrize("name", ["", "../etc", "a b", "x" * 65, "a.b"])
def test_names_that_could_escape_or_confuse_are_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(SpoolError, match="must be 1-64"):
        Spool(tmp_path, 100).put(name, b"x", 0, "health")


def test_a_spool_of_the_older_layout_keeps_its_counters(tmp_path: Path) -> None:
    (tmp_path / "state.json").write_text('{"next_seq": 3, "next_transaction": 7}')
    assert Spool(tmp_path, 100).reserve_transaction() == 7
    assert Spool(tmp_path, 100).reserve_transaction() == 8  # from state.bin from now on
    assert json.loads(SlotRecord(tmp_path / "state.bin").read() or b"")["next_transaction"] == 9
