"""Noise-level estimation shared by the denoisers (to scale their strength) and QC."""

from __future__ import annotations

import cv2
import numpy as np

# Immerkær's kernel: the difference of two Laplacians cancels smooth image structure, so
# what remains is mostly noise. Its weights' norm is 6, so for Gaussian noise of deviation
# s the filtered values have deviation 6s.
_KERNEL = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], dtype=np.float32)
_MAD_TO_SIGMA = 1 / (0.6745 * 6)
_MAX_SAMPLES = 2_000_000


def estimate_sigma(rgb: np.ndarray) -> float:
    """The standard deviation of additive noise per colour channel, in 0..255 units.

    Measured on each channel (a grey mix would average the noise away) and averaged. The
    median of absolute filter responses, not the mean, keeps edges and texture, which are
    sparse, from inflating the estimate. Large images are sampled in bands to bound the cost.
    """
    sample = _sample(rgb[:, :, :3]).astype(np.float32)
    if min(sample.shape[:2]) < 3:
        return 0.0
    response = cv2.filter2D(sample, cv2.CV_32F, _KERNEL)[1:-1, 1:-1]
    return float(np.median(np.abs(response)) * _MAD_TO_SIGMA)


def _sample(img: np.ndarray) -> np.ndarray:
    """Whole rows from evenly spaced bands: the kernel needs true neighbours, so no striding
    inside a band."""
    h, w = img.shape[:2]
    if h * w <= _MAX_SAMPLES:
        return img
    bands = 16
    band_h = max(3, _MAX_SAMPLES // (w * bands))
    starts = np.linspace(0, h - band_h, bands).astype(int)
    return np.concatenate([img[s:s + band_h] for s in starts], axis=0)


def noise_floor(sigma: float) -> float:
    """A strength scale that never reaches zero, so 'strength' still means something on
    clean images."""
    return max(sigma, 1.0)
