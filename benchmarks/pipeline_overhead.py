"""Pipeline overhead: the denoised pipeline on Ray versus the same operator calls made
directly in one process (branches overlapped with threads), on a 12-megapixel JPEG.

Target: Ray ≤ 1.10× direct. Ray's one-time start-up and the replicas' set-up are excluded
(they happen once per service, not per image); one warm-up run on each side is discarded.
The timed runs alternate (direct, Ray, direct, ...), so load from elsewhere on the machine
falls on both sides alike; each round's ratio is reported too.
Both sides do the same work with the same CPUs: each operator is told the CPUs its Ray
replica holds (``context.cpus``; the CNNs' CPU fallback sets torch's threads from it), and
QC's plan skips the same branches (on the noisy photo, the deblocker, impulse and keep).

    python benchmarks/pipeline_overhead.py [--repeat 3] [--megapixels 12]
    python benchmarks/pipeline_overhead.py --smoke   # 0.3 MP, one run each: seconds
"""

from __future__ import annotations

import dataclasses
import statistics
from concurrent.futures import ThreadPoolExecutor

import ray
from _common import (
    arguments,
    finish,
    machine,
    median_time,
    parse,
    photo_jpeg,
    photo_size,
    positive,
)

from tilemore.catalog import Catalog
from tilemore.engine.ray_backend import RayBackend, local_cpus
from tilemore.operator import Operator, OperatorContext
from tilemore.pipeline import build_graph, run_graph
from tilemore.settings import Settings

ADJUSTMENTS = {"master": {"algorithm": "denoised-multiformat", "strength": 0.8},
               "shifter": {"resize": {"width": 1600, "mode": "fit"}},
               "encoder": {"quality": 85}}


def set_up(graph, settings: Settings) -> dict[str, Operator]:
    """One set-up operator per task (as one replica each on Ray, set up before timing), each
    given the CPUs its Ray replica holds: without a GPU, a CNN its CPU fallback's."""
    ops = {}
    for t in graph.tasks:
        op = ops[t.id] = t.operator()
        ctx = OperatorContext.for_operator(t.operator, settings)
        res = t.operator.resources
        cpus = res.num_cpus if ctx.device == "cuda" else res.cpus_without_gpu()
        op.context = dataclasses.replace(ctx, cpus=cpus)
        op.setup()
    return ops


def direct(graph, ops: dict[str, Operator], data: bytes,
           pool: ThreadPoolExecutor) -> tuple[bytes, list[str]]:
    """The graph's operator calls, by hand, in this process; QC's plan first, as on Ray, and
    only the branches it keeps run. Returns the output and the branches that ran."""
    params = {t.id: t.params for t in graph.tasks}
    image = ops["decode"].process(params["decode"], data)
    select = "master/select"
    branches = graph.candidates(select)
    names = [graph.task(b).branch or b for b in branches]
    plan = ops[select].plan(params[select], image, names)
    keep = set(plan["run"]) if plan and plan.get("run") else set(names)  # as run_graph does
    live = [(b, n) for b, n in zip(branches, names, strict=True) if n in keep]
    candidates = list(pool.map(lambda b: ops[b].process(params[b], image), [b for b, _ in live]))
    qc = params[select].model_copy(update={"candidates": tuple(n for _, n in live)})
    verdict = ops[select].process(qc, image, *candidates)
    shifted = ops["shifter"].process(params["shifter"], candidates[verdict.pick])
    return ops["encoder"].process(params["encoder"], shifted).data, [b for b, _ in live]


def main() -> None:
    ap = arguments(__doc__)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--megapixels", type=float, default=12.0)
    args = parse(ap, repeat=1, megapixels=0.3)

    data = photo_jpeg(*photo_size(args.megapixels))
    graph = build_graph(Catalog.load().pipeline("denoised"), ADJUSTMENTS, "jpeg")
    settings = Settings()

    pool = ThreadPoolExecutor(max_workers=len(graph.candidates("master/select")))
    ops = set_up(graph, settings)
    expected, ran_direct = direct(graph, ops, data, pool)  # warm-up

    # A Ray of its own: ray.init() without an address joins any other on the machine.
    ray.init(address="local", num_cpus=settings.ray_num_cpus or local_cpus(
                 [t.operator for t in graph.tasks]),
             include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    backend = RayBackend(settings)
    backend.prepare([t.operator for t in graph.tasks])
    warm = run_graph(graph, data, backend)  # warm-up
    same = warm.output.data == expected
    ran_ray = [b for b in graph.candidates("master/select") if b in warm.stats]
    all_direct, all_ray = [], []
    for _ in range(args.repeat):  # alternated rounds
        all_direct += median_time(lambda: direct(graph, ops, data, pool), 1)[1]
        all_ray += median_time(lambda: run_graph(graph, data, backend), 1)[1]
    backend.close()

    t_direct, t_ray = statistics.median(all_direct), statistics.median(all_ray)
    ratio = t_ray / t_direct
    rounds = [r / d for r, d in zip(all_ray, all_direct, strict=True)]
    result = {"machine": machine(), "megapixels": args.megapixels, "repeat": args.repeat,
              "direct_s": t_direct, "ray_s": t_ray, "ratio": ratio, "target": 1.10,
              "direct_all_s": all_direct, "ray_all_s": all_ray, "round_ratios": rounds,
              "branches_run": ran_ray, "cpus": {t.id: t.operator.resources.cpus_without_gpu()
                                                for t in graph.tasks}}
    print(f"{args.megapixels:g} MP denoised pipeline on {machine()}")
    print(f"  direct, one process (threads): {t_direct:.3f} s   (runs: "
          f"{', '.join(f'{t:.3f}' for t in all_direct)})")
    print(f"  Ray operator actors:           {t_ray:.3f} s   (runs: "
          f"{', '.join(f'{t:.3f}' for t in all_ray)})")
    print(f"  branches run on both sides: {', '.join(ran_ray)}")
    print(f"  each round's ratio: {', '.join(f'{r:.3f}' for r in rounds)}")
    print(f"  ratio {ratio:.3f} (target ≤ 1.10): {'met' if ratio <= 1.10 else 'NOT met'}")
    finish("pipeline_overhead", args, result, {
        "Ray's output is the direct calls' bytes": same,
        "both sides ran the same branches": ran_ray == ran_direct,
        "times and ratio are finite and positive": positive(t_direct, t_ray, ratio),
        f"{args.repeat} runs each side": len(all_direct) == len(all_ray) == args.repeat})


if __name__ == "__main__":
    main()
