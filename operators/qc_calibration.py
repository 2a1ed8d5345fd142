"""Fit the QC penalty weights (``qc.WEIGHTS``) on the training photos — never the held-out
ones the quality benchmark scores — so that QC's pick loses as little PSNR as possible
against an oracle that knows the clean image:

    python -m tilemore_operators.qc_calibration

Every candidate of ``denoised-multiformat`` is run on each photo at σ = 15, 25 and 50; the
unweighted penalties of each are kept, then weight vectors are searched (log-uniform, seeded)
for the least mean PSNR regret. Prints the weights to paste into qc.py, and their regret.
"""

from __future__ import annotations

import argparse

import numpy as np
from tilemore_operators.denoise import Bilateral, Guided, NLMeans
from tilemore_operators.dncnn import DnCNNDenoise
from tilemore_operators.dncnn_training import TRAIN, TRAIN_MORE, photos
from tilemore_operators.noise import estimate_sigma
from tilemore_operators.qc import WEIGHTS, ResidualQC, residual_features, sample_boxes

from tilemore.engine.host import OperatorHost
from tilemore.image import Image

SIGMAS = (15, 25, 50)
CANDIDATES = (NLMeans, Bilateral, Guided, DnCNNDenoise)
FEATURES = tuple(WEIGHTS)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0**2 / max(mse, 1e-12)))


def instances(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Features (instances × candidates × features) and PSNRs (instances × candidates)."""
    hosts = [OperatorHost(op) for op in CANDIDATES]
    params = ResidualQC.Params()
    rng = np.random.default_rng(seed)
    feats, scores = [], []
    for clean in photos(TRAIN + TRAIN_MORE):
        img = np.clip(clean * 255 + 0.5, 0, 255).astype(np.uint8)
        for sigma in SIGMAS:
            noisy = np.clip(img + rng.normal(0, sigma, img.shape), 0, 255).astype(np.uint8)
            outs = [h.run("c", h.operator.Params(), Image(noisy))[0].pixels for h in hosts]
            boxes = sample_boxes(*noisy.shape[:2], params.sample_tiles, params.tile_size)
            level = estimate_sigma(noisy)
            feats.append([[residual_features(noisy, o, level, boxes)[f] for f in FEATURES]
                          for o in outs])
            scores.append([psnr(o, img) for o in outs])
    return np.array(feats), np.array(scores)


def regret(weights: np.ndarray, feats: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Mean PSNR lost against the oracle, for each row of ``weights``."""
    penalty = np.einsum("icf,wf->wic", feats, weights)
    picked = np.take_along_axis(scores[None], penalty.argmin(axis=2)[:, :, None], axis=2)
    return (scores.max(axis=1)[None] - picked[:, :, 0]).mean(axis=1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trials", type=int, default=50_000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    feats, scores = instances(args.seed)
    rng = np.random.default_rng(args.seed)
    trials = np.exp(rng.uniform(np.log(1e-2), np.log(1e1), (args.trials, len(FEATURES))))
    trials[rng.random(trials.shape) < 0.2] = 0.0  # let features drop out
    current = np.array([[WEIGHTS[f] for f in FEATURES]])
    losses = regret(np.concatenate([current, trials]), feats, scores)
    best = int(np.argmin(losses))
    weights = np.concatenate([current, trials])[best]
    weights = weights / max(weights.max(), 1e-12) * 4  # scale-free: keep numbers readable
    print(f"{len(scores)} instances; regret with the current weights {losses[0]:.3f} dB, "
          f"fitted {losses[best]:.3f} dB")
    print("WEIGHTS = {" + ", ".join(f'"{f}": {w:.3g}' for f, w in zip(FEATURES, weights,
                                                                       strict=True)) + "}")


if __name__ == "__main__":
    main()
