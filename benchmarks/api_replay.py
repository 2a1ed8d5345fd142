"""Replays and status reads: throughput and latency of the Tilemore API at 64 concurrent
clients, against a no-op Ray Serve endpoint on the same machine in the same run.

Targets: throughput ≥ 0.8× the no-op endpoint's; p99 ≤ 25 ms.

    python benchmarks/api_replay.py [--requests 3000] [--concurrency 64]
    python benchmarks/api_replay.py --smoke   # 40 requests at 4 clients: seconds, after start-up
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import statistics
import time

import aiohttp
from _common import arguments, finish, machine, parse, photo_jpeg, positive
from _service import start_service
from fastapi import FastAPI, Request
from ray import serve

noop_app = FastAPI()


@noop_app.get("/")
async def noop() -> dict:
    return {"status": "ok"}


@noop_app.post("/")
async def noop_post(request: Request) -> dict:
    await request.body()  # the same request a replay is, read and dropped
    return {"status": "ok"}


@serve.deployment(ray_actor_options={"num_cpus": 0.25}, max_ongoing_requests=256)
@serve.ingress(noop_app)
class NoOp:
    pass


async def load(method: str, url: str, body: bytes | None, headers: dict, total: int,
               concurrency: int) -> dict:
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    remaining = total
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        async def client() -> None:
            nonlocal remaining
            while remaining > 0:
                remaining -= 1
                started = time.perf_counter()
                async with session.request(method, url, data=body, headers=headers) as resp:
                    await resp.read()
                    statuses[resp.status] = statuses.get(resp.status, 0) + 1
                latencies.append(time.perf_counter() - started)

        began = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(concurrency)))
        wall = time.perf_counter() - began
    latencies.sort()
    return {"rps": total / wall, "p50_ms": 1000 * statistics.median(latencies),
            "p99_ms": 1000 * latencies[int(0.99 * (len(latencies) - 1))], "statuses": statuses}


def main() -> None:
    ap = arguments(__doc__)
    ap.add_argument("--requests", type=int, default=3000)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--light-requests", type=int, default=1000,
                    help="requests of each kind at 4 clients (the latency without queueing)")
    args = parse(ap, requests=40, concurrency=4, light_requests=20)
    settings, auth = start_service(extra_apps={"/noop": NoOp.bind()})
    base = settings.base_url

    img = photo_jpeg(640, 480)
    sha = hashlib.sha256(img).hexdigest()
    envelope = {"output_format": "jpeg", "adjustments": {"master": {"algorithm": "bilateral"},
                                                         "shifter": {"resize": {"width": 320}}}}
    form = aiohttp.FormData()
    form.add_field("envelope", json.dumps(envelope), content_type="application/json")
    form.add_field("image", img, filename="in.jpg")

    async def first() -> str:
        """The thread every replay and status read is about; it must end done, or the
        benchmark would measure error answers."""
        async with aiohttp.ClientSession() as s:
            async with s.post(f"{base}/bench/submitted/{sha}/", data=form, headers=auth) as r:
                answer = await r.json()
            if "thread_id" not in answer:  # a 402 or 4xx: say so, not KeyError
                raise SystemExit(f"the first submission was refused: HTTP {r.status} {answer}")
            thread_id = answer["thread_id"]
            while answer["status"] == "processing":
                await asyncio.sleep(0.1)
                async with s.get(f"{base}/threads/{thread_id}", headers=auth) as r:
                    answer = await r.json()
            if answer["status"] != "done":
                raise SystemExit(f"the first submission did not end done: {answer}")
            return thread_id

    thread_id = asyncio.run(first())
    replay_body = json.dumps(envelope).encode()
    replay_headers = {**auth, "Content-Type": "application/json"}
    n, c, light = args.requests, args.concurrency, args.light_requests
    warm = min(500, n)
    asyncio.run(load("GET", f"{base}/noop/", None, {}, warm, c))  # warm-up
    asyncio.run(load("POST", f"{base}/bench/submitted/{sha}/", replay_body, replay_headers, warm,
                     c))
    results = {
        "noop": asyncio.run(load("GET", f"{base}/noop/", None, {}, n, c)),
        "noop_post": asyncio.run(load("POST", f"{base}/noop/", replay_body, replay_headers,
                                      n, c)),
        "replay": asyncio.run(load("POST", f"{base}/bench/submitted/{sha}/", replay_body,
                                   replay_headers, n, c)),
        "status": asyncio.run(load("GET", f"{base}/threads/{thread_id}", None, auth, n, c)),
    }
    out = {"machine": machine(), "requests": n, "concurrency": c, **results}
    # Each against the no-op that receives the same kind of request (a POST with the same
    # body for replays, a GET for status reads), and replays against the GET no-op too.
    out["replay_ratio"] = results["replay"]["rps"] / results["noop_post"]["rps"]
    out["replay_vs_get_ratio"] = results["replay"]["rps"] / results["noop"]["rps"]
    out["status_ratio"] = results["status"]["rps"] / results["noop"]["rps"]
    # Latency without queueing: at 64 closed-loop clients every request waits behind the
    # others (Little's law), so the p99 that reflects the service itself is measured at 4.
    out["light_load"] = {
        "concurrency": 4,
        "noop": asyncio.run(load("GET", f"{base}/noop/", None, {}, light, 4)),
        "replay": asyncio.run(load("POST", f"{base}/bench/submitted/{sha}/", replay_body,
                                   replay_headers, light, 4)),
        "status": asyncio.run(load("GET", f"{base}/threads/{thread_id}", None, auth, light, 4)),
    }
    print(f"{n} requests at concurrency {c} on {machine()}")
    for kind, r in results.items():
        ratio = f"  ratio {out[kind + '_ratio']:.2f} (≥ 0.8)" if kind + "_ratio" in out else ""
        print(f"  {kind:9s} {r['rps']:7.0f} req/s  p50 {r['p50_ms']:6.1f} ms  p99 "
              f"{r['p99_ms']:6.1f} ms  {r['statuses']}{ratio}")
    print("at concurrency 4:")
    for kind, r in out["light_load"].items():
        if kind != "concurrency":
            print(f"  {kind:9s} {r['rps']:7.0f} req/s  p50 {r['p50_ms']:6.1f} ms  p99 "
                  f"{r['p99_ms']:6.1f} ms")
    loads = {**results, **{f"{k} at 4": r for k, r in out["light_load"].items()
                           if k != "concurrency"}}
    wrong = {k: r["statuses"] for k, r in loads.items()
             if r["statuses"] != {200: n if k in results else light}}
    finish("api_replay", args, out, {
        f"every request answered 200, not {wrong}": not wrong,
        "rates, latencies and ratios are finite and positive": positive(
            *(r[f] for r in loads.values() for f in ("rps", "p50_ms", "p99_ms")),
            out["replay_ratio"], out["replay_vs_get_ratio"], out["status_ratio"])})


if __name__ == "__main__":
    main()
