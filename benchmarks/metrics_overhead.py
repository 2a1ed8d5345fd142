"""What metrics cost: the example pipeline through the service on Ray, with metrics recorded
(Ray's sink in the conductor, every blob call timed in the conductor and the replicas)
against the same service with metrics off, in the same Ray session.

Rounds alternate (off, on, off, on, …) so that drift in the machine's load hits both alike;
each round submits fresh images (the same image would be an idempotent replay), waits for
all, and is timed from first submission to last done. Target: on / off ≤ 1.02 (medians).

    python benchmarks/metrics_overhead.py [--threads 24] [--rounds 6] [--size 320x240]
    python benchmarks/metrics_overhead.py --smoke   # 2 threads of 160×120, one round each
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

import ray
from _common import arguments, finish, machine, parse, photo_jpeg, positive

sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))
from support.service_harness import Service  # noqa: E402

from tilemore.engine.ray_backend import RayBackend  # noqa: E402
from tilemore.metrics import NO_METRICS, open_metrics  # noqa: E402

ENV = {"adjustments": {"shifter": {"resize": {"width": 160}}}, "output_format": "jpeg"}


def round_seconds(svc: Service, images: list[bytes]) -> float:
    started = time.perf_counter()
    ids = [svc.submit(img, ENV).json()["thread_id"] for img in images]
    for tid in ids:
        assert svc.wait(tid, timeout=600)["status"] == "done"
    return time.perf_counter() - started


def main() -> None:
    ap = arguments(__doc__)
    ap.add_argument("--threads", type=int, default=24)
    ap.add_argument("--rounds", type=int, default=6, help="rounds of each kind")
    ap.add_argument("--size", default="320x240")
    args = parse(ap, threads=2, rounds=1, size="160x120")
    w, h = (int(x) for x in args.size.split("x"))
    ray.init(num_cpus=32, include_dashboard=True, logging_level="ERROR", log_to_driver=False)
    root = Path(tempfile.mkdtemp(prefix="tilemore-metrics-"))
    services = {
        "off": Service(root / "off", credits="100000", backend=RayBackend, metrics=False,
                       recorder=NO_METRICS),
        "on": Service(root / "on", credits="100000", backend=RayBackend, metrics=True,
                      recorder=open_metrics(True)),
    }
    assert services["on"].conductor.metrics.enabled
    times: dict[str, list[float]] = {"off": [], "on": []}
    try:
        for svc in services.values():  # replicas up and warm before timing
            round_seconds(svc, [photo_jpeg(w, h, seed=10_000 + i) for i in range(4)])
        seed = 0
        for r in range(args.rounds):
            for kind in (("off", "on") if r % 2 == 0 else ("on", "off")):
                images = [photo_jpeg(w, h, seed=seed + i) for i in range(args.threads)]
                seed += args.threads
                times[kind].append(round_seconds(services[kind], images))
                print(f"  round {r + 1} metrics {kind:>3}: {times[kind][-1]:.2f} s", flush=True)
    finally:
        for svc in services.values():
            svc.close()
        ray.shutdown()
    off, on = statistics.median(times["off"]), statistics.median(times["on"])
    ratio = on / off
    result = {"machine": machine(), "threads": args.threads, "size": args.size,
              "seconds": times, "ratio": ratio}
    print(f"{args.threads} threads × {args.rounds} rounds each of the example pipeline at "
          f"{args.size}, on {machine()}")
    print(f"  metrics off: median {off:.2f} s; on: median {on:.2f} s; ratio {ratio:.3f} "
          "(target ≤ 1.02)")
    counts = {kind: len(t) for kind, t in times.items()}
    finish("metrics_overhead", args, result, {
        f"{args.rounds} rounds of each kind, not {counts}":
            counts == {"off": args.rounds, "on": args.rounds},
        "times and ratio are finite and positive": positive(*times["off"], *times["on"], ratio)})


if __name__ == "__main__":
    main()
