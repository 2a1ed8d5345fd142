"""Denoisers remove noise; the noise estimate is right; QC prefers what a reference would."""

from __future__ import annotations

import numpy as np
import pytest
from support.images import noisy, photo, psnr
from tilemore_operators.denoise import Bilateral, Guided, NLMeans
from tilemore_operators.noise import estimate_sigma
from tilemore_operators.qc import ResidualQC, sample_boxes

from tilemore.image import Image

DENOISERS = [NLMeans, Bilateral, Guided]


@pytest.mark.parametrize("sigma", [5, 15, 30])
def test_noise_estimate_within_15_percent(sigma):
    clean = photo(384, 256, "astronaut")
    est = estimate_sigma(noisy(clean, sigma, seed=sigma))
    assert abs(est - sigma) / sigma < 0.15


@pytest.mark.parametrize("op", DENOISERS, ids=lambda o: o.name)
def test_denoiser_raises_psnr(op):
    clean = photo(256, 192)
    dirty = noisy(clean, 20)
    out = op().process(op.Params(), Image(dirty))
    assert psnr(out.pixels, clean) > psnr(dirty, clean) + 3


@pytest.mark.parametrize("op", DENOISERS, ids=lambda o: o.name)
def test_strength_scales_and_zero_is_identity(op):
    dirty = Image(noisy(photo(128, 96), 20))
    assert np.array_equal(op().process(op.Params(strength=0), dirty).pixels, dirty.pixels)
    weak = op().process(op.Params(strength=0.3), dirty).pixels.astype(float)
    strong = op().process(op.Params(strength=1.5), dirty).pixels.astype(float)
    removed = lambda out: np.abs(out - dirty.pixels).mean()  # noqa: E731
    assert removed(strong) > removed(weak)


@pytest.mark.parametrize("op", DENOISERS, ids=lambda o: o.name)
def test_alpha_passes_through(op):
    alpha = (np.arange(96 * 128) % 256).reshape(96, 128).astype(np.uint8)
    img = Image(np.dstack([noisy(photo(128, 96), 15), alpha]))
    out = op().process(op.Params(), img)
    assert out.has_alpha and np.array_equal(out.pixels[:, :, 3], alpha)


def test_qc_prefers_the_candidate_closest_to_the_truth():
    clean = photo(256, 192, "chelsea")
    dirty = Image(noisy(clean, 20, seed=3))
    too_little = Image(noisy(clean, 14, seed=4))  # most noise left in
    candidates = [too_little, Bilateral().process(Bilateral.Params(), dirty)]
    verdict = ResidualQC().process(ResidualQC.Params(), dirty, *candidates)
    assert verdict.pick == 1 and len(verdict.scores) == 2
    assert verdict.scores[1] > verdict.scores[0]
    assert set(verdict.details[0]) >= {"under", "over", "whiteness", "structure", "leftover"}


def test_qc_sees_over_smoothing():
    import cv2
    clean = photo(256, 192, "astronaut")
    dirty = Image(noisy(clean, 10, seed=5))
    blurred = Image(cv2.GaussianBlur(dirty.pixels, (0, 0), 4))
    good = Bilateral().process(Bilateral.Params(), dirty)
    verdict = ResidualQC().process(ResidualQC.Params(), dirty, blurred, good)
    assert verdict.pick == 1


def test_sample_boxes_cover_small_and_odd_images():
    assert sample_boxes(10, 7, 24, 128) == [(0, 0, 10, 7)]
    boxes = sample_boxes(1000, 3000, 24, 128)
    assert 12 <= len(boxes) <= 24
    assert all(y + h <= 1000 and x + w <= 3000 for y, x, h, w in boxes)
