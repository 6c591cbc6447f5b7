"""The on-board archive: every product of a frame written atomically to ``out/products``, then
the frame's JSON manifest (``out/frames``), which marks the frame done.

The archive is the first thing given up when the disk fills: its copies are for
REQUEST_PRODUCT and for recovery on the ground after landing, while the spool's copies are
the ones still to be downlinked. Before each copy the writer keeps the
:class:`~firmware_bridge.storage.StorageBudget`'s free-space floor by deleting the oldest
archive copies; it is also the budget's ``shed_archive``, so the spool sheds archive copies
before it evicts a product. Every copy deleted or not written is an event
(:class:`~firmware_bridge.spool.SpoolEvent`, ``shed``), and a write that fails anyway (ENOSPC)
is an event too: the archive never stops the payload.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from firmware_bridge.spool import SpoolEvent
from firmware_bridge.storage import StorageBudget, atomic_write
from onboard.runtime.pipeline import FrameResult

#: What events call an archive copy (the archive keeps no kind or priority per file).
ARCHIVE_KIND = "archive"


class ProductWriter:
    """Writes each product atomically to ``out/products`` and a JSON manifest per frame,
    within ``budget`` (none: no floor)."""

    def __init__(self, out: Path, budget: StorageBudget | None = None) -> None:
        self.products_dir = out / "products"
        self.frames_dir = out / "frames"
        self.products_dir.mkdir(parents=True, exist_ok=True)
        self.frames_dir.mkdir(parents=True, exist_ok=True)
        self.budget = budget or StorageBudget(0)
        self.budget.shed_archive = self.shed
        self.count = 0
        self.bytes = 0

    def write(self, result: FrameResult) -> list[SpoolEvent]:
        """Archive the frame's products and its manifest; the events of copies shed or not
        written."""
        events: list[SpoolEvent] = []
        entries = []
        for p in result.products:
            blob = p.to_bytes()
            events += self._keep(self.products_dir / f"{p.name}.obp", blob)
            entries.append({"name": p.name, "kind": p.kind.value, "bytes": len(blob),
                            "sha256": p.sha256, "priority": p.priority, "held": p.name in result.held})
            self.count += 1
            self.bytes += len(blob)
        manifest = {
            "frame": result.counter,
            "seconds": result.seconds,
            "regularisation": result.regularisation,
            "flags": result.flags,
            "products": entries,
        }
        return events + self._keep(self.frames_dir / f"frame_{result.counter:08d}.json",
                                   json.dumps(manifest, indent=1).encode())

    def _keep(self, path: Path, data: bytes) -> list[SpoolEvent]:
        events = self.budget.shed_archive_for(path.parent, len(data))
        why = ""
        if self.budget.deficit(path.parent, len(data)):
            why = f"free space below the floor of {self.budget.floor_bytes} B"
        else:
            try:
                atomic_write(path, data, mode=0o644)
            except OSError as exc:
                why = f"cannot write it: {exc.strerror or exc}"
        if why:
            events.append(SpoolEvent("shed", path.stem, ARCHIVE_KIND, 99, len(data),
                                     f"archive copy not written: {why}"))
        return events

    def shed(self, where: Path, need: int) -> list[SpoolEvent]:
        """Delete the oldest archive copies until ``need`` bytes are freed on the file system
        of ``where`` (none if the archive is on another one); an event for each."""
        if os.stat(where).st_dev != os.stat(self.products_dir).st_dev:
            return []
        copies = []
        for path in self.products_dir.glob("*.obp"):
            try:
                st = path.stat()
            except FileNotFoundError:
                continue
            copies.append((st.st_mtime_ns, path.name, path, st.st_blocks * 512))
        events = []
        for _mtime, _name, path, size in sorted(copies):
            if need <= 0:
                break
            path.unlink(missing_ok=True)
            need -= size
            events.append(SpoolEvent("shed", path.stem, ARCHIVE_KIND, 99, size,
                                     "archive copy deleted: free space below the floor of "
                                     f"{self.budget.floor_bytes} B"))
        return events
