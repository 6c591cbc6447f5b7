"""Products: what the payload hands to the downlink, and their one on-disk/on-wire format.

A product file is self-describing and checksummed::

    b"OBPR" | version u8 | header_length u32 big-endian | header (UTF-8 JSON) | payload

The header holds the kind, frame counter, time, instrument, software and model versions,
the payload's encoding, byte count and SHA-256. ``Product.from_bytes`` refuses anything that
does not match, saying what is wrong: a product is never half-read. A version newer than
this software's is refused with a message naming both (an older reader cannot know what a
newer payload means); older versions listed in ``READ_VERSIONS`` are read.

An ``npz`` payload is a zip of ``.npy`` arrays (``numpy.load`` reads it), each member
deflated (by libdeflate since issue 17, by zlib before: the same format, any deflate level) or
stored; a reader inflates any, so the level is not part of the format.

``load(path)`` reads a product file (``.obp``; ``.obpr`` as older ground receivers kept it) into
its arrays, decoded from any coding, and its header; ``onboard ground export`` writes product
files in user formats (ground/export.py).

The raw product (kind ``raw``, optional: ``[products] raw``) holds an ImSPOC frame's
thumbnails as read out, ``ccsds123`` (N, h, w uint16 DN, CCSDS 123 lossless, uint8 stream),
with ``corners`` (N, 2) where each thumbnail lies on the detector; the header's ``meta``
states ``coding``, ``exposure_s`` and ``temperature_c``, so the ground can reprocess the frame
with a later calibration.

The cube and residue payloads may instead be coded with CCSDS 123 (onboard/compress/): the
header's ``meta["coding"]`` then says ``ccsds123`` (or ``ccsds123-float16`` for the cube) and
the npz holds the stream as ``ccsds123`` in place of ``data`` (cube) or ``fractions`` and
``confidence`` (residue); absent, the payload is as described here. A reader older than these
codings refuses such a product by its version (below).

Versions: 1, the residue payload holds ``tillage`` and ``fractions``. 3, the raw and summary
kinds and the CCSDS 123 codings; a product that uses none of them is still written as version 2, so a ground
that reads 2 keeps reading everything it can (``Product.format_version``). 2, the
residue payload (``npz``) holds:

* ``tillage`` (rows, cols) uint8: 0 intensive, 1 reduced, 2 conservation tillage,
  254 (``UNCERTAIN_CLASS``) uncertain, 255 (``INVALID_CLASS``) no valid measurement. A pixel is
  uncertain when its confidence is below the stage's threshold or its spectrum lies outside
  what the classifier was trained on (onboard/stages/confidence.py): the product does not
  guess there. Outside (the learned stage; the bundle's ``domain`` record of the model holds
  the fitted statistics): the spectrum's shape (over its mean) is farther from the training
  pixels' principal subspace than ``novelty_limit``, its mean reflectance is below
  ``dark_limit``, or, where the record has a ``foreign`` direction (fitted against examples
  of char and built ground; the ImSPOC model's today, not the push-broom's, which took unseen
  crop residue for foreign ground), its score along it is above ``foreign_limit``; limits at
  which 0.2 %, 1 % and 0.5 % of the validation split's pixels are flagged. It means "ground unlike any field the model was
  trained or validated on" (burned stubble, asphalt, roofs, bright sand:
  docs/residue_ceiling.md has the measured shares), not "no residue"; it catches about half
  of such ground, not all of it;
* ``guess`` (rows, cols) uint8: the class the stage chose, uncertain pixels included (255
  invalid), for users who accept the risk;
* ``fractions`` (3, rows, cols) float32: residue, soil, green cover (NaN invalid);
* ``confidence`` (rows, cols) float32 in [0, 1]: the estimated probability that ``guess`` is
  right (NaN invalid, or where the stage gives none);
* header ``meta``: ``method``, ``confidence_threshold``, ``uncertain_share`` and
  ``out_of_distribution_share`` of the frame's valid pixels. A ``confidence_threshold`` above
  1 (``onboard.stages.confidence.WITHHELD``) means the model's confidence was not vouched for
  on validation: every valid pixel is uncertain, ``guess`` still holds its class.

Added within versions 2 and 3, optional (a reader that does not know them reads the rest as
before, so no new version): the residue payload (either coding) may hold ``screen`` (rows,
cols) uint8, the screening mask (onboard/stages/screen.py: bits 1 cloud, 2 cloud shadow,
4 haze, 8 invalid), and every product of a frame the frame's screening in header
``meta["screen"]``: ``cloud_share``, ``shadow_share``, ``haze_share``, ``invalid_share``,
``saturated_share`` (of the detector's pixels), ``worth_sending`` (the mission's cloud rule)
and ``tests`` (``vnir`` or ``swir``: which tests ran).
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import struct
import zipfile
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

import deflate
import numpy as np
from numpy.lib import format as npformat

from onboard import __version__
from onboard.errors import OnboardError
from onboard.formats.npyio import load_npz

MAGIC = b"OBPR"
#: The newest version this software writes (see ``Product.format_version``).
FORMAT_VERSION = 3
#: Versions this software reads (the layout of the prefix and header is the same in all).
READ_VERSIONS = (1, 2, 3)
_PREFIX = struct.Struct(">4sBI")


class ProductKind(str, Enum):
    """Product kinds. The value is the kind's name on the wire and in file names."""

    HEALTH = "health"
    RESIDUE = "residue"
    QUICKLOOK = "quicklook"
    CALIBRATION_REPORT = "calibration_report"
    CUBE = "cube"
    EVENT = "event"
    #: the raw ImSPOC frame's thumbnail stack, for reprocessing on the ground (optional)
    RAW = "raw"
    #: every frame's compact summary (JSON: residue per grid cell, screening, time, pose;
    #: onboard/stages/value.py)
    SUMMARY = "summary"


