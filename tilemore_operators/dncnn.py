"""dncnn: the deep-learning denoiser — a residual CNN, on CUDA when present, else on CPU;
deblock: the same network trained on JPEG artifacts (blocking, ringing, noise re-encoded).

On CPU the network runs in bfloat16 where the processor computes it natively (AVX512-BF16 or
AMX: about twice the float32 throughput, 0.01 dB lower; ``benchmarks/cnn_tiling.py``), else
in float32; on CUDA in float32. Large images go through it in tiles sized from the device's
free memory (CUDA) or the ``tile_memory_bytes`` setting (CPU) and the declared memory per
megapixel; the network is
exactly local within its depth, so the stitched result equals the whole-image one. Weights
load once per replica, at start-up, from the repository (never from the network); a missing
or corrupt file stops the replica there, with a clear error.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import ClassVar, Literal

import numpy as np
import torch
from pydantic import Field

from tilemore.errors import TilemoreError
from tilemore.image import Image
from tilemore.operator import Operator, OperatorParams, Price, Resources
from tilemore.tiling import process_tiled, tile_side
from tilemore_operators.dncnn_model import DEPTH, DnCNN

WEIGHTS = Path(__file__).parent / "weights" / "dncnn-rgb.pt"
DEBLOCK_WEIGHTS = Path(__file__).parent / "weights" / "deblock-rgb.pt"
Precision = Literal["float32", "bfloat16"]


class WeightsError(TilemoreError):
    code = "operator_setup_failed"
    status = 500


class DnCNNParams(OperatorParams):
    strength: float = Field(1.0, ge=0.0, le=2.0, description="scales the removed residual")
    tile: int | None = Field(None, ge=2 * DEPTH, le=16384,
                             description="tile side in pixels (default: from free memory)")
    ensemble: Literal[1, 2, 4, 8] = Field(
        1, description="geometric self-ensemble: the mean of the network over this many "
        "flipped and transposed views (each costs one more pass)")


class DeblockParams(DnCNNParams):
    # two views (as is, mirrored): +0.04 dB on JPEG q10 over one, for twice the compute
    ensemble: Literal[1, 2, 4, 8] = Field(
        2, description="geometric self-ensemble: the mean of the network over this many "
        "flipped and transposed views (each costs one more pass)")


class DnCNNDenoise(Operator):
    name = "dncnn"
    version = "1"
    description = "residual CNN (DnCNN-style), CUDA when present, tiled to fit memory"
    # A GPU operator; on a cluster without GPUs its replicas run on CPU instead. Half a GPU:
    # the network is small, and the denoiser and the deblocker share one card.
    # Without a GPU, 2 CPUs: on one thread the network takes twice as long.
    # Memory per megapixel of a tile: the peak of two 64-channel activations, measured 377
    # MiB/MP in float32 (declared with a margin), 199 in bfloat16, which halves each value's
    # bytes: the CPU path's tiles are then √2 wider for the same memory, and the halo
    # recomputed around them costs 9 % of a 12 MP image instead of 14 %.
    resources = Resources(num_cpus=1, num_gpus=0.5, gpu_optional=True, cpu_fallback_cpus=2,
                          memory_per_megapixel=448 * 2**20)
    bfloat16_memory_per_megapixel: ClassVar[int] = 240 * 2**20
    halo = DEPTH
    Params = DnCNNParams
    price = Price(per_call=Decimal("0.001"), per_megapixel=Decimal("0.004"))
    tiling = "exact"
    weights: ClassVar[Path] = WEIGHTS
    training: ClassVar[str] = "python -m tilemore_operators.dncnn_training"

    def weights_path(self) -> Path:
        return Path(self.context.options.get("weights") or self.weights)

    def setup(self) -> None:
        path = self.weights_path()
        if not path.is_file():
            raise WeightsError(f"{self.name}: weights file {path} is missing (train them with "
                               f"{self.training})")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            model = DnCNN()
            model.load_state_dict(state)
        except Exception as exc:  # noqa: BLE001 - any way a file can be broken
            raise WeightsError(f"{self.name}: weights file {path} is corrupt: {exc}") from None
        self.device = torch.device(self.context.device)
        if self.context.cpus:  # intra-op threads: the CPUs this replica holds, no more
            torch.set_num_threads(max(1, int(self.context.cpus)))
        self.model = model.to(self.device).eval().to(memory_format=torch.channels_last)
        self.precision: Precision = (
            "bfloat16" if self.device.type == "cpu" and cpu_has_bf16() else "float32")

    def process(self, params: DnCNNParams, image: Image) -> Image:
        if params.strength == 0:
            return image
        side = params.tile or self.tile_side()
        rgb = image.rgb()
        out = process_tiled(rgb, lambda w: self._run(w, params.strength, params.ensemble),
                            side, self.halo)
        return image.with_rgb(out)

    def tile_side(self) -> int:
        per_megapixel = (self.bfloat16_memory_per_megapixel if self.precision == "bfloat16"
                         else self.resources.memory_per_megapixel)
        return tile_side(self._memory(), per_megapixel, self.halo)

    def _memory(self) -> int:
        if self.device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(self.device)
            return int(free * 0.8)
        return self.context.tile_memory_bytes

    @torch.inference_mode()
    def _run(self, window: np.ndarray, strength: float, ensemble: int = 1) -> np.ndarray:
        # torch wants writable memory even to read; a read-only tile (Ray's shared objects)
        # is copied, which costs a few MB against the network's hundreds
        window = np.ascontiguousarray(window)
        x = torch.from_numpy(window if window.flags.writeable else window.copy()).to(self.device)
        x = x.permute(2, 0, 1)[None].float().div_(255.0)
        x = x.contiguous(memory_format=torch.channels_last)
        try:
            # autocast keeps the subtraction x − noise in float32: only the noise estimate,
            # a few grey levels, carries bfloat16's 8-bit mantissa
            with torch.autocast("cpu", dtype=torch.bfloat16,
                                enabled=self.precision == "bfloat16"):
                y = sum(_unview(self.model(_view(x, v)).float(), v) for v in range(ensemble))
                y = y / ensemble if ensemble > 1 else y
                y = y if strength == 1 else x - strength * (x - y)
            y = y.float()
        except torch.cuda.OutOfMemoryError:
            torch.cuda.empty_cache()
            raise MemoryError("CUDA out of memory") from None
        y = y.clamp_(0, 1).mul_(255.0).add_(0.5)[0].permute(1, 2, 0)
        return y.to(torch.uint8).cpu().numpy()


class Deblock(DnCNNDenoise):
    name = "deblock"
    version = "1"
    Params = DeblockParams
    description = ("residual CNN trained on JPEG artifacts (blocking, ringing, noise "
                   "re-encoded), CUDA when present, tiled to fit memory")
    weights = DEBLOCK_WEIGHTS
    training = "python -m tilemore_operators.dncnn_training --damage jpeg"


def _view(x: torch.Tensor, v: int) -> torch.Tensor:
    """The ``v``-th of eight flips and transposes of an N×C×H×W batch (0: as it is)."""
    if v & 4:
        x = x.transpose(2, 3)
    dims = [d for d, bit in ((3, 1), (2, 2)) if v & bit]
    x = torch.flip(x, dims) if dims else x
    return x.contiguous(memory_format=torch.channels_last)


def _unview(y: torch.Tensor, v: int) -> torch.Tensor:
    dims = [d for d, bit in ((3, 1), (2, 2)) if v & bit]
    y = torch.flip(y, dims) if dims else y
    return y.transpose(2, 3) if v & 4 else y


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively; emulated, it is slower than float32."""
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return torch.backends.mkldnn.is_available() and any(
        getattr(torch.cpu, p, lambda: False)() for p in probes)
