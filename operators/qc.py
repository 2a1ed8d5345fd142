"""qc-residual: a no-reference quality score for denoised candidates, and the pick.

What a good denoiser removes from a noisy image is the noise: a residual (input − candidate)
that is as strong as the noise estimated in the input, uncorrelated between neighbouring
pixels (white), and unrelated to the image's edges. Each way a residual departs from that is
a penalty; the candidate with the smallest total wins.
"""

from __future__ import annotations

from decimal import Decimal

import cv2
import numpy as np
from pydantic import Field
from tilemore_operators.noise import estimate_sigma, noise_floor

from tilemore.image import Image
from tilemore.operator import Operator, OperatorParams, Price, Resources, Selection


class QCParams(OperatorParams):
    sample_tiles: int = Field(24, ge=1, le=256, description="tiles scored per candidate")
    tile_size: int = Field(128, ge=16, le=1024)


class ResidualQC(Operator):
    name = "qc-residual"
    version = "1"
    role = "selector"
    description = "no-reference score: is the removed residual white noise at the input's level?"
    resources = Resources(num_cpus=1, memory_per_megapixel=4 * 2**20)
    Params = QCParams
    price = Price(per_call=Decimal("0.0001"))

    def process(self, params: QCParams, original: Image, *candidates: Image) -> Selection:
        boxes = sample_boxes(original.height, original.width, params.sample_tiles,
                             params.tile_size)
        sigma = estimate_sigma(original.rgb())
        details = [residual_penalties(original.rgb(), c.rgb(), sigma, boxes) for c in candidates]
        scores = [-sum(d.values()) for d in details]
        for d, s in zip(details, scores, strict=True):
            d["sigma_input"] = sigma
            d["score"] = s
        return Selection(pick=int(np.argmax(scores)), scores=scores, details=details)


def sample_boxes(h: int, w: int, count: int, size: int) -> list[tuple[int, int, int, int]]:
    """An evenly spread grid of up to ``count`` tiles (y, x, height, width)."""
    th, tw = min(size, h), min(size, w)
    rows = max(1, min(int(np.sqrt(count * h / max(w, 1))) or 1, h // th))
    cols = max(1, min(count // rows, w // tw))
    ys = np.linspace(0, h - th, rows).astype(int)
    xs = np.linspace(0, w - tw, cols).astype(int)
    return [(int(y), int(x), th, tw) for y in ys for x in xs]


# How much each departure from "the residual is the noise" costs. Fitted on the training
# photos (never the held-out ones) by ``python -m tilemore_operators.qc_calibration``.
WEIGHTS: dict[str, float] = {"under": 0.0473, "over": 0.0, "whiteness": 4.0, "structure": 3.4,
                             "leftover": 2.73}


def residual_penalties(
    original: np.ndarray, candidate: np.ndarray, sigma: float,
    boxes: list[tuple[int, int, int, int]],
) -> dict[str, float]:
    return {k: WEIGHTS[k] * v for k, v in residual_features(original, candidate, sigma,
                                                            boxes).items()}


def residual_features(
    original: np.ndarray, candidate: np.ndarray, sigma: float,
    boxes: list[tuple[int, int, int, int]],
) -> dict[str, float]:
    """Each way the residual (original − candidate) departs from white noise at ``sigma``,
    unweighted; 0 is a perfect match."""
    level = noise_floor(sigma)
    res_parts, grad_parts, cand_parts = [], [], []
    for y, x, th, tw in boxes:
        o = original[y:y + th, x:x + tw].astype(np.float32)
        c = candidate[y:y + th, x:x + tw].astype(np.float32)
        res_parts.append(o - c)
        cand_parts.append(c)
        grey = cv2.cvtColor(c, cv2.COLOR_RGB2GRAY)
        gx = cv2.Sobel(grey, cv2.CV_32F, 1, 0, ksize=3)
        gy = cv2.Sobel(grey, cv2.CV_32F, 0, 1, ksize=3)
        grad_parts.append(np.sqrt(gx * gx + gy * gy))
    r = np.stack(res_parts)  # tiles × h × w × 3
    g = np.stack(grad_parts)
    removed = float(r.std())
    # Too little energy removed (noise left behind) or too much (detail taken with it).
    under = max(0.0, sigma - removed) / level
    over = max(0.0, removed - sigma) / level
    # White noise has no correlation between horizontal or vertical neighbours.
    whiteness = 0.5 * (abs(_corr(r[:, :, :-1], r[:, :, 1:])) + abs(_corr(r[:, :-1], r[:, 1:])))
    # Removed structure follows edges: residual magnitude correlates with the gradient.
    structure = max(0.0, _corr(np.abs(r).mean(axis=3), g))
    # Noise still in the candidate, by the same estimator that measured the input's.
    leftover = float(np.mean([estimate_sigma(c) for c in cand_parts])) / level
    return {"under": under, "over": over, "whiteness": whiteness, "structure": structure,
            "leftover": leftover}


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    a = a.ravel().astype(np.float64) - a.mean()
    b = b.ravel().astype(np.float64) - b.mean()
    denom = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / denom) if denom > 1e-12 else 0.0
