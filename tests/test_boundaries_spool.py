"""The spool at its exact limits (issue 22): quota exactly full, priority 99/100, the in-flight
guard when another product leaves, recovery with partial files in the middle of the queue."""

from __future__ import annotations

import errno
import json
from pathlib import Path

import pytest

from firmware_bridge import spool as spool_module
from firmware_bridge.messages import EventCode
from firmware_bridge.spool import (
    LEGACY_STATE_FILE,
    QUEUE_DIR,
    STATE_FILE,
    Spool,
    SpoolError,
    SpoolEvent,
    queued,
)
from firmware_bridge.storage import StorageBudget


def blob(i: int, size: int) -> bytes:
    return bytes((i + k) % 251 for k in range(size))


def test_quota_exactly_full_evicts_nothing_and_one_byte_more_does(tmp_path: Path) -> None:
    sp = Spool(tmp_path, 100)
    sp.put("a", blob(1, 60), 3, "cube")
    assert [e.what for e in sp.put("b", blob(2, 40), 3, "cube")] == ["queued"]
    assert sp.used_bytes == 100 == sp.quota_bytes
    events = sp.put("c", blob(3, 1), 3, "cube")
    assert [(e.what, e.name) for e in events] == [("evicted", "a"), ("queued", "c")]
    assert sp.used_bytes == 41


def test_product_of_exactly_the_quota_fits_an_empty_spool(tmp_path: Path) -> None:
    sp = Spool(tmp_path, 50)
    assert [e.what for e in sp.put("a", blob(1, 50), 0, "health")] == ["queued"]
    [refused] = Spool(tmp_path / "other", 50).put("b", blob(1, 51), 0, "health")
    assert refused.what == "refused" and "spool quota 50 B: 0 B queued" in refused.reason


def test_eviction_frees_exactly_enough(tmp_path: Path) -> None:
    """Victims stop as soon as the need is met: with 30 B to free, a 30 B victim is enough."""
    sp = Spool(tmp_path, 100)
    sp.put("a", blob(1, 30), 3, "cube")
    sp.put("b", blob(2, 30), 3, "cube")
    sp.put("c", blob(3, 40), 3, "cube")
    events = sp.put("d", blob(4, 30), 2, "quicklook")
    assert [(e.what, e.name) for e in events] == [("evicted", "a"), ("queued", "d")]
    assert [e.name for e in sp.entries()] == ["d", "b", "c"]


def test_quota_must_be_positive(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="quota_bytes must be > 0, got 0"):
        Spool(tmp_path, 0)
    assert Spool(tmp_path, 1).quota_bytes == 1


@pytest.mark.parametrize("priority,ok", [(0, True), (99, True), (100, False), (-1, False)])
def test_priority_bounds(tmp_path: Path, priority: int, ok: bool) -> None:
    sp = Spool(tmp_path, 1000)
    if not ok:
        with pytest.raises(SpoolError, match=f"priority must be 0-99, got {priority}"):
            sp.put("a", b"x", priority, "cube")
        assert not list((tmp_path / QUEUE_DIR).iterdir())
        return
    sp.put("a", b"x", priority, "cube")
    [entry] = Spool(tmp_path, 1000).entries()  # its file name reopens
    assert entry.priority == priority and entry.path.name == f"{priority:02d}.0000000000.cube.a"


def test_in_flight_guard_survives_another_product_leaving(tmp_path: Path) -> None:
    """Removing (delivering or discarding) any other product must not clear the guard on the
    product being downlinked, or it could be evicted mid-transfer."""
    sp = Spool(tmp_path, 100)
    sp.put("first", blob(1, 40), 3, "cube")
    sp.put("other", blob(2, 40), 3, "cube")
    flying = sp.next()
    assert flying is not None and flying.name == "first"
    sp.delivered([e for e in sp.entries() if e.name == "other"][0])
    sp.put("third", blob(3, 40), 1, "residue")  # more important: never a victim of a cube
    [refused] = sp.put("fourth", blob(4, 40), 3, "cube")  # room only by evicting "first": no
    assert refused.what == "refused"
    assert [e.name for e in sp.entries()] == ["third", "first"]
    sp.discard([e for e in sp.entries() if e.name == "third"][0], "test")
    events = sp.put("fifth", blob(5, 70), 3, "cube")
    assert [e.what for e in events] == ["refused"] and sp.next().name == "first"


