"""Uplink authentication: the key, the MAC, and the anti-replay counters.

Every frame the flight computer or the ground sends to the payload is authenticated the
same way, telecommands and the DATA frames that carry the ground's CFDP PDUs alike (as
CCSDS SDLS authenticates every TC frame, not only commands):

* The MAC is HMAC-SHA256 over the frame's signed part (header, counter, body: every byte
  before the MAC), truncated to its first 16 bytes (RFC 2104 section 5 allows truncation to
  half the hash or more).
* The key lives in a file of hex digits (at least 32 hex digits, i.e. 128 bits) owned by the
  user who reads it, not a symbolic link, and not readable by group or others (mode 0600 or
  0400); anything else is refused. The key never appears in a repr, a log line or an
  exception.
* Every authenticated frame carries a u64 counter. There are two counter channels, as SDLS
  has one anti-replay sequence number per security association: ``telecommand`` (signed by
  the flight computer) and ``data`` (the uplinked CFDP PDUs, signed by the ground), because
  the two are sent by different machines that cannot share one sequence. The channel
  follows from the frame type, which the MAC covers, so a frame cannot move to the other
  channel. The receiver accepts a counter only if it is strictly greater than the last one
  it accepted on that channel, and persists the new value atomically *before* acting on
  the frame, so a power cut cannot re-open a replay window.
* The counter file is created together with the key (:func:`provision`) and is required
  whenever the key is: a missing counter file is an error, never "nothing accepted yet",
  because counting again from 0 would accept every frame ever recorded.
"""

from __future__ import annotations

import errno
import hashlib
import hmac
import json
import os
import secrets
import stat
from pathlib import Path

from firmware_bridge.errors import BridgeError
from firmware_bridge.framing import FLAG_AUTH, MAC_LEN, Frame
from firmware_bridge.messages import Message, MsgType
from firmware_bridge.storage import atomic_write

MIN_KEY_BYTES = 16
MAX_COUNTER = 2**64 - 1
_COUNTER_FORMAT = "firmware_bridge.counter"
#: Largest key file read: a key of 32 bytes is 65 characters; anything much longer is not one.
_MAX_KEY_FILE = 4096
#: The counter channels (PROTOCOL.md section 4): DATA frames count on ``data``, every other
#: frame type on ``telecommand``.
TELECOMMAND = "telecommand"
DATA = "data"
CHANNELS = (TELECOMMAND, DATA)
#: What to do when a counter file is lost or damaged (in every such error message).
RECOVERY = (
    "The last accepted counters are unknown, so replays cannot be refused. Recover "
    "in one of two ways: re-key (python -m firmware_bridge.keytool provision NEW_KEY "
    "NEW_COUNTER on every end: a new key starts every counter at 0), or write the counter "
    "file again with values at least the senders' current ones (python -m "
    "firmware_bridge.keytool set-counter FILE --telecommand N --data M, N from the flight "
    "computer's counter file, M from the ground's). Do not restore an old copy: every frame "
    "sent since it was made would be accepted again."
)


class KeyFileError(BridgeError):
    """The key file cannot be used: wrong owner or permissions, a link, unreadable or malformed."""


class CounterStoreError(BridgeError):
    """The persisted counter cannot be read or written; replays cannot be refused safely."""


def channel_of(msg_type: int) -> str:
    """The counter channel of a frame type: ``data`` for DATA, ``telecommand`` otherwise."""
    return DATA if msg_type == MsgType.DATA else TELECOMMAND


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


