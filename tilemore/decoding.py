"""Reading images: JPEG, PNG, WebP or TIFF bytes to 8-bit RGB(A), EXIF orientation applied.

The core's own (the ingress checks every upload with it before anything is stored); the
``decode`` operator (:mod:`tilemore_operators.decode`) wraps it for pipelines.

The pixel limit is checked from the header, before a single pixel is decoded, so a small file
declaring a huge canvas (a decompression bomb) costs nothing.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from io import BytesIO
from typing import IO

import numpy as np
from PIL import Image as PILImage
from PIL import ImageOps, UnidentifiedImageError

from tilemore.errors import (
    CorruptImage,
    EmptyImage,
    ImageTooLarge,
    TruncatedImage,
    UnsupportedImageFormat,
)
from tilemore.image import Image

FORMATS = ("JPEG", "PNG", "WEBP", "TIFF")
_TRANSPOSING = {5, 6, 7, 8}  # EXIF orientations that swap width and height
_ORIENTATION = 0x0112

# Our own limit (Settings.max_input_pixels, checked below) replaces Pillow's process-wide one,
# which would refuse large-but-allowed images with a different error.
PILImage.MAX_IMAGE_PIXELS = None


@dataclass(frozen=True)
class Header:
    """What an image's header says, read without decoding a pixel."""

    format: str  # "JPEG", "PNG", …
    width: int  # upright: after EXIF orientation
    height: int

    @property
    def pixels(self) -> int:
        return self.width * self.height


def read_header(data: bytes | IO[bytes], max_pixels: int) -> Header:
    """The header's format and upright size; corrupt, unsupported and oversized images are
    refused here, before any pixel is decoded."""
    im = _open(data)  # not closed: Pillow would close the caller's file with it
    _check_pixels(im, max_pixels)
    width, height = im.size
    if _header_orientation(im) in _TRANSPOSING:
        width, height = height, width
    return Header(im.format or "", width, height)


def decode_image(data: bytes | IO[bytes], max_pixels: int,
                 size_hint: tuple[int, int] | None = None) -> Image:
    im = _open(data)
    _check_pixels(im, max_pixels)
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
    extra = {}
    if source_format == "jpeg" and (quality := jpeg_quality(im)) is not None:
        extra["jpeg_quality"] = quality  # QC's evidence of how much blocking to expect
    icc = im.info.get("icc_profile")
    if orientation not in (None, 1):
        im = ImageOps.exif_transpose(im)
    exif = im.getexif()
    exif.pop(_ORIENTATION, None)  # pixels are upright now
    pixels = _to_rgb(im)
    if icc and not _icc_is_rgb(icc):
        icc = None  # a grey or CMYK profile would be wrong on RGB pixels
    return Image(pixels, icc_profile=icc or None, exif=exif.tobytes() if len(exif) else None,
                 source_format=source_format, extra=extra)


# The IJG's luminance quantisation table (JPEG standard, Annex K), which libjpeg scales by
# the quality setting.
_IJG_LUMA = np.array([
    16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57,
    69, 56, 14, 17, 22, 29, 51, 87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64,
    81, 104, 113, 92, 49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99,
], np.float64)


def _ijg_table(quality: int) -> np.ndarray:
    scale = 5000 / quality if quality < 50 else 200 - 2 * quality
    return np.clip(np.floor((_IJG_LUMA * scale + 50) / 100), 1, 255)


_IJG_SORTED = {q: np.sort(_ijg_table(q)) for q in range(1, 101)}


def jpeg_quality(im: PILImage.Image) -> int | None:
    """The IJG quality (1-100) whose luminance table is nearest the file's: an estimate for
    encoders with other tables. Compared sorted, so the table's scan order does not matter."""
    try:
        table = np.sort(np.asarray(im.quantization[0], np.float64))
    except (AttributeError, KeyError, TypeError, ValueError):
        return None
    if table.size != 64:
        return None
    return min(_IJG_SORTED, key=lambda q: float(np.abs(_IJG_SORTED[q] - table).sum()))


def _check_pixels(im: PILImage.Image, max_pixels: int) -> None:
    width, height = im.size
    if width * height > max_pixels:
        raise ImageTooLarge(
            f"the image declares {width}x{height} = {width * height:,} pixels; "
            f"the limit is {max_pixels:,}"
        )


def _open(data: bytes | IO[bytes]) -> PILImage.Image:
    """Bytes, or a seekable file (an upload spooled to disk, read in place)."""
    source = BytesIO(data) if isinstance(data, bytes | bytearray) else data
    source.seek(0, 2)
    if source.tell() == 0:
        raise EmptyImage("the image is empty (zero bytes)")
    source.seek(0)
    try:
        return PILImage.open(source, formats=FORMATS)
    except UnidentifiedImageError:
        pass
    except (OSError, ValueError, SyntaxError) as exc:
        raise CorruptImage(f"the image header is corrupt: {exc}") from None
    try:  # a real image in a format we do not take, or not an image at all?
        source.seek(0)
        other = PILImage.open(source)
        raise UnsupportedImageFormat(
            f"{other.format} images are not supported (use JPEG, PNG, WebP or TIFF)"
        )
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        raise CorruptImage("the data is not a JPEG, PNG, WebP or TIFF image") from None


def _header_orientation(im: PILImage.Image) -> int | None:
    """The EXIF orientation, without decoding: Pillow's ``getexif`` on a PNG loads the whole
    image to look for an eXIf chunk after the pixels; here only one before them counts."""
    if im.format != "PNG":
        return _orientation(im)
    raw = im.info.get("exif")
    if not raw:
        return None
    try:
        exif = PILImage.Exif()
        exif.load(raw)
        return exif.get(_ORIENTATION)
    except Exception:  # noqa: BLE001 - a broken EXIF block must not sink a good image
        return None


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