def test_in_flight_guard_is_cleared_by_its_own_removal_and_release(tmp_path: Path) -> None:
    sp = Spool(tmp_path, 100)
    sp.put("a", blob(1, 60), 3, "cube")
    sp.release()
    entry = sp.next()
    sp.release()
    assert [(e.what, e.name) for e in sp.put("b", blob(2, 60), 3, "cube")] == [("evicted", "a"), ("queued", "b")]
    entry = sp.next()
    sp.delivered(entry)
    assert sp.next() is None
    sp.put("c", blob(3, 60), 3, "cube")
    assert [(e.what, e.name) for e in sp.put("d", blob(4, 60), 3, "cube")] == [("evicted", "c"), ("queued", "d")]


def test_recovery_with_partial_files_in_the_middle_of_the_queue(tmp_path: Path) -> None:
    """Leftover .tmp files sort between whole products: every whole product after them is
    still queued, the partials are deleted and reported, and sequence numbers never go back."""
    sp = Spool(tmp_path, 10_000)
    for i, name in enumerate(["a", "b", "c", "d"]):
        sp.put(name, blob(i, 10 + i), 3 if i % 2 else 1, "cube")
    q = tmp_path / QUEUE_DIR
    (q / "01.0000000000.cube.a.tmp").write_bytes(b"p" * 7)      # before the second product
    (q / "03.0000000001.cube.b.tmp").write_bytes(b"p" * 5)      # between b and d
    (q / "01.0000000009.cube.z.tmp").write_bytes(b"")           # a never-finished new product
    (tmp_path / STATE_FILE).unlink(missing_ok=True)             # no state: numbers from files
    back = Spool(tmp_path, 10_000)
    assert [e.name for e in back.entries()] == ["a", "c", "b", "d"]
    r = back.recovery
    assert (r.entries, r.queued_bytes, r.partial_files_discarded, r.partial_bytes_discarded) == (4, 46, 3, 12)
    assert sorted(p.name for p in q.iterdir() if p.name.endswith(".tmp")) == []
    [queued] = back.put("e", b"new", 1, "cube")
    assert queued.what == "queued" and back.entries()[2].seq == 4  # after a, c: seq 4, not reused


def test_state_counters_are_kept_above_the_files(tmp_path: Path) -> None:
    sp = Spool(tmp_path, 1000)
    sp.put("a", b"x", 1, "cube")
    assert sp.reserve_transaction() == 0
    again = Spool(tmp_path, 1000)
    assert again.reserve_transaction() == 1  # persisted, never handed out twice
    # a spool of the older layout whose counters are above its files: they are kept
    old = tmp_path / "older"
    (old / "queue").mkdir(parents=True)
    (old / "queue" / (sp.entries()[0].path.name)).write_bytes(b"x")
    (old / LEGACY_STATE_FILE).write_text(json.dumps({"next_seq": 50, "next_transaction": 7}))
    back = Spool(old, 1000)
    assert back.reserve_transaction() == 7 and back.reserve_transaction() == 8
    back.put("b", b"y", 1, "cube")
    assert [e.seq for e in back.entries()] == [0, 50]
    assert Spool(old, 1000).reserve_transaction() == 9


@pytest.mark.parametrize("state", ['{"next_seq": 1}', '{"next_seq": "x", "next_transaction": 0}', "[",
                                   '{"next_seq": null, "next_transaction": 0}'])
def test_unreadable_state_is_refused(tmp_path: Path, state: str) -> None:
    Spool(tmp_path, 10)
    (tmp_path / STATE_FILE).write_text(state)
    with pytest.raises(SpoolError, match="is unreadable"):
        Spool(tmp_path, 10)


@pytest.mark.parametrize("stray", ["100.0000000000.cube.a", "01.000000000.cube.a", "01.0000000000.cube",
                                   "01.0000000000.cu.be.a", "notes.txt"])
