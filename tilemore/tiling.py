"""Tiles: how an image too large for one call is cut, processed and put back together.

Each tile has a *core* (the tiles' cores cover the image exactly once) and a *window*: the
core grown by the operator's halo, clipped to the image. For an operator that is exactly
local within its halo (a stack of convolutions), the core of a window's output equals the
same pixels of the whole-image output, so stitching cores is exact. Operators that are not
exactly local (they estimate global statistics, say) are blended instead: neighbouring
windows overlap by the halo and are mixed with raised-cosine weights, so no seam shows.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from tilemore.errors import TilemoreError


class TilingError(TilemoreError):
    code = "invalid_tiling"
    status = 422


@dataclass(frozen=True)
class Tile:
    y0: int
    x0: int
    y1: int
    x1: int  # the core, [y0, y1) × [x0, x1)
    wy0: int
    wx0: int
    wy1: int
    wx1: int  # the window read for it

    @property
    def core_in_window(self) -> tuple[slice, slice]:
        return (slice(self.y0 - self.wy0, self.y1 - self.wy0),
                slice(self.x0 - self.wx0, self.x1 - self.wx0))


def plan_tiles(height: int, width: int, tile: int, halo: int) -> list[Tile]:
    """Square cores of side ``tile`` (smaller at the right and bottom edges)."""
    if tile < 2 * halo or tile < 1:
        raise TilingError(f"a tile of {tile} px cannot carry a halo of {halo} px on both "
                          f"sides: the tile must be at least {max(2 * halo, 1)} px")
    tiles = []
    for y0 in range(0, height, tile):
        for x0 in range(0, width, tile):
            y1, x1 = min(y0 + tile, height), min(x0 + tile, width)
            tiles.append(Tile(y0, x0, y1, x1, max(0, y0 - halo), max(0, x0 - halo),
                              min(height, y1 + halo), min(width, x1 + halo)))
    return tiles


def tile_side(memory_bytes: int, memory_per_megapixel: int, halo: int,
              minimum: int = 64) -> int:
    """The largest square window that fits ``memory_bytes`` at the operator's declared
    memory per megapixel, less the halo on both sides (the core that is left)."""
    if memory_per_megapixel <= 0:
        return 1 << 30
    window = int(math.sqrt(memory_bytes / memory_per_megapixel * 1e6))
    return max(minimum, window - 2 * halo, 2 * halo)


def stitch_exact(height: int, width: int, channels: int, dtype: np.dtype,
                 parts: Iterator[tuple[Tile, np.ndarray]]) -> np.ndarray:
    out = np.empty((height, width, channels), dtype)
    for t, window_out in parts:
        out[t.y0:t.y1, t.x0:t.x1] = window_out[t.core_in_window]
    return out


def feather_weights(t: Tile, height: int, width: int) -> np.ndarray:
    """Raised-cosine weights over a window: 1 in the core, falling to 0 across the halo
    towards each neighbouring tile (not towards the image's own edges)."""

    def ramp(lo: int, hi: int, core_lo: int, core_hi: int, edge: int) -> np.ndarray:
        pos = np.arange(lo, hi, dtype=np.float32) + 0.5
        w = np.ones(hi - lo, np.float32)
        if core_lo > lo:  # a neighbour before: ramp up across [lo - (core_lo-lo), core_lo + ..)
            span = 2 * (core_lo - lo)
            rise = np.clip((pos - lo) / span, 0, 1)
            w *= np.where(pos < lo + span, 0.5 - 0.5 * np.cos(np.pi * rise), 1.0)
        if hi > core_hi and hi <= edge:
            span = 2 * (hi - core_hi)
            fall = np.clip((hi - pos) / span, 0, 1)
            w *= np.where(pos > hi - span, 0.5 - 0.5 * np.cos(np.pi * fall), 1.0)
        return w

    wy = ramp(t.wy0, t.wy1, t.y0, t.y1, height)
    wx = ramp(t.wx0, t.wx1, t.x0, t.x1, width)
    return wy[:, None] * wx[None, :]


def stitch_feathered(height: int, width: int, channels: int,
                     parts: Iterator[tuple[Tile, np.ndarray]]) -> np.ndarray:
    acc = np.zeros((height, width, channels), np.float32)
    norm = np.zeros((height, width, 1), np.float32)
    for t, window_out in parts:
        w = feather_weights(t, height, width)[:, :, None]
        acc[t.wy0:t.wy1, t.wx0:t.wx1] += window_out.astype(np.float32) * w
        norm[t.wy0:t.wy1, t.wx0:t.wx1] += w
    return acc / np.maximum(norm, 1e-12)


def process_tiled(pixels: np.ndarray, fn: Callable[[np.ndarray], np.ndarray], tile: int,
                  halo: int, exact: bool = True, min_tile: int = 16) -> np.ndarray:
    """Run ``fn`` window by window. A window that runs out of memory is split in four and
    retried at half the size, down to ``min_tile``."""
    h, w = pixels.shape[:2]

    def run(t: Tile, side: int) -> Iterator[tuple[Tile, np.ndarray]]:
        window = pixels[t.wy0:t.wy1, t.wx0:t.wx1]
        try:
            yield t, fn(window)
        except MemoryError:
            if side // 2 < max(min_tile, 2 * halo):
                raise
            for sub in plan_tiles(t.y1 - t.y0, t.x1 - t.x0, side // 2, halo):
                shifted = _shift(sub, t.y0, t.x0, h, w, halo)
                yield from run(shifted, side // 2)

    def parts() -> Iterator[tuple[Tile, np.ndarray]]:
        for t in plan_tiles(h, w, tile, halo):
            yield from run(t, tile)

    channels = pixels.shape[2]
    if exact:
        return stitch_exact(h, w, channels, pixels.dtype, parts())
    out = stitch_feathered(h, w, channels, parts())
    if np.issubdtype(pixels.dtype, np.integer):
        out = np.clip(np.rint(out), np.iinfo(pixels.dtype).min, np.iinfo(pixels.dtype).max)
    return out.astype(pixels.dtype)


def _shift(t: Tile, dy: int, dx: int, h: int, w: int, halo: int) -> Tile:
    y0, x0, y1, x1 = t.y0 + dy, t.x0 + dx, t.y1 + dy, t.x1 + dx
    return Tile(y0, x0, y1, x1, max(0, y0 - halo), max(0, x0 - halo), min(h, y1 + halo),
                min(w, x1 + halo))
