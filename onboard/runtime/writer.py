"""The on-board archive: every product of a frame written atomically to ``out/products``, then
the frame's JSON manifest (``out/frames``), which marks the frame done."""

from __future__ import annotations

import json
import os
from pathlib import Path

from onboard.runtime.pipeline import FrameResult


class ProductWriter:
    """Writes each product atomically to ``out/products`` and a JSON manifest per frame."""

    def __init__(self, out: Path) -> None:
        self.products_dir = out / "products"
        self.frames_dir = out / "frames"
        self.products_dir.mkdir(parents=True, exist_ok=True)
        self.frames_dir.mkdir(parents=True, exist_ok=True)
        self.count = 0
        self.bytes = 0

    def write(self, result: FrameResult) -> None:
        entries = []
        for p in result.products:
            blob = p.to_bytes()
            _atomic_write(self.products_dir / f"{p.name}.obp", blob)
            entries.append({"name": p.name, "kind": p.kind.value, "bytes": len(blob),
                            "sha256": p.sha256, "priority": p.priority})
            self.count += 1
            self.bytes += len(blob)
        manifest = {
            "frame": result.counter,
            "seconds": result.seconds,
            "regularisation": result.regularisation,
            "flags": result.flags,
            "products": entries,
        }
        _atomic_write(self.frames_dir / f"frame_{result.counter:08d}.json",
                      json.dumps(manifest, indent=1).encode())


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
