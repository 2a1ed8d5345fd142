"""decode: JPEG, PNG, WebP or TIFF bytes to 8-bit RGB(A), EXIF orientation applied.

The pixel limit is checked from the header, before a single pixel is decoded, so a small file
declaring a huge canvas (a decompression bomb) costs nothing.
"""

from __future__ import annotations

import warnings
from decimal import Decimal
from io import BytesIO

import numpy as np
from PIL import Image as PILImage
from PIL import ImageOps, UnidentifiedImageError
from pydantic import PositiveInt

from tilemore.errors import (
    CorruptImage,
    EmptyImage,
    ImageTooLarge,
    TruncatedImage,
    UnsupportedImageFormat,
)
from tilemore.image import Image
from tilemore.operator import Operator, OperatorParams, Price, Resources

FORMATS = ("JPEG", "PNG", "WEBP", "TIFF")
_TRANSPOSING = {5, 6, 7, 8}  # EXIF orientations that swap width and height
_ORIENTATION = 0x0112

# Our own limit (Settings.max_input_pixels, checked below) replaces Pillow's process-wide one,
# which would refuse large-but-allowed images with a different error.
PILImage.MAX_IMAGE_PIXELS = None


class DecodeParams(OperatorParams):
    size_hint: tuple[PositiveInt, PositiveInt] | None = None
    """The next stage needs at least this (width, height): JPEGs may decode at 1/2, 1/4 or 1/8
    scale (DCT scaling) while staying at least this large. Set by the graph builder."""


class Decode(Operator):
    name = "decode"
    version = "1"
    role = "source"
    description = "JPEG/PNG/WebP/TIFF to RGB(A); EXIF orientation; decompression-bomb guard"
    resources = Resources(num_cpus=1, memory_per_megapixel=8 * 2**20)
    Params = DecodeParams
    price = Price(per_call=Decimal("0.0001"))

    def process(self, params: DecodeParams, data: bytes) -> Image:
        return decode_image(data, self.settings.max_input_pixels, params.size_hint)


def decode_image(data: bytes, max_pixels: int, size_hint: tuple[int, int] | None = None) -> Image:
    if not data:
        raise EmptyImage("the image is empty (zero bytes)")
    im = _open(data)
    width, height = im.size
    if width * height > max_pixels:
        raise ImageTooLarge(
            f"the image declares {width}x{height} = {width * height:,} pixels; "
            f"the limit is {max_pixels:,}"
        )
    orientation = _orientation(im)
    if size_hint is not None and im.format == "JPEG":
        hint = size_hint[::-1] if orientation in _TRANSPOSING else size_hint
        im.draft(im.mode if im.mode in ("RGB", "L") else "RGB", hint)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            im.load()
    except OSError as exc:
        if "truncated" in str(exc).lower() or "broken data stream" in str(exc).lower():
            raise TruncatedImage(f"the {im.format} image is truncated") from None
        raise CorruptImage(f"the {im.format} image data is corrupt: {exc}") from None
    except (ValueError, SyntaxError, EOFError) as exc:
        raise CorruptImage(f"the {im.format} image data is corrupt: {exc}") from None
    source_format = (im.format or "").lower()
    icc = im.info.get("icc_profile")
    if orientation not in (None, 1):
        im = ImageOps.exif_transpose(im)
    exif = im.getexif()
    exif.pop(_ORIENTATION, None)  # pixels are upright now
    pixels = _to_rgb(im)
    if icc and not _icc_is_rgb(icc):
        icc = None  # a grey or CMYK profile would be wrong on RGB pixels
    return Image(pixels, icc_profile=icc or None, exif=exif.tobytes() if len(exif) else None,
                 source_format=source_format)


def _open(data: bytes) -> PILImage.Image:
    try:
        return PILImage.open(BytesIO(data), formats=FORMATS)
    except UnidentifiedImageError:
        pass
    except (OSError, ValueError, SyntaxError) as exc:
        raise CorruptImage(f"the image header is corrupt: {exc}") from None
    try:  # a real image in a format we do not take, or not an image at all?
        other = PILImage.open(BytesIO(data))
        raise UnsupportedImageFormat(
            f"{other.format} images are not supported (use JPEG, PNG, WebP or TIFF)"
        )
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        raise CorruptImage("the data is not a JPEG, PNG, WebP or TIFF image") from None


def _orientation(im: PILImage.Image) -> int | None:
    try:
        return im.getexif().get(_ORIENTATION)
    except Exception:  # noqa: BLE001 - a broken EXIF block must not sink a good image
        return None


def _to_rgb(im: PILImage.Image) -> np.ndarray:
    """8-bit RGB, or RGBA where the source has any transparency."""
    mode = im.mode
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        arr = np.asarray(im)
        if mode == "F":
            grey = np.clip(arr * 255.0 + 0.5, 0, 255).astype(np.uint8)
        else:  # 16-bit samples: scale 0..65535 onto 0..255 with rounding
            grey = ((np.clip(arr.astype(np.uint32), 0, 65535) + 128) // 257).astype(np.uint8)
        return np.ascontiguousarray(np.repeat(grey[:, :, None], 3, axis=2))
    has_alpha = mode in ("RGBA", "LA", "PA", "La", "RGBa") or (
        mode in ("P", "L", "RGB") and "transparency" in im.info
    )
    if mode == ("RGBA" if has_alpha else "RGB"):
        return np.asarray(im)
    return np.asarray(im.convert("RGBA" if has_alpha else "RGB"))


def _icc_is_rgb(icc: bytes) -> bool:
    return len(icc) >= 20 and icc[16:20] == b"RGB "
