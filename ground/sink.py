"""Where delivered files become products: verified, deduplicated, written in user formats."""

from __future__ import annotations

import importlib.util
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import click
import numpy as np

from firmware_bridge.cfdp.receiver import FailedTransfer, ReceivedFile
from ground.user_formats import write_envi, write_tiff
from onboard.formats.products import Product, ProductFormatError, ProductKind, decode_arrays


@dataclass
class GroundStats:
    products: int = 0
    duplicates: int = 0
    rejected: int = 0
    failed_transfers: int = 0
    by_kind: dict[str, int] = field(default_factory=dict)


class ProductSink:
    """Verifies delivered files as products, drops duplicates, writes user formats."""

    def __init__(self, out: Path) -> None:
        missing = [m for m in ("tifffile", "spectral") if importlib.util.find_spec(m) is None]
        if missing:
            raise click.ClickException(
                f"writing products needs {', '.join(missing)}: pip install 'onboard[ground]'")
        self.out = out
        (out / "raw").mkdir(parents=True, exist_ok=True)
        self.index_path = out / "index.jsonl"
        self.seen: dict[str, set[str]] = {}
        if self.index_path.exists():
            for line in self.index_path.read_text().splitlines():
                rec = json.loads(line)
                self.seen.setdefault(rec["name"], set()).add(rec["sha256"])
        self.stats = GroundStats()

    def append_jsonl(self, file: str, record: dict) -> None:
        with open(self.out / file, "a") as fh:
            fh.write(json.dumps(record, sort_keys=True) + "\n")

    def reject(self, what: str, reason: str, transaction: tuple[int, int] | None = None) -> None:
        self.stats.rejected += 1
        self.append_jsonl("rejected.jsonl", {"what": what, "reason": reason,
                                     "transaction": list(transaction) if transaction else None})
        click.echo(f"rejected {what}: {reason}", err=True)

    def failed(self, failure: FailedTransfer) -> None:
        self.stats.failed_transfers += 1
        self.append_jsonl("rejected.jsonl", {"what": failure.name or "?", "reason": failure.reason,
                                     "transaction": list(failure.transaction)})

    def receive(self, f: ReceivedFile) -> None:
        try:
            product = Product.from_bytes(f.data)
        except ProductFormatError as exc:
            self.reject(f.name, f"not a valid product: {exc}", f.transaction)
            return
        if f.kind is not None and product.kind.value != f.kind:
            self.reject(f.name, f"product kind {product.kind.value} came on the APID of "
                                f"{f.kind}", f.transaction)
            return
        if product.name != f.name:
            self.reject(f.name, f"file name says {f.name}, product header says {product.name}",
                        f.transaction)
            return
        sha = product.sha256
        names = self.seen.setdefault(product.name, set())
        if sha in names:
            self.stats.duplicates += 1
            return
        stem = product.name if not names else f"{product.name}_{sha[:8]}"
        (self.out / "raw" / f"{stem}.obpr").write_bytes(f.data)
        files = [f"raw/{stem}.obpr", *self._write_formats(product, stem)]
        names.add(sha)
        self.stats.products += 1
        self.stats.by_kind[product.kind.value] = self.stats.by_kind.get(product.kind.value, 0) + 1
        self.append_jsonl("index.jsonl", {"name": product.name, "kind": product.kind.value,
                                  "sha256": sha, "files": files,
                                  "transaction": list(f.transaction),
                                  "received_utc": time.time()})

    def _write_formats(self, p: Product, stem: str) -> list[str]:
        out = self.out
        if p.kind == ProductKind.RESIDUE:
            arrays = decode_arrays(p.payload, p.kind)
            write_tiff(out / f"{stem}_tillage.tif", arrays["tillage"].astype(np.uint8), p.meta)
            write_tiff(out / f"{stem}_fractions.tif", arrays["fractions"].astype(np.float32),
                        p.meta)
            return [f"{stem}_tillage.tif", f"{stem}_fractions.tif"]
        if p.kind == ProductKind.CUBE:
            arrays = decode_arrays(p.payload, p.kind)
            data = arrays["data"].astype(np.float32)
            header = {"wavelength": [f"{w:.3f}" for w in arrays["wavelengths_nm"]],
                      "wavelength units": "nm",
                      "description": f"onboard cube {p.name}, frame {p.frame_counter}"}
            files = write_envi(out / f"{stem}.img", data, header)
            if "valid" in arrays:
                files += write_envi(out / f"{stem}_valid.img",
                                     arrays["valid"].astype(np.uint8)[None], {})
            return files
        if p.kind == ProductKind.QUICKLOOK and p.encoding == "png":
            (out / f"{stem}.png").write_bytes(p.payload)
            return [f"{stem}.png"]
        if p.kind in (ProductKind.HEALTH, ProductKind.EVENT) and p.encoding == "json":
            file = "health.jsonl" if p.kind == ProductKind.HEALTH else "events.jsonl"
            self.append_jsonl(file, {**p.header(), "name": p.name, "data": json.loads(p.payload)})
            return [file]
        ext = {"json": ".json", "npz": ".npz", "png": ".png"}.get(p.encoding, ".bin")
        (out / f"{stem}{ext}").write_bytes(p.payload)
        return [f"{stem}{ext}"]
