"""Where delivered files become products: verified, deduplicated, written in user formats.

**Durable before acknowledged.** :meth:`ProductSink.receive` returns only once the file is
on disk for good (``raw/NAME.obp`` written atomically and fsynced, then its ``index.jsonl``
line appended and fsynced): the receiver sends the Finished PDU that lets the payload delete
its copy only after that (``firmware_bridge/cfdp/receiver.py``).

**A bad product is set aside, never a stop.** A file that does not parse as a product, whose
kind or name disagrees with how it came, or whose payload cannot be written in a user
format is kept in ``quarantine/`` and a ``rejected.jsonl`` line says why and where; the next
product is decoded as usual. Only OSError (the ground's own disk) propagates, so that the
file is not acknowledged.

**A torn index.** A power cut can leave ``index.jsonl`` ending in half a line: opening the
sink moves that tail to ``index.jsonl.torn`` and goes on (the product it described is not
counted as received, so a retransmission is kept again); a damaged line elsewhere is
skipped with a warning.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from firmware_bridge.cfdp.common import FILE_SUFFIX
from firmware_bridge.cfdp.receiver import FailedTransfer, ReceivedFile
from firmware_bridge.storage import atomic_write
from ground.export import write_user_formats
from onboard.formats.products import Product

log = logging.getLogger(__name__)


@dataclass
class GroundStats:
    products: int = 0
    duplicates: int = 0
    rejected: int = 0
    quarantined: int = 0
    failed_transfers: int = 0
    by_kind: dict[str, int] = field(default_factory=dict)


class ProductSink:
    """Verifies delivered files as products, drops duplicates, writes user formats."""

    def __init__(self, out: Path) -> None:
        self.out = out
        (out / "raw").mkdir(parents=True, exist_ok=True)
        self.index_path = out / "index.jsonl"
        self.seen: dict[str, set[str]] = {}
        self._load_index()
        self.stats = GroundStats()

    def _load_index(self) -> None:
        if not self.index_path.exists():
            return
        raw = self.index_path.read_bytes()
        body, _, tail = raw.rpartition(b"\n")
        if tail:  # the last line has no end: a write was cut
            torn = self.index_path.with_name(self.index_path.name + ".torn")
            with open(torn, "ab") as fh:
                fh.write(tail + b"\n")
            with open(self.index_path, "r+b") as fh:
                fh.truncate(len(raw) - len(tail))
                os.fsync(fh.fileno())
            log.warning("%s ended in a torn line (%d B), moved to %s", self.index_path, len(tail), torn)
        for n, line in enumerate(body.split(b"\n") if body else [], 1):
            try:
                rec = json.loads(line)
                self.seen.setdefault(str(rec["name"]), set()).add(str(rec["sha256"]))
            except (ValueError, KeyError, TypeError) as exc:
                log.warning("%s line %d skipped: %s", self.index_path, n, exc)

    def append_jsonl(self, file: str, record: dict) -> None:
        """Append one line and make it durable."""
        with open(self.out / file, "a") as fh:
            fh.write(json.dumps(record, sort_keys=True) + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def reject(self, what: str, reason: str, transaction: tuple[int, int] | None = None,
               **where: str) -> None:
        self.stats.rejected += 1
        self.append_jsonl("rejected.jsonl", {"what": what, "reason": reason, **where,
                                             "transaction": list(transaction) if transaction else None})
        log.warning("rejected %s: %s", what, reason)

    def failed(self, failure: FailedTransfer) -> None:
        self.stats.failed_transfers += 1
        self.append_jsonl("rejected.jsonl", {"what": failure.name or "?", "reason": failure.reason,
                                     "transaction": list(failure.transaction)})

    def receive(self, f: ReceivedFile) -> None:
        """Keep one delivered file durably: as a product, or in quarantine with the reason."""
        try:
            product = Product.from_bytes(f.data)
        except OSError:
            raise
        except Exception as exc:  # noqa: BLE001 (any parse failure: the file goes aside)
            self.quarantine(f, f"not a valid product: {type(exc).__name__}: {exc}")
            return
        if f.kind is not None and product.kind.value != f.kind:
            self.quarantine(f, f"product kind {product.kind.value} came on the APID of {f.kind}")
            return
        if product.name != f.name:
            self.quarantine(f, f"file name says {f.name}, product header says {product.name}")
            return
        sha = product.sha256
        names = self.seen.setdefault(product.name, set())
        if sha in names:
            self.stats.duplicates += 1
            return
        stem = product.name if not names else f"{product.name}_{sha[:8]}"
        atomic_write(self.out / "raw" / f"{stem}{FILE_SUFFIX}", f.data, mode=0o644)
        try:
            files = [f"raw/{stem}{FILE_SUFFIX}", *self._write_formats(product, stem)]
        except OSError:
            raise
        except Exception as exc:  # noqa: BLE001 (a payload its format cannot be read from)
            (self.out / "raw" / f"{stem}{FILE_SUFFIX}").unlink()
            self.quarantine(f, f"payload not decodable: {type(exc).__name__}: {exc}")
            return
        names.add(sha)
        self.stats.products += 1
        self.stats.by_kind[product.kind.value] = self.stats.by_kind.get(product.kind.value, 0) + 1
        self.append_jsonl("index.jsonl", {"name": product.name, "kind": product.kind.value,
                                          "sha256": sha, "files": files,
                                          "transaction": list(f.transaction),
                                          "received_utc": time.time()})

    def quarantine(self, f: ReceivedFile, reason: str) -> None:
        """Keep a delivered file that is not a usable product in ``quarantine/`` (durably),
        with a ``rejected.jsonl`` line saying why."""
        digest = hashlib.sha256(f.data).hexdigest()
        path = self.out / "quarantine" / f"{f.name}_{digest[:8]}{FILE_SUFFIX}"
        path.parent.mkdir(exist_ok=True)
        atomic_write(path, f.data, mode=0o644)
        self.stats.quarantined += 1
        self.reject(f.name, reason, f.transaction, file=f"quarantine/{path.name}", sha256=digest)

    def _write_formats(self, p: Product, stem: str) -> list[str]:
        return write_user_formats(p, self.out, stem, self.append_jsonl)
