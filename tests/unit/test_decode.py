"""decode: formats, orientation, modes, and every kind of bad bytes."""

from __future__ import annotations

import io
import time

import cv2
import numpy as np
import pytest
from PIL import Image as PILImage
from PIL import ImageCms
from support.images import encode, photo, png_bomb

from tilemore.decoding import decode_image
from tilemore.errors import (
    CorruptImage,
    EmptyImage,
    ImageTooLarge,
    TruncatedImage,
    UnsupportedImageFormat,
)

LIMIT = 100_000_000


@pytest.mark.parametrize("fmt, kwargs, exact", [
    ("PNG", {}, True), ("TIFF", {}, True), ("WEBP", {"lossless": True}, True),
    ("JPEG", {"quality": 95}, False),
])
def test_formats_decode_to_rgb(fmt, kwargs, exact):
    src = photo(120, 80)
    img = decode_image(encode(src, fmt, **kwargs), LIMIT)
    assert img.pixels.shape == (80, 120, 3) and img.pixels.dtype == np.uint8
    assert img.source_format == fmt.lower()
    diff = np.abs(img.pixels.astype(int) - src).mean()
    assert diff == 0 if exact else diff < 5


def test_exif_orientation_is_applied():
    src = photo(120, 80)
    exif = PILImage.Exif()
    exif[0x0112] = 6  # stored rotated: display needs 90° clockwise
    data = encode(src, "PNG", exif=exif.tobytes())
    img = decode_image(data, LIMIT)
    assert img.pixels.shape == (120, 80, 3)
    assert np.array_equal(img.pixels, np.rot90(src, k=-1))
    # the orientation tag is consumed, so no viewer rotates the output again
    kept = PILImage.Exif()
    if img.exif:
        kept.load(img.exif)
    assert 0x0112 not in kept


def test_grayscale_becomes_rgb():
    grey = photo(64, 48)[:, :, 1]
    img = decode_image(encode(grey, "PNG"), LIMIT)
    assert img.pixels.shape == (48, 64, 3)
    assert np.array_equal(img.pixels[:, :, 0], grey) and np.array_equal(img.pixels[:, :, 2], grey)


def test_sixteen_bit_grey_and_colour():
    grey16 = (np.arange(64 * 48, dtype=np.uint32).reshape(48, 64) * 21).astype(np.uint16)
    ok, png = cv2.imencode(".png", grey16)
    img = decode_image(png.tobytes(), LIMIT)
    expect = ((grey16.astype(np.uint32) + 128) // 257).astype(np.uint8)
    assert np.array_equal(img.pixels[:, :, 0], expect)
    rgb16 = (photo(64, 48).astype(np.uint16) * 257)
    ok, png = cv2.imencode(".png", rgb16[:, :, ::-1])
    img = decode_image(png.tobytes(), LIMIT)
    assert np.abs(img.pixels.astype(int) - photo(64, 48)).max() <= 1


def test_alpha_is_kept():
    rgba = np.dstack([photo(64, 48), np.linspace(0, 255, 64 * 48).reshape(48, 64)]).astype(
        np.uint8)
    img = decode_image(encode(rgba, "PNG"), LIMIT)
    assert img.has_alpha and np.array_equal(img.pixels, rgba)
    pal = PILImage.fromarray(photo(32, 32)).convert("P", palette=PILImage.Palette.ADAPTIVE)
    pal.info["transparency"] = 0
    buf = io.BytesIO()
    pal.save(buf, "PNG", transparency=0)
    assert decode_image(buf.getvalue(), LIMIT).has_alpha


def test_icc_profile_is_kept_when_rgb():
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    img = decode_image(encode(photo(32, 32), "JPEG", icc_profile=icc), LIMIT)
    assert img.icc_profile == icc


def test_size_hint_decodes_jpeg_smaller_but_not_below_the_hint():
    data = encode(photo(1600, 1200), "JPEG", quality=90)
    img = decode_image(data, LIMIT, size_hint=(390, 1))
    assert (img.width, img.height) == (400, 300)  # 1/4 scale, still ≥ 390 wide
    img = decode_image(data, LIMIT, size_hint=(401, 1))
    assert (img.width, img.height) == (800, 600)


@pytest.mark.parametrize("data, error", [
    (b"", EmptyImage),
    (b"hello, I am text", CorruptImage),
    (b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, CorruptImage),
    (encode(photo(64, 64), "GIF"), UnsupportedImageFormat),
    (encode(photo(64, 64), "BMP"), UnsupportedImageFormat),
])
def test_bad_bytes(data, error):
    with pytest.raises(error):
        decode_image(data, LIMIT)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_truncated(fmt):
    data = encode(photo(256, 192), fmt)
    with pytest.raises((TruncatedImage, CorruptImage)) as info:
        decode_image(data[: len(data) // 2], LIMIT)
    if fmt != "WEBP":  # libwebp reports only "could not decode"
        assert isinstance(info.value, TruncatedImage)


def test_corrupt_jpeg_body():
    data = bytearray(encode(photo(256, 192), "JPEG"))
    data[600:1400] = b"\xff" * 800  # markers where entropy-coded data should be
    with pytest.raises((CorruptImage, TruncatedImage)):
        decode_image(bytes(data), LIMIT)


def test_decompression_bomb_is_refused_from_the_header():
    bomb = png_bomb(50_000, 50_000)
    assert len(bomb) < 200
    started = time.perf_counter()
    with pytest.raises(ImageTooLarge, match="50000x50000"):
        decode_image(bomb, LIMIT)
    assert time.perf_counter() - started < 0.5  # nothing was decoded