def test_file_names_outside_the_pattern_are_refused_on_open(tmp_path: Path, stray: str) -> None:
    Spool(tmp_path, 10)
    (tmp_path / QUEUE_DIR / stray).write_bytes(b"x")
    with pytest.raises(SpoolError, match="unexpected file"):
        Spool(tmp_path, 10)


def test_a_directory_in_the_queue_is_refused(tmp_path: Path) -> None:
    Spool(tmp_path, 10)
    (tmp_path / QUEUE_DIR / "01.0000000000.cube.a").mkdir()
    with pytest.raises(SpoolError, match="unexpected file"):
        Spool(tmp_path, 10)


@pytest.mark.parametrize("name,ok", [("a" * 64, True), ("a" * 65, False), ("", False), ("a.b", False)])
def test_name_and_kind_length_bounds(tmp_path: Path, name: str, ok: bool) -> None:
    for args in ((name, b"x", 1, "cube"), ("n", b"x", 1, name)):
        sp = Spool(tmp_path, 100)
        if ok:
            assert sp.put(*args)[-1].what == "queued"
            assert Spool(tmp_path, 100).entries()
        else:
            with pytest.raises(SpoolError, match="must be 1-64"):
                sp.put(*args)


def test_same_name_new_bytes_or_new_size_is_a_new_product(tmp_path: Path) -> None:
    sp = Spool(tmp_path, 1000)
    sp.put("a", b"xy", 1, "cube")
    assert sp.put("a", b"xy", 1, "cube") == []
    assert sp.put("a", b"xz", 1, "cube")[0].what == "queued"
    assert sp.put("a", b"xyz", 1, "cube")[0].what == "queued"
    assert sp.put("b", b"xy", 1, "cube")[0].what == "queued"
    assert len(sp) == 4


def test_events_carry_their_codes_and_words() -> None:
    ev = SpoolEvent("evicted", "cube_1", "cube", 3, 300, "quota 1000 B, room for residue_1")
    msg = ev.message()
    assert msg.code == EventCode.SPOOL_EVICTED
    assert msg.text == "evicted cube_1 (cube, priority 3, 300 B): quota 1000 B, room for residue_1"
    assert SpoolEvent("queued", "a", "k", 1, 2).message().code == EventCode.PRODUCT_QUEUED
    assert SpoolEvent("queued", "a", "k", 1, 2).message().text == "queued a (k, priority 1, 2 B)"
    assert SpoolEvent("refused", "a", "k", 1, 2, "r").message().code == EventCode.SPOOL_EVICTED
    assert SpoolEvent("delivered", "a", "k", 1, 2).message().code == EventCode.PRODUCT_DELIVERED


def test_delivered_and_discarded_leave_durably(tmp_path: Path) -> None:
    sp = Spool(tmp_path, 1000)
    sp.put("a", b"1", 1, "cube")
    sp.put("b", b"22", 2, "cube")
    entry = sp.next()
    ev = sp.delivered(entry)
    assert (ev.what, ev.name, ev.size, ev.priority, ev.kind) == ("delivered", "a", 1, 1, "cube")
    [b] = sp.entries()
    b.path.unlink()  # its file vanished
    ev = sp.discard(b, "file gone")
    assert (ev.what, ev.reason) == ("evicted", "file gone")
    assert len(Spool(tmp_path, 1000)) == 0 and sp.used_bytes == 0


def _fields(ev: SpoolEvent) -> tuple:
    return (ev.what, ev.name, ev.kind, ev.priority, ev.size, ev.reason)


def test_every_event_carries_the_product_it_is_about(tmp_path: Path) -> None:
    sp = Spool(tmp_path, 100)
    assert [_fields(e) for e in sp.put("a", blob(1, 60), 3, "cube")] == [("queued", "a", "cube", 3, 60, "")]
    assert [_fields(e) for e in sp.put("b", blob(2, 50), 2, "quicklook")] == [
        ("evicted", "a", "cube", 3, 60, "quota 100 B, room for b"), ("queued", "b", "quicklook", 2, 50, "")]
    assert [_fields(e) for e in sp.put("c", blob(3, 60), 3, "cube")] == [
        ("refused", "c", "cube", 3, 60,
         "spool quota 100 B: 50 B queued and no product of priority >= 3 can make room")]
    [b] = sp.entries()
    assert _fields(sp.discard(b, "unreadable")) == ("evicted", "b", "quicklook", 2, 50, "unreadable")


