"""What rate limiting costs, and how well a limit holds across replicas.

1. ``GET /threads/{id}`` throughput with the limiter on (a limit set high enough that nothing
   is refused, so every request pays for its bucket, its RateLimit fields and its replica's
   syncs with the database) against the limiter switched off (``TILEMORE_RATE_LIMITING=
   false``), same machine, same run. Target: on / off ≥ 0.95 (≤ 5 % cost). Each mode is the
   real HTTP service in a child process (uvicorn, SQLite,
   ``tests/support/service_harness.py``); rounds alternate (on, off, off, on, …) so drift
   in the machine's load hits both alike, and the ratio is the median of the rounds'
   throughputs.
2. Three replicas sharing one limit through one database (SQLite), with uneven load that
   moves between them, on simulated time: the most and fewest requests admitted in any 10 s
   window, against the limit. Target: within 10 %.

    python benchmarks/rate_limit.py [--requests 4000] [--clients 16] [--rounds 6]
    python benchmarks/rate_limit.py --smoke      # tiny load, one round each: seconds
"""

from __future__ import annotations

import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
from _common import arguments, finish, machine, parse, positive, process_cpu

sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))
from support.waits import close_child  # noqa: E402

HIGH = 1_000_000  # requests a second: the limiter does all its work, refuses nothing


# -- the service, in a child process -------------------------------------------------------


def serve(root: Path, on: bool) -> None:
    """Run the service until stdin closes; print its URL, token and a done thread's id."""
    from support.images import encode, photo
    from support.service_harness import Service

    svc = Service(root, rate_limiting=on, rate_limit_requests_per_second=HIGH)
    sent = svc.submit(encode(photo(64, 48), "PNG"), {"adjustments": {}, "output_format": "png"})
    thread = svc.wait(sent.json()["thread_id"])
    print(json.dumps({"url": svc.url, "token": svc.token, "thread": thread["thread_id"],
                      "status": thread["status"]}), flush=True)
    try:
        sys.stdin.read()
    finally:
        svc.close()


class Child:
    def __init__(self, on: bool) -> None:
        root = tempfile.mkdtemp(prefix="tilemore-ratelimit-")
        self.proc = subprocess.Popen([sys.executable, __file__, "--serve", root,
                                      "on" if on else "off"],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()  # type: ignore[union-attr]
        if not line:
            raise RuntimeError("the service did not start")
        info = json.loads(line)
        if info["status"] != "done":
            raise RuntimeError(f"the service's thread ended {info['status']}")
        self.url = f"{info['url']}/threads/{info['thread']}"
        self.headers = {"Authorization": f"Bearer {info['token']}"}

    def cpu_seconds(self) -> float:
        """The service process's CPU time so far (user + system, all its threads)."""
        return process_cpu(self.proc.pid)[1]  # type: ignore[index]

    def close(self) -> None:
        close_child(self.proc)


async def load(url: str, headers: dict[str, str], total: int, clients: int) -> dict:
    statuses: dict[int, int] = {}
    limited = 0
    remaining = total
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=clients)) as s:
        async def client() -> None:
            nonlocal remaining, limited
            while remaining > 0:
                remaining -= 1
                async with s.get(url, headers=headers) as resp:
                    await resp.read()
                    statuses[resp.status] = statuses.get(resp.status, 0) + 1
                    limited += "RateLimit" in resp.headers

        began = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(clients)))
        wall = time.perf_counter() - began
    return {"per_second": total / wall, "statuses": statuses, "with_fields": limited}


# -- the limit across replicas, on simulated time --------------------------------------------


