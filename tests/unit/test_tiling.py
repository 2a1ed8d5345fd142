"""Tiling: exact for local operators, seamless when blended, smaller on out-of-memory."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from tilemore.tiling import (
    TilingError,
    feather_weights,
    plan_tiles,
    process_tiled,
    tile_side,
)

KERNEL = np.array([[1, 2, 1], [2, 4, 2], [1, 2, 1]], np.float32) / 16


def blur(depth: int):
    """``depth`` 3×3 filters in a row: exactly local with radius ``depth`` (zero borders,
    like a convolutional network's padding)."""
    def fn(window: np.ndarray) -> np.ndarray:
        out = window.astype(np.float32)
        for _ in range(depth):
            out = cv2.filter2D(out, -1, KERNEL, borderType=cv2.BORDER_CONSTANT)
        return out
    return fn


@pytest.mark.parametrize("shape", [(97, 131), (1, 300), (300, 1), (7, 5), (256, 256)])
@pytest.mark.parametrize("tile", [32, 64])
def test_cores_cover_the_image_exactly_once(shape, tile):
    seen = np.zeros(shape, np.int32)
    for t in plan_tiles(*shape, tile=tile, halo=4):
        seen[t.y0:t.y1, t.x0:t.x1] += 1
        assert 0 <= t.wy0 <= t.y0 < t.y1 <= t.wy1 <= shape[0]
    assert np.all(seen == 1)


@pytest.mark.parametrize("shape", [(97, 131, 3), (1, 300, 3), (300, 1, 3), (33, 33, 4)])
def test_stitched_local_operator_equals_the_whole_image(shape):
    rng = np.random.default_rng(0)
    img = rng.random(shape, dtype=np.float32)
    whole = blur(5)(img)
    tiled = process_tiled(img, blur(5), tile=24, halo=5)
    assert np.abs(tiled - whole).max() < 1e-4


def test_an_image_smaller_than_one_tile_is_one_call():
    calls = []
    img = np.ones((10, 12, 3), np.float32)
    process_tiled(img, lambda w: calls.append(w.shape) or w, tile=64, halo=3)
    assert calls == [(10, 12, 3)]


def test_tile_smaller_than_twice_the_halo_is_refused():
    with pytest.raises(TilingError, match="at least 20 px"):
        plan_tiles(100, 100, tile=19, halo=10)


def test_feathered_blending_leaves_no_seam():
    """A non-local operator (each window shifted by its own mean): hard stitching shows
    steps at tile borders; blending gives a smooth result."""
    yy, xx = np.mgrid[0:120, 0:160].astype(np.float32)
    img = np.dstack([xx / 160 + yy / 120] * 3).astype(np.float32)

    def centre(window):
        return window - window.mean() * 0.5

    hard = process_tiled(img, centre, tile=40, halo=8, exact=True)
    soft = process_tiled(img, centre, tile=40, halo=8, exact=False)
    step = lambda a: np.abs(np.diff(a[:, :, 0], axis=1)).max()  # noqa: E731
    assert step(soft) < step(hard) / 3


def test_feather_weights_are_one_in_the_middle_and_vanish_at_neighbours():
    t = plan_tiles(100, 100, tile=40, halo=8)[4]  # an interior tile
    w = feather_weights(t, 100, 100)
    assert w[w.shape[0] // 2, w.shape[1] // 2] == pytest.approx(1.0)
    assert w[0, 0] < 0.05 and w[-1, -1] < 0.05


def test_out_of_memory_retries_the_tile_at_half_size():
    sizes = []

    def picky(window):
        sizes.append(window.shape[:2])
        if window.shape[0] * window.shape[1] > 40 * 40:
            raise MemoryError("out of memory")
        return blur(2)(window)

    img = np.random.default_rng(1).random((64, 64, 3), dtype=np.float32)
    out = process_tiled(img, picky, tile=64, halo=2)
    assert np.abs(out - blur(2)(img)).max() < 1e-4  # still exact
    assert sizes[0] == (64, 64) and max(h * w for h, w in sizes[1:]) <= 40 * 40


def test_tile_side_follows_memory():
    assert tile_side(2**30, 64 * 2**20, halo=10) == int((2**30 / (64 * 2**20) * 1e6) ** 0.5) - 20
    assert tile_side(2**20, 2**30, halo=10) == 64  # never below the minimum
