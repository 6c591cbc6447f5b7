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

**One sync pass per frame, same durability.** A frame's files are committed together
(:func:`commit`): each is written to a temporary file beside its place, unsynced; one
``syncfs`` makes all their bytes durable; they are renamed into place and the products
folder is fsynced; then the manifest is renamed and the frames folder fsynced. That is 3
syncs a frame where one ``atomic_write`` per file took 2K + 2 for K products (each file
and its folder), with the same guarantees after a power cut: a name in ``products`` or
``frames`` never shows a partial file (its bytes were durable before the rename was issued),
a manifest is never visible without the products it lists (their renames were durable
before it was renamed), and when :meth:`ProductWriter.write` returns everything is durable
(tests/test_writer_powercut.py checks each on a trace of the writer's system calls).
``syncfs`` reports write-back errors only from Linux 5.8; elsewhere, and where the C library
has no ``syncfs``, each temporary file is fsynced instead (K + 2 syncs). Temporary files a cut
leaves behind were never acknowledged; a new :class:`ProductWriter` removes them.
"""

from __future__ import annotations

import ctypes
import json
import os
import platform
from collections.abc import Callable
from pathlib import Path

from firmware_bridge.spool import SpoolEvent
from firmware_bridge.storage import TMP_SUFFIX, StorageBudget, fsync_dir, write_all
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
        for folder in (self.products_dir, self.frames_dir):  # left by a cut: never acknowledged
            for stray in folder.glob(f"*{TMP_SUFFIX}"):
                stray.unlink(missing_ok=True)

    def write(self, result: FrameResult) -> list[SpoolEvent]:
        """Archive the frame's products and its manifest, durably (see the module's docstring);
        the events of copies shed or not written."""
        events: list[SpoolEvent] = []
        entries = []
        staged: list[Path] = []
        for p in result.products:
            blob = p.to_bytes()
            events += self._stage(self.products_dir / f"{p.name}.obp", blob, staged)
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
        products = list(staged)
        events += self._stage(self.frames_dir / f"frame_{result.counter:08d}.json",
                              json.dumps(manifest, indent=1).encode(), staged)
        try:
            commit(products, staged[len(products):])
        except OSError as exc:
            for path in staged:
                _temporary(path).unlink(missing_ok=True)
            events += [SpoolEvent("shed", path.stem, ARCHIVE_KIND, 99, 0,
                                  f"archive copy not written: cannot sync it: {exc.strerror or exc}")
                       for path in staged]
        return events

    def _stage(self, path: Path, data: bytes, staged: list[Path]) -> list[SpoolEvent]:
        """Write ``data`` to ``path``'s temporary file (unsynced) within the budget and add
        ``path`` to ``staged``; the events of copies shed, or of this one not written."""
        events = self.budget.shed_archive_for(path.parent, len(data))
        why = ""
        if self.budget.deficit(path.parent, len(data)):
            why = f"free space below the floor of {self.budget.floor_bytes} B"
        else:
            try:
                write_temporary(path, data)
                staged.append(path)
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


def _temporary(path: Path) -> Path:
    return path.with_name(path.name + TMP_SUFFIX)


def write_temporary(path: Path, data: bytes, mode: int = 0o644) -> None:
    """``data`` into ``path``'s temporary file, not synced; nothing left behind on failure."""
    tmp = _temporary(path)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        try:
            write_all(fd, data)
        finally:
            os.close(fd)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def commit(first: list[Path], then: list[Path]) -> None:
    """Move the temporary files of ``first``, then of ``then``, into place durably: one
    sync of their bytes, the renames of ``first`` and an fsync of each of their folders, the
    same for ``then``. After a power cut a name shows its whole new file or its old state,
    and nothing of ``then`` is visible before all of ``first`` is durable. Raises OSError
    (nothing renamed) when the bytes cannot be synced."""
    if not first and not then:
        return
    sync_data([_temporary(p) for p in [*first, *then]])
    for group in (first, then):
        for path in group:
            os.replace(_temporary(path), path)
        for folder in dict.fromkeys(p.parent for p in group):
            fsync_dir(folder)


def sync_data(paths: list[Path]) -> None:
    """Make the bytes of ``paths`` durable: one ``syncfs`` of their file system where it
    reports write-back errors (Linux 5.8 and later; the paths on one file system), else an
    fsync of each."""
    if _SYNCFS is not None and len({p.parent.stat().st_dev for p in paths}) == 1:
        fd = os.open(paths[0].parent, os.O_RDONLY)
        try:
            if _SYNCFS(fd) != 0:
                err = ctypes.get_errno()
                raise OSError(err, os.strerror(err))
        finally:
            os.close(fd)
        return
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _load_syncfs() -> Callable[[int], int] | None:
    """The C library's ``syncfs`` where it reports write-back errors (Linux >= 5.8), else None."""
    if platform.system() != "Linux":
        return None
    try:
        major, minor = (int(x) for x in platform.release().split(".")[:2])
    except ValueError:
        return None
    if (major, minor) < (5, 8):
        return None
    fn = getattr(ctypes.CDLL(None, use_errno=True), "syncfs", None)
    if fn is not None:
        fn.argtypes, fn.restype = [ctypes.c_int], ctypes.c_int
    return fn


_SYNCFS = _load_syncfs()
