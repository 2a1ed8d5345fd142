"""Chaos on a multi-node cluster (``ray.cluster_utils.Cluster`` on this machine): 100
threads through the HTTP API while a worker node is killed ungracefully every 10 s (and a
fresh one joins), against the same 100-thread load undisturbed, in the same run.

Targets: 100 % of threads done, 0 duplicate charges, total time ≤ 2× undisturbed; recovery
(from a node's loss to each affected task running again elsewhere) ≤ 5 s + Ray's
failure-detection timeout (here 1 s health checks × 3 misses). Also reported: the time until
every replica of the lost node is alive on another node, and the nodes each operator's
replicas start on (``SPREAD``: as many as it has replicas; checked).

    python benchmarks/chaos.py [--threads 100] [--kill-every 10] [--max-kills N]
    python benchmarks/chaos.py --smoke   # 4 threads, one kill: a minute, most of it start-up
"""

from __future__ import annotations

import random
import sys
import tempfile
import time
from pathlib import Path

import ray
from _common import arguments, finish, machine, parse, positive
from ray.cluster_utils import Cluster

TESTS = Path(__file__).parents[1] / "tests"
sys.path.insert(0, str(TESTS))  # the tests' service harness and images

from cluster.nodes import WORKER_CPUS, add_worker, kill_and_replace, node_of  # noqa: E402
from support.images import encode, noisy, photo  # noqa: E402
from support.service_harness import Service, http  # noqa: E402

from tilemore.engine import ray_private  # noqa: E402
from tilemore.engine.ray_backend import RayBackend  # noqa: E402
from tilemore.pipeline import build_graph  # noqa: E402

WORKERS = ("cpu", "cpu", "gpu", "gpu")  # stand-in GPU nodes run the pipeline's gpu-invert
SYSTEM_CONFIG = {"health_check_period_ms": 1000, "health_check_failure_threshold": 3,
                 "health_check_initial_delay_ms": 1000, "health_check_timeout_ms": 1000}
DETECTION_S = 3.0
ENV = {"adjustments": {}, "pipeline": "chaos", "output_format": "png"}


def actors_on(node_id: str) -> list[str]:
    table = ray_private.actor_table()
    return [a for a, info in table.items()
            if info["State"] == "ALIVE" and info["Address"]["NodeID"] == node_id]


def alive_elsewhere(actor_ids: list[str], dead: str) -> bool:
    for a in actor_ids:
        info = ray_private.actor_table(a)
        if info.get("State") != "ALIVE" or info["Address"]["NodeID"] == dead:
            return False
    return True


def run(svc: Service, cluster: Cluster, n: int, seed: int, kill_every: float | None,
        rng: random.Random, max_kills: int | None = None) -> dict:
    imgs = [encode(noisy(photo(192, 128), 10, seed=seed * 1000 + i), "PNG") for i in range(n)]
    started = time.monotonic()
    ids = [svc.submit(img, ENV).json()["thread_id"] for img in imgs]
    kills, recoveries, pending = 0, [], []  # pending: (kill time, node, its actors)
    killed: list[float] = []  # time.time() of each kill
    next_kill = started + (kill_every or 1e9)
    while True:
        bodies = [http("GET", f"{svc.url}/threads/{tid}", headers=svc.auth()).json()
                  for tid in ids]
        now = time.monotonic()
        for item in list(pending):
            if alive_elsewhere(item[2], item[1]):
                recoveries.append(now - item[0])
                pending.remove(item)
        if all(b["status"] != "processing" for b in bodies):
            break
        if now >= next_kill and (max_kills is None or kills < max_kills):
            victim = rng.choice(sorted(cluster.worker_nodes, key=lambda x: x.node_id))
            on_it = actors_on(victim.node_id)
            killed.append(time.time())
            killed_mono = time.monotonic()
            kill_and_replace(cluster, victim)  # a fresh node of its kind joins
            pending.append((killed_mono, victim.node_id, on_it))
            kills += 1
            next_kill = time.monotonic() + kill_every
        time.sleep(0.25)
    seconds = time.monotonic() - started
    today = time.strftime("%Y-%m-%d", time.gmtime())
    ops = http("GET", f"{svc.url}/billing/operations?date={today}",
               headers=svc.auth()).json()["operations"]
    charged = [(o["thread_id"], o["task_id"]) for o in ops if o["thread_id"] in set(ids)]
    tasks_per_thread = len(bodies[0]["tasks"])
    # The affected tasks are those whose run was lost with its replica: each such loss is
    # in the error index (a retried attempt, ReplicaLost). Recovery: from the kill before the
    # loss to the task's successful run starting on its new replica (the worker's clock).
    task_recovery = []
    for tid in ids:
        lost = svc.errors.search_errors("ReplicaLost", domain=None, thread_id=tid, limit=100)
        tasks = {t.task_id: t for t in svc.store.get_thread(tid).tasks}
        for task_id in {h.record.task_id for h in lost}:
            at = max(h.record.at for h in lost if h.record.task_id == task_id)
            kill = max((k for k in killed if k <= at), default=None)
            if kill is not None and tasks[task_id].started_at is not None:
                task_recovery.append(tasks[task_id].started_at - kill)
    return {"threads": n, "seconds": seconds, "done": sum(b["status"] == "done" for b in bodies),
            "charges": len(charged), "duplicate_charges": len(charged) - len(set(charged)),
            "missing_charges": n * tasks_per_thread - len(set(charged)), "kills": kills,
            "recovery_s": recoveries, "task_recovery_s": task_recovery}


