"""Authentication at its exact limits and a tampered counter file (issue 22): golden counter
file and signed frame, key length and mode bounds, counter limits."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import pickle
import shutil
import stat
from pathlib import Path

import pytest

from firmware_bridge import auth, storage
from firmware_bridge.auth import (
    MAX_COUNTER,
    MIN_KEY_BYTES,
    AuthKey,
    CounterStore,
    CounterStoreError,
    KeyFileError,
    UplinkSigner,
    atomic_write,
    load_key,
    sign,
    write_key,
)
from firmware_bridge.framing import FLAG_AUTH, Frame, encode
from firmware_bridge.messages import Ping, StartCapture

GOLDEN = Path(__file__).parent / "data" / "golden"
KEY = AuthKey(bytes(range(32)))


def _counter(path: Path, last: int) -> Path:
    path.write_text(json.dumps({"format": "firmware_bridge.counter", "version": 1, "last": last}))
    return path


def test_counter_file_bytes_are_golden(tmp_path: Path) -> None:
    store = CounterStore(_counter(tmp_path / "counter.json", 4))
    store.advance(5)
    assert (tmp_path / "counter.json").read_bytes() == (GOLDEN / "counter.json").read_bytes()
    assert stat.S_IMODE((tmp_path / "counter.json").stat().st_mode) == 0o600
    assert not (tmp_path / "counter.json.tmp").exists()
    assert CounterStore(GOLDEN / "counter.json").last() == 5


def test_signed_frame_is_golden() -> None:
    """HMAC-SHA256 over header | counter | body, first 16 bytes: the golden authenticated frame."""
    frame = sign(StartCapture(3), 0x0102, KEY, 0x0A0B0C0D)
    golden = json.loads((GOLDEN / "signed_frame.json").read_text())
    assert encode(frame).hex() == golden["wire"]
    want = hmac.new(bytes(range(32)), frame.signed_part(), hashlib.sha256).digest()[:16]
    assert frame.mac == want and frame.flags == FLAG_AUTH and frame.counter == 0x0A0B0C0D
    assert KEY.verify(frame.signed_part(), frame.mac)
    assert not KEY.verify(frame.signed_part(), bytes(16))
    assert not KEY.verify(frame.signed_part() + b"x", frame.mac)


_TAMPERED = {
    "negative": {"format": "firmware_bridge.counter", "version": 1, "last": -1},
    "over_u64": {"format": "firmware_bridge.counter", "version": 1, "last": 2**64},
    "float": {"format": "firmware_bridge.counter", "version": 1, "last": 5.0},
    "text": {"format": "firmware_bridge.counter", "version": 1, "last": "5"},
    "bool": {"format": "firmware_bridge.counter", "version": 1, "last": True},
    "null": {"format": "firmware_bridge.counter", "version": 1, "last": None},
    "no_last": {"format": "firmware_bridge.counter", "version": 1},
    "version_2": {"format": "firmware_bridge.counter", "version": 2, "last": 5},
    "version_text": {"format": "firmware_bridge.counter", "version": "1", "last": 5},
    "no_version": {"format": "firmware_bridge.counter", "last": 5},
    "other_format": {"format": "something.else", "version": 1, "last": 5},
    "no_format": {"version": 1, "last": 5},
    "a_list": [1, 5],
    "a_number": 5,
}


@pytest.mark.parametrize("name", sorted(_TAMPERED))
def test_tampered_counter_file_is_refused(tmp_path: Path, name: str) -> None:
    path = tmp_path / "counter.json"
    path.write_text(json.dumps(_TAMPERED[name]))
    with pytest.raises(CounterStoreError, match="unreadable .*replays cannot be refused"):
        CounterStore(path)


@pytest.mark.parametrize("raw", [b"", b"{", b"\xff\xfe", b"null"])
def test_counter_file_that_is_not_json_is_refused(tmp_path: Path, raw: bytes) -> None:
    (tmp_path / "c.json").write_bytes(raw)
    with pytest.raises(CounterStoreError, match="unreadable"):
        CounterStore(tmp_path / "c.json")


@pytest.mark.parametrize("last", [0, 1, 2**64 - 2, 2**64 - 1])
def test_counter_file_limits_are_accepted(tmp_path: Path, last: int) -> None:
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"format": "firmware_bridge.counter", "version": 1, "last": last}))
    assert CounterStore(path).last() == last


def test_counter_limits_on_advance(tmp_path: Path) -> None:
    assert MAX_COUNTER == 2**64 - 1
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"format": "firmware_bridge.counter", "version": 1, "last": 10}))
    store = CounterStore(path)
    for bad in (9, 10, MAX_COUNTER + 1):
        with pytest.raises(CounterStoreError, match=f"counter {bad} does not advance past 10"):
            store.advance(bad)
    assert store.last() == 10 and CounterStore(path).last() == 10
    store.advance(11)
    assert store.last() == 11 and CounterStore(path).last() == 11
    store.advance(MAX_COUNTER)
    assert CounterStore(path).last() == MAX_COUNTER
    with pytest.raises(CounterStoreError, match="does not advance"):
        store.advance(MAX_COUNTER)


def test_counter_that_cannot_be_persisted_is_not_advanced(tmp_path: Path) -> None:
    (tmp_path / "gone").mkdir()
    store = CounterStore(_counter(tmp_path / "gone" / "c.json", 3))
    shutil.rmtree(tmp_path / "gone")
    with pytest.raises(CounterStoreError, match="cannot persist counter"):
        store.advance(4)
    assert store.last() == 3


def test_unreadable_counter_path_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "dir.json").mkdir()
    with pytest.raises(CounterStoreError, match="is not a regular file"):
        CounterStore(tmp_path / "dir.json")


def test_signer_persists_each_counter_before_returning(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"format": "firmware_bridge.counter", "version": 1, "last": 41}))
    signer = UplinkSigner(KEY, CounterStore(path), reserve=1)
    f1, f2 = signer.sign(Ping(), 1), signer.sign(Ping(), 2)
    assert (f1.counter, f2.counter) == (42, 43)
    assert CounterStore(path).last() == 43
    assert f1 == sign(Ping(), 1, KEY, 42)


# --- the key -------------------------------------------------------------------------------------


def test_key_length_bounds() -> None:
    assert MIN_KEY_BYTES == 16
    AuthKey(b"k" * 16)
    with pytest.raises(KeyFileError, match="15 bytes; at least 16"):
        AuthKey(b"k" * 15)


@pytest.mark.parametrize("mode,ok", [(0o600, True), (0o400, True), (0o700, True), (0o640, False),
                                     (0o604, False), (0o610, False), (0o601, False), (0o620, False)])
def test_key_file_mode_bounds(tmp_path: Path, mode: int, ok: bool) -> None:
    path = tmp_path / "k"
    path.write_text(bytes(range(16)).hex())
    os.chmod(path, mode)
    if ok:
        assert load_key(path).mac(b"x") == AuthKey(bytes(range(16))).mac(b"x")
    else:
        with pytest.raises(KeyFileError, match=f"mode {mode:04o}.*chmod 600"):
            load_key(path)


def test_key_file_content_is_checked_and_never_echoed(tmp_path: Path) -> None:
    path = tmp_path / "k"
    path.write_text("zz" + "ab" * 16)
    os.chmod(path, 0o600)
    with pytest.raises(KeyFileError, match="only hex digits") as err:
        load_key(path)
    assert "zz" not in str(err.value)
    path.write_text(" ab\n" * 16)
    assert load_key(path).mac(b"") == AuthKey(b"\xab" * 16).mac(b"")
    path.write_text("ab" * 15)
    with pytest.raises(KeyFileError, match="15 bytes"):
        load_key(path)
    with pytest.raises(KeyFileError, match="cannot read key file"):
        load_key(tmp_path / "absent")
    with pytest.raises(KeyFileError, match="not a regular file"):
        load_key(tmp_path)


def test_write_key_creates_an_owner_only_file_once(tmp_path: Path) -> None:
    write_key(tmp_path / "k", b"s" * 32)
    assert stat.S_IMODE((tmp_path / "k").stat().st_mode) == 0o600
    assert (tmp_path / "k").read_text() == (b"s" * 32).hex() + "\n"
    with pytest.raises(FileExistsError):
        write_key(tmp_path / "k", b"t" * 32)
    with pytest.raises(KeyFileError):
        write_key(tmp_path / "k2", b"s" * 15)
    assert not (tmp_path / "k2").exists()


def test_key_is_never_shown_nor_pickled() -> None:
    key = AuthKey(b"\x01" * 16, source="/etc/k")
    assert repr(key) == str(key) == "AuthKey(source='/etc/k', secret=<redacted>)"
    with pytest.raises(TypeError, match="not picklable"):
        pickle.dumps(key)
    assert len(key.mac(b"abc")) == 16


def test_atomic_write_replaces_and_leaves_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"old")
    atomic_write(path, b"new content")
    assert path.read_bytes() == b"new content" and not (tmp_path / "f.tmp").exists()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600  # a new file, not the old one's mode
    assert auth._COUNTER_FORMAT == "firmware_bridge.counter"


def test_frame_authenticated_flag() -> None:
    assert Frame(1, 1, flags=FLAG_AUTH, counter=1, mac=b"m" * 16).authenticated
    assert not Frame(1, 1).authenticated


def test_key_source_is_named_in_its_repr(tmp_path: Path) -> None:
    path = tmp_path / "k"
    write_key(path, b"s" * 16)
    assert repr(load_key(path)) == f"AuthKey(source='{path}', secret=<redacted>)"
    assert repr(AuthKey(b"s" * 16)) == "AuthKey(source='<memory>', secret=<redacted>)"


def test_counter_refusals_say_what_is_wrong(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    path.write_text(json.dumps(_TAMPERED["version_2"]))
    with pytest.raises(CounterStoreError, match=r"\(the channels must be \['telecommand', 'data'\]\)"):
        CounterStore(path)
    path.write_text(json.dumps(_TAMPERED["negative"]))
    with pytest.raises(CounterStoreError, match=r"\(telecommand counter -1 is not a u64\)"):
        CounterStore(path)
    path.write_text(json.dumps({**_TAMPERED["version_2"], "version": 3}))
    with pytest.raises(CounterStoreError, match=r"\(version 3 is not 1 or 2\)"):
        CounterStore(path)


def test_interrupted_atomic_write_leaves_the_old_file_and_a_tmp(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """A write cut before the rename leaves the old content and no partial file."""
    path = tmp_path / "f"
    path.write_bytes(b"old")

    def cut(*args: object) -> None:
        raise OSError("power cut")
    monkeypatch.setattr(storage.os, "replace", cut)
    with pytest.raises(OSError, match="power cut"):
        atomic_write(path, b"new")
    assert path.read_bytes() == b"old" and not (tmp_path / "f.tmp").exists()


# --- the private-file reader behind keys and counter files (after the authenticated uplink) ---


def test_read_private_says_why_a_path_cannot_be_read(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    with pytest.raises(KeyFileError, match=r"^cannot read key file .*f/k: Not a directory$"):
        load_key(tmp_path / "f" / "k")  # an OSError other than a link: its own text
    (tmp_path / "target").write_text(bytes(range(16)).hex())
    os.chmod(tmp_path / "target", 0o600)
    (tmp_path / "link").symlink_to(tmp_path / "target")
    with pytest.raises(KeyFileError, match=r"key file .*link is a symbolic link; give the file itself"):
        load_key(tmp_path / "link")


@pytest.mark.parametrize("mode,advice", [(0o440, "600"), (0o540, "700"), (0o604, "600"), (0o660, "600")])
def test_key_mode_refusal_gives_the_mode_to_set(tmp_path: Path, mode: int, advice: str) -> None:
    """The chmod advice keeps the owner's bits, adds owner read and write, drops the rest."""
    path = tmp_path / "k"
    path.write_text(bytes(range(16)).hex())
    os.chmod(path, mode)
    with pytest.raises(KeyFileError, match=rf"^key file {path} has mode {mode:04o}; it must not be "
                                            rf"readable or writable by group or others: run "
                                            rf"'chmod {advice} {path}'$"):
        load_key(path)


