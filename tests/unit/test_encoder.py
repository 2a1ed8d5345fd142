"""encoder: each format's knobs do what they say; ICC always kept; EXIF on request."""

from __future__ import annotations

import io

import numpy as np
import pytest
from support.images import photo
from PIL import Image as PILImage
from PIL import ImageCms, JpegImagePlugin
from tilemore_operators.encoder import EncoderParams, encode_image

from tilemore.image import Image

ICC = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
EXIF = PILImage.Exif()
EXIF[0x010F] = "Denoised Camera Co"  # Make
SRC = Image(photo(320, 240), icc_profile=ICC, exif=EXIF.tobytes())


def encode(**params) -> PILImage.Image:
    out = encode_image(SRC, EncoderParams(**params))
    return PILImage.open(io.BytesIO(out.data))


def test_jpeg_quality_progressive_subsampling():
    low = encode_image(SRC, EncoderParams(quality=30)).data
    high = encode_image(SRC, EncoderParams(quality=95)).data
    assert len(low) < len(high)
    assert encode(progressive=True).info.get("progressive") == 1
    assert not encode(progressive=False).info.get("progressive")
    assert JpegImagePlugin.get_sampling(encode(subsampling="4:4:4")) == 0
    assert JpegImagePlugin.get_sampling(encode(subsampling="4:2:0")) == 2


def test_png_is_lossless_and_level_trades_size():
    fast = encode_image(SRC, EncoderParams(format="png", compression_level=0))
    best = encode_image(SRC, EncoderParams(format="png", compression_level=9))
    assert len(best.data) < len(fast.data)
    assert np.array_equal(np.asarray(PILImage.open(io.BytesIO(best.data))), SRC.pixels)
    assert best.content_type == "image/png"


def test_webp_lossless_and_lossy():
    out = encode(format="webp", lossless=True)
    assert out.format == "WEBP" and np.array_equal(np.asarray(out.convert("RGB")), SRC.pixels)
    lossy = encode_image(SRC, EncoderParams(format="webp", quality=40))
    assert lossy.content_type == "image/webp"


@pytest.mark.parametrize("fmt", ["jpeg", "png", "webp"])
def test_icc_always_exif_on_request(fmt):
    stripped = encode(format=fmt)
    kept = encode(format=fmt, keep_metadata=True)
    assert stripped.info.get("icc_profile") == ICC and kept.info.get("icc_profile") == ICC
    assert 0x010F not in stripped.getexif()
    assert kept.getexif().get(0x010F) == "Denoised Camera Co"


def test_alpha_kept_in_png_and_flattened_in_jpeg():
    rgba = np.zeros((10, 10, 4), np.uint8)
    rgba[..., 0] = 255  # red, fully transparent on the left half
    rgba[:, 5:, 3] = 255
    img = Image(rgba)
    png = PILImage.open(io.BytesIO(encode_image(img, EncoderParams(format="png")).data))
    assert png.mode == "RGBA" and np.array_equal(np.asarray(png), rgba)
    jpg = PILImage.open(io.BytesIO(encode_image(
        img, EncoderParams(format="jpeg", background="#0000ff", quality=100)).data))
    px = np.asarray(jpg).astype(int)
    assert px[5, 1, 2] > 200 and px[5, 1, 0] < 60  # blue where transparent
    assert px[5, 8, 0] > 200 and px[5, 8, 2] < 60  # red where opaque


def test_bad_parameters():
    from pydantic import ValidationError
    for bad in ({"format": "gif"}, {"quality": 0}, {"compression_level": 10},
                {"subsampling": "4:1:1"}, {"background": "not-a-colour"}, {"dpi": 300}):
        with pytest.raises(ValidationError):
            EncoderParams(**bad)
