"""The CNN denoiser on CPU (2 threads): throughput of eager PyTorch against the optimised
paths, the shipped operator in bfloat16 against the same operator in float32 (what it ran
before) with the PSNR each gives on the held-out photos, tiled against whole-image time at
12 MP, and the peak memory of a 100 MP run.

Targets: the operator ≥ 1.5× its float32 MP/s at ≤ 0.1 dB lost (σ = 25, chelsea, coffee,
astronaut); tiled ≤ 1.15× whole-image at 12 MP; 100 MP peak memory ≤ 2.5× the decoded RGB
uint8 size; the faster inference path is the one shipped.

    python benchmarks/cnn_tiling.py [--skip-100mp] [--only-throughput]
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

import numpy as np
import torch
from _common import arguments, finish, machine, positive, save

torch.set_num_threads(2)


def timed(fn, repeat: int = 3) -> float:
    fn()
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def throughput(side: int = 1000) -> dict[str, float]:
    from tilemore_operators.dncnn import WEIGHTS
    from tilemore_operators.dncnn_model import DnCNN

    model = DnCNN()
    model.load_state_dict(torch.load(WEIGHTS, weights_only=True))
    model.eval()
    x = torch.rand(1, 3, side, side)
    mp = side * side / 1e6

    def eager():
        model(x)  # autograd bookkeeping on, NCHW: PyTorch as written

    cl_model = DnCNN()
    cl_model.load_state_dict(model.state_dict())
    cl_model = cl_model.eval().to(memory_format=torch.channels_last)
    x_cl = x.contiguous(memory_format=torch.channels_last)

    def optimised():
        with torch.inference_mode():
            cl_model(x_cl)

    def bfloat16():
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
            cl_model(x_cl)

    return {name: mp / timed(fn) for name, fn in
            (("eager", eager), ("inference_mode+channels_last", optimised),
             ("bfloat16_autocast", bfloat16))}


def operator_precisions(side: int = 1000, crop: int | None = None
                        ) -> dict[str, dict[str, float]]:
    """The shipped operator, whole path (uint8 in and out), at each precision: MP/s on a
    ``side``² image and mean PSNR on the held-out photos at σ = 25 (seed 2026, as
    denoise_quality.py draws it; ``crop``: their top-left crop of that side only)."""
    from tilemore_operators.dncnn import DnCNNDenoise, cpu_has_bf16
    from tilemore_operators.dncnn_training import HELD_OUT, photos

    from tilemore.engine.host import OperatorHost
    from tilemore.image import Image

    host = OperatorHost(DnCNNDenoise)
    shipped = host.operator.precision
    img = Image(np.random.default_rng(0).integers(0, 255, (side, side, 3), dtype=np.uint8))
    clean = [np.clip(p * 255 + 0.5, 0, 255).astype(np.uint8) for p in photos(HELD_OUT)]
    clean = [c[:crop, :crop] for c in clean] if crop else clean
    rng = np.random.default_rng(2026)
    [rng.normal(0, 15, c.shape) for c in clean]  # denoise_quality draws σ = 15 first
    noisy = [np.clip(c + rng.normal(0, 25, c.shape), 0, 255).astype(np.uint8) for c in clean]
    out = {}
    for precision in ("float32", "bfloat16") if cpu_has_bf16() else ("float32",):
        host.operator.precision = precision
        params = DnCNNDenoise.Params()
        mp_s = side * side / 1e6 / timed(lambda p=params: host.run("t", p, img))
        values = [_psnr(host.run("q", params, Image(n))[0].pixels, c)
                  for n, c in zip(noisy, clean, strict=True)]
        out[precision] = {"mp_s": mp_s, "psnr_sigma25": float(np.mean(values)),
                          "shipped": precision == shipped}
    host.operator.precision = shipped
    return out


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0**2 / max(mse, 1e-12)))


def tiled_vs_whole(shape: tuple[int, int] = (3000, 4000)) -> dict[str, float]:
    from tilemore_operators.dncnn import DnCNNDenoise

    from tilemore.engine.host import OperatorHost
    from tilemore.image import Image

    host = OperatorHost(DnCNNDenoise)
    rng = np.random.default_rng(0)
    img = Image(rng.integers(0, 255, (*shape, 3), dtype=np.uint8))
    side = host.tile_side()
    outs = {}

    def run(key: str, params) -> None:
        outs[key] = host.run(key, params, img)[0].pixels

    tiled = timed(lambda: run("t", DnCNNDenoise.Params()), repeat=1)
    whole = timed(lambda: run("w", DnCNNDenoise.Params(tile=4096)), repeat=1)
    return {"tile_side": side, "tiled_s": tiled, "whole_s": whole, "ratio": tiled / whole,
            "identical": bool(np.array_equal(outs["t"], outs["w"]))}


PEAK_SCRIPT = """
import json, numpy as np, torch
torch.set_num_threads(2)
from tilemore.engine.host import OperatorHost
from tilemore.image import Image
from tilemore_operators.dncnn import DnCNNDenoise
def status(key):
    line = next(l for l in open("/proc/self/status") if l.startswith(key + ":"))
    return int(line.split()[1]) * 1024
