"""Impulse (salt-and-pepper) noise: find the outliers, and replace only them.

A switching median: a sample is an impulse when it sits at an extreme (0 or 255), is not
part of a patch or line of its own value (a highlight, a shadow or a specular edge is: more
than ``MAX_CLUMP`` samples, 8-connected), and stands apart from the median of its
trustworthy neighbours (all but such small clumps) by more than ``threshold``.
Only those samples change, each to the median of its trustworthy neighbours in the smallest
window that has any (3×3, then 5×5, … up to 21×21), so the rest of the image, and every
clean image, comes through bit for bit. Colour channels are treated separately: salt and
pepper usually strikes one sample, not a whole pixel.
"""

from __future__ import annotations

import cv2
import numpy as np

MAX_RADIUS = 10  # the largest window searched for trustworthy neighbours: 21×21
THRESHOLD = 40  # grey levels between an impulse and its neighbours' median
MAX_CLUMP = 5  # impulses touch at most this many of their own value (8-connected)


def detect(channel: np.ndarray, threshold: int = THRESHOLD
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The impulses of one uint8 channel: their (row, column) indices and the value each
    would be replaced with."""
    suspect = np.zeros(channel.shape, bool)  # extreme, in a clump of at most MAX_CLUMP
    for v in (0, 255):
        mask = (channel == v).astype(np.uint8)
        if not mask.any():
            continue
        _, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
        small = stats[:, cv2.CC_STAT_AREA] <= MAX_CLUMP
        small[0] = False  # the background label
        suspect |= small[labels]
    ys, xs = np.nonzero(suspect)
    if ys.size == 0:
        return ys, xs, np.empty(0, np.uint8)
    value = np.zeros(ys.size, np.float32)
    pending = np.ones(ys.size, bool)
    mode = "reflect" if min(channel.shape) > MAX_RADIUS else "edge"
    padded_v = np.pad(channel, MAX_RADIUS, mode=mode).astype(np.float32)
    # the neighbours to trust: every sample but the suspects (and nothing beyond the edge)
    padded_ok = np.pad(~suspect, MAX_RADIUS, mode="constant", constant_values=False)
    for r in range(1, MAX_RADIUS + 1):
        idx = np.nonzero(pending)[0]
        if idx.size == 0:
            break
        oy, ox = np.mgrid[-r:r + 1, -r:r + 1]
        py = ys[idx, None] + MAX_RADIUS + oy.ravel()[None]
        px = xs[idx, None] + MAX_RADIUS + ox.ravel()[None]
        vals = np.where(padded_ok[py, px], padded_v[py, px], np.inf)
        count = np.isfinite(vals).sum(axis=1)
        found = count > 0
        if not found.any():
            continue
        vals, count = np.sort(vals[found], axis=1), count[found]
        rows = np.arange(vals.shape[0])
        value[idx[found]] = 0.5 * (vals[rows, (count - 1) // 2] + vals[rows, count // 2])
        pending[idx[found]] = False
    # suspects with no trustworthy neighbour in reach (an image of nothing but salt and
    # pepper) stay: there is nothing to replace them with
    found = ~pending
    ys, xs, value = ys[found], xs[found], value[found]
    outlier = np.abs(channel[ys, xs].astype(np.float32) - value) > threshold
    return ys[outlier], xs[outlier], np.rint(value[outlier]).astype(np.uint8)


def remove_impulses(rgb: np.ndarray, threshold: int = THRESHOLD) -> tuple[np.ndarray, int]:
    """A copy of ``rgb`` (H×W×C uint8) with its impulses replaced, and how many there were."""
    out = np.array(rgb, copy=True)
    total = 0
    for c in range(out.shape[2]):
        ys, xs, values = detect(out[:, :, c], threshold)
        out[ys, xs, c] = values
        total += ys.size
    return out, total


def impulse_density(rgb: np.ndarray, threshold: int = THRESHOLD) -> float:
    """The share of samples (pixels × channels) that are impulses, 0..1."""
    if rgb.size == 0:
        return 0.0
    found = sum(detect(rgb[:, :, c], threshold)[0].size for c in range(rgb.shape[2]))
    return found / rgb.size
