"""The CNNs (denoiser and deblocker): exact tiling, odd shapes, alpha, clear start-up errors,
and the CPU's bfloat16 path."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from support.images import noisy, photo, psnr
from PIL import Image as PILImage
from tilemore_operators.dncnn import WEIGHTS as DNCNN_WEIGHTS
from tilemore_operators.dncnn import Deblock, DnCNNDenoise, WeightsError
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


def deblock_with(path) -> type[Deblock]:
    return type("DeblockHere", (Deblock,), {"weights": path})


def test_deblock_weights_missing_or_corrupt_fail_at_start_up_naming_the_file(tmp_path):
    missing = tmp_path / "gone" / "deblock-rgb.pt"
    with pytest.raises(WeightsError, match="missing") as info:
        OperatorHost(deblock_with(missing))
    assert str(missing) in info.value.message and "deblock" in info.value.message
    bad = tmp_path / "deblock-rgb.pt"
    bad.write_bytes(b"\x80\x02 not weights")
    with pytest.raises(WeightsError, match="corrupt") as info:
        OperatorHost(deblock_with(bad))
    assert str(bad) in info.value.message
    # the deblocker ignores the denoiser's weights setting: each network has its own file,
    # which its own operator settings may name
    with pytest.raises(WeightsError, match="missing"):
        OperatorHost(deblock_with(missing), Settings(dncnn_weights=DNCNN_WEIGHTS))
    with pytest.raises(WeightsError, match="missing") as info:
        OperatorHost(Deblock, Settings(operator_settings={"deblock": {"weights": str(missing)}}))
    assert str(missing) in info.value.message


def test_shipped_deblocker_improves_a_heavy_jpeg():
    clean = photo(256, 192, "coffee")
    buf = io.BytesIO()
    PILImage.fromarray(clean).save(buf, "JPEG", quality=10)
    dirty = np.asarray(PILImage.open(buf).convert("RGB"))
    out, _ = OperatorHost(Deblock).run("d", Deblock.Params(), Image(dirty))
    assert psnr(out.pixels, clean) > psnr(dirty, clean) + 0.5


def test_bfloat16_on_cpu_stays_within_a_tenth_of_a_db_of_float32():
    h = OperatorHost(DnCNNDenoise)
    clean = photo(200, 150, "astronaut")
    dirty = Image(noisy(clean, 25, seed=7))
    results = {}
    for precision in ("float32", "bfloat16"):
        h.operator.precision = precision
        results[precision] = psnr(h.run(precision, DnCNNDenoise.Params(), dirty)[0].pixels,
                                  clean)
    assert abs(results["float32"] - results["bfloat16"]) < 0.1
    assert results["float32"] > psnr(dirty.pixels, clean) + 5


def test_bfloat16_tiles_are_wider_for_the_same_memory():
    """bfloat16 halves each activation's bytes: its tiles hold about twice the pixels in the
    same tile memory (fewer tiles, less halo recomputed), and still fit it."""
    h = OperatorHost(DnCNNDenoise, Settings(tile_memory_bytes=128 * 2**20))
    op = h.operator
    sides = {}
    for precision in ("float32", "bfloat16"):
        op.precision = precision
        sides[precision] = op.tile_side()
    assert 1.3 < sides["bfloat16"] / sides["float32"] < 1.45
    window = sides["bfloat16"] + 2 * op.halo
    assert window**2 / 1e6 * op.bfloat16_memory_per_megapixel <= 128 * 2**20


@pytest.mark.parametrize("ensemble", [2, 8])
def test_self_ensemble_tiles_exactly_and_undoes_its_views(weights, ensemble):
    h = host(weights)
    rgb = np.random.default_rng(5).integers(0, 255, (41, 57, 3)).astype(np.uint8)
    tiled, _ = h.run("t", DnCNNDenoise.Params(tile=24, ensemble=ensemble), Image(rgb))
    whole, _ = h.run("w", DnCNNDenoise.Params(tile=4096, ensemble=ensemble), Image(rgb))
    assert np.array_equal(tiled.pixels, whole.pixels)
    # on a mirror-symmetric input the two views' mean is mirror-symmetric (one pass is not:
    # the network's kernels are not), which only a correctly undone view gives
    sym = np.concatenate([rgb[:, :28], rgb[:, :28][:, ::-1]], axis=1)
    two, _ = h.run("2", DnCNNDenoise.Params(tile=4096, ensemble=2), Image(sym))
    assert np.abs(two.pixels.astype(int) - two.pixels[:, ::-1]).max() <= 1
    one, _ = h.run("1", DnCNNDenoise.Params(tile=4096), Image(sym))
    assert np.abs(one.pixels.astype(int) - one.pixels[:, ::-1]).max() > 1
    assert Deblock.Params().ensemble == 2 and DnCNNDenoise.Params().ensemble == 1
