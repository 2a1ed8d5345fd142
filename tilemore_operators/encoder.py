"""encoder: JPEG, PNG or WebP bytes. The ICC profile always travels with the pixels (colours
would shift without it); other metadata (EXIF) is kept only when asked."""

from __future__ import annotations

from decimal import Decimal
from io import BytesIO
from typing import Literal

import numpy as np
from PIL import Image as PILImage
from PIL import ImageColor
from pydantic import Field, field_validator

from tilemore.image import Encoded, Image
from tilemore.operator import Operator, OperatorParams, Price, Resources

CONTENT_TYPES = {"jpeg": "image/jpeg", "png": "image/png", "webp": "image/webp"}
_SUBSAMPLING = {"4:4:4": 0, "4:2:2": 1, "4:2:0": 2}


class EncoderParams(OperatorParams):
    format: Literal["jpeg", "png", "webp"] = "jpeg"
    quality: int = Field(85, ge=1, le=100, description="JPEG and lossy WebP")
    progressive: bool = Field(False, description="JPEG")
    subsampling: Literal["4:4:4", "4:2:2", "4:2:0"] = Field("4:2:0", description="JPEG chroma")
    compression_level: int = Field(6, ge=0, le=9, description="PNG zlib level")
    lossless: bool = Field(False, description="WebP")
    keep_metadata: bool = Field(False, description="keep EXIF (the ICC profile is always kept)")
    background: str = Field("#ffffff", max_length=64,
                            description="JPEG has no alpha: flatten onto this")

    @field_validator("background")
    @classmethod
    def _colour(cls, value: str) -> str:
        try:
            ImageColor.getrgb(value)
        except ValueError:
            raise ValueError(f"'{value}' is not a colour") from None
        return value


class Encoder(Operator):
    name = "encoder"
    version = "1"
    role = "sink"
    description = "JPEG (quality, progressive, subsampling), PNG (level), WebP (quality, lossless)"
    resources = Resources(num_cpus=1, memory_per_megapixel=8 * 2**20)
    Params = EncoderParams
    price = Price(per_call=Decimal("0.0001"), per_megapixel=Decimal("0.00005"))

    def process(self, params: EncoderParams, image: Image) -> Encoded:
        return encode_image(image, params)


def encode_image(image: Image, p: EncoderParams) -> Encoded:
    pixels = image.pixels
    if p.format == "jpeg" and image.has_alpha:
        pixels = _flatten(pixels, ImageColor.getrgb(p.background)[:3])
    im = PILImage.fromarray(np.ascontiguousarray(pixels))
    extra: dict = {}
    if image.icc_profile:
        extra["icc_profile"] = image.icc_profile
    if p.keep_metadata and image.exif:
        extra["exif"] = image.exif
    buf = BytesIO()
    if p.format == "jpeg":
        im.save(buf, "JPEG", quality=p.quality, progressive=p.progressive,
                subsampling=_SUBSAMPLING[p.subsampling], **extra)
    elif p.format == "png":
        im.save(buf, "PNG", compress_level=p.compression_level, **extra)
    else:
        im.save(buf, "WEBP", quality=p.quality, lossless=p.lossless, method=4, **extra)
    return Encoded(buf.getvalue(), p.format, CONTENT_TYPES[p.format], image.width, image.height)


def _flatten(rgba: np.ndarray, background: tuple[int, int, int]) -> np.ndarray:
    alpha = rgba[:, :, 3:4].astype(np.float32) * (1 / 255.0)
    bg = np.asarray(background, dtype=np.float32)
    out = rgba[:, :, :3].astype(np.float32) * alpha + bg * (1.0 - alpha)
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)
