"""Classical CPU repairs: ``impulse`` (a switching median for salt-and-pepper noise), ``keep``
(the input as it is, for QC to pick when nothing needs repair) and three denoisers for
Gaussian-like noise. Each denoiser scales its filter to the noise it estimates in the image,
so ``strength`` 1.0 means "remove the noise that is there", 0.5 half as hard, 2.0 twice.
The factors that turn the estimate into each filter's own knob were tuned for PSNR on
scikit-image's sample photos with Gaussian noise of deviation 15, 25 and 50."""

from __future__ import annotations

from decimal import Decimal

import cv2
import numpy as np
from pydantic import Field

from tilemore.image import Image
from tilemore.operator import NoParams, Operator, OperatorParams, Price, Resources
from tilemore_operators.damage import impulse_threshold
from tilemore_operators.impulse import MAX_RADIUS, remove_impulses
from tilemore_operators.noise import estimate_sigma, noise_floor


class Strength(OperatorParams):
    strength: float = Field(1.0, ge=0.0, le=4.0, description="1.0 removes the estimated noise")

    def scaled(self, factor: float, image: Image) -> float:
        """A denoiser's own knob: ``strength`` times its tuned ``factor`` times the noise
        estimated in ``image`` (floored); 0 where there is nothing to remove."""
        return self.strength * factor * noise_floor(estimate_sigma(image.rgb()))


class NLMeansParams(Strength):
    patch_size: int = Field(7, ge=3, le=11, description="odd patch side, pixels")
    search_window: int = Field(21, ge=7, le=35, description="odd search window side, pixels")


class NLMeans(Operator):
    name = "nlmeans"
    version = "1"
    description = "non-local means (OpenCV, colour, in CIELAB)"
    resources = Resources(num_cpus=1, memory_per_megapixel=24 * 2**20)
    halo = 35 // 2 + 11 // 2  # search radius + patch radius at their maxima
    Params = NLMeansParams
    price = Price(per_call=Decimal("0.0005"), per_megapixel=Decimal("0.002"))

    def process(self, params: NLMeansParams, image: Image) -> Image:
        h = params.scaled(0.7, image)
        if h == 0:
            return image
        bgr = cv2.cvtColor(image.rgb(), cv2.COLOR_RGB2BGR)
        out = cv2.fastNlMeansDenoisingColored(
            bgr, None, h, h, _odd(params.patch_size), _odd(params.search_window)
        )
        return image.with_rgb(cv2.cvtColor(out, cv2.COLOR_BGR2RGB))


class BilateralParams(Strength):
    diameter: int = Field(9, ge=3, le=25, description="neighbourhood diameter, pixels")


class Bilateral(Operator):
    name = "bilateral"
    version = "1"
    description = "edge-preserving bilateral filter (OpenCV)"
    resources = Resources(num_cpus=1, memory_per_megapixel=16 * 2**20)
    halo = 25 // 2
    Params = BilateralParams
    price = Price(per_call=Decimal("0.0002"), per_megapixel=Decimal("0.0005"))

    def process(self, params: BilateralParams, image: Image) -> Image:
        sigma_colour = params.scaled(4.5, image)
        if sigma_colour == 0:
            return image
        out = cv2.bilateralFilter(
            np.ascontiguousarray(image.rgb()), params.diameter, sigma_colour, params.diameter / 3
        )
        return image.with_rgb(out)


class GuidedParams(Strength):
    radius: int = Field(2, ge=1, le=16, description="box radius, pixels")


class Guided(Operator):
    name = "guided"
    version = "1"
    description = "self-guided filter (He et al.), per channel"
    resources = Resources(num_cpus=1, memory_per_megapixel=48 * 2**20)
    halo = 2 * 16  # two box filters of the largest radius
    Params = GuidedParams
    price = Price(per_call=Decimal("0.0002"), per_megapixel=Decimal("0.0005"))

    def process(self, params: GuidedParams, image: Image) -> Image:
        sigma = params.scaled(3.0, image)
        if sigma == 0:
            return image
        return image.with_rgb(guided_filter(image.rgb(), params.radius, (sigma / 255.0) ** 2))


def guided_filter(rgb: np.ndarray, radius: int, eps: float) -> np.ndarray:
    """Each channel guides itself: where local variance is below ``eps`` (flat, noisy areas)
    the output tends to the local mean; where it is above (edges) the input is kept."""
    img = rgb.astype(np.float32) * (1 / 255.0)
    size = (2 * radius + 1, 2 * radius + 1)

    def box(x: np.ndarray) -> np.ndarray:
        return cv2.boxFilter(x, -1, size, borderType=cv2.BORDER_REFLECT)

    mean = box(img)
    var = box(img * img) - mean * mean
    a = var / (var + eps)
    b = mean - a * mean
    out = box(a) * img + box(b)
    return np.clip(out * 255.0 + 0.5, 0, 255).astype(np.uint8)


class ImpulseParams(OperatorParams):
    threshold: int | None = Field(
        None, ge=8, le=254, description="grey levels between an impulse and its neighbours' "
        "median (default: 40, or three noise deviations in noisier images)")


class Impulse(Operator):
    name = "impulse"
    version = "1"
    description = ("switching median: replaces only salt-and-pepper outliers, per channel, "
                   "with the median of their trustworthy neighbours")
    resources = Resources(num_cpus=1, memory_per_megapixel=32 * 2**20)
    halo = MAX_RADIUS + 1  # the widest neighbour search, plus the isolation test's ring
    Params = ImpulseParams
    price = Price(per_call=Decimal("0.0002"), per_megapixel=Decimal("0.0005"))
    tiling = "blend"  # the default threshold follows the whole image's noise

    def process(self, params: ImpulseParams, image: Image) -> Image:
        threshold = params.threshold or impulse_threshold(image.rgb())
        out, found = remove_impulses(image.rgb(), threshold)
        return image if found == 0 else image.with_rgb(out)


class Keep(Operator):
    name = "keep"
    version = "1"
    description = "the input unchanged: what QC picks when it measures no damage"
    resources = Resources(num_cpus=0.25, memory_per_megapixel=0)
    Params = NoParams
    price = Price(per_call=Decimal("0.00001"))

    def process(self, params: NoParams, image: Image) -> Image:
        return image


def _odd(n: int) -> int:
    return n if n % 2 else n + 1
