"""Image bytes for tests, made here from scikit-image's bundled photos (nothing downloaded)."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
from PIL import Image as PILImage
from skimage import data as skdata


def photo(width: int = 256, height: int = 192, name: str = "coffee") -> np.ndarray:
    img = PILImage.fromarray(getattr(skdata, name)()).convert("RGB")
    return np.asarray(img.resize((width, height), PILImage.Resampling.LANCZOS))


def noisy(rgb: np.ndarray, sigma: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(rgb + rng.normal(0, sigma, rgb.shape), 0, 255).astype(np.uint8)


def encode(pixels: np.ndarray, fmt: str = "PNG", **kwargs) -> bytes:
    buf = io.BytesIO()
    PILImage.fromarray(pixels).save(buf, fmt, **kwargs)
    return buf.getvalue()


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0**2 / max(mse, 1e-12)))


def png_bomb(width: int = 50_000, height: int = 50_000) -> bytes:
    """A valid PNG header declaring a huge canvas, with a tiny (truncated) data stream."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (struct.pack(">I", len(body)) + kind + body
                + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 1024)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