host = OperatorHost(DnCNNDenoise)
host.run("warm", DnCNNDenoise.Params(), Image(np.zeros((64, 64, 3), np.uint8)))
open("/proc/self/clear_refs", "w").write("5")  # reset the peak: torch's import spikes it
before = status("VmRSS")
img = Image(np.random.default_rng(0).integers(0, 255, (10000, 10000, 3), dtype=np.uint8))
out, stats = host.run("big", DnCNNDenoise.Params(), img)
peak = status("VmHWM")
print(json.dumps({"baseline": before, "peak": peak, "seconds": stats.seconds,
                  "tile_side": host.tile_side()}))
"""


def peak_100mp() -> dict[str, float]:
    done = subprocess.run([sys.executable, "-c", PEAK_SCRIPT], capture_output=True, text=True,
                          check=True)
    r = json.loads(done.stdout.strip().splitlines()[-1])
    decoded = 10000 * 10000 * 3
    grown = r["peak"] - r["baseline"]
    return {**r, "decoded_bytes": decoded, "peak_growth_bytes": grown,
            "ratio": grown / decoded}


def smoke(args) -> None:
    """``--smoke``: the network's paths on a 256 px tensor, the operator tiled against whole
    on a 600×800 image, no 100 MP run: the code paths in seconds, the figures checked."""
    result = {"machine": machine(), "threads": 2, "throughput_mp_s": throughput(side=256),
              "operator": operator_precisions(side=256, crop=128),
              "tiling": tiled_vs_whole(shape=(600, 800))}
    t, ops = result["tiling"], result["operator"]
    print(f"SMOKE: {result['throughput_mp_s']}; tiled {t['tiled_s']:.2f} s, whole "
          f"{t['whole_s']:.2f} s ({t['tile_side']} px tiles)")
    finish("cnn_tiling", args, result, {
        "throughputs are finite and positive": positive(*result["throughput_mp_s"].values()),
        "tiled, whole and their ratio are finite and positive": positive(
            t["tiled_s"], t["whole_s"], t["ratio"]),
        "tiles stitch to exactly the whole-image output": t["identical"],
        "the operator's precisions run and stay within 0.2 dB": positive(
            *(v["mp_s"] for v in ops.values()), *(v["psnr_sigma25"] for v in ops.values()))
        and max(v["psnr_sigma25"] for v in ops.values())
        - min(v["psnr_sigma25"] for v in ops.values()) < 0.2})


def main() -> None:
    ap = arguments(__doc__)
    ap.add_argument("--skip-100mp", action="store_true")
    ap.add_argument("--only-100mp", action="store_true")
    ap.add_argument("--only-throughput", action="store_true",
                    help="network and operator throughput only (no 12 MP or 100 MP runs)")
    args = ap.parse_args()
    if args.smoke:
        return smoke(args)
    result = {"machine": machine(), "threads": 2}
    if not args.only_100mp:
        result |= {"throughput_mp_s": throughput(), "operator": operator_precisions()}
    if not (args.only_100mp or args.only_throughput):
        result["tiling"] = tiled_vs_whole()
    if not (args.skip_100mp or args.only_throughput):
        result["peak_100mp"] = peak_100mp()
    save("cnn_tiling_100mp" if args.only_100mp else "cnn_tiling", result)
    print(f"CNN denoiser on {machine()}, 2 threads")
    for name, v in result.get("throughput_mp_s", {}).items():
        print(f"  {name:30s} {v:6.2f} MP/s")
    ops = result.get("operator", {})
    for name, v in ops.items():
        print(f"  operator, {name:20s} {v['mp_s']:6.2f} MP/s, σ=25 PSNR "
              f"{v['psnr_sigma25']:.3f} dB" + ("  (shipped)" if v["shipped"] else ""))
    if "bfloat16" in ops:
        speed = ops["bfloat16"]["mp_s"] / ops["float32"]["mp_s"]
        lost = ops["float32"]["psnr_sigma25"] - ops["bfloat16"]["psnr_sigma25"]
        result["operator_speedup"], result["operator_db_lost"] = speed, lost
        save("cnn_tiling_100mp" if args.only_100mp else "cnn_tiling", result)
        print(f"  bfloat16 vs float32: {speed:.2f}× (target ≥ 1.5), {lost:.3f} dB lost "
              f"(target ≤ 0.1)")
    if "tiling" in result:
        t = result["tiling"]
        print(f"  12 MP tiled ({t['tile_side']} px tiles) {t['tiled_s']:.2f} s vs whole "
              f"{t['whole_s']:.2f} s: ratio {t['ratio']:.3f} (target ≤ 1.15)")
    if "peak_100mp" in result:
        p = result["peak_100mp"]
        print(f"  100 MP: peak memory growth {p['peak_growth_bytes'] / 2**20:.0f} MiB = "
              f"{p['ratio']:.2f}× the decoded {p['decoded_bytes'] / 2**20:.0f} MiB "
              f"(target ≤ 2.5×), {p['seconds']:.0f} s, {p['tile_side']} px tiles")


if __name__ == "__main__":
    main()
