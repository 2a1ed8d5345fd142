"""Train the CNNs' weights from photos scikit-image ships. ``--damage gaussian`` (the
denoiser, ``dncnn``): synthetic Gaussian noise of deviation 5–50 (blind). Its committed
weights come from four stages, the last two in bfloat16 autocast (the network then learns to
lose nothing to bfloat16, which it runs in on CPUs that compute it natively):

    python -m tilemore_operators.dncnn_training --photos base --steps 6122 --seed 0 --out s1.pt
    python -m tilemore_operators.dncnn_training --init s1.pt --steps STEPS2 --seed 1 --lr 5e-4 \
        --out s2.pt
    python -m tilemore_operators.dncnn_training --init s2.pt --steps 1500 --seed 4 --lr 1e-4 \
        --bf16 --threads 1 --out s3.pt
    python -m tilemore_operators.dncnn_training --init s3.pt --steps 2000 --seed 5 --lr 1e-4 \
        --bf16 --threads 1

(sha256 of the result ``10ffd09c…``; of stage 2's, shipped before, ``7c9667eb…``.)

``--damage jpeg`` (the deblocker, ``deblock``): JPEG compression at qualities 5–95 (4:2:0 or
4:4:4 chroma), some patches first given Gaussian noise of deviation up to 30 (noise then
re-encoding): a third in stage 1, 60 % in stage 2. Fine-tuned from the denoiser's stage-2
weights, on one thread, in bfloat16 autocast. Both stages were stopped early for time, at a
checkpoint (every 500 steps) of a longer schedule, which ``--stop`` reproduces:

    python -m tilemore_operators.dncnn_training --damage jpeg \
        --init s2.pt --steps 10000 --stop 4500 --seed 2 --lr 5e-4 \
        --threads 1 --bf16 --out deblock-s1.pt
    python -m tilemore_operators.dncnn_training --damage jpeg --init deblock-s1.pt \
        --steps 2500 --stop 1000 --seed 3 --lr 2e-4 --noisy 0.6 --threads 1 --bf16

(sha256 of the result ``2aae5eb9…``).

(dncnn's STEPS2 is in benchmarks/README.md; a run given ``--minutes`` instead of ``--steps``
trains for that long and prints the step count it reached.)

Held out for evaluation (never seen in training): chelsea, coffee and astronaut.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import math
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image as PILImage
from skimage import data as skdata

from tilemore_operators.dncnn_model import DnCNN

TRAIN = ("rocket", "hubble_deep_field", "immunohistochemistry", "retina", "camera", "brick",
         "grass", "gravel", "moon", "coins", "page", "text", "clock", "cell", "colorwheel")
# natural colour photos added for the second (fine-tuning) stage
TRAIN_MORE = ("stereo_motorcycle",)
HELD_OUT = ("chelsea", "coffee", "astronaut")
WEIGHTS = Path(__file__).parent / "weights" / "dncnn-rgb.pt"
DEBLOCK_WEIGHTS = Path(__file__).parent / "weights" / "deblock-rgb.pt"


def photos(names: tuple[str, ...]) -> list[np.ndarray]:
    out = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name in names:
            loaded = getattr(skdata, name)()
            # stereo_motorcycle is a (left, right, disparity) pair of colour photos
            for img in loaded[:2] if isinstance(loaded, tuple) else (loaded,):
                img = np.asarray(img)
                if img.ndim == 2:
                    img = np.repeat(img[:, :, None], 3, axis=2)
                out.append(img[:, :, :3].astype(np.float32) / 255.0)
    return out


def jpeg(patch: np.ndarray, quality: int, subsampling: int) -> np.ndarray:
    """``patch`` (H×W×3 float in [0, 1]) through a JPEG encode and decode."""
    buf = io.BytesIO()
    u8 = np.clip(patch * 255 + 0.5, 0, 255).astype(np.uint8)
    PILImage.fromarray(u8).save(buf, "JPEG", quality=quality, subsampling=subsampling)
    return np.asarray(PILImage.open(buf).convert("RGB"), np.float32) / 255.0


def damage_jpeg(clean: np.ndarray, rng: np.random.Generator, noisy_share: float = 1 / 3
                ) -> np.ndarray:
    """Each patch (N×3×H×W) compressed at its own quality, low ones drawn more often (that is
    where the artifacts are); a share ``noisy_share`` noised first, as a noisy photo saved as
    JPEG is."""
    out = np.empty_like(clean)
    for i, p in enumerate(clean.transpose(0, 2, 3, 1)):
        if rng.random() < noisy_share:
            sigma = rng.uniform(0, 30) / 255.0
            p = np.clip(p + rng.standard_normal(p.shape).astype(np.float32) * sigma, 0, 1)
        quality = int(np.clip(round(np.exp(rng.uniform(np.log(5), np.log(96)))), 5, 95))
        out[i] = jpeg(p, quality, 2 if rng.random() < 0.75 else 0).transpose(2, 0, 1)
    return out


def batches(images: list[np.ndarray], size: int, patch: int, rng: np.random.Generator,
            damage: str = "gaussian", noisy_share: float = 1 / 3):
    while True:
        clean = np.empty((size, 3, patch, patch), np.float32)
        for i in range(size):
            img = images[rng.integers(len(images))]
            y = rng.integers(img.shape[0] - patch + 1)
            x = rng.integers(img.shape[1] - patch + 1)
            p = img[y:y + patch, x:x + patch]
            p = np.rot90(p, rng.integers(4))
            if rng.random() < 0.5:
                p = p[:, ::-1]
            clean[i] = p.transpose(2, 0, 1)
        if damage == "jpeg":
            damaged = damage_jpeg(clean, rng, noisy_share)
            yield torch.from_numpy(damaged), torch.from_numpy(clean)
            continue
        sigma = rng.uniform(5, 50, size=(size, 1, 1, 1)).astype(np.float32) / 255.0
        noisy = clean + rng.standard_normal(clean.shape).astype(np.float32) * sigma
        yield torch.from_numpy(noisy), torch.from_numpy(clean)


def save(model: torch.nn.Module, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save({k: v.clone() for k, v in model.state_dict().items()}, out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=30.0)
    ap.add_argument("--steps", type=int, help="train this many steps (reproducible) instead")
    ap.add_argument("--stop", type=int,
                    help="stop after this many steps; the learning-rate schedule still spans "
                    "--steps (the checkpoint every 500 steps is this run's weights there)")
    ap.add_argument("--noisy", type=float, default=1 / 3,
                    help="--damage jpeg: the share of patches given Gaussian noise first")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch", type=int, default=24)
    ap.add_argument("--patch", type=int, default=48)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--damage", choices=("gaussian", "jpeg"), default="gaussian",
                    help="gaussian: the denoiser (dncnn); jpeg: the deblocker (deblock)")
    ap.add_argument("--out", type=Path, help="default: the operator's weights file")
    ap.add_argument("--photos", choices=("base", "all"), default="all",
                    help="base: the first stage's photos; all: plus TRAIN_MORE")
    ap.add_argument("--bf16", action="store_true",
                    help="bfloat16 autocast (about 2× faster on CPUs with AVX512-BF16 or AMX)")
    ap.add_argument("--init", type=Path, help="start from these weights (fine-tuning)")
    ap.add_argument("--lr", type=float, default=1e-3, help="peak learning rate")
    args = ap.parse_args()
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(args.seed)
    model = DnCNN()
    if args.init:
        model.load_state_dict(torch.load(args.init, map_location="cpu", weights_only=True))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    names = TRAIN if args.photos == "base" else TRAIN + TRAIN_MORE
    stream = batches(photos(names), args.batch, args.patch, rng, args.damage, args.noisy)
    args.out = args.out or (DEBLOCK_WEIGHTS if args.damage == "jpeg" else WEIGHTS)
    budget = args.minutes * 60
    started = time.monotonic()
    step, loss_avg = 0, None

    def progress() -> float:  # 0 → 1 over the run, by steps when given, else by time
        if args.steps:
            return step / args.steps
        return (time.monotonic() - started) / budget

    while progress() < 1 and step != args.stop:
        elapsed = time.monotonic() - started
        lr = 1e-5 + 0.5 * (args.lr - 1e-5) * (1 + math.cos(math.pi * progress()))
        for group in opt.param_groups:
            group["lr"] = lr
        noisy, clean = next(stream)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16):
            out = model(noisy)
        loss = torch.nn.functional.mse_loss(out.float(), clean)
        opt.zero_grad()
        loss.backward()
        opt.step()
        step += 1
        loss_avg = loss.item() if loss_avg is None else 0.98 * loss_avg + 0.02 * loss.item()
        if step % 500 == 0:  # a usable file even if the run is stopped early
            save(model, args.out)
        if step % 200 == 0:
            psnr = 10 * math.log10(1 / max(loss_avg, 1e-12))
            print(f"step {step:6d}  {elapsed / 60:5.1f} min  lr {lr:.2e}  "
                  f"train PSNR {psnr:.2f} dB", flush=True)
    save(model, args.out)
    digest = hashlib.sha256(args.out.read_bytes()).hexdigest()
    print(f"saved {args.out} after {step} steps; sha256 {digest}")


if __name__ == "__main__":
    main()
