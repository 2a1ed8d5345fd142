"""The values that travel between operators: a decoded image and an encoded one."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np


@dataclass(frozen=True, slots=True)
class Image:
    """A decoded image: 8-bit RGB or RGBA pixels plus the metadata the encoder may keep.

    ``pixels`` is ``(height, width, 3 | 4)`` uint8. Alpha, when present, rides along as the
    fourth channel: operators that only understand colour use :meth:`rgb` and
    :meth:`with_rgb` so transparency survives every stage untouched.
    """

    pixels: np.ndarray
    icc_profile: bytes | None = None
    exif: bytes | None = None
    source_format: str | None = None
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        p = self.pixels
        if p.dtype != np.uint8 or p.ndim != 3 or p.shape[2] not in (3, 4):
            raise ValueError(f"Image.pixels must be HxWx3|4 uint8, got {p.dtype} {p.shape}")

    @property
    def width(self) -> int:
        return int(self.pixels.shape[1])

    @property
    def height(self) -> int:
        return int(self.pixels.shape[0])

    @property
    def megapixels(self) -> float:
        return self.width * self.height / 1e6

    @property
    def has_alpha(self) -> bool:
        return self.pixels.shape[2] == 4

    def rgb(self) -> np.ndarray:
        """The colour channels (a view, read-only when the array came from Ray)."""
        return self.pixels[:, :, :3]

    def with_rgb(self, rgb: np.ndarray) -> Image:
        """A copy with new colour channels, keeping alpha and metadata."""
        if rgb.shape[:2] != self.pixels.shape[:2]:
            raise ValueError("with_rgb keeps the size; use with_pixels to change it")
        if self.has_alpha:
            rgb = np.dstack([rgb, self.pixels[:, :, 3]])
        return replace(self, pixels=np.ascontiguousarray(rgb, dtype=np.uint8))

    def with_pixels(self, pixels: np.ndarray) -> Image:
        return replace(self, pixels=np.ascontiguousarray(pixels, dtype=np.uint8))


@dataclass(frozen=True, slots=True)
class Encoded:
    """The bytes a pipeline delivers."""

    data: bytes
    format: str
    content_type: str
    width: int
    height: int
