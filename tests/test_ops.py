"""Small operators the tests put in pipelines (loaded by path from pipeline files)."""

from __future__ import annotations

import os
import time

import numpy as np
from pydantic import Field

from tilemore import Image, Operator, OperatorParams, Resources, Selection


class SpinParams(OperatorParams):
    seconds: float = Field(0.5, ge=0)


class Spin(Operator):
    """Burns CPU for ``seconds`` (busy, not sleeping), then passes the image on."""

    name = "spin"
    resources = Resources(num_cpus=1)
    Params = SpinParams

    def process(self, params: SpinParams, image: Image) -> Image:
        end = time.perf_counter() + params.seconds
        x = 0
        while time.perf_counter() < end:
            x += 1
        return image


class Invert(Operator):
    name = "invert"

    def process(self, params, image: Image) -> Image:
        return image.with_rgb(255 - image.rgb())


class Counter(Operator):
    """Writes how often this replica was set up and called into the image's ``extra``."""

    name = "counter"

    def setup(self) -> None:
        self.setups = getattr(self, "setups", 0) + 1
        self.calls = 0

    def process(self, params, image: Image) -> Image:
        self.calls += 1
        extra = {"setups": self.setups, "calls": self.calls, "pid": os.getpid()}
        return Image(image.pixels, image.icc_profile, image.exif, image.source_format, extra)


class PickBrightest(Operator):
    name = "pick-brightest"
    role = "selector"

    def process(self, params, original: Image, *candidates: Image) -> Selection:
        scores = [float(np.mean(c.rgb())) for c in candidates]
        return Selection(pick=int(np.argmax(scores)), scores=scores)


class Explode(Operator):
    name = "explode"

    def process(self, params, image: Image) -> Image:
        raise ZeroDivisionError("the operator broke")


class TiledBlur(Operator):
    """Exactly local (two 3×3 box blurs, zero borders) and slow per call: for fan-out tests."""

    name = "tiled-blur"
    halo = 2
    tiling = "exact"
    resources = Resources(num_cpus=1, memory_per_megapixel=2**30)
    Params = SpinParams

    def process(self, params: SpinParams, image: Image) -> Image:
        end = time.perf_counter() + params.seconds
        while time.perf_counter() < end:
            pass
        return image.with_rgb(box_blur_twice(image.rgb()))


def box_blur_twice(rgb: np.ndarray) -> np.ndarray:
    import cv2
    out = rgb.astype(np.float32)
    for _ in range(2):
        out = cv2.blur(out, (3, 3), borderType=cv2.BORDER_CONSTANT)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)
