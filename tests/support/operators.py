"""Small operators the tests put in pipelines (loaded by path from pipeline files)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
from pydantic import Field

from tilemore import Image, Operator, OperatorParams, Resources, Selection
from tilemore.retry import RetryPolicy


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


class Nap(Operator):
    """Sleeps for ``seconds``, then passes the image on: slow without burning a core (load
    for autoscaling tests on a shared machine)."""

    name = "nap"
    Params = SpinParams

    def process(self, params: SpinParams, image: Image) -> Image:
        time.sleep(params.seconds)
        return image


class GateParams(OperatorParams):
    path: str = Field("", max_length=4096)
    most_seconds: float = Field(120.0, ge=0, le=600)


class Gate(Operator):
    """Holds the image until the file ``path`` exists (at most ``most_seconds``), then passes
    it on: a thread kept running until the test lets it go, whatever the machine's load."""

    name = "gate"
    Params = GateParams

    def process(self, params: GateParams, image: Image) -> Image:
        deadline = time.monotonic() + params.most_seconds
        while params.path and not Path(params.path).exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        return image


class Invert(Operator):
    name = "invert"

    def process(self, params, image: Image) -> Image:
        return image.with_rgb(255 - image.rgb())


class GpuInvert(Invert):
    """Invert, on nodes of the kind the multi-node tests stand in for GPU nodes with."""

    name = "gpu-invert"
    resources = Resources(num_cpus=1, custom={"gpu_node": 1})


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


class PlanParams(OperatorParams):
    only: list[str] = []  # the branches worth running ([]: all)
    candidates: list[str] = []  # set by the engine: the branches this selector receives


class PlanThenPick(Operator):
    """A selector that rules branches out before they run (``only``), then picks the
    brightest of the rest; it records the candidates it was told of."""

    name = "plan-then-pick"
    role = "selector"
    Params = PlanParams

    def plan(self, params: PlanParams, original: Image, branches: list[str]) -> dict | None:
        if not params.only:
            return None
        return {"run": [b for b in branches if b in params.only],
                "reasons": {b: "wanted" if b in params.only else "not wanted" for b in branches},
                "measures": {"mean": float(original.rgb().mean())}}

    def process(self, params: PlanParams, original: Image, *candidates: Image) -> Selection:
        scores = [float(c.rgb().mean()) for c in candidates]
        return Selection(int(np.argmax(scores)), scores,
                         [{"told": float(len(params.candidates))} for _ in candidates])


class Explode(Operator):
    name = "explode"

    def process(self, params, image: Image) -> Image:
        raise ZeroDivisionError("the operator broke")


class FlakyParams(OperatorParams):
    failures: int = Field(2, ge=0, description="how many calls fail before one succeeds")
    counter: str = Field(description="a file counting the calls, shared by every replica")


class Flaky(Operator):
    """Fails its first ``failures`` calls with a transient error (counted in a file, so the
    count holds across replicas and processes), then passes the image on."""

    name = "flaky"
    Params = FlakyParams
    retry = RetryPolicy(backoff_seconds=0.05, retry_on=("OSError",))

    def process(self, params: FlakyParams, image: Image) -> Image:
        path = Path(params.counter)
        calls = int(path.read_text() or 0) + 1 if path.exists() else 1
        path.write_text(str(calls))
        if calls <= params.failures:
            raise ConnectionResetError(f"transient failure {calls}")
        return image


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
