"""Frame sources: where raw frames come from.

``SimulatedImspoc`` and ``SimulatedPushbroom`` fly a simulated instrument over a simulated
farmland (or a real reflectance cube, ``scene.py``) and yield each raw frame with the ground truth it was made from, so a run on the
simulator can report its own accuracy. A real camera or a replay of recorded frames yields
the same ``RawFrame`` with no truth.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import numpy as np
from numpy.typing import NDArray

from onboard.formats.types import Frame, RawFrame
from onboard.physics.imspoc import ImspocInstrument, band_edges_nm
from onboard.physics.pushbroom import PushbroomInstrument

if TYPE_CHECKING:
    from onboard.scene.sky import Flight


@dataclass
class Truth:
    """What the scene really was, on the pipeline's output grid.

    reflectance: (B, rows, cols) float32, the true reflectance averaged over each output band.
    fractions: (3, rows, cols) float32 (residue, soil, green). tillage: (rows, cols) uint8.
    Both None where the scene's covers are unknown (a real cube, ``sources/scene.py``).
    clouds: (rows, cols) uint8 truth mask of clouds and shadows (``scene/clouds.py``) and
    cloud_tau (rows, cols) their optical depth, None where the tile flew without clouds.
    """

    reflectance: NDArray[np.float32]
    fractions: NDArray[np.float32] | None
    tillage: NDArray[np.uint8] | None
    clouds: NDArray[np.uint8] | None = None
    cloud_tau: NDArray[np.float64] | None = None


class Tile(Protocol):
    """What the simulated sources fly over, one footprint per frame: a farmland tile
    (``scene/farmland.py``) or a real cube's (``sources/scene.py``)."""

    @property
    def reflectance(self) -> NDArray[np.float32]: ...
    @property
    def wavelengths_nm(self) -> NDArray[np.float64]: ...
    @property
    def fractions(self) -> NDArray[np.float32] | None: ...
    @property
    def tillage(self) -> NDArray[np.uint8] | None: ...


class FrameSource(Protocol):
    """What a run takes frames from (the simulators, a replay): each item is a frame, or a
    block of push-broom lines, with its truth, None where the scene is not known."""

    def __iter__(self) -> Iterator[tuple[Frame, Truth | None]]: ...


def band_average(reflectance: NDArray, grid_nm: NDArray, out_nm: NDArray) -> NDArray[np.float32]:
    """Average a fine-grid cube (B, ...) over each band of the output grid ``out_nm``: the
    quantity a B-band reconstruction estimates. (B_out, ...) float32."""
    edges = band_edges_nm(out_nm)
    idx = np.clip(np.searchsorted(edges, grid_nm) - 1, -1, len(out_nm))
    out = np.empty((len(out_nm),) + reflectance.shape[1:], dtype=np.float32)
    for b in range(len(out_nm)):
        sel = idx == b
        if not sel.any():  # output band narrower than the grid step: nearest sample
            sel = np.arange(len(grid_nm)) == np.argmin(np.abs(grid_nm - out_nm[b]))
        out[b] = reflectance[sel].mean(0)
    return out


class SimulatedImspoc:
    """Raw ImSPOC frames of successive farmland tiles along a flight track, with truth."""

    def __init__(
        self,
        instrument: ImspocInstrument,
        tiles: Iterator[Tile],
        output_grid_nm: NDArray,
        seed: int = 0,
        illumination_scale: float = 1.0,
        start_time: float = 0.0,
        frame_period_s: float = 0.5,
        flight: Flight | None = None,
    ) -> None:
        self.flight = flight
        self.instrument = instrument
        self.tiles = tiles
        self.output_grid_nm = output_grid_nm
        self.rng = np.random.default_rng(seed)
        self.illumination_scale = illumination_scale
        self.start_time = start_time
        self.frame_period_s = frame_period_s
        self.last_timestamp: float | None = None  # of the newest frame made (a simulated sensor's clock)

    def __iter__(self) -> Iterator[tuple[RawFrame, Truth]]:
        for counter, tile in enumerate(self.tiles):
            t = self.start_time + counter * self.frame_period_s
            self.last_timestamp = t
            reflectance = tile.reflectance
            if self.flight is None:
                frame = self.instrument.frame(reflectance, tile.wavelengths_nm, self.rng, counter=counter,
                                              timestamp=t, illumination_scale=self.illumination_scale)
            else:  # under a sky (onboard/scene/sky.py): radiance in physical units, the drone's pose
                reflectance, shade = self.flight.scene(reflectance, counter)
                frame = self.instrument.frame_radiance(
                    self.flight.radiance(reflectance, tile.wavelengths_nm, t, shade), tile.wavelengths_nm,
                    self.rng, counter=counter, timestamp=t, pose=self.flight.pose(t))
            truth = Truth(band_average(reflectance, tile.wavelengths_nm, self.output_grid_nm),
                          tile.fractions, tile.tillage, getattr(tile, "clouds", None),
                          getattr(tile, "tau", None))
            yield frame, truth


class SimulatedPushbroom:
    """Blocks of push-broom lines: each tile's rows are read out one line at a time.

    Yields (lines, truth): ``lines`` is the list of RawFrames (cross_track, bands), one per
    tile row, and the truth is the tile itself on the instrument's bands.
    """

    def __init__(self, instrument: PushbroomInstrument, tiles: Iterator[Tile], seed: int = 0,
                 line_period_s: float = 0.014, start_time: float = 0.0, flight: Flight | None = None) -> None:
        self.flight = flight
        self.instrument = instrument
        self.tiles = tiles
        self.rng = np.random.default_rng(seed)
        self.line_period_s = line_period_s
        self.start_time = start_time
        self.last_timestamp: float | None = None  # of the newest block's last line

    def __iter__(self) -> Iterator[tuple[list[RawFrame], Truth]]:
        line_counter = 0
        wl = self.instrument.wavelengths_nm
        for tile in self.tiles:
            refl = band_average(tile.reflectance, tile.wavelengths_nm, wl)
            t0 = self.start_time + line_counter * self.line_period_s
            # under a sky, the light of the block's first line (a block lasts about a second)
            flight = self.flight
            radiance = None if flight is None else flight.radiance(refl, wl, t0)
            lines = []
            for row in range(refl.shape[1]):
                t = self.start_time + line_counter * self.line_period_s
                if flight is None or radiance is None:
                    lines.append(self.instrument.line(refl[:, row, :], self.rng, counter=line_counter, timestamp=t))
                else:
                    lines.append(self.instrument.line_radiance(radiance[:, row, :], self.rng, counter=line_counter,
                                                               timestamp=t, pose=flight.pose(t)))
                line_counter += 1
            self.last_timestamp = lines[-1].timestamp if lines else self.last_timestamp
            yield lines, Truth(refl, tile.fractions, tile.tillage, getattr(tile, "clouds", None),
                               getattr(tile, "tau", None))
