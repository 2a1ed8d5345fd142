"""QC's damage measures (blockiness, impulse density, noise level), the classes they add up
to, the plan of which branches to run, and the pick among the candidates made for it."""

from __future__ import annotations

import io

import numpy as np
import pytest
from support.images import noisy, photo
from PIL import Image as PILImage
from tilemore_operators.damage import blockiness, classify, measure, noise_level
from tilemore_operators.qc import ResidualQC

from tilemore.decoding import decode_image
from tilemore.image import Image

BRANCHES = ["nlmeans", "bilateral", "guided", "dncnn", "deblock", "impulse", "keep"]


def as_file(pixels: np.ndarray, fmt: str, **kwargs) -> Image:
    buf = io.BytesIO()
    PILImage.fromarray(pixels).save(buf, fmt, **kwargs)
    return decode_image(buf.getvalue(), 10**9)


def salt_and_pepper(rgb: np.ndarray, amount: float, seed: int = 0) -> np.ndarray:
    out, r = rgb.copy(), np.random.default_rng(seed).random(rgb.shape)
    out[r < amount / 2] = 0
    out[(r >= amount / 2) & (r < amount)] = 255
    return out


@pytest.fixture(scope="module")
def clean():
    return photo(320, 240, "chelsea")


@pytest.fixture(scope="module")
def cases(clean):
    return {
        "clean": as_file(clean, "PNG"),
        "jpeg100": as_file(clean, "JPEG", quality=100),
        "jpeg10": as_file(clean, "JPEG", quality=10),
        "noise_then_jpeg30": as_file(noisy(clean, 15, seed=1), "JPEG", quality=30),
        "sigma25": as_file(noisy(clean, 25, seed=2), "PNG"),
        "salt_pepper5": as_file(salt_and_pepper(clean, 0.05), "PNG"),
    }


EXPECTED = {"clean": "clean", "jpeg100": "clean", "jpeg10": "jpeg",
            "noise_then_jpeg30": "jpeg", "sigma25": "noise", "salt_pepper5": "impulse"}


@pytest.mark.parametrize("case", list(EXPECTED))
def test_each_damage_is_recognised(cases, case):
    img = cases[case]
    m = measure(img.rgb(), img.extra.get("jpeg_quality"))
    assert classify(m) == EXPECTED[case], m


def test_blockiness_sees_the_jpeg_grid_blind(clean):
    jpeg10 = as_file(clean, "JPEG", quality=10).pixels
    assert blockiness(jpeg10) > 0.5 > 0.1 > blockiness(clean)
    assert blockiness(noisy(clean, 25)) < 0.1  # noise has no grid
    shifted = jpeg10[3:, 5:]  # a cropped JPEG: the grid is found at its new phase
    assert blockiness(shifted) > 0.5
    # without the file's quality to go by, a heavy JPEG is still classed by its grid
    assert classify(measure(jpeg10)) == "jpeg"


def test_noise_level_tracks_sigma_and_ignores_texture(clean):
    for sigma in (5, 15, 25):
        assert abs(noise_level(noisy(clean, sigma, seed=sigma)) - sigma) / sigma < 0.2
    assert noise_level(clean) < 2


def test_impulse_density(clean):
    assert measure(salt_and_pepper(clean, 0.05))["impulse_density"] == pytest.approx(0.05,
                                                                                     abs=0.01)
    assert measure(noisy(clean, 50))["impulse_density"] < 0.01  # clipped noise is not salt


@pytest.mark.parametrize("shape", [(1, 300, 3), (300, 1, 3), (1, 1, 3), (5, 7, 4)])
def test_odd_shapes_measure_without_error(shape):
    pixels = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    m = measure(pixels)
    assert set(m) >= {"blockiness", "impulse_density", "sigma"}
    assert all(np.isfinite(v) for v in m.values())
    plan = ResidualQC().plan(ResidualQC.Params(), Image(pixels), BRANCHES)
    assert plan["run"] and set(plan["reasons"]) == set(BRANCHES)


def test_greyscale_and_rgba_inputs(clean):
    grey = np.repeat(clean[:, :, :1], 3, axis=2)
    assert classify(measure(salt_and_pepper(grey, 0.05))) == "impulse"
    rgba = np.dstack([noisy(clean, 25), np.full(clean.shape[:2], 128, np.uint8)])
    assert classify(measure(rgba)) == "noise"


@pytest.mark.parametrize("case, run", [
    ("jpeg10", ["deblock"]),
    ("salt_pepper5", ["impulse"]),
    ("sigma25", ["nlmeans", "bilateral", "guided", "dncnn"]),
    ("clean", ["keep"]),
    ("jpeg100", ["keep"]),
])
def test_plan_runs_only_the_repairs_for_the_damage(cases, case, run):
    plan = ResidualQC().plan(ResidualQC.Params(), cases[case], BRANCHES)
    assert plan["run"] == run
    assert plan["damage"] == EXPECTED[case]
    for b in BRANCHES:
        assert plan["reasons"][b].startswith("run" if b in run else "skipped"), plan["reasons"]
    assert set(plan["measures"]) >= {"blockiness", "impulse_density", "sigma"}
    assert all(isinstance(v, float) for v in plan["measures"].values())


def test_plan_keeps_unknown_branches_and_falls_back_when_nothing_fits(cases):
    qc, params = ResidualQC(), ResidualQC.Params()
    plan = qc.plan(params, cases["jpeg10"], ["deblock", "my-sharpener", "keep"])
    assert plan["run"] == ["deblock", "my-sharpener"]
    # no deblocker among the branches: every repair competes, the unrepaired input does not
    plan = qc.plan(params, cases["jpeg10"], ["dncnn", "guided", "keep"])
    assert plan["run"] == ["dncnn", "guided"]
    assert "no branch repairs jpeg" in plan["reasons"]["dncnn"]


def test_pick_is_the_candidate_made_for_the_damage_with_its_reasons(cases):
    qc = ResidualQC()
    img = cases["salt_pepper5"]
    # the impulse remover's output is the third candidate; the others are plausible decoys
    candidates = [img, Image(noisy(img.pixels, 3)), Image(img.pixels.copy())]
    names = ("keep", "dncnn", "impulse")
    verdict = qc.process(ResidualQC.Params(candidates=names), img, *candidates)
    assert verdict.pick == 2
    d = verdict.details[2]
    assert d["fit"] == 1.0 and verdict.details[0]["fit"] == 0.0
    assert d["impulse_density"] > 0.03 and d["damage"] == 0.0  # DAMAGES.index("impulse")
    assert all(isinstance(v, float) for det in verdict.details for v in det.values())
    # without names (or with names that do not match the candidates) QC scores blind
    blind = qc.process(ResidualQC.Params(candidates=names[:2]), img, *candidates)
    assert all(det["fit"] == 1.0 for det in blind.details)


def test_candidate_names_are_bounded():
    from pydantic import ValidationError
    with pytest.raises(ValidationError):
        ResidualQC.Params(candidates=("x" * 65,))
    with pytest.raises(ValidationError):
        ResidualQC.Params(candidates=tuple(f"b{i}" for i in range(33)))


def test_measuring_a_large_image_is_bounded():
    import time
    big = np.random.default_rng(1).integers(0, 256, (3000, 4000, 3), dtype=np.uint8)
    started = time.perf_counter()
    m = measure(big)
    assert time.perf_counter() - started < 10  # samples, never the whole 12 MP
    assert m["sigma"] > 30 and classify(m) == "noise"
