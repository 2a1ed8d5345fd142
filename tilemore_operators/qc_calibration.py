"""Fit the QC penalty weights (``qc.WEIGHTS``) on the training photos — never the held-out
ones the quality benchmark scores — so that QC's pick loses as little PSNR as possible
against an oracle that knows the clean image:

    python -m tilemore_operators.qc_calibration

and check the damage thresholds (``damage.py``) on the same photos: each is damaged every
way QC must tell apart, saved as the file a user would send, decoded, measured and classed;
prints the range of each measure per damage and every photo classed wrongly:

    python -m tilemore_operators.qc_calibration --damage

Every candidate of ``denoised-multiformat`` is run on each photo at σ = 15, 25 and 50; the
unweighted penalties of each are kept, then weight vectors are searched (log-uniform, seeded)
for the least mean PSNR regret. Prints the weights to paste into qc.py, and their regret.
"""

from __future__ import annotations

import argparse
import io

import numpy as np
from PIL import Image as PILImage

from tilemore.decoding import decode_image
from tilemore.engine.host import OperatorHost
from tilemore.image import Image
from tilemore_operators.damage import classify
from tilemore_operators.denoise import Bilateral, Guided, NLMeans
from tilemore_operators.dncnn import DnCNNDenoise
from tilemore_operators.dncnn_training import TRAIN, TRAIN_MORE, photos
from tilemore_operators.noise import estimate_sigma
from tilemore_operators.qc import (
    WEIGHTS,
    ResidualQC,
    measure_image,
    residual_features,
    sample_boxes,
)

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


# each damage QC must recognise, and the class a repair should target for it
EXPECTED = {
    "clean": "clean", "jpeg100": "clean", "jpeg90": "clean", "jpeg50": "jpeg",
    "jpeg10": "jpeg", "sigma15_jpeg30": "jpeg", "sigma5": "noise", "sigma25": "noise",
    "sigma50": "noise", "salt_pepper2": "impulse", "salt_pepper5": "impulse",
    "salt_pepper20": "impulse",
}


def as_file(pixels: np.ndarray, fmt: str, **kwargs) -> Image:
    """What the pipeline's decode stage makes of ``pixels`` saved as a ``fmt`` file."""
    buf = io.BytesIO()
    PILImage.fromarray(pixels).save(buf, fmt, **kwargs)
    return decode_image(buf.getvalue(), 10**9)


def damaged(kind: str, img: np.ndarray, rng: np.random.Generator) -> Image:
    """``img`` damaged as ``kind`` says (a key of EXPECTED), as a decoded file: JPEG damage as
    a JPEG, the rest as PNG. Salt and pepper strikes each sample (channel) on its own."""
    def gaussian(sigma: float) -> np.ndarray:
        return np.clip(img + rng.normal(0, sigma, img.shape), 0, 255).astype(np.uint8)

    if kind.startswith("salt_pepper"):
        amount = int(kind.removeprefix("salt_pepper")) / 100
        out, r = img.copy(), rng.random(img.shape)
        out[r < amount / 2] = 0
        out[(r >= amount / 2) & (r < amount)] = 255
        return as_file(out, "PNG")
    if kind == "sigma15_jpeg30":
        return as_file(gaussian(15), "JPEG", quality=30)
    if kind.startswith("jpeg"):
        return as_file(img, "JPEG", quality=int(kind.removeprefix("jpeg")))
    if kind.startswith("sigma"):
        return as_file(gaussian(int(kind.removeprefix("sigma"))), "PNG")
    return as_file(img, "PNG")


def check_damage(seed: int) -> int:
    """Prints each measure's range per damage and the misclassified; returns their count."""
    rng = np.random.default_rng(seed)
    found: dict[str, list[dict[str, float]]] = {k: [] for k in EXPECTED}
    wrong = []
    for i, clean in enumerate(photos(TRAIN + TRAIN_MORE)):
        img = np.clip(clean * 255 + 0.5, 0, 255).astype(np.uint8)
        for kind, expected in EXPECTED.items():
            m = measure_image(damaged(kind, img, rng))
            found[kind].append(m)
            if (got := classify(m)) != expected:
                wrong.append(f"photo {i} {kind}: classed {got}, expected {expected} "
                             f"({', '.join(f'{k} {v:.3g}' for k, v in m.items())})")
    for kind, ms in found.items():
        print(f"{kind:15s}" + "  ".join(
            f"{k} {min(m[k] for m in ms):.3g}..{max(m[k] for m in ms):.3g}"
            for k in ("blockiness", "impulse_density", "sigma")))
    print(f"{len(wrong)} of {sum(map(len, found.values()))} classed wrongly")
    for line in wrong:
        print("  " + line)
    return len(wrong)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trials", type=int, default=50_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--damage", action="store_true", help="check the damage thresholds")
    args = ap.parse_args()
    if args.damage:
        check_damage(args.seed)
        return
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