def test_counter_mode_refusal_is_about_writing_only(tmp_path: Path) -> None:
    path = CounterStore.create(tmp_path / "c.json").path
    os.chmod(path, 0o644)  # readable by others is fine for a counter
    assert CounterStore(path).last() == 0
    os.chmod(path, 0o664)
    with pytest.raises(CounterStoreError, match=rf"^counter file {path} has mode 0664; it must not be "
                                                rf"writable by group or others: run 'chmod 644 {path}'$"):
        CounterStore(path)


def test_private_file_size_limits_are_exact(tmp_path: Path) -> None:
    key = tmp_path / "k"
    body = bytes(range(16)).hex()
    key.write_text(body + " " * (auth._MAX_KEY_FILE - len(body)))  # exactly the limit: read
    os.chmod(key, 0o600)
    assert load_key(key).mac(b"x") == AuthKey(bytes(range(16))).mac(b"x")
    key.write_text(body + " " * (auth._MAX_KEY_FILE + 1 - len(body)))
    with pytest.raises(KeyFileError, match=rf"^key file {key} is {auth._MAX_KEY_FILE + 1} bytes; at most "
                                           rf"{auth._MAX_KEY_FILE} expected$"):
        load_key(key)
    counter = CounterStore.create(tmp_path / "c.json").path
    doc = counter.read_bytes().rstrip(b"\n")
    counter.write_bytes(doc + b" " * ((1 << 16) - len(doc)))  # 64 KiB exactly: read
    assert CounterStore(counter).last() == 0
    counter.write_bytes(doc + b" " * ((1 << 16) + 1 - len(doc)))
    with pytest.raises(CounterStoreError, match=r"is 65537 bytes; at most 65536 expected"):
        CounterStore(counter)