def test_delivering_twice_is_harmless(tmp_path: Path) -> None:
    """A duplicate confirmation (the ground's Finished repeated) must not raise."""
    sp = Spool(tmp_path, 100)
    sp.put("a", b"x", 1, "cube")
    entry = sp.next()
    sp.delivered(entry)
    assert sp.delivered(entry).what == "delivered" and len(sp) == 0


def test_reopened_entries_keep_their_fields(tmp_path: Path) -> None:
    Spool(tmp_path, 100).put("res_1", b"abc", 1, "residue")
    [e] = Spool(tmp_path, 100).entries()
    assert (e.priority, e.seq, e.kind, e.name, e.size, e.order) == (1, 0, "residue", "res_1", 3, (1, 0))


def test_name_and_kind_refusals_say_which(tmp_path: Path) -> None:
    sp = Spool(tmp_path, 10)
    with pytest.raises(SpoolError, match=r"^product name 'a\.b' must be 1-64"):
        sp.put("a.b", b"x", 1, "cube")
    with pytest.raises(SpoolError, match=r"^product kind 'c/d' must be 1-64"):
        sp.put("a", b"x", 1, "c/d")


# --- the free-space floor, write failures and the read-only listing (after storage11) -------


def test_the_floor_evicts_a_less_important_product_and_says_which(tmp_path: Path) -> None:
    free = {"bytes": 10_000}
    sp = Spool(tmp_path, 10**6, budget=StorageBudget(1000, free=lambda _path: free["bytes"]))
    assert [e.what for e in sp.put("low", blob(0, 300), 5, "cube")] == ["queued"]
    free["bytes"] = 1200  # 200 B above the floor: a 500 B product needs 300 B freed
    events = sp.put("high", blob(1, 500), 1, "residue")
    assert [(e.what, e.name, e.kind, e.priority, e.size) for e in events] == [
        ("evicted", "low", "cube", 5, 300), ("queued", "high", "residue", 1, 500)]
    assert [e.name for e in sp.entries()] == ["high"]


def test_the_floor_refuses_what_nothing_less_important_can_make_room_for(tmp_path: Path) -> None:
    sp = Spool(tmp_path, 10**6, budget=StorageBudget(1000, free=lambda _path: 1000))
    (refused,) = sp.put("x", blob(0, 400), 3, "cube")
    assert (refused.what, refused.name, refused.kind, refused.priority, refused.size) == (
        "refused", "x", "cube", 3, 400)
    assert refused.reason.startswith("free space below the floor of 1000 B")
    assert len(sp) == 0


def test_a_product_the_disk_cannot_take_is_refused_with_the_reason(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    sp = Spool(tmp_path, 10**6)

    def full(*_args: object, **_kw: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(spool_module, "atomic_write", full)
    events = sp.put("y", blob(2, 100), 2, "quicklook")
    assert events[-1] == SpoolEvent("refused", "y", "quicklook", 2, 100,
                                    "cannot write it: No space left on device")
    assert len(sp) == 0


def test_queued_lists_a_spool_without_writing_to_it(tmp_path: Path) -> None:
    sp = Spool(tmp_path, 10**6)
    for i, prio in enumerate((3, 0, 1)):
        sp.put(f"p{i}", blob(i, 10), prio, "cube")
    (tmp_path / QUEUE_DIR / "00.0000000099.partial.cube.tmp").write_bytes(b"cut")
    before = sorted(p.name for p in (tmp_path / QUEUE_DIR).iterdir())
    assert [e.name for e in queued(tmp_path)] == [e.name for e in sp.entries()] == ["p1", "p2", "p0"]
    assert sorted(p.name for p in (tmp_path / QUEUE_DIR).iterdir()) == before  # nothing recovered
    with pytest.raises(SpoolError, match=rf"^{tmp_path / 'nope'} is not a spool \(it has no queue/ folder\)$"):
        queued(tmp_path / "nope")
    assert not (tmp_path / "nope").exists()
