"""Checkpoints: pixels compressed losslessly, and raw ones from earlier releases still load."""

from __future__ import annotations

import json
import struct

import numpy as np
from support.images import noisy, photo

from tilemore.engine import checkpoint
from tilemore.image import Encoded, Image


def test_pixels_round_trip_exactly_and_smaller():
    for pixels in (photo(640, 530), noisy(photo(300, 200), 25), np.zeros((1, 1, 3), np.uint8),
                   np.full((3, 700, 4), 255, np.uint8)):
        img = Image(pixels, icc_profile=b"icc", exif=None, source_format="PNG",
                    extra={"a": 1})
        data = checkpoint.dump(img)
        back = checkpoint.load(data)
        assert np.array_equal(back.pixels, pixels)
        assert (back.icc_profile, back.source_format, back.extra) == (b"icc", "PNG", {"a": 1})
    clean = photo(1200, 900)
    assert len(checkpoint.dump(Image(clean))) < 0.6 * clean.nbytes


def test_a_raw_checkpoint_of_an_earlier_release_still_loads():
    pixels = photo(64, 48)
    head = json.dumps({"kind": "image", "shape": list(pixels.shape), "icc_profile": None,
                       "exif": None, "source_format": None, "extra": {}}).encode()
    old = b"TMCK1" + struct.pack(">I", len(head)) + head + pixels.tobytes()
    assert np.array_equal(checkpoint.load(old).pixels, pixels)


def test_other_outputs_unchanged():
    enc = Encoded(b"\xff\xd8jpeg", "jpeg", "image/jpeg", 4, 3)
    assert checkpoint.load(checkpoint.dump(enc)) == enc
    assert checkpoint.load(checkpoint.dump(b"raw")) == b"raw"