def _read_private(path: Path, what: str, error: type[Exception], refused_modes: int,
                  limit: int) -> bytes:
    """The content of ``path``, opened without following a symbolic link and checked on the
    open file (no window between check and read): a regular file, owned by this process's
    user, with none of ``refused_modes`` set. Anyone else who owns or can write the file
    could substitute a key or roll a counter back."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        raise
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise error(f"{what} {path} is a symbolic link; give the file itself") from None
        raise error(f"cannot read {what} {path}: {exc.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise error(f"{what} {path} is not a regular file")
        if st.st_uid != os.geteuid():
            raise error(
                f"{what} {path} is owned by uid {st.st_uid}, not by this process's user "
                f"(uid {os.geteuid()}): run 'chown {os.geteuid()} {path}' as root if it is yours"
            )
        mode = stat.S_IMODE(st.st_mode)
        if mode & refused_modes:
            allowed = stat.S_IMODE(mode & ~refused_modes) | stat.S_IRUSR | stat.S_IWUSR
            raise error(
                f"{what} {path} has mode {mode:04o}; it must not be "
                f"{'readable or writable' if refused_modes & 0o044 else 'writable'} by group or "
                f"others: run 'chmod {allowed:o} {path}'"
            )
        if st.st_size > limit:
            raise error(f"{what} {path} is {st.st_size} bytes; at most {limit} expected")
        chunks = []
        while chunk := os.read(fd, limit + 1):
            chunks.append(chunk)
        return b"".join(chunks)[: limit + 1]
    finally:
        os.close(fd)


def load_key(path: str | os.PathLike[str]) -> AuthKey:
    """The key in ``path`` (hex digits, whitespace ignored); refuses a file that is a
    symbolic link, owned by another user, or readable by group or others."""
    p = Path(path)
    try:
        raw = _read_private(p, "key file", KeyFileError, 0o077, _MAX_KEY_FILE)
    except FileNotFoundError:
        raise KeyFileError(f"cannot read key file {p}: No such file or directory") from None
    try:
        secret = bytes.fromhex("".join(raw.decode("ascii").split()))
    except (UnicodeDecodeError, ValueError):
        # Never echo the file's content: it is the secret.
        raise KeyFileError(
            f"key file {p} must hold only hex digits (e.g. from "
            f"'python -c \"import secrets; print(secrets.token_hex(32))\"')"
        ) from None
    return AuthKey(secret, source=str(p))


def write_key(path: str | os.PathLike[str], secret: bytes) -> None:
    """Create a key file with mode 0600; never overwrites one. Use :func:`provision`, which
    creates its counter file too: a key without its counter is refused."""
    AuthKey(secret)  # length check
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secret.hex() + "\n")


def provision(key_file: str | os.PathLike[str], counter_file: str | os.PathLike[str],
              secret: bytes | None = None) -> AuthKey:
    """One end's key file and its counter file, both new (neither may exist): ``secret``,
    or 32 random bytes. Every end of a link gets the same secret and its own counter file."""
    if Path(counter_file).exists():
        raise CounterStoreError(f"counter file {counter_file} exists; a new key needs a new one")
    secret = secrets.token_bytes(32) if secret is None else secret
    write_key(key_file, secret)
    CounterStore.create(counter_file)
    return AuthKey(secret, source=str(key_file))


class CounterStore:
    """The last accepted (receiver) or last used (sender) counter of each channel, persisted
    atomically in one file.

    The file must exist: it is created with the key (:func:`provision`). A missing file or
    one that cannot be parsed is an error, never silently 0, because that would re-open
    every old counter to replay.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._last = self._load()

    @classmethod
    def create(cls, path: str | os.PathLike[str],
               counters: dict[str, int] | None = None) -> CounterStore:
        """A new counter file (it must not exist): every channel at 0, or at ``counters``."""
        values = {c: 0 for c in CHANNELS} | dict(counters or {})
        _check_counters(values)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(_counter_doc(values))
            f.flush()
            os.fsync(f.fileno())
        dfd = os.open(Path(path).parent, os.O_RDONLY)  # the new name survives a power cut
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
        return cls(path)

    def last(self, channel: str = TELECOMMAND) -> int:
        """The last counter accepted (or used) on ``channel``."""
        return self._last[channel]

    def _load(self) -> dict[str, int]:
        try:
            raw = _read_private(self.path, "counter file", CounterStoreError, 0o022, 1 << 16)
        except FileNotFoundError:
            raise CounterStoreError(
                f"counter file {self.path} does not exist, but a key is configured: it is "
                f"created with the key, so it was lost. {RECOVERY}"
            ) from None
        try:
            doc = json.loads(raw)
            if not isinstance(doc, dict) or doc.get("format") != _COUNTER_FORMAT:
                raise ValueError("not a firmware_bridge counter file")
            values: object
            if doc.get("version") == 1:  # before DATA frames were signed: none to replay
                values = {TELECOMMAND: doc["last"], DATA: 0}
            elif doc.get("version") == 2:
                values = doc.get("counters")
            else:
                raise ValueError(f"version {doc.get('version')!r} is not 1 or 2")
            counters = _check_counters(values)
        except (ValueError, KeyError, AttributeError, TypeError, CounterStoreError) as exc:
            raise CounterStoreError(
                f"counter file {self.path} is unreadable ({exc}). {RECOVERY}"
            ) from None
        return counters

    def advance(self, value: int, channel: str = TELECOMMAND) -> None:
        """Persist ``value`` as the new last counter of ``channel``; it must be greater than
        the current one."""
        if not self._last[channel] < value <= MAX_COUNTER:
            raise CounterStoreError(
                f"{channel} counter {value} does not advance past {self._last[channel]}")
        values = self._last | {channel: value}
        try:
            atomic_write(self.path, _counter_doc(values))
        except OSError as exc:
            raise CounterStoreError(f"cannot persist counter to {self.path}: {exc}") from None
        self._last = values


