"""A radiance standard's certificate: the spectral radiance of an integrating sphere (or a
lamp-panel) with its uncertainty, as its calibration laboratory states it.

One CSV file, ``#`` lines first with ``key: value`` metadata, then a header row and one row
per wavelength::

    # onboard radiance certificate
    # source: Labsphere XTH-2000 S/N 1234, NIST-traceable, 2026-01-12
    # units: W m-2 sr-1 nm-1
    # coverage_factor: 2
    wavelength_nm,radiance,uncertainty
    350,0.00123,0.00004
    ...

* ``units`` (required): the unit of ``radiance`` and ``uncertainty``, one of
  :data:`UNITS` (laboratories write mW, µW, cm-2 and µm-1; each is converted to
  W m-2 sr-1 nm-1, the calibration file's :data:`~onboard.formats.calfile.RADIANCE_UNITS`).
* ``coverage_factor`` (required): k of the stated uncertainty (certificates state expanded
  uncertainties, usually k = 2); divided out, so the calibration carries k = 1.
* ``source`` (optional): what the standard is; it goes into the calibration's provenance.
* ``uncertainty`` is absolute, in ``units``, at ``coverage_factor``.

Wavelengths must be strictly ascending (a certificate whose rows were shuffled or
duplicated is refused, not sorted: it was not copied faithfully) and cover the instrument's
bands. Every problem raises one :class:`CertificateError` naming the file, the line and what
to fix.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from onboard.errors import OnboardError
from onboard.formats.calfile import RADIANCE_UNITS
from onboard.physics.imspoc import band_edges_nm, band_mean

#: Accepted radiance units and their factor to W m-2 sr-1 nm-1.
UNITS = {
    "W m-2 sr-1 nm-1": 1.0,
    "mW m-2 sr-1 nm-1": 1e-3,
    "W m-2 sr-1 um-1": 1e-3,
    "W cm-2 sr-1 nm-1": 1e4,
    "mW cm-2 sr-1 nm-1": 10.0,
    "uW cm-2 sr-1 nm-1": 1e-2,
    "W cm-2 sr-1 um-1": 10.0,
    "mW cm-2 sr-1 um-1": 1e-2,
    "uW cm-2 sr-1 um-1": 1e-5,
}
COLUMNS = ("wavelength_nm", "radiance", "uncertainty")


class CertificateError(OnboardError, ValueError):
    """A certificate that cannot be used; the message names the file, the line and the fix."""


@dataclass(frozen=True)
class Certificate:
    """A radiance standard: ``radiance`` and its standard uncertainty ``uncertainty`` (k = 1),
    both (S,) in W m-2 sr-1 nm-1, on ``wavelength_nm`` (S,), strictly ascending."""

    wavelength_nm: NDArray[np.float64]
    radiance: NDArray[np.float64]
    uncertainty: NDArray[np.float64]
    source: str = ""
    path: str = ""

    def check_covers(self, band_centres_nm: NDArray) -> None:
        """Refuse a certificate that does not span every band of ``band_centres_nm`` (their
        edges, midway between centres): a band half outside it has no known radiance."""
        edges = band_edges_nm(np.asarray(band_centres_nm, float))
        lo, hi = float(self.wavelength_nm[0]), float(self.wavelength_nm[-1])
        if lo > edges[0] or hi < edges[-1]:
            raise CertificateError(
                f"certificate {self.path or self.source} covers {lo:g}-{hi:g} nm; the instrument's "
                f"bands span {edges[0]:.1f}-{edges[-1]:.1f} nm: use a certificate (or a standard) "
                "that covers them")

    def in_bands(self, band_centres_nm: NDArray) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """Band-averaged radiance (B,) and its relative standard uncertainty (B,) on the bands
        centred on ``band_centres_nm``. The certificate's uncertainty is taken as fully
        correlated within a band (a standard's errors are smooth in wavelength), so the
        band's is the band mean of the stated one: it does not shrink with the row count."""
        self.check_covers(band_centres_nm)
        mean = band_mean(self.wavelength_nm, self.radiance, band_centres_nm)
        u = band_mean(self.wavelength_nm, self.uncertainty, band_centres_nm)
        return mean, u / mean


def _fail(path: str, what: str) -> CertificateError:
    return CertificateError(f"radiance certificate {path}: {what}")


def parse_certificate(text: str, path: str = "<text>") -> Certificate:
    """A :class:`Certificate` from the CSV text of the module docstring."""
    meta: dict[str, str] = {}
    body: list[tuple[int, str]] = []
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if stripped.startswith("#"):
            key, sep, value = stripped[1:].partition(":")
            if sep:
                meta[key.strip().lower()] = value.strip()
        elif stripped:
            body.append((number, stripped))
    units = meta.get("units")
    if units is None:
        raise _fail(path, f"no '# units: ...' line; radiance units must be stated (one of "
                          f"{', '.join(UNITS)})")
    unit = " ".join(units.replace("µ", "u").split())
    if unit not in UNITS:
        raise _fail(path, f"units {units!r} are not a spectral radiance this reader knows; "
                          f"give one of {', '.join(UNITS)}")
    try:
        k = float(meta["coverage_factor"])
    except KeyError:
        raise _fail(path, "no '# coverage_factor: k' line: say at which k the uncertainty is "
                          "stated (certificates usually give k = 2)") from None
    except ValueError:
        raise _fail(path, f"coverage_factor {meta['coverage_factor']!r} is not a number") from None
    if not 0.5 <= k <= 4:
        raise _fail(path, f"coverage_factor {k:g} is not a coverage factor (1-3 in practice)")
    if not body:
        raise _fail(path, "no header row and no data")
    header_line, header = body[0]
    names = [c.strip().lower() for c in next(csv.reader(io.StringIO(header)))]
    if tuple(names) != COLUMNS:
        raise _fail(path, f"line {header_line}: the header must be {','.join(COLUMNS)}, got {header!r}")
    rows = []
    for number, line in body[1:]:
        cells = next(csv.reader(io.StringIO(line)))
        if len(cells) != 3:
            raise _fail(path, f"line {number}: {len(cells)} values, expected 3 ({','.join(COLUMNS)})")
        try:
            values = [float(c) for c in cells]
        except ValueError:
            raise _fail(path, f"line {number}: {line!r} is not three numbers") from None
        if not all(np.isfinite(values)):
            raise _fail(path, f"line {number}: {line!r} holds a NaN or infinite value")
        rows.append((number, *values))
    if len(rows) < 2:
        raise _fail(path, f"{len(rows)} data rows; a spectrum needs at least two wavelengths")
    table = np.array(rows)
    lines, wl, radiance, u = table.T
    step = np.diff(wl)
    if np.any(step <= 0):
        i = int(np.argmax(step <= 0))
        raise _fail(path, f"wavelengths must be strictly ascending: line {int(lines[i + 1])} "
                          f"({wl[i + 1]:g} nm) follows {wl[i]:g} nm; fix the file (it is not sorted "
                          "for you: a shuffled certificate was not copied faithfully)")
    if wl[0] <= 0:
        raise _fail(path, f"line {int(lines[0])}: wavelength {wl[0]:g} nm is not positive")
    if np.any(radiance <= 0):
        i = int(np.argmax(radiance <= 0))
        raise _fail(path, f"line {int(lines[i])}: radiance {radiance[i]:g} is not positive")
    if np.any(u < 0) or np.any(u >= radiance):
        i = int(np.argmax((u < 0) | (u >= radiance)))
        raise _fail(path, f"line {int(lines[i])}: uncertainty {u[i]:g} must be >= 0 and below "
                          f"the radiance {radiance[i]:g} (absolute, in {unit})")
    factor = UNITS[unit]
    return Certificate(wl, radiance * factor, u * factor / k, meta.get("source", ""), path)


def read_certificate(path: str | Path) -> Certificate:
    """Read and check a certificate file (module docstring)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CertificateError(f"radiance certificate {path} cannot be read ({exc})") from exc
    return parse_certificate(text, str(path))


def write_certificate(path: str | Path, cert: Certificate, coverage_factor: float = 2.0) -> None:
    """Write ``cert`` in the module's format, in W m-2 sr-1 nm-1, uncertainty at
    ``coverage_factor`` (as a laboratory states it)."""
    out = io.StringIO()
    out.write("# onboard radiance certificate\n")
    if cert.source:
        out.write(f"# source: {cert.source}\n")
    out.write(f"# units: {RADIANCE_UNITS}\n# coverage_factor: {coverage_factor:g}\n")
    out.write(",".join(COLUMNS) + "\n")
    for w, r, u in zip(cert.wavelength_nm, cert.radiance, cert.uncertainty, strict=True):
        out.write(f"{w:.6g},{r:.8g},{u * coverage_factor:.8g}\n")
    Path(path).write_text(out.getvalue(), encoding="utf-8")
