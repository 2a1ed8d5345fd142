"""qc-residual: what damage the input has, which candidates can repair it, and the pick.

First the input is measured (``damage.py``: blockiness, impulse density, noise level) and
classed as impulse noise, JPEG artifacts, Gaussian-like noise or clean. Only candidates made
for that damage (known by their branch names, given in ``candidates``) are eligible;
``plan`` says the same before anything runs, so a caller may skip the others. Among the
eligible, a no-reference score of the residual decides.

What a good denoiser removes from a noisy image is the noise: a residual (input − candidate)
that is as strong as the noise estimated in the input, uncorrelated between neighbouring
pixels (white), and unrelated to the image's edges. Each way a residual departs from that is
a penalty; the candidate with the smallest total wins.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any

import cv2
import numpy as np
from pydantic import Field, StringConstraints

from tilemore.image import Image
from tilemore.operator import Operator, OperatorParams, Price, Resources, Selection
from tilemore_operators.damage import DAMAGES, REPAIRS, classify, explain, measure
from tilemore_operators.noise import estimate_sigma, noise_floor

BranchName = Annotated[str, StringConstraints(min_length=1, max_length=64)]
MISFIT = 100.0  # what a candidate made for another damage loses from its score


class QCParams(OperatorParams):
    sample_tiles: int = Field(24, ge=1, le=256, description="tiles scored per candidate")
    tile_size: int = Field(128, ge=16, le=1024)
    candidates: tuple[BranchName, ...] = Field(
        (), max_length=32, description="the branch names, in the order the candidates "
        "arrive; QC matches each to the damage it repairs (empty: every candidate is "
        "eligible and the residual score alone decides)")


class ResidualQC(Operator):
    name = "qc-residual"
    version = "2"
    role = "selector"
    description = ("measures the damage (blocking, impulses, noise), keeps the candidates "
                   "made for it, then scores their residuals (white noise at the input's level?)")
    resources = Resources(num_cpus=1, memory_per_megapixel=4 * 2**20)
    Params = QCParams
    price = Price(per_call=Decimal("0.0001"))

    def process(self, params: QCParams, original: Image, *candidates: Image) -> Selection:
        measures = measure_image(original)
        damage = classify(measures)
        names = params.candidates if len(params.candidates) == len(candidates) else ()
        fits = eligible(damage, list(names)) if names else [True] * len(candidates)
        boxes = sample_boxes(original.height, original.width, params.sample_tiles,
                             params.tile_size)
        sigma = estimate_sigma(original.rgb())
        details = [residual_penalties(original.rgb(), c.rgb(), sigma, boxes) for c in candidates]
        scores = [-sum(d.values()) - (0.0 if fit else MISFIT)
                  for d, fit in zip(details, fits, strict=True)]
        for d, s, fit in zip(details, scores, fits, strict=True):
            # the reasons, as numbers (details are numeric): the damage class (its index in
            # damage.DAMAGES), whether this candidate repairs it, and what was measured
            d.update(measures)
            d["damage"] = float(DAMAGES.index(damage))
            d["fit"] = float(fit)
            d["sigma_input"] = sigma
            d["score"] = s
        return Selection(pick=int(np.argmax(scores)), scores=scores, details=details)

    def plan(self, params: QCParams, original: Image, branches: list[str]) -> dict[str, Any]:
        """Which branches are worth running on ``original``, decided before any runs: those
        made for the measured damage (all of them when none is, or when a branch's purpose
        is unknown). Returns ``{"run": [...], "reasons": {branch: why}, "measures": {...}}``.
        A caller that skips branches passes the rest to ``process`` with ``candidates`` set
        to the names of those that ran, in order. ``damage`` names the class measured."""
        measures = measure_image(original)
        damage = classify(measures)
        why = explain(damage, measures)
        fits = eligible(damage, branches)
        reasons = {}
        for b, fit in zip(branches, fits, strict=True):
            kind = REPAIRS.get(b)
            if kind is None:
                reasons[b] = f"run: its repair is unknown to QC; measured {damage}: {why}"
            elif fit and kind == damage:
                reasons[b] = f"run: repairs {kind}, measured {damage}: {why}"
            elif fit:
                reasons[b] = f"run: no branch repairs {damage} ({why}); every repair competes"
            else:
                reasons[b] = f"skipped: repairs {kind}, measured {damage}: {why}"
        return {"run": [b for b, fit in zip(branches, fits, strict=True) if fit],
                "reasons": reasons, "measures": measures, "damage": damage}


def measure_image(image: Image) -> dict[str, float]:
    quality = image.extra.get("jpeg_quality") if isinstance(image.extra, dict) else None
    return measure(image.rgb(), quality if isinstance(quality, int) else None)


def eligible(damage: str, names: list[str]) -> list[bool]:
    """Which of the branches ``names`` may repair ``damage``: those made for it, and any
    whose purpose is unknown; if no branch is made for it, every repair but ``keep`` (an
    unrepaired image is never the answer to measured damage)."""
    kinds = [REPAIRS.get(n) for n in names]
    if any(k == damage for k in kinds):
        return [k is None or k == damage for k in kinds]
    return [k != "clean" for k in kinds] if any(k != "clean" for k in kinds) else \
        [True] * len(names)


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