#: Downlink priority: lower goes first. Health and residue maps before cubes.
DEFAULT_PRIORITY: dict[ProductKind, int] = {
    ProductKind.EVENT: 0,
    ProductKind.HEALTH: 0,
    ProductKind.SUMMARY: 0,
    ProductKind.RESIDUE: 1,
    ProductKind.CALIBRATION_REPORT: 2,
    ProductKind.QUICKLOOK: 2,
    ProductKind.CUBE: 3,
    ProductKind.RAW: 4,
}


#: Most bytes the arrays of one ``npz`` payload may declare, per kind, checked before
#: inflating (:func:`decode_arrays`): a residue map of 1024 x 1024 pixels with its fractions
#: fits in 32 MiB, a float32 cube of 64 bands of 1024 x 1024 in 256 MiB. A payload of a few
#: hundred bytes could otherwise inflate to gigabytes on the ground.
MAX_DECODED_BYTES: dict[ProductKind, int] = {kind: 32 << 20 for kind in ProductKind}
MAX_DECODED_BYTES[ProductKind.CUBE] = 256 << 20
#: Downlink priorities a product may carry (the spool's file names hold two digits).
PRIORITY_RANGE = range(100)


class ProductFormatError(OnboardError, ValueError):
    """A product's bytes are not a product this software can read."""


