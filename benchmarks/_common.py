"""What the benchmarks share: deterministic test photos and a median timer."""

from __future__ import annotations

import io
import json
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image as PILImage
from skimage import data as skdata

OUT = Path(__file__).parent / "out"


def photo_jpeg(width: int = 4000, height: int = 3000, sigma: float = 12.0, seed: int = 0,
               quality: int = 92) -> bytes:
    """A noisy photo of the given size (scikit-image's coffee, upscaled), as JPEG bytes."""
    base = PILImage.fromarray(skdata.coffee()).resize((width, height),
                                                      PILImage.Resampling.LANCZOS)
    rng = np.random.default_rng(seed)
    pixels = np.asarray(base).astype(np.float32)
    pixels += rng.normal(0, sigma, pixels.shape).astype(np.float32)
    buf = io.BytesIO()
    PILImage.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(buf, "JPEG",
                                                                       quality=quality)
    return buf.getvalue()


def median_time(fn: Callable[[], object], repeat: int) -> tuple[float, list[float]]:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times), times


def machine() -> str:
    import os
    return f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"


def save(name: str, result: dict) -> Path:
    OUT.mkdir(exist_ok=True)
    path = OUT / f"{name}.json"
    path.write_text(json.dumps(result, indent=2))
    return path
