"""The CNN denoiser: exact tiling, odd shapes, alpha, and clear start-up errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tilemore_operators.dncnn import DnCNNDenoise, WeightsError
from tilemore_operators.dncnn_model import DEPTH, DnCNN

from tilemore.engine.host import OperatorHost
from tilemore.image import Image
from tilemore.settings import Settings
from tilemore.tiling import process_tiled


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return DnCNN().eval()


def run_float(net, window: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        x = torch.from_numpy(np.ascontiguousarray(window)).permute(2, 0, 1)[None]
        return net(x)[0].permute(1, 2, 0).numpy()


@pytest.mark.parametrize("shape", [(75, 101, 3), (1, 90, 3), (90, 1, 3), (31, 17, 3)])
def test_tiled_network_equals_whole_image_in_float(net, shape):
    img = np.random.default_rng(2).random(shape, dtype=np.float32)
    whole = run_float(net, img)
    tiled = process_tiled(img, lambda w: run_float(net, w), tile=2 * DEPTH + 4, halo=DEPTH)
    assert np.abs(tiled - whole).max() < 1e-4


@pytest.fixture
def weights(tmp_path, net):
    path = tmp_path / "w.pt"
    torch.save(net.state_dict(), path)
    return path


def host(path) -> OperatorHost:
    return OperatorHost(DnCNNDenoise, Settings(dncnn_weights=path))


def test_operator_tiles_and_keeps_alpha(weights):
    h = host(weights)
    rgba = np.dstack([np.random.default_rng(3).integers(0, 255, (50, 70, 3)),
                      np.full((50, 70), 77)]).astype(np.uint8)
    tiled, _ = h.run("t", DnCNNDenoise.Params(tile=24), Image(rgba))
    whole, _ = h.run("w", DnCNNDenoise.Params(tile=4096), Image(rgba))
    assert tiled.has_alpha and np.all(tiled.pixels[:, :, 3] == 77)
    assert np.array_equal(tiled.pixels, whole.pixels)
    same, _ = h.run("z", DnCNNDenoise.Params(strength=0), Image(rgba))
    assert np.array_equal(same.pixels, rgba)


def test_missing_or_corrupt_weights_fail_at_start_up(tmp_path):
    with pytest.raises(WeightsError, match="missing"):
        host(tmp_path / "nope.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"definitely not a torch file")
    with pytest.raises(WeightsError, match="corrupt"):
        host(bad)
    wrong = tmp_path / "wrong.pt"
    torch.save(DnCNN(depth=4).state_dict(), wrong)
    with pytest.raises(WeightsError, match="corrupt"):
        host(wrong)


def test_tile_smaller_than_twice_the_halo_is_a_clear_error():
    from pydantic import ValidationError
    with pytest.raises(ValidationError):
        DnCNNDenoise.Params(tile=2 * DEPTH - 1)