def replicas_hold(seconds: float, rate: float = 100.0) -> dict:
    """Three replicas on one SQLite file: replica 0 offered 300/s, replica 1 60/s, replica 2
    nothing for the first 40 % of the time then 200/s."""
    from tilemore.api.ratelimit import RateLimited, RateLimiter
    from tilemore.store.sqlite import SQLiteStore

    now = [0.0]
    path = Path(tempfile.mkdtemp(prefix="tilemore-ratelimit-")) / "tilemore.db"
    stores = [SQLiteStore(path) for _ in range(3)]
    limiters = [RateLimiter(s, replica=f"r{i}", requests_per_second=rate,
                            clock=lambda: now[0], wall=lambda: 1.8e9 + now[0])
                for i, s in enumerate(stores)]
    offered = [lambda t: 300.0, lambda t: 60.0, lambda t: 0.0 if t < 0.4 * seconds else 200.0]
    debt, admitted, step = [0.0] * 3, [], 0.002
    while now[0] < seconds:
        for i, limiter in enumerate(limiters):
            debt[i] += offered[i](now[0]) * step
            while debt[i] >= 1:
                debt[i] -= 1
                limiter.maybe_sync()
                try:
                    limiter.admit("bench", "bench")
                    admitted.append(now[0])
                except RateLimited:
                    pass
        now[0] += step
    for s in stores:
        s.close()
    counts, start = [], 0.0
    while start + 10 <= seconds + 1e-9:
        counts.append(sum(start <= t < start + 10 for t in admitted))
        start += 0.1
    return {"limit_per_10s": rate * 10, "most_in_10s": max(counts),
            "fewest_in_10s": min(counts), "most_ratio": max(counts) / (rate * 10),
            "fewest_ratio": min(counts) / (rate * 10), "simulated_seconds": seconds,
            "offered_per_second": "300 + 60 + (0, then 200)"}


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--serve":
        serve(Path(sys.argv[2]), sys.argv[3] == "on")
        return
    ap = arguments(__doc__)
    ap.add_argument("--requests", type=int, default=4000, help="requests per round")
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=6, help="rounds per mode")
    ap.add_argument("--simulated-seconds", type=float, default=30.0)
    args = parse(ap, requests=200, clients=4, rounds=1, simulated_seconds=12.0)

    children = {"on": Child(True), "off": Child(False)}
    try:
        for child in children.values():  # warm-up: connections, caches, first syncs
            asyncio.run(load(child.url, child.headers, min(200, args.requests), args.clients))
        rounds: dict[str, list[dict]] = {"on": [], "off": []}
        order = ["on", "off"]
        for i in range(args.rounds):
            for mode in order if i % 2 == 0 else order[::-1]:
                child = children[mode]
                cpu = child.cpu_seconds()
                done = asyncio.run(load(child.url, child.headers, args.requests, args.clients))
                done["cpu_ms_per_request"] = 1000 * (child.cpu_seconds() - cpu) / args.requests
                rounds[mode].append(done)
    finally:
        for child in children.values():
            child.close()
    on = statistics.median(r["per_second"] for r in rounds["on"])
    off = statistics.median(r["per_second"] for r in rounds["off"])
    # The service's CPU per request: steadier than throughput on a machine shared with
    # other work (what the limiter costs is CPU in the service).
    cpu_on = statistics.median(r["cpu_ms_per_request"] for r in rounds["on"])
    cpu_off = statistics.median(r["cpu_ms_per_request"] for r in rounds["off"])
    pairs = [a["per_second"] / b["per_second"] for a, b in zip(rounds["on"], rounds["off"],
                                                                strict=True)]
    held = replicas_hold(args.simulated_seconds)
    out = {"machine": machine(), "requests": args.requests, "clients": args.clients,
           "rounds": args.rounds, "on_per_second": on, "off_per_second": off,
           "ratio": on / off, "cost_percent": 100 * (1 - on / off),
           "pair_ratio_median": statistics.median(pairs), "pair_ratios": pairs,
           "cpu_ms_per_request_on": cpu_on, "cpu_ms_per_request_off": cpu_off,
           "cpu_ratio": cpu_off / cpu_on,
           "rounds_detail": rounds, "replicas": held}
    print(f"GET /threads/{{id}}, {args.requests} requests x {args.rounds} rounds per mode at "
          f"{args.clients} clients on {machine()}")
    print(f"  limiter on  {on:8.0f} req/s (median)\n  limiter off {off:8.0f} req/s (median)\n"
          f"  on / off    {on / off:8.3f}  (target ≥ 0.95: ≤ 5 % cost); median of the "
          f"round pairs' ratios {statistics.median(pairs):.3f}")
    print(f"  service CPU per request: on {cpu_on:.3f} ms, off {cpu_off:.3f} ms: off / on "
          f"{cpu_off / cpu_on:.3f}")
    print(f"three replicas, one limit of {held['limit_per_10s'] / 10:g}/s, moving load: "
          f"{held['fewest_in_10s']}..{held['most_in_10s']} admitted per 10 s window "
          f"(limit {held['limit_per_10s']:g}; target within 10 %)")
    every = {mode: all(r["statuses"] == {200: args.requests} for r in rs)
             for mode, rs in rounds.items()}
    finish("rate_limit", args, out, {
        "every request answered 200 (none limited, none failed)": all(every.values()),
        "the limiter's answers carry RateLimit fields, the others none":
            all(r["with_fields"] == args.requests for r in rounds["on"])
            and all(r["with_fields"] == 0 for r in rounds["off"]),
        "throughputs are positive": positive(on, off, cpu_on, cpu_off),
        "three replicas hold the limit within 10 % over every 10 s window":
            0.9 <= held["fewest_ratio"] and held["most_ratio"] <= 1.1,
    })


if __name__ == "__main__":
    main()
