"""Pipeline overhead: the denoised pipeline on Ray versus the same operator calls made
directly in one process (branches overlapped with threads), on a 12-megapixel JPEG.

Target: Ray ≤ 1.10× direct. Ray's one-time start-up and the replicas' set-up are excluded
(they happen once per service, not per image); one warm-up run on each side is discarded.

    python benchmarks/pipeline_overhead.py [--repeat 3] [--megapixels 12]
    python benchmarks/pipeline_overhead.py --smoke   # 0.3 MP, one run each: seconds
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor

from _common import arguments, finish, machine, median_time, parse, photo_jpeg, positive

from tilemore.catalog import Catalog
from tilemore.engine.ray_backend import RayBackend, ensure_ray
from tilemore.pipeline import build_graph, run_graph
from tilemore.settings import Settings

ADJUSTMENTS = {"master": {"algorithm": "denoised-multiformat", "strength": 0.8},
               "shifter": {"resize": {"width": 1600, "mode": "fit"}},
               "encoder": {"quality": 85}}


def direct(graph, data: bytes, pool: ThreadPoolExecutor) -> bytes:
    """The graph's operator calls, by hand, in this process."""
    ops = {t.id: t.operator() for t in graph.tasks}
    for op in ops.values():
        op.setup()
    params = {t.id: t.params for t in graph.tasks}
    image = ops["decode"].process(params["decode"], data)
    branches = graph.candidates("master/select")
    candidates = list(pool.map(lambda b: ops[b].process(params[b], image), branches))
    verdict = ops["master/select"].process(params["master/select"], image, *candidates)
    shifted = ops["shifter"].process(params["shifter"], candidates[verdict.pick])
    return ops["encoder"].process(params["encoder"], shifted).data


def main() -> None:
    ap = arguments(__doc__)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--megapixels", type=float, default=12.0)
    args = parse(ap, repeat=1, megapixels=0.3)

    width = int(math.sqrt(args.megapixels * 1e6 * 4 / 3))
    data = photo_jpeg(width, width * 3 // 4)
    graph = build_graph(Catalog.load().pipeline("denoised"), ADJUSTMENTS, "jpeg")
    settings = Settings()

    pool = ThreadPoolExecutor(max_workers=len(graph.candidates("master/select")))
    expected = direct(graph, data, pool)  # warm-up
    t_direct, all_direct = median_time(lambda: direct(graph, data, pool), args.repeat)

    ensure_ray(settings, [t.operator for t in graph.tasks], quiet=True)
    backend = RayBackend(settings)
    backend.prepare([t.operator for t in graph.tasks])
    same = run_graph(graph, data, backend).output.data == expected  # warm-up
    t_ray, all_ray = median_time(lambda: run_graph(graph, data, backend), args.repeat)
    backend.close()

    ratio = t_ray / t_direct
    result = {"machine": machine(), "megapixels": args.megapixels, "repeat": args.repeat,
              "direct_s": t_direct, "ray_s": t_ray, "ratio": ratio, "target": 1.10,
              "direct_all_s": all_direct, "ray_all_s": all_ray}
    print(f"{args.megapixels:g} MP denoised pipeline on {machine()}")
    print(f"  direct, one process (threads): {t_direct:.3f} s   (runs: "
          f"{', '.join(f'{t:.3f}' for t in all_direct)})")
    print(f"  Ray operator actors:           {t_ray:.3f} s   (runs: "
          f"{', '.join(f'{t:.3f}' for t in all_ray)})")
    print(f"  ratio {ratio:.3f} (target ≤ 1.10): {'met' if ratio <= 1.10 else 'NOT met'}")
    finish("pipeline_overhead", args, result, {
        "Ray's output is the direct calls' bytes": same,
        "times and ratio are finite and positive": positive(t_direct, t_ray, ratio),
        f"{args.repeat} runs each side": len(all_direct) == len(all_ray) == args.repeat})


if __name__ == "__main__":
    main()
