"""What is wrong with an image, measured without a reference: JPEG blockiness, impulse
(salt-and-pepper) density and the level of Gaussian-like noise; and the kind of damage they
add up to, which tells QC which repair can help.

The thresholds are fitted on the training photos (never the held-out ones) by
``python -m tilemore_operators.qc_calibration --damage``.
"""

from __future__ import annotations

from typing import Literal

import cv2
import numpy as np

from tilemore_operators.impulse import THRESHOLD, impulse_density, remove_impulses
from tilemore_operators.noise import _KERNEL as _IMMERKAER
from tilemore_operators.noise import _MAD_TO_SIGMA, _sample, estimate_sigma

Damage = Literal["impulse", "jpeg", "noise", "clean"]
DAMAGES: tuple[Damage, ...] = ("impulse", "jpeg", "noise", "clean")

# the damage each built-in repair is for (by operator name; a branch is named after its
# operator in the shipped pipelines)
REPAIRS: dict[str, Damage] = {
    "impulse": "impulse", "deblock": "jpeg", "dncnn": "noise", "nlmeans": "noise",
    "bilateral": "noise", "guided": "noise", "keep": "clean",
}

IMPULSE_MIN = 0.01  # share of samples that are impulses
# a JPEG saved at this quality or lower has artifacts worth repairing; above it, it is a
# photo as cameras and the web save them, left alone unless its grid shows (blockiness)
JPEG_QUALITY_MAX = 50
BLOCKINESS_MIN = 0.5  # with no JPEG quality to go by: the grid's excess step
SIGMA_MIN = 3.4  # grey levels of noise worth removing
_MAX_LINES = 512  # rows (and columns) sampled for blockiness
_MAX_IMPULSE_PIXELS = 1_000_000
_CLIP = 24.0  # steps larger than this are edges, not blocking
_LUMA = np.array([0.299, 0.587, 0.114], np.float32)
# the 2 % quantile of 8×8 blocks' estimates is low by about this much for Gaussian noise
_QUANTILE_BIAS = 1.08


def blockiness(rgb: np.ndarray) -> float:
    """How much stronger the luma steps on an 8-pixel grid are than the steps elsewhere:
    0 for no grid, about 1 when the grid's steps are twice the others. The grid's phase is
    found, not assumed, so a cropped JPEG still shows. Steps are clipped so that a photo's
    edges, which fall anywhere, weigh no more than blocking does."""
    h, w = rgb.shape[:2]
    if h < 16 and w < 16:
        return 0.0
    ratios = []
    # steps along rows from at most _MAX_LINES rows, then along columns likewise: only the
    # sampled lines are converted, so a 100 MP image costs what a small one does
    for lines in (rgb, rgb.transpose(1, 0, 2)):
        if lines.shape[1] < 16:
            continue
        picked = np.linspace(0, lines.shape[0] - 1, min(lines.shape[0], _MAX_LINES)).astype(int)
        rows = lines[picked, :, :3].astype(np.float32) @ _LUMA
        steps = np.minimum(np.abs(np.diff(rows, axis=1)), _CLIP).mean(axis=0)
        n = steps.size // 8 * 8
        phase = steps[:n].reshape(-1, 8).mean(axis=0)  # mean step by position mod 8
        p = int(np.argmax(phase))
        rest = float(np.mean(np.delete(phase, p)))
        ratios.append(float(phase[p]) / max(rest, 1e-3) - 1.0)
    return float(np.mean(ratios)) if ratios else 0.0


