"""Telecommand authentication: the key, the MAC, and the anti-replay counter.

* The MAC is HMAC-SHA256 over the frame's signed part (header, counter, body: every byte
  before the MAC), truncated to its first 16 bytes (RFC 2104 section 5 allows truncation to
  half the hash or more).
* The key lives in a file of hex digits (at least 32 hex digits, i.e. 128 bits) that must
  not be readable by group or others (mode 0600 or 0400); anything else is refused. The key
  never appears in a repr, a log line or an exception.
* Every authenticated telecommand carries a u64 counter. The receiver accepts a counter
  only if it is strictly greater than the last one it accepted, and persists the new value
  atomically *before* executing the command, so a power cut cannot re-open a replay window.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import stat
from pathlib import Path

from firmware_bridge.framing import FLAG_AUTH, MAC_LEN, Frame
from firmware_bridge.messages import Message

MIN_KEY_BYTES = 16
MAX_COUNTER = 2**64 - 1
_COUNTER_FORMAT = "firmware_bridge.counter"


class KeyFileError(Exception):
    """The key file cannot be used: wrong permissions, unreadable or malformed."""


class CounterStoreError(Exception):
    """The persisted counter cannot be read or written; replays cannot be refused safely."""


class AuthKey:
    """An HMAC key. Holds the secret privately; its repr and str never show it."""

    __slots__ = ("_secret", "source")

    def __init__(self, secret: bytes, source: str = "<memory>") -> None:
        if len(secret) < MIN_KEY_BYTES:
            raise KeyFileError(
                f"key from {source} is {len(secret)} bytes; at least {MIN_KEY_BYTES} are needed"
            )
        self._secret = bytes(secret)
        self.source = source

    def __repr__(self) -> str:
        return f"AuthKey(source={self.source!r}, secret=<redacted>)"

    __str__ = __repr__

    def __reduce__(self) -> tuple:
        raise TypeError("AuthKey is not picklable: load the key file in each process")

    def mac(self, data: bytes) -> bytes:
        """HMAC-SHA256 of ``data`` truncated to MAC_LEN bytes."""
        return hmac.new(self._secret, data, hashlib.sha256).digest()[:MAC_LEN]

    def verify(self, data: bytes, tag: bytes) -> bool:
        """True iff ``tag`` is the MAC of ``data`` (constant-time comparison)."""
        return hmac.compare_digest(self.mac(data), tag)


def load_key(path: str | os.PathLike[str]) -> AuthKey:
    """The key in ``path`` (hex digits, whitespace ignored); refuses a group/world-readable file."""
    p = Path(path)
    try:
        st = p.stat()
    except OSError as exc:
        raise KeyFileError(f"cannot read key file {p}: {exc.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise KeyFileError(f"key file {p} is not a regular file")
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o077:
        raise KeyFileError(
            f"key file {p} has mode {mode:04o}; it must be readable by its owner only: "
            f"run 'chmod 600 {p}'"
        )
    try:
        text = p.read_text(encoding="ascii")
        secret = bytes.fromhex("".join(text.split()))
    except (OSError, UnicodeDecodeError, ValueError):
        # Never echo the file's content: it is the secret.
        raise KeyFileError(
            f"key file {p} must hold only hex digits (e.g. from "
            f"'python -c \"import secrets; print(secrets.token_hex(32))\"')"
        ) from None
    return AuthKey(secret, source=str(p))


def write_key(path: str | os.PathLike[str], secret: bytes) -> None:
    """Create a key file with mode 0600 (for provisioning and tests)."""
    AuthKey(secret)  # length check
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secret.hex() + "\n")


def atomic_write(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` so that a power cut leaves the old or the new content.

    Temporary file in the same directory, fsync, rename over the target, fsync the directory.
    """
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


class CounterStore:
    """The last accepted (receiver) or last used (sender) counter, persisted atomically.

    A missing file means 0: no counter used yet. A file that exists but cannot be parsed is
    an error, never silently 0, because that would re-open every old counter to replay.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._last = self._load()

    @property
    def last(self) -> int:
        return self._last

    def _load(self) -> int:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return 0
        except OSError as exc:
            raise CounterStoreError(f"cannot read counter file {self.path}: {exc}") from None
        try:
            doc = json.loads(raw)
            if doc.get("format") != _COUNTER_FORMAT or doc.get("version") != 1:
                raise ValueError("not a firmware_bridge counter file, version 1")
            value = doc["last"]
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_COUNTER:
                raise ValueError(f"counter {value!r} is not a u64")
        except (ValueError, KeyError, AttributeError, TypeError) as exc:
            raise CounterStoreError(
                f"counter file {self.path} is unreadable ({exc}); the last accepted counter is "
                "unknown, so replays cannot be refused. Restore it, or re-key and write a "
                "counter at least the flight computer's current one."
            ) from None
        return value

    def advance(self, value: int) -> None:
        """Persist ``value`` as the new last counter; it must be greater than the current one."""
        if not self._last < value <= MAX_COUNTER:
            raise CounterStoreError(f"counter {value} does not advance past {self._last}")
        doc = {"format": _COUNTER_FORMAT, "version": 1, "last": value}
        try:
            atomic_write(self.path, json.dumps(doc).encode() + b"\n")
        except OSError as exc:
            raise CounterStoreError(f"cannot persist counter to {self.path}: {exc}") from None
        self._last = value


def sign(message: Message, seq: int, key: AuthKey, counter: int) -> Frame:
    """An authenticated frame carrying ``message`` with ``counter`` (the sender's side)."""
    unsigned = Frame(int(message.TYPE), seq, message.pack(), FLAG_AUTH, counter, bytes(MAC_LEN))
    return Frame(
        unsigned.msg_type, seq, unsigned.body, FLAG_AUTH, counter, key.mac(unsigned.signed_part())
    )


class CommandSigner:
    """The flight computer's (or a test harness's) side: signs telecommands with fresh counters.

    The next counter is persisted before the frame is returned, so a restart never reuses one.
    """

    def __init__(self, key: AuthKey, store: CounterStore) -> None:
        self.key = key
        self.store = store

    def sign(self, message: Message, seq: int) -> Frame:
        counter = self.store.last + 1
        self.store.advance(counter)
        return sign(message, seq, self.key, counter)