def main() -> None:
    ap = arguments(__doc__)
    ap.add_argument("--threads", type=int, default=100)
    ap.add_argument("--kill-every", type=float, default=10.0)
    ap.add_argument("--max-kills", type=int, help="stop killing after this many (default: none)")
    # smoke: the first kill as soon as the threads are in, while they are running
    args = parse(ap, threads=4, kill_every=0.25, max_kills=1)
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 0, "include_dashboard": False, "_system_config": SYSTEM_CONFIG})
    cluster.kinds = {}
    for kind in WORKERS:
        add_worker(cluster, kind)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, logging_level="ERROR", log_to_driver=False)
    svc = Service(Path(tempfile.mkdtemp(prefix="tilemore-chaos-")), credits="100000",
                  pipeline_paths=[TESTS / "data" / "chaos.yaml"], replicas=2,
                  tile_memory_bytes=2**22, backend=RayBackend)
    try:
        graph = build_graph(svc.catalog.pipeline("chaos"), {}, "png")
        svc.backend.prepare([t.operator for t in graph.tasks])
        pools = {op.name: svc.backend.replicas(op) for op in {t.operator for t in graph.tasks}}
        nodes = {name: len({node_of(a) for a in pool}) for name, pool in pools.items()}
        replicas = {name: len(pool) for name, pool in pools.items()}
        rng = random.Random(2026)
        calm = run(svc, cluster, args.threads, 1, None, rng)
        chaos = run(svc, cluster, args.threads, 2, args.kill_every, rng, args.max_kills)
    finally:
        svc.close()
        ray.shutdown()
        cluster.shutdown()
    ratio = chaos["seconds"] / calm["seconds"]
    rec = chaos["recovery_s"]
    worst = max(rec) if rec else float("nan")
    result = {"machine": machine(), "undisturbed": calm, "chaos": chaos, "ratio": ratio,
              "detection_timeout_s": DETECTION_S, "kill_every_s": args.kill_every,
              "replica_nodes": nodes, "replicas": replicas}
    print(f"{args.threads} threads, {len(WORKERS)} worker nodes × {WORKER_CPUS} logical CPUs, "
          f"on {machine()}")
    print(f"  nodes each operator's replicas started on: "
          f"{', '.join(f'{k} {v}/{replicas[k]}' for k, v in sorted(nodes.items()))}")
    print(f"  undisturbed: {calm['seconds']:.1f} s, {calm['done']} done")
    print(f"  a node killed every {args.kill_every:g} s: {chaos['seconds']:.1f} s, "
          f"{chaos['done']} done, {chaos['kills']} kills, {chaos['duplicate_charges']} duplicate"
          f" and {chaos['missing_charges']} missing charges")
    tasks = chaos["task_recovery_s"]
    print(f"  ratio {ratio:.2f} (target ≤ 2.0)")
    print(f"  recovery, kill → an affected task running again elsewhere: worst "
          f"{max(tasks, default=float('nan')):.1f} s, mean {sum(tasks) / max(len(tasks), 1):.1f}"
          f" s over {len(tasks)} tasks (target ≤ 5 s + {DETECTION_S:.0f} s detection)")
    print(f"  kill → every replica of the lost node alive elsewhere: worst {worst:.1f} s, mean "
          f"{sum(rec) / max(len(rec), 1):.1f} s over {len(rec)} kills")
    checks = {"the ratio is finite and positive": positive(ratio),
              f"at least one kill (at most {args.max_kills}), not {chaos['kills']}":
                  1 <= chaos["kills"] <= (args.max_kills or chaos["kills"]),
              f"each operator's replicas on as many nodes (SPREAD): {nodes}":
                  nodes == replicas}
    for name, r in (("undisturbed", calm), ("chaos", chaos)):
        checks[f"{name}: {r['done']}/{args.threads} done"] = r["done"] == args.threads
        checks[f"{name}: {r['duplicate_charges']} duplicate charges"] = not r["duplicate_charges"]
        checks[f"{name}: {r['missing_charges']} missing charges"] = not r["missing_charges"]
    finish("chaos", args, result, checks)


if __name__ == "__main__":
    main()
