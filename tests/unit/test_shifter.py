"""shifter: crops and the four resize modes, with their edge cases."""

from __future__ import annotations

import numpy as np
import pytest
from support.images import photo
from tilemore_operators.shifter import Shifter, ShifterParams

from tilemore.errors import GeometryError
from tilemore.image import Image

SRC = Image(photo(400, 300))


def shift(spec: dict, image: Image = SRC) -> Image:
    return Shifter().process(ShifterParams.model_validate(spec), image)


def size(img: Image) -> tuple[int, int]:
    return img.width, img.height


def test_no_parameters_leave_the_image_alone():
    assert shift({}) is SRC


def test_box_crop():
    out = shift({"crop": {"x": 10, "y": 20, "width": 100, "height": 50}})
    assert np.array_equal(out.pixels, SRC.pixels[20:70, 10:110])


@pytest.mark.parametrize("box", [
    {"x": 350, "y": 0, "width": 100, "height": 10},
    {"x": 0, "y": 0, "width": 401, "height": 300},
    {"x": 0, "y": 300, "width": 1, "height": 1},
])
def test_crop_outside_the_image(box):
    with pytest.raises(GeometryError, match="outside the 400x300 image"):
        shift({"crop": box})


@pytest.mark.parametrize("gravity, window", [
    ("center", (0, 300, 50, 350)), ("west", (0, 300, 0, 300)), ("east", (0, 300, 100, 400)),
    ("north", (0, 300, 50, 350)),
])
def test_aspect_crop_with_gravity(gravity, window):
    out = shift({"crop": {"aspect": "1:1", "gravity": gravity}})
    y0, y1, x0, x1 = window
    assert np.array_equal(out.pixels, SRC.pixels[y0:y1, x0:x1])


def test_aspect_crop_taller_and_decimal():
    out = shift({"crop": {"aspect": "1:2", "gravity": "south"}})
    assert size(out) == (150, 300)
    out = shift({"crop": {"aspect": "2", "gravity": "north"}})
    assert size(out) == (400, 200) and np.array_equal(out.pixels, SRC.pixels[:200])


@pytest.mark.parametrize("resize, expected", [
    ({"width": 200, "height": 200, "mode": "fit"}, (200, 150)),
    ({"width": 800, "height": 800, "mode": "fit"}, (800, 600)),     # fit enlarges
    ({"width": 800, "height": 800, "mode": "limit"}, (400, 300)),   # limit never does
    ({"width": 100, "height": 100, "mode": "limit"}, (100, 75)),
    ({"width": 200, "height": 200, "mode": "fill"}, (200, 200)),
    ({"width": 200, "height": 50, "mode": "force"}, (200, 50)),
    ({"width": 200}, (200, 150)),
    ({"height": 150, "mode": "fill"}, (200, 150)),
    ({"height": 60, "mode": "force"}, (80, 60)),
])
def test_resize_modes(resize, expected):
    assert size(shift({"resize": resize})) == expected


def test_fill_keeps_the_gravity_side():
    src = Image(np.zeros((100, 200, 3), np.uint8))
    src.pixels[:, :100] = 255  # white west half
    west = shift({"resize": {"width": 50, "height": 50, "mode": "fill", "gravity": "west"}}, src)
    east = shift({"resize": {"width": 50, "height": 50, "mode": "fill", "gravity": "east"}}, src)
    assert west.pixels.mean() > 200 and east.pixels.mean() < 50


def test_large_resize_in_strips_matches_a_whole_resize_closely():
    from PIL import Image as PILImage
    big = photo(3000, 2000)
    out = shift({"resize": {"width": 1500}}, Image(big))
    ref = np.asarray(PILImage.fromarray(big).resize((1500, 1000), PILImage.Resampling.LANCZOS))
    assert size(out) == (1500, 1000)
    assert np.abs(out.pixels.astype(int) - ref).max() <= 4  # fixed-point rounding only
    again = shift({"resize": {"width": 1500}}, Image(big))
    assert np.array_equal(out.pixels, again.pixels)  # deterministic


def test_alpha_survives_crop_and_resize():
    rgba = Image(np.dstack([photo(400, 300), np.full((300, 400), 128, np.uint8)]))
    out = shift({"crop": {"aspect": "1:1"}, "resize": {"width": 100}}, rgba)
    assert out.has_alpha and size(out) == (100, 100)
    assert np.all(out.pixels[:, :, 3] == 128)


def test_huge_upscale_refused():
    with pytest.raises(GeometryError, match="largest side"):
        shift({"resize": {"width": 65535, "height": 65535, "mode": "fill"}},
              Image(photo(400, 40)))


def test_one_pixel_images():
    out = shift({"resize": {"width": 10, "mode": "fit"}}, Image(photo(1, 1)))
    assert size(out) == (10, 10)
    out = shift({"resize": {"width": 3}}, Image(photo(300, 1)))
    assert size(out) == (3, 1)
    out = shift({"resize": {"width": 1, "mode": "force"}}, Image(photo(1000, 1)))
    assert size(out) == (1, 1)


@pytest.mark.parametrize("spec", [
    {}, {"crop": {"x": 10, "y": 20, "width": 100, "height": 50}},
    {"crop": {"aspect": "16:9"}, "resize": {"width": 123, "height": 77, "mode": "fill"}},
    {"resize": {"height": 61, "mode": "force"}}, {"resize": {"width": 999, "mode": "limit"}},
    {"crop": {"aspect": "1:3"}, "resize": {"width": 40}},
])
def test_output_size_predicts_the_real_size(spec):
    params = ShifterParams.model_validate(spec)
    assert Shifter.output_size(params, (400, 300)) == size(shift(spec))
