"""Denoising quality, PSNR in dB, on photos not used in training (scikit-image's chelsea,
coffee and astronaut), with Gaussian noise σ = 15, 25, 50: every denoiser, the QC's picks,
and an oracle that always picks the truly best candidate.

Targets: the CNN beats the best classical denoiser by ≥ 1.0 dB at σ = 25; QC's picks are
within 0.3 dB (mean) of the oracle.

    python benchmarks/denoise_quality.py
"""

from __future__ import annotations

import numpy as np
from _common import machine, save
from tilemore_operators.denoise import Bilateral, Guided, NLMeans
from tilemore_operators.dncnn import DnCNNDenoise
from tilemore_operators.dncnn_training import HELD_OUT, photos
from tilemore_operators.qc import ResidualQC

from tilemore.engine.host import OperatorHost
from tilemore.image import Image

SIGMAS = (15, 25, 50)
DENOISERS = (NLMeans, Bilateral, Guided, DnCNNDenoise)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0**2 / max(mse, 1e-12)))


def main() -> None:
    hosts = {op.name: OperatorHost(op) for op in DENOISERS}
    qc = OperatorHost(ResidualQC)
    clean = [np.clip(p * 255 + 0.5, 0, 255).astype(np.uint8) for p in photos(HELD_OUT)]
    rng = np.random.default_rng(2026)
    table: dict[int, dict[str, float]] = {}
    for sigma in SIGMAS:
        scores: dict[str, list[float]] = {n: [] for n in [*hosts, "qc", "oracle"]}
        for img in clean:
            noisy = np.clip(img + rng.normal(0, sigma, img.shape), 0, 255).astype(np.uint8)
            outs = {n: h.run("t", h.operator.Params(), Image(noisy))[0] for n, h in hosts.items()}
            values = {n: psnr(o.pixels, img) for n, o in outs.items()}
            verdict, _ = qc.run("qc", ResidualQC.Params(), Image(noisy), *outs.values())
            for n, v in values.items():
                scores[n].append(v)
            scores["qc"].append(list(values.values())[verdict.pick])
            scores["oracle"].append(max(values.values()))
        table[sigma] = {n: float(np.mean(v)) for n, v in scores.items()}
    best_classical = max(table[25][n] for n in ("nlmeans", "bilateral", "guided"))
    cnn_gain = table[25]["dncnn"] - best_classical
    qc_gap = float(np.mean([table[s]["oracle"] - table[s]["qc"] for s in SIGMAS]))
    save("denoise_quality", {"machine": machine(), "held_out": HELD_OUT, "psnr": table,
                             "cnn_gain_sigma25_db": cnn_gain, "qc_gap_db": qc_gap})
    names = [*hosts, "qc", "oracle"]
    print(f"mean PSNR (dB) on {', '.join(HELD_OUT)} (held out)")
    print("σ    " + "".join(f"{n:>11s}" for n in names))
    for s in SIGMAS:
        print(f"{s:<5d}" + "".join(f"{table[s][n]:11.2f}" for n in names))
    print(f"CNN − best classical at σ=25: {cnn_gain:+.2f} dB (target ≥ +1.0): "
          f"{'met' if cnn_gain >= 1.0 else 'NOT met'}")
    print(f"oracle − QC, mean over σ: {qc_gap:.2f} dB (target ≤ 0.3): "
          f"{'met' if qc_gap <= 0.3 else 'NOT met'}")


if __name__ == "__main__":
    main()
