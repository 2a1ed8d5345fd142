"""Batch throughput: ``tilemore batch`` (Ray Data, an actor pool sized by the operators'
resources) versus a hand-written ``multiprocessing.Pool`` running the same operators on the
same cores, over 200 noisy photos.

Target: batch ≥ 0.95× the pool's throughput. Both sides read each JPEG from a folder, run the
denoised pipeline on it (decode; QC's look at the input, which rules out the repairs made for
other damage; the denoisers left in parallel on threads; QC, shifter, encoder) and write the
result to a folder, with one worker process per core and the same threads per
worker (OMP_NUM_THREADS=1, as Ray sets for a 1-CPU actor; OpenCV its default). Worker start-up and
operator set-up count on both sides; Ray's own start (once per cluster) does not, and is
reported. The batch also bills every task, writes each output with an fsync, and writes its
report. Rounds alternate the two sides; the medians are compared, end to end (200 images ÷
the whole time) and once the workers are up (from a tenth of the images done to the last).

    python benchmarks/batch.py [--images 200] [--size 512x384] [--rounds 3] [--workers N]
                               [--start-method fork|spawn|forkserver] [--pool-malloc default|batch]
    python benchmarks/batch.py --smoke   # 6 images of 128×96, one round: seconds, after start-up

``--start-method spawn`` makes the pool's workers import their modules as Ray's do;
``--pool-malloc batch`` gives them the heap thresholds a batch worker sets.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

from _common import arguments, finish, machine, parse, photo_jpeg, positive

from tilemore.batch import BatchJob, prepare, run
from tilemore.billing.ledger import Entry, open_ledger
from tilemore.catalog import Catalog
from tilemore.pipeline import build_graph
from tilemore.settings import Settings
from tilemore.store import open_store

ADJUSTMENTS = {"master": {"algorithm": "denoised-multiformat", "strength": 0.8},
               "shifter": {"resize": {"width": 192, "mode": "fit"}},
               "encoder": {"quality": 85}}
ACCOUNT = "bench"

# -- the baseline: a multiprocessing pool, the operators called by hand ----------------------

_worker: tuple | None = None


def _setup(malloc: str = "default") -> None:
    global _worker
    import torch

    if malloc == "batch":  # the heap thresholds a batch worker sets (tilemore.batch.worker)
        from tilemore.batch.worker import _reuse_heap_buffers

        _reuse_heap_buffers()

    torch.set_num_threads(1)  # as OMP_NUM_THREADS=1 says (Ray's, for a 1-CPU actor)
    graph = build_graph(Catalog.load().pipeline("denoised"), ADJUSTMENTS, "jpeg")
    ops = {t.id: t.operator() for t in graph.tasks}
    for op in ops.values():
        op.setup()
    branches = {c: graph.task(c).branch or c for c in graph.candidates("master/select")}
    _worker = (ops, {t.id: t.params for t in graph.tasks}, branches,
               ThreadPoolExecutor(max_workers=len(branches)))


def _one(paths: tuple[str, str]) -> int:
    """One image: the graph's operator calls in order, QC's look at the input first (the
    branches it rules out do not run, as in the service), the others on threads."""
    assert _worker is not None
    ops, params, branches, threads = _worker
    image = ops["decode"].process(params["decode"], Path(paths[0]).read_bytes())
    select, chosen = ops["master/select"], params["master/select"]
    run = set((select.plan(chosen, image, list(branches.values())) or {}).get("run")
              or branches.values())
    live = [b for b, name in branches.items() if name in run]
    if "candidates" in type(chosen).model_fields:  # told which it gets, as the service does
        chosen = chosen.model_copy(update={"candidates": [branches[b] for b in live]})
    candidates = list(threads.map(lambda b: ops[b].process(params[b], image), live))
    verdict = select.process(chosen, image, *candidates)
    shifted = ops["shifter"].process(params["shifter"], candidates[verdict.pick])
    data = ops["encoder"].process(params["encoder"], shifted).data
    Path(paths[1]).write_bytes(data)
    return len(data)


@dataclass
class Round:
    seconds: float  # from the start (no worker started yet) to the last image written
    done: list[float]  # when each image's outcome was seen, in order

    @property
    def first(self) -> float:
        return self.done[0]

    def steady(self) -> float:
        """Images per second once the workers are up: from a tenth of the images done to the
        last (the batch reports a block of images at a time, the pool one by one)."""
        k = len(self.done) // 10
        span = self.done[-1] - self.done[k]
        return (len(self.done) - 1 - k) / span if span > 0 else float("nan")  # one block


def pool_round(src: Path, dest: Path, workers: int, method: str, malloc: str) -> Round:
    """In a process of its own that never started Ray, so the pool may fork (the fastest
    start: the operators' modules are imported once, before the fork)."""
    # The environment Ray gives a 1-CPU worker: OMP_NUM_THREADS=1 (PyTorch and BLAS then
    # use one thread; OpenCV keeps its own pool), set before anything is imported.
    out = subprocess.run([sys.executable, __file__, "--pool-round", str(src), str(dest),
                          str(workers), method, malloc], check=True, capture_output=True,
                         text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    return Round(*json.loads(out.stdout.strip().splitlines()[-1]))


def _pool_round(src: Path, dest: Path, workers: int, method: str, malloc: str) -> Round:
    Catalog.load()  # imports every operator's module (torch, OpenCV): shared by a fork
    dest.mkdir()
    jobs = [(str(p), str(dest / f"{p.stem}.jpg")) for p in sorted(src.iterdir())]
    started = time.perf_counter()
    done = []
    with multiprocessing.get_context(method).Pool(workers, initializer=_setup,
                                                  initargs=(malloc,)) as pool:
        for _ in pool.imap_unordered(_one, jobs, chunksize=1):
            done.append(time.perf_counter() - started)
    return Round(time.perf_counter() - started, done)


# -- Tilemore's batch mode --------------------------------------------------------------------


def batch_round(src: Path, dest: Path, data_dir: Path, workers: int) -> Round:
    settings = Settings(data_dir=data_dir, ray_num_cpus=workers)
    with open_store(settings.db) as store:  # a fresh ledger each round: every charge is new
        store.create_domain(ACCOUNT)
    with open_ledger(settings.db) as ledger:
        ledger.append([Entry(ACCOUNT, "order", Decimal(1000), reference="bench")])
    started = time.perf_counter()
    done: list[float] = []
    job = BatchJob(str(src), str(dest), ADJUSTMENTS, "jpeg", account=ACCOUNT, workers=workers)
    report = run(prepare(job, settings), lambda _: done.append(time.perf_counter() - started))
    seconds = time.perf_counter() - started
    counts = report.counts()
    assert counts["done"] == counts["inputs"], report.skipped()[:3]
    return Round(seconds, done)


def main() -> None:
    if sys.argv[1:2] == ["--pool-round"]:
        r = _pool_round(Path(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4]), *sys.argv[5:7])
        print(json.dumps([r.seconds, r.done]))
        return
    ap = arguments(__doc__)
    ap.add_argument("--images", type=int, default=200)
    ap.add_argument("--size", default="512x384")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--start-method", default="fork", choices=["fork", "spawn", "forkserver"],
                    help="how the pool starts its processes (default: fork, the fastest)")
    ap.add_argument("--pool-malloc", default="default", choices=["default", "batch"],
                    help="the pool's heap thresholds: glibc's (default) or the batch's")
    args = parse(ap, images=6, size="128x96", rounds=1)
    width, height = (int(v) for v in args.size.split("x"))
    n = args.images

    # Ray's workers run at niceness 15 by default; on a machine shared with other work that
    # starves them and not the pool. The same priority on both sides.
    os.environ.setdefault("RAY_worker_niceness", "0")
    import ray  # not in the pool's process

    Catalog.load()  # as the pool's parent does, before the clock: the modules are imported
    root = Path(tempfile.mkdtemp(prefix="tilemore-batch-bench-"))
    try:
        src = root / "photos"
        src.mkdir()
        for i in range(n):
            (src / f"photo{i:04d}.jpg").write_bytes(photo_jpeg(width, height, sigma=15, seed=i))
        started = time.perf_counter()
        # A cluster of its own ("local"), even where another is up on this machine.
        ray.init(address="local", num_cpus=args.workers, include_dashboard=False,
                 logging_level=logging.ERROR, log_to_driver=False)
        ray_start = time.perf_counter() - started

        pools, batches = [], []
        for r in range(args.rounds):
            pools.append(pool_round(src, root / f"pool{r}", args.workers, args.start_method,
                                    args.pool_malloc))
            batches.append(batch_round(src, root / f"batch{r}", root / f"data{r}",
                                       args.workers))
            print(f"round {r + 1}: pool {pools[-1].seconds:.2f} s (first image "
                  f"{pools[-1].first:.2f} s), batch {batches[-1].seconds:.2f} s (first image "
                  f"{batches[-1].first:.2f} s)", flush=True)
        same = sum((root / "pool0" / p.name).read_bytes() == p.read_bytes()
                   for p in (root / "batch0").glob("*.jpg"))
    finally:
        shutil.rmtree(root, ignore_errors=True)

    def med(values) -> float:
        return statistics.median(values)

    pool_rate = med(n / r.seconds for r in pools)
    batch_rate = med(n / r.seconds for r in batches)
    pool_steady = med(r.steady() for r in pools)
    batch_steady = med(r.steady() for r in batches)
    ratio, steady_ratio = batch_rate / pool_rate, batch_steady / pool_steady
    result = {
        "machine": machine(), "images": n, "size": args.size, "workers": args.workers,
        "rounds": args.rounds, "pool_start_method": args.start_method,
        "pool_malloc": args.pool_malloc,
        "ray_start_s": round(ray_start, 2),
        "pool_s": [round(r.seconds, 2) for r in pools],
        "pool_first_image_s": [round(r.first, 2) for r in pools],
        "batch_s": [round(r.seconds, 2) for r in batches],
        "batch_first_image_s": [round(r.first, 2) for r in batches],
        "pool_images_per_s": round(pool_rate, 3), "batch_images_per_s": round(batch_rate, 3),
        "throughput_ratio": round(ratio, 3),
        "pool_steady_images_per_s": round(pool_steady, 3),
        "batch_steady_images_per_s": round(batch_steady, 3),
        "steady_ratio": round(steady_ratio, 3), "identical_outputs": same,
        "target": "batch >= 0.95x the pool's throughput", "met": ratio >= 0.95,
    }
    variant = "".join(f"-{v}" for v, default in ((args.start_method, "fork"),
                                                 (f"{args.pool_malloc}-malloc",
                                                  "default-malloc")) if v != default)
    print(f"{n} images of {args.size}, {args.workers} workers, {machine()}; medians of "
          f"{args.rounds} rounds:")
    print(f"  multiprocessing pool ({args.start_method}, {args.pool_malloc} malloc): "
          f"{pool_rate:.2f} images/s "
          f"({pool_steady:.2f} once its workers are up)")
    print(f"  tilemore batch: {batch_rate:.2f} images/s ({batch_steady:.2f} once its workers "
          f"are up); Ray's start {ray_start:.2f} s, not counted")
    verdict = "met" if ratio >= 0.95 else "NOT met"
    print(f"  throughput ratio {ratio:.3f} (target >= 0.95: {verdict}); once the workers are "
          f"up {steady_ratio:.3f}; identical outputs {same}/{n}")
    rounds = [len(r.done) for r in pools + batches]
    path = finish(f"batch{variant}", args, result, {
        f"every image done in every round, not {rounds}": rounds == [n] * (2 * args.rounds),
        f"the batch's outputs are the pool's bytes ({same}/{n})": same == n,
        "rates and the throughput ratio are finite and positive": positive(
            pool_rate, batch_rate, ratio)})
    print(f"  saved {path}")


if __name__ == "__main__":
    main()
