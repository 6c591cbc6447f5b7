"""Products: what the payload hands to the downlink, and their one on-disk/on-wire format.

A product file is self-describing and checksummed::

    b"OBPR" | version u8 | header_length u32 big-endian | header (UTF-8 JSON) | payload

The header holds the kind, frame counter, time, instrument, software and model versions,
the payload's encoding, byte count and SHA-256. ``Product.from_bytes`` refuses anything that
does not match, saying what is wrong: a product is never half-read. A version newer than
this software's is refused with a message naming both (an older reader cannot know what a
newer payload means); older versions listed in ``READ_VERSIONS`` are read.

Versions: 1, the residue payload holds ``tillage`` and ``fractions``. 2 (this software), the
residue payload (``npz``) holds:

* ``tillage`` (rows, cols) uint8: 0 intensive, 1 reduced, 2 conservation tillage,
  254 (``UNCERTAIN_CLASS``) uncertain, 255 (``INVALID_CLASS``) no valid measurement. A pixel is
  uncertain when its confidence is below the stage's threshold or its spectrum lies outside
  what the classifier was trained on (onboard/stages/confidence.py): the product does not
  guess there;
* ``guess`` (rows, cols) uint8: the class the stage chose, uncertain pixels included (255
  invalid), for users who accept the risk;
* ``fractions`` (3, rows, cols) float32: residue, soil, green cover (NaN invalid);
* ``confidence`` (rows, cols) float32 in [0, 1]: the estimated probability that ``guess`` is
  right (NaN invalid, or where the stage gives none);
* header ``meta``: ``method``, ``confidence_threshold``, ``uncertain_share`` and
  ``out_of_distribution_share`` of the frame's valid pixels.
"""

from __future__ import annotations

import hashlib
import io
import json
import struct
from dataclasses import dataclass, field
from enum import Enum

import numpy as np

from onboard import __version__
from onboard.errors import OnboardError

MAGIC = b"OBPR"
FORMAT_VERSION = 2
#: Versions this software reads (the layout of the prefix and header is the same in all).
READ_VERSIONS = (1, 2)
_PREFIX = struct.Struct(">4sBI")


class ProductKind(str, Enum):
    """Product kinds. The value is the kind's name on the wire and in file names."""

    HEALTH = "health"
    RESIDUE = "residue"
    QUICKLOOK = "quicklook"
    CALIBRATION_REPORT = "calibration_report"
    CUBE = "cube"
    EVENT = "event"


#: Downlink priority: lower goes first. Health and residue maps before cubes.
DEFAULT_PRIORITY: dict[ProductKind, int] = {
    ProductKind.EVENT: 0,
    ProductKind.HEALTH: 0,
    ProductKind.RESIDUE: 1,
    ProductKind.CALIBRATION_REPORT: 2,
    ProductKind.QUICKLOOK: 2,
    ProductKind.CUBE: 3,
}


class ProductFormatError(OnboardError, ValueError):
    """A product's bytes are not a product this software can read."""


@dataclass
class Product:
    """A named payload with its metadata and downlink priority."""

    kind: ProductKind
    frame_counter: int
    created_utc: float
    payload: bytes
    encoding: str  # "npz", "png", "json"
    meta: dict = field(default_factory=dict)
    instrument: str = "imspoc"
    software_version: str = __version__
    model_versions: dict = field(default_factory=dict)
    priority: int | None = None

    def __post_init__(self) -> None:
        self.kind = ProductKind(self.kind)
        if self.priority is None:
            self.priority = DEFAULT_PRIORITY[self.kind]

    @property
    def name(self) -> str:
        """Unique, sortable name: kind and frame counter."""
        return f"{self.kind.value}_{self.frame_counter:08d}"

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.payload).hexdigest()

    def header(self) -> dict:
        return {
            "kind": self.kind.value,
            "frame_counter": self.frame_counter,
            "created_utc": self.created_utc,
            "encoding": self.encoding,
            "payload_bytes": len(self.payload),
            "payload_sha256": self.sha256,
            "priority": self.priority,
            "instrument": self.instrument,
            "software_version": self.software_version,
            "model_versions": self.model_versions,
            "meta": self.meta,
        }

    def to_bytes(self) -> bytes:
        header = json.dumps(self.header(), sort_keys=True, separators=(",", ":")).encode()
        return _PREFIX.pack(MAGIC, FORMAT_VERSION, len(header)) + header + self.payload

    @classmethod
    def from_bytes(cls, blob: bytes) -> Product:
        if len(blob) < _PREFIX.size:
            raise ProductFormatError(f"product truncated: {len(blob)} bytes, no header")
        magic, version, header_len = _PREFIX.unpack_from(blob)
        if magic != MAGIC:
            raise ProductFormatError(f"not a product: magic {magic!r}, expected {MAGIC!r}")
        if version not in READ_VERSIONS:
            newer = "newer than" if version > FORMAT_VERSION else "not one of"
            raise ProductFormatError(
                f"product format version {version} is {newer} the versions this software reads "
                f"({', '.join(map(str, READ_VERSIONS))}): decode it with an onboard release that "
                "reads it"
            )
        start = _PREFIX.size
        if len(blob) < start + header_len:
            raise ProductFormatError("product truncated inside its header")
        try:
            h = json.loads(blob[start : start + header_len])
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ProductFormatError(f"product header is not valid JSON: {exc}") from exc
        payload = blob[start + header_len :]
        if len(payload) != h["payload_bytes"]:
            raise ProductFormatError(
                f"product {h['kind']}#{h['frame_counter']}: payload is {len(payload)} bytes, "
                f"header says {h['payload_bytes']} (truncated or padded)"
            )
        if hashlib.sha256(payload).hexdigest() != h["payload_sha256"]:
            raise ProductFormatError(
                f"product {h['kind']}#{h['frame_counter']}: payload SHA-256 mismatch (corrupt)"
            )
        return cls(
            kind=ProductKind(h["kind"]),
            frame_counter=h["frame_counter"],
            created_utc=h["created_utc"],
            payload=payload,
            encoding=h["encoding"],
            meta=h["meta"],
            instrument=h["instrument"],
            software_version=h["software_version"],
            model_versions=h["model_versions"],
            priority=h["priority"],
        )


def encode_arrays(**arrays: np.ndarray) -> bytes:
    """Arrays as a compressed ``.npz`` payload (readable with ``numpy.load``)."""
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)  # type: ignore[arg-type]  # numpy stub: **kwds may fill allow_pickle
    return buf.getvalue()


def decode_arrays(payload: bytes) -> dict[str, np.ndarray]:
    """Inverse of :func:`encode_arrays`; never unpickles."""
    with np.load(io.BytesIO(payload), allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def json_product(kind: ProductKind, frame_counter: int, created_utc: float, body: dict, instrument: str,
                 meta: dict | None = None) -> Product:
    """A product whose payload is a JSON object (events, health)."""
    return Product(kind=kind, frame_counter=frame_counter, created_utc=created_utc,
                   payload=json.dumps(body, sort_keys=True).encode(), encoding="json",
                   instrument=instrument, meta=meta or {})


def event_product(frame_counter: int, created_utc: float, instrument: str, what: str, detail: str,
                  **fields: object) -> Product:
    """An event for the ground: what happened to which frame, in words."""
    body = {"event": what, "detail": detail, "frame": frame_counter, **fields}
    return json_product(ProductKind.EVENT, frame_counter, created_utc, body, instrument, {"event": what})
