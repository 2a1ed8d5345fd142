"""decode: JPEG, PNG, WebP or TIFF bytes to 8-bit RGB(A), EXIF orientation applied; the
reading itself is the core's (:mod:`tilemore.decoding`), which the ingress uses too.
"""

from __future__ import annotations

from decimal import Decimal

from pydantic import PositiveInt

from tilemore.decoding import FORMATS, Header, decode_image, jpeg_quality, read_header
from tilemore.image import Image
from tilemore.operator import Operator, OperatorParams, Price, Resources

__all__ = ["FORMATS", "Decode", "DecodeParams", "Header", "decode_image", "jpeg_quality",
           "read_header"]


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
        return decode_image(data, self.context.max_input_pixels, params.size_hint)
