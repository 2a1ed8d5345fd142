"""The example pipeline end to end (in process, no Ray), blind: QC sees the damage, keeps the
repair made for it, and says why in the thread's `qc`; a clean photo or a JPEG at quality
100 comes out bit for bit."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image as PILImage
from support.images import encode, photo, psnr

from tilemore.engine import LocalBackend
from tilemore.pipeline import build_graph, run_graph


@pytest.fixture(scope="module")
def backend():
    b = LocalBackend()
    yield b
    b.close()


def run_png(denoised, backend, data: bytes):
    result = run_graph(build_graph(denoised, {}, "png"), data, backend)
    return np.asarray(PILImage.open(io.BytesIO(result.output.data)).convert("RGB")), result.qc[0]


def decoded(data: bytes) -> np.ndarray:
    return np.asarray(PILImage.open(io.BytesIO(data)).convert("RGB"))


@pytest.mark.parametrize("fmt, kwargs", [("PNG", {}), ("JPEG", {"quality": 100})])
def test_clean_input_comes_through_untouched(denoised, backend, fmt, kwargs):
    data = encode(photo(160, 120, "astronaut"), fmt, **kwargs)
    out, qc = run_png(denoised, backend, data)
    assert qc.pick == "keep"
    assert np.array_equal(out, decoded(data))
    assert qc.details["keep"]["fit"] == 1.0
    assert "dncnn" in qc.skipped  # QC ruled the denoisers out before they ran


def test_salt_and_pepper_goes_to_the_switching_median(denoised, backend):
    clean = photo(160, 120, "chelsea")
    dirty, r = clean.copy(), np.random.default_rng(5).random(clean.shape)
    dirty[r < 0.025], dirty[(r >= 0.025) & (r < 0.05)] = 0, 255
    out, qc = run_png(denoised, backend, encode(dirty))
    assert qc.pick == "impulse"
    assert psnr(out, clean) > psnr(dirty, clean) + 15
    assert qc.details["impulse"]["impulse_density"] > 0.03


def test_a_heavy_jpeg_goes_to_the_deblocker(denoised, backend):
    clean = photo(160, 120, "coffee")
    data = encode(clean, "JPEG", quality=10)
    out, qc = run_png(denoised, backend, data)
    assert qc.pick == "deblock" and qc.details["deblock"]["jpeg_quality"] == 10
    assert psnr(out, clean) > psnr(decoded(data), clean) + 0.3


def test_a_caller_can_still_name_one_repair(denoised, backend):
    g = build_graph(denoised, {"master": {"algorithm": "impulse"}}, "png")
    assert [t.id for t in g.tasks] == ["decode", "master", "shifter", "encoder"]
    g = build_graph(denoised, {"master": {"algorithm": "deblock", "strength": 0.5}}, "png")
    assert g.task("master").params.strength == 0.5
