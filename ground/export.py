"""Product files to user formats: the ground sink's writer, and ``onboard ground export``.

One definition of what each product kind becomes (the module docstring of ``ground``
lists the files); both the live/offline receiver (``sink``) and ``ground export`` (product
files from an ``onboard run --out`` folder or a receiver's ``raw/``) call
:func:`write_user_formats`. Payloads are decoded by :meth:`Product.arrays`, whatever their
coding (CCSDS 123 included).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ground.cog import captioned_quicklook, write_cog
from ground.user_formats import cube_envi, envi_map_info, residue_geotiffs, utc_iso, write_envi
from onboard.errors import OnboardError
from onboard.formats.products import Product, ProductKind

log = logging.getLogger(__name__)

#: Product file extensions: ``.obp``, on board and on the ground; ``.obpr``, what ground
#: receivers kept before the two were unified, still read.
PRODUCT_SUFFIXES = (".obp", ".obpr")


class ExportError(OnboardError, ValueError):
    """A path given to ``ground export`` holds no product file."""


#: The JSON products that become one line each of a JSON Lines file.
_JSONL = {ProductKind.HEALTH: "health.jsonl", ProductKind.EVENT: "events.jsonl",
          ProductKind.SUMMARY: "summaries.jsonl"}


def write_user_formats(p: Product, out: Path, stem: str, append_jsonl: Callable[[str, dict], None]) -> list[str]:
    """Write product ``p`` as ``out/stem*`` in its user format; the file names written.
    Health, events and frame summaries become lines of ``health.jsonl`` / ``events.jsonl`` /
    ``summaries.jsonl`` via ``append_jsonl``."""
    if p.kind in _JSONL and p.encoding == "json":
        file = _JSONL[p.kind]
        append_jsonl(file, {**p.header(), "name": p.name, "data": json.loads(p.payload)})
        return [file]
    if p.kind == ProductKind.QUICKLOOK and p.encoding == "png":
        (out / f"{stem}.png").write_bytes(p.payload)
        bands = p.meta.get("bands_nm")
        caption = [f"{p.name}  frame {p.frame_counter}  {p.instrument}", f"{utc_iso(p.created_utc)}",
                   "R/G/B " + (" / ".join(f"{b:.0f}" for b in bands) + " nm" if bands else "bands not stated")]
        try:
            captioned = captioned_quicklook(p.payload, caption, p.meta)
        except Exception as exc:  # noqa: BLE001 (PIL raises many kinds on a damaged PNG)
            log.warning("%s: no captioned quick-look, its PNG does not decode: %s", p.name, exc)
            return [f"{stem}.png"]  # the PNG as sent is kept whatever it holds
        (out / f"{stem}_captioned.png").write_bytes(captioned)
        return [f"{stem}.png", f"{stem}_captioned.png"]
    arrays = p.arrays()
    common = {"sensor type": p.instrument, "acquisition time": utc_iso(p.created_utc),
              "frame counter": str(p.frame_counter), "software version": p.software_version}
    if p.kind == ProductKind.RESIDUE:
        return residue_geotiffs(out, stem, arrays, p.meta)
    if p.kind == ProductKind.CUBE:
        header: dict = {**common, **envi_map_info(p.meta),
                        "description": f"onboard cube {p.name}, frame {p.frame_counter}"}
        if "fwhm_nm" in arrays:
            header["fwhm_nm"] = arrays["fwhm_nm"]
        header.update(radiometry_header(p.meta.get("radiometry")))
        files = cube_envi(out / f"{stem}.img", arrays["data"], arrays["wavelengths_nm"], header)
        files += write_cog(out / f"{stem}.tif", arrays["data"], arrays["wavelengths_nm"], p.meta)
        if "valid" in arrays:
            files += write_envi(out / f"{stem}_valid.img", arrays["valid"].astype(np.uint8)[None],
                                {**envi_map_info(p.meta), "description": f"validity of {p.name} (1 valid)"})
        return files
    if p.kind == ProductKind.RAW and "thumbnails" in arrays:
        header = {**common, "description": f"onboard raw frame {p.name}: ImSPOC thumbnails (DN)",
                  "exposure_s": str(p.meta.get("exposure_s")), "data units": "DN"}
        return write_envi(out / f"{stem}.img", arrays["thumbnails"], header)
    ext = {"json": ".json", "npz": ".npz", "png": ".png"}.get(p.encoding, ".bin")
    (out / f"{stem}{ext}").write_bytes(p.payload)
    return [f"{stem}{ext}"]


def radiometry_header(radiometry: dict | None) -> dict:
    """ENVI header fields saying which quantity a cube holds and how it was obtained
    (onboard/stages/reflectance.py); a product older than that record holds lab reflectance."""
    if not radiometry:
        return {"quantity": "lab reflectance (the product predates the radiometry record)"}
    out = {"quantity": radiometry["quantity"], "radiometry": radiometry.get("how", ""),
           "data units": radiometry.get("units", "1") if radiometry["quantity"] == "radiance"
           else f"{radiometry['quantity']} (0-1)"}
    if radiometry.get("uncertainty_relative"):
        out["uncertainty relative"] = [f"{v:.4f}" for v in radiometry["uncertainty_relative"]]
    if radiometry.get("uncertainty_absolute"):
        out["uncertainty absolute"] = [f"{v:.4f}" for v in radiometry["uncertainty_absolute"]]
    return out


#: Folders of a receiver's output whose files are not products to export: ``quarantine/``
#: (refused, with the reason in ``rejected.jsonl``) and ``.staging/`` (transfers under way).
_NOT_PRODUCTS = ("quarantine", ".staging")


def product_files(paths: Iterable[Path]) -> Iterator[Path]:
    """Each product file named, and every one under each folder (sorted; not in a receiver's
    quarantine or staging); ExportError for a path that is neither."""
    for path in paths:
        if path.is_dir():
            found = sorted(f for f in path.rglob("*") if f.suffix in PRODUCT_SUFFIXES and f.is_file()
                           and not set(f.relative_to(path).parts[:-1]) & set(_NOT_PRODUCTS))
            if not found:
                raise ExportError(f"{path}: no product files ({', '.join(PRODUCT_SUFFIXES)}) in this folder")
            yield from found
        elif path.is_file():
            yield path
        else:
            raise ExportError(f"{path}: no such file or folder")


@dataclass
class ExportReport:
    files: dict[str, list[str]] = field(default_factory=dict)  # product file -> files written
    failed: dict[str, str] = field(default_factory=dict)  # product file -> why


def export(paths: Iterable[Path], out: Path) -> ExportReport:
    """Write every product file under ``paths`` to ``out`` in its user format. A file that is
    not a readable product is reported and skipped (the others are exported); the same
    product reached twice is written once, and a different one under a used name gets
    ``_<sha8>``."""
    files = list(product_files(paths))
    out.mkdir(parents=True, exist_ok=True)
    report = ExportReport()
    seen: dict[str, set[str]] = {}  # product name -> SHA-256s written

    def append_jsonl(file: str, record: dict) -> None:
        with open(out / file, "a") as fh:
            fh.write(json.dumps(record, sort_keys=True) + "\n")

    for f in files:
        try:
            p = Product.from_bytes(f.read_bytes())
            sha, shas = p.sha256, seen.setdefault(p.name, set())
            if sha in shas:
                continue
            stem = p.name if not shas else f"{p.name}_{sha[:8]}"
            shas.add(sha)
            report.files[str(f)] = write_user_formats(p, out, stem, append_jsonl)
        except OSError:
            raise
        except Exception as exc:  # noqa: BLE001 (a bad file is reported, the others exported)
            report.failed[str(f)] = f"{type(exc).__name__}: {exc}"
    return report
