"""The switching median: removes salt and pepper, touches nothing else, survives odd inputs."""

from __future__ import annotations

import numpy as np
import pytest
from support.images import photo, psnr
from tilemore_operators.denoise import Impulse, Keep
from tilemore_operators.impulse import impulse_density, remove_impulses

from tilemore.engine.host import OperatorHost
from tilemore.image import Image


def salt_and_pepper(rgb: np.ndarray, amount: float, seed: int = 0) -> np.ndarray:
    out, r = rgb.copy(), np.random.default_rng(seed).random(rgb.shape)
    out[r < amount / 2] = 0
    out[(r >= amount / 2) & (r < amount)] = 255
    return out


def run(pixels: np.ndarray) -> np.ndarray:
    return Impulse().process(Impulse.Params(), Image(pixels)).pixels


@pytest.mark.parametrize("name", ["chelsea", "astronaut"])
def test_removes_salt_and_pepper_and_only_the_outliers(name):
    clean = photo(256, 192, name)
    dirty = salt_and_pepper(clean, 0.05)
    out = run(dirty)
    assert psnr(out, clean) > psnr(dirty, clean) + 15
    untouched = (dirty != 0) & (dirty != 255)  # only extreme samples may change
    assert np.array_equal(out[untouched], dirty[untouched])


def test_saturated_patches_come_through_bit_for_bit_and_a_clean_photo_nearly():
    ramp = np.linspace(30, 220, 160, dtype=np.float32)
    img = np.repeat(np.repeat(ramp[None, :, None], 120, axis=0), 3, axis=2).astype(np.uint8)
    img[20:40, 30:60] = 255  # a blown highlight
    img[100:110, 100:140] = 0  # a crushed shadow
    img[60:61, 10:150] = 255  # a one-pixel bright line
    assert np.array_equal(run(img), img)
    clean = photo(256, 192, "coffee")  # only a few specular glints may move
    assert psnr(run(clean), clean) > 45


def test_greyscale_and_rgba():
    grey = np.repeat(photo(128, 96, "coffee")[:, :, :1], 3, axis=2)
    dirty = salt_and_pepper(grey, 0.05, seed=1)
    assert psnr(run(dirty), grey) > psnr(dirty, grey) + 15
    alpha = (np.arange(96 * 128) % 251).reshape(96, 128).astype(np.uint8)
    rgba = np.dstack([salt_and_pepper(photo(128, 96), 0.05, seed=2), alpha])
    out = run(rgba)
    assert out.shape == rgba.shape and np.array_equal(out[:, :, 3], alpha)
    assert psnr(out[:, :, :3], photo(128, 96)) > psnr(rgba[:, :, :3], photo(128, 96)) + 15


@pytest.mark.parametrize("shape", [(1, 200, 3), (200, 1, 3), (1, 1, 3), (2, 3, 3)])
def test_strips_and_specks(shape):
    base = np.full(shape, 120, np.uint8)
    dirty = base.copy()
    dirty.reshape(-1)[::7] = 255
    out = run(dirty)
    assert out.shape == shape
    if max(shape) > 10:
        assert np.array_equal(out, base)


def test_an_image_of_nothing_but_salt_and_pepper():
    noise = np.random.default_rng(3).choice(np.array([0, 255], np.uint8), (64, 80, 3))
    out, found = remove_impulses(noise)
    assert out.shape == noise.shape and out.dtype == np.uint8
    assert set(np.unique(out)) <= {0, 255} or found > 0  # no NaN, no wrap-around
    for flat in (0, 255):
        img = np.full((32, 32, 3), flat, np.uint8)
        assert np.array_equal(run(img), img)


def test_density_measures_the_share_of_impulses():
    clean = photo(256, 192, "chelsea")
    assert impulse_density(clean) < 0.001
    assert 0.04 < impulse_density(salt_and_pepper(clean, 0.05)) < 0.055


def test_operator_tiles_like_the_whole_image():
    dirty = salt_and_pepper(photo(160, 120, "coffee"), 0.05, seed=4)
    host = OperatorHost(Impulse)
    whole, _ = host.run("w", Impulse.Params(), Image(dirty))
    from tilemore.tiling import process_tiled
    tiled = process_tiled(dirty, lambda w: run(w), 48, Impulse.halo, exact=False)
    assert psnr(tiled, whole.pixels) > 45


def test_keep_returns_its_input():
    img = Image(photo(64, 48))
    assert Keep().process(Keep.Params(), img) is img