def _field(h: dict, key: str, kind: type | tuple[type, ...]) -> object:
    """``h[key]`` if it is of ``kind`` (a bool is not an int); ProductFormatError otherwise."""
    if key not in h:
        raise ProductFormatError(f"product header lacks {key!r}")
    value = h[key]
    ok = isinstance(value, kind) and not (isinstance(value, bool) and kind is not bool)
    if not ok:
        names = " or ".join(k.__name__ for k in (kind if isinstance(kind, tuple) else (kind,)))
        raise ProductFormatError(f"product header {key!r} is {value!r}, expected {names}")
    return value


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

    @property
    def format_version(self) -> int:
        """The oldest version that can carry this product: 3 for the raw and summary kinds and
        the CCSDS 123 codings (a reader of 2 would find no ``data``, or no such kind, and not
        know why), else 2."""
        coded = self.meta.get("coding", "npz") != "npz"
        return 3 if coded or self.kind in (ProductKind.RAW, ProductKind.SUMMARY) else 2

    def to_bytes(self) -> bytes:
        header = json.dumps(self.header(), sort_keys=True, separators=(",", ":")).encode()
        return _PREFIX.pack(MAGIC, self.format_version, len(header)) + header + self.payload

    def arrays(self) -> dict[str, np.ndarray]:
        """The payload's arrays as users want them, whatever the coding: the cube as float32
        ``data`` (NaN invalid), the residue's ``fractions`` and ``confidence`` float32, the raw
        frame's ``thumbnails`` (N, h, w DN); ``{}`` for JSON and PNG payloads. The one place a
        CCSDS 123 coding is undone, for the ground sink, ``ground export`` and :func:`load`;
        ProductFormatError or the codec's error for a payload that does not decode."""
        if self.encoding != "npz":
            return {}
        from onboard.compress.ccsds123 import decode
        from onboard.compress.cube_coding import decode_cube
        from onboard.compress.residue_coding import decode_residue

        arrays = decode_arrays(self.payload, self.kind)
        coding = self.meta.get("coding", "npz")
        limit = MAX_DECODED_BYTES[self.kind] // 4  # samples, within the same byte limit
        if self.kind == ProductKind.CUBE:
            data = (arrays.pop("data") if coding == "npz" else decode_cube(arrays, self.meta, limit))
            arrays.pop("ccsds123", None)
            return {**arrays, "data": data.astype(np.float32)}
        if self.kind == ProductKind.RESIDUE and coding == "ccsds123":
            decoded = {**arrays, **decode_residue(arrays, limit)}  # the screen mask kept
            decoded.pop("ccsds123")
            return decoded
        if self.kind == ProductKind.RAW and coding == "ccsds123":
            stream = arrays.pop("ccsds123").astype(np.uint8).tobytes()
            return {**arrays, "thumbnails": decode(stream, max_samples=MAX_DECODED_BYTES[self.kind] // 2).cube}
        return arrays

    @classmethod
    def from_bytes(cls, blob: bytes) -> Product:
        h = _parse_header(blob)
        start = _PREFIX.size + _PREFIX.unpack_from(blob)[2]
        kind_name = _field(h, "kind", str)
        if kind_name not in {k.value for k in ProductKind}:
            raise ProductFormatError(f"unknown product kind {kind_name!r}")
        counter = _field(h, "frame_counter", int)
        where = f"product {kind_name}#{counter}"
        created = _field(h, "created_utc", (int, float))
        if not math.isfinite(created):  # type: ignore[arg-type]
            raise ProductFormatError(f"{where}: created_utc is {created}")
        priority = _field(h, "priority", int)
        if priority not in PRIORITY_RANGE:
            raise ProductFormatError(f"{where}: priority {priority} is not 0-99")
        payload = blob[start:]
        declared = _field(h, "payload_bytes", int)
        if len(payload) != declared:
            raise ProductFormatError(
                f"{where}: payload is {len(payload)} bytes, header says {declared} (truncated or padded)"
            )
        if hashlib.sha256(payload).hexdigest() != _field(h, "payload_sha256", str):
            raise ProductFormatError(f"{where}: payload SHA-256 mismatch (corrupt)")
        return cls(
            kind=ProductKind(kind_name),
            frame_counter=counter,  # type: ignore[arg-type]
            created_utc=float(created),  # type: ignore[arg-type]
            payload=payload,
            encoding=_field(h, "encoding", str),  # type: ignore[arg-type]
            meta=_field(h, "meta", dict),  # type: ignore[arg-type]
            instrument=_field(h, "instrument", str),  # type: ignore[arg-type]
            software_version=_field(h, "software_version", str),  # type: ignore[arg-type]
            model_versions=_field(h, "model_versions", dict),  # type: ignore[arg-type]
            priority=priority,  # type: ignore[arg-type]
        )


def _parse_header(blob: bytes) -> dict:
    """The header of a product's bytes (its prefix and header at least); ProductFormatError
    when they are not a product this software reads."""
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
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise ProductFormatError(f"product header is not valid JSON: {exc}") from exc
    if not isinstance(h, dict):
        raise ProductFormatError(f"product header is {type(h).__name__}, not a JSON object")
    return h


def read_header(path: str | os.PathLike[str]) -> dict:
    """A product file's header, without reading its payload: what searching an archive of
    large cubes for their metadata costs (REQUEST_AREA)."""
    with open(path, "rb") as f:
        prefix = f.read(_PREFIX.size)
        size = _PREFIX.unpack_from(prefix)[2] if len(prefix) == _PREFIX.size else 0
        return _parse_header(prefix + f.read(size))


#: libdeflate's level for an ``npz`` payload's members. At 6, against zlib's default level
#: (what ``numpy.savez_compressed`` wrote before issue 17), the product cubes come out 0.3-0.4 %
#: smaller and the residue maps 0.1-0.8 % larger, in a third to a quarter of the time; at 1
#: they grow 1.5-5 % for a quarter less time (bench/bench_package.py).
NPZ_LEVEL = 6

# zip's records (PKWARE APPNOTE 4.3.7, 4.3.12, 4.3.16), little-endian, without zip64: a
# product's payload is far below 4 GiB (struct refuses a size that does not fit)
_LOCAL = struct.Struct("<IHHHHHIIIHH")
_CENTRAL = struct.Struct("<IHHHHHHIIIHHHHHII")
_END = struct.Struct("<IHHHHIIH")
_ZIP_VERSION = 20  # 2.0: deflate
_MADE_ON_UNIX = 3 << 8
_DOS_DATE = (1 << 5) | 1  # 1980-01-01 00:00, zip's earliest: no clock in the bytes


def encode_arrays(**arrays: np.ndarray) -> bytes:
    """Arrays as an ``.npz`` payload (:func:`npz_bytes` at ``NPZ_LEVEL``)."""
    return npz_bytes(arrays)


def npz_bytes(arrays: Mapping[str, np.ndarray], level: int = NPZ_LEVEL) -> bytes:
    """Arrays as an ``.npz`` payload: a zip of ``.npy`` members, what ``numpy.load`` and any
    zip reader read, each member deflated by libdeflate at ``level`` (1-12; 0: stored). The
    zip is written here because Python's zipfile deflates with zlib only; the bytes depend on
    the arrays and the level alone (no clock in them)."""
    parts: list[bytes | bytearray | memoryview] = []
    central: list[bytes] = []
    offset = 0
    for name, array in arrays.items():
        npy = io.BytesIO()
        npformat.write_array(npy, np.asanyarray(array), allow_pickle=False)
        raw = npy.getbuffer()
        data = deflate.deflate_compress(raw, level) if level else raw
        method = zipfile.ZIP_DEFLATED if level else zipfile.ZIP_STORED
        member = f"{name}.npy".encode()
        crc = zlib.crc32(raw)
        local = _LOCAL.pack(0x04034B50, _ZIP_VERSION, 0, method, 0, _DOS_DATE, crc, len(data), len(raw),
                            len(member), 0)
        central.append(_CENTRAL.pack(0x02014B50, _MADE_ON_UNIX | _ZIP_VERSION, _ZIP_VERSION, 0, method, 0,
                                     _DOS_DATE, crc, len(data), len(raw), len(member), 0, 0, 0, 0,
                                     0o100600 << 16, offset) + member)  # a regular file, rw for its owner
        parts += [local, member, data]
        offset += len(local) + len(member) + len(data)
    directory = b"".join(central)
    end = _END.pack(0x06054B50, 0, 0, len(central), len(central), len(directory), offset, 0)
    return b"".join([*parts, directory, end])


def decode_arrays(payload: bytes, kind: ProductKind | None = None) -> dict[str, np.ndarray]:
    """Inverse of :func:`encode_arrays`; never unpickles, and refuses (ProductFormatError) a
    payload declaring more than ``MAX_DECODED_BYTES`` of the kind (the largest without a kind)
    before inflating it."""
    limit = MAX_DECODED_BYTES[kind] if kind is not None else max(MAX_DECODED_BYTES.values())
    return load_npz(payload, limit, f"{kind.value if kind else 'product'} payload is not a readable .npz",
                    ProductFormatError)


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


def load(path: str | os.PathLike[str]) -> tuple[dict[str, np.ndarray], dict]:
    """A product file (``.obp``, from ``onboard run`` or the ground receiver; ``.obpr`` from
    older receivers) as ``(arrays, header)``: :meth:`Product.arrays` decoded from any coding, and the header
    (kind, frame counter, time, meta, model versions ...) with ``name`` and, for a JSON
    payload, ``data``. ProductFormatError if the file is not a readable product."""
    p = Product.from_bytes(Path(path).read_bytes())
    header = {**p.header(), "name": p.name}
    if p.encoding == "json":
        header["data"] = json.loads(p.payload)
    return p.arrays(), header