def _counter_doc(values: dict[str, int]) -> bytes:
    doc = {"format": _COUNTER_FORMAT, "version": 2, "counters": values}
    return json.dumps(doc, sort_keys=True).encode() + b"\n"


def _check_counters(values: object) -> dict[str, int]:
    """``values`` as the counters of every channel; CounterStoreError unless each is a u64."""
    if not isinstance(values, dict) or set(values) != set(CHANNELS):
        raise CounterStoreError(f"the channels must be {list(CHANNELS)}")
    for channel, value in values.items():
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_COUNTER:
            raise CounterStoreError(f"{channel} counter {value!r} is not a u64")
    return dict(values)


def sign(message: Message, seq: int, key: AuthKey, counter: int) -> Frame:
    """An authenticated frame carrying ``message`` with ``counter`` (the sender's side)."""
    unsigned = Frame(int(message.TYPE), seq, message.pack(), FLAG_AUTH, counter, bytes(MAC_LEN))
    return Frame(
        unsigned.msg_type, seq, unsigned.body, FLAG_AUTH, counter, key.mac(unsigned.signed_part())
    )


class UplinkSigner:
    """The sending side (flight computer, ground, or a test harness): signs each frame with
    the next counter of its channel (DATA on ``data``, the rest on ``telecommand``).

    Counters are reserved ``reserve`` at a time: the counter file holds the highest one
    reserved, persisted before any of them is used, so a restart never reuses one (it skips
    the rest of the block; the receiver allows gaps). One fsync per block instead of one per
    frame keeps signing the ground's CFDP answers from slowing them (an atomic write of the
    counter takes about 18 ms on the disk this was measured on).
    """

    #: Counters reserved per write of the counter file.
    RESERVE = 64

    def __init__(self, key: AuthKey, store: CounterStore, reserve: int = RESERVE) -> None:
        if reserve < 1:
            raise ValueError(f"reserve must be >= 1, got {reserve}")
        self.key = key
        self.store = store
        self.reserve = reserve
        # everything up to the persisted value may have been used before this start
        self._used = {channel: store.last(channel) for channel in CHANNELS}

    @classmethod
    def load(cls, key_file: str | os.PathLike[str],
             counter_file: str | os.PathLike[str]) -> UplinkSigner:
        """The signer of one end from its key file and counter file (both must exist)."""
        return cls(load_key(key_file), CounterStore(counter_file))

    def last(self, channel: str = TELECOMMAND) -> int:
        """The counter of the last frame signed on ``channel``."""
        return self._used[channel]

    def sign(self, message: Message, seq: int) -> Frame:
        channel = channel_of(message.TYPE)
        counter = self._used[channel] + 1
        if counter > self.store.last(channel):
            self.store.advance(min(counter + self.reserve - 1, MAX_COUNTER), channel)
        self._used[channel] = counter
        return sign(message, seq, self.key, counter)