def noise_level(rgb: np.ndarray, block: int = 8, quantile: float = 0.02) -> float:
    """Noise that is everywhere, not texture that is somewhere: Immerkær's estimate in each
    ``block``-pixel square, and a low quantile of those. Noise is uniform over the image, so
    its smoothest blocks show it too; a clean photo's smoothest blocks are nearly flat.
    Blocks near black or white, where noise is clipped away, are left out."""
    grey = _sample(rgb[:, :, :3]).astype(np.float32)
    h, w = grey.shape[:2]
    if min(h, w) < 3:
        return 0.0
    resp = np.abs(cv2.filter2D(grey, cv2.CV_32F, _IMMERKAER)).mean(axis=2)[1:-1, 1:-1]
    mean = cv2.blur(grey.mean(axis=2), (3, 3))[1:-1, 1:-1]
    bh, bw = min(block, resp.shape[0]), min(block, resp.shape[1])
    ny, nx = resp.shape[0] // bh, resp.shape[1] // bw
    r = resp[:ny * bh, :nx * bw].reshape(ny, bh, nx, bw).swapaxes(1, 2).reshape(ny * nx, -1)
    m = mean[:ny * bh, :nx * bw].reshape(ny, bh, nx, bw).mean(axis=(1, 3)).ravel()
    ok = (m > 16) & (m < 239)
    if ok.sum() >= 8:
        r = r[ok]
    per_block = np.median(r, axis=1) * _MAD_TO_SIGMA
    return float(np.quantile(per_block, quantile)) * _QUANTILE_BIAS


def measure(image_rgb: np.ndarray, jpeg_quality: int | None = None) -> dict[str, float]:
    """The measures QC decides on. ``jpeg_quality``: the quality the source JPEG was saved
    at (from its quantisation tables), if it was one."""
    rgb = image_rgb[:, :, :3]
    return {"blockiness": blockiness(rgb), "impulse_density": _impulses(rgb),
            "sigma": noise_level(rgb), "jpeg_quality": float(jpeg_quality or 0)}


def impulse_threshold(rgb: np.ndarray) -> int:
    """How far from its neighbours an extreme sample must be to count as an impulse: three
    deviations of the noise left once the obvious impulses are out, so that the clipped
    tails of strong Gaussian noise do not count (the impulses themselves would inflate any
    noise estimate)."""
    sigma = estimate_sigma(remove_impulses(_sample(rgb[:, :, :3]), THRESHOLD)[0])
    return int(max(THRESHOLD, 3 * sigma))


def classify(measures: dict[str, float]) -> Damage:
    """The damage a repair should target, strongest evidence first: impulses spoil every
    other measure, and blocking shows only where noise does not hide it."""
    if measures["impulse_density"] >= IMPULSE_MIN:
        return "impulse"
    if 0 < measures.get("jpeg_quality", 0) <= JPEG_QUALITY_MAX:
        return "jpeg"
    if measures["blockiness"] >= BLOCKINESS_MIN:
        return "jpeg"
    if measures["sigma"] >= SIGMA_MIN:
        return "noise"
    return "clean"


def explain(damage: Damage, measures: dict[str, float]) -> str:
    m = measures
    return {
        "impulse": f"impulse density {m['impulse_density']:.2%} ≥ {IMPULSE_MIN:.2%}",
        "jpeg": (f"a JPEG of quality {m['jpeg_quality']:.0f} ≤ {JPEG_QUALITY_MAX}, "
                 f"blockiness {m['blockiness']:.2f}")
        if 0 < m.get("jpeg_quality", 0) <= JPEG_QUALITY_MAX
        else f"blockiness {m['blockiness']:.2f} ≥ {BLOCKINESS_MIN}",
        "noise": f"noise σ {m['sigma']:.1f} ≥ {SIGMA_MIN} (blockiness {m['blockiness']:.2f}, "
                 f"impulses {m['impulse_density']:.2%})",
        "clean": f"no damage measured (σ {m['sigma']:.1f}, blockiness {m['blockiness']:.2f}, "
                 f"impulses {m['impulse_density']:.2%})",
    }[damage]


def _impulses(rgb: np.ndarray) -> float:
    """Impulse density, on a centre crop of at most a megapixel for large images."""
    h, w = rgb.shape[:2]
    if h * w > _MAX_IMPULSE_PIXELS:
        side = int(np.sqrt(_MAX_IMPULSE_PIXELS))
        ch, cw = min(h, side), min(w, _MAX_IMPULSE_PIXELS // min(h, side))
        y, x = (h - ch) // 2, (w - cw) // 2
        rgb = rgb[y:y + ch, x:x + cw]
    return impulse_density(rgb, impulse_threshold(rgb))