def test_counter_file_refusals_name_the_file_kind(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"format": "other"}))
    with pytest.raises(CounterStoreError, match=r"unreadable \(not a firmware_bridge counter file\)"):
        CounterStore(path)
    (tmp_path / "d").mkdir()
    with pytest.raises(CounterStoreError, match=r"^counter file .*d is not a regular file$"):
        CounterStore(tmp_path / "d")


def test_provision_makes_an_owner_only_counter_named_after_its_key(tmp_path: Path) -> None:
    key = auth.provision(tmp_path / "k", tmp_path / "c.json")
    assert repr(key) == f"AuthKey(source='{tmp_path / 'k'}', secret=<redacted>)"
    assert len(bytes.fromhex((tmp_path / "k").read_text())) == 32
    assert stat.S_IMODE((tmp_path / "c.json").stat().st_mode) == 0o600
    with pytest.raises(ValueError, match="^reserve must be >= 1, got 0$"):
        UplinkSigner(key, CounterStore(tmp_path / "c.json"), reserve=0)


def test_signer_reserves_a_new_block_only_past_the_persisted_counter(tmp_path: Path) -> None:
    store = CounterStore.create(tmp_path / "c.json")
    signer = UplinkSigner(KEY, store, reserve=3)
    assert [signer.sign(Ping(), i).counter for i in range(1, 4)] == [1, 2, 3]
    assert CounterStore(tmp_path / "c.json").last() == 3  # one block of three, persisted once
    signer.sign(Ping(), 4)
    assert CounterStore(tmp_path / "c.json").last() == 6
    auth.provision(tmp_path / "k2", tmp_path / "c2.json", bytes(range(32)))
    loaded = UplinkSigner.load(tmp_path / "k2", tmp_path / "c2.json")
    assert loaded.sign(Ping(), 1) == sign(Ping(), 1, KEY, 1)
