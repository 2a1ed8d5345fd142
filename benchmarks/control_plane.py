"""The control plane on tiny images: Tilemore's two-stage pipeline (decode → encoder,
``control_plane.yaml``) on 64×64 PNGs at 32 clients, against the HTTP floor of the same Serve
instance and against the plain Ray Serve composition a user would write instead, in the same
run; with the CPU each service process spends per thread and the idle latency of one thread.

Targets: two-stage threads/s ≥ 0.8× the HTTP floor (a no-op multipart POST plus one GET on
the same Serve instance) and ≥ 1.2× the peer's images/s (a Serve ingress that hands the
image to a Pillow decode deployment and an encode deployment: no idempotency, no durable
record, no billing); CPU per thread in the service processes (ingress replica, Serve proxy,
conductor, billing actor) ≤ 10 ms in all, reported per process; an idle thread submitted
alone seen ``done`` within ≤ 25 ms (median).

Tilemore's clients wait as the SDKs do: a POST, then long polls (``GET /threads/{id}?wait=30``)
answered when the thread ends; ``--poll`` makes them poll every ``--poll-ms`` instead (every
``--idle-poll-ms`` for the idle thread), as clients did before long polls.

    python benchmarks/control_plane.py [--threads 600] [--clients 32] [--rounds 3] [--poll]
    python benchmarks/control_plane.py --smoke   # 16 threads at 4 clients, one round
"""

# No `from __future__ import annotations`: Serve's class ingress needs the route's
# annotations as types, not strings (FastAPI would take `request` for a query parameter).

import asyncio
import hashlib
import io
import json
import os
import statistics
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
from _common import arguments, finish, machine, parse, positive, process_cpu
from _service import start_service
from fastapi import FastAPI, Request, Response
from PIL import Image as PILImage
from ray import serve
from ray.serve.handle import DeploymentHandle

from tilemore.store import open_store

PIPELINE = Path(__file__).parent / "control_plane.yaml"
ENVELOPE = {"pipeline": "control-plane", "adjustments": {}, "output_format": "jpeg"}
BOUNDARY = "tilemorecontrolplane"
# The four processes every thread passes through, by the title Ray gives their workers.
SERVICE = {"ingress replica": "ServeReplica:tilemore:Ingress", "Serve proxy": "ProxyActor",
           "conductor": "ConductorActor", "billing actor": "BillingActor"}
OTHERS = {"operator replicas (all)": "OperatorHost", "Serve controller": "ServeController",
          "peer ingress": "ServeReplica:peer:PeerIngress",
          "peer decode": "ServeReplica:peer:PeerDecode",
          "peer encode": "ServeReplica:peer:PeerEncode",
          "floor replica": "ServeReplica:floor:Floor"}

# --- the HTTP floor: what the same Serve instance does with no work behind it -------------

floor_app = FastAPI()


@floor_app.post("/")
async def floor_post(request: Request) -> dict:
    await request.body()  # the same multipart body a submission is, read and dropped
    return {"status": "processing"}


@floor_app.get("/")
async def floor_get() -> dict:
    return {"status": "done"}


@serve.deployment(ray_actor_options={"num_cpus": 0.25}, max_ongoing_requests=256)
@serve.ingress(floor_app)
class Floor:
    pass


# --- the peer: the same decode and encode as a plain Serve composition --------------------

peer_app = FastAPI()


@serve.deployment(ray_actor_options={"num_cpus": 0.5})
class PeerDecode:
    def __call__(self, data: bytes) -> np.ndarray:
        with PILImage.open(io.BytesIO(data)) as im:
            return np.asarray(im.convert("RGB"))


@serve.deployment(ray_actor_options={"num_cpus": 0.5})
class PeerEncode:
    def __call__(self, pixels: np.ndarray) -> bytes:  # what the encoder does by default
        buf = io.BytesIO()
        PILImage.fromarray(pixels).save(buf, "JPEG", quality=85, subsampling=2)
        return buf.getvalue()


@serve.deployment(ray_actor_options={"num_cpus": 0.25}, max_ongoing_requests=256)
@serve.ingress(peer_app)
class PeerIngress:
    def __init__(self, decode: DeploymentHandle, encode: DeploymentHandle) -> None:
        self.decode, self.encode = decode, encode

    @peer_app.post("/")
    async def run(self, request: Request) -> Response:
        form = await request.form()
        data = await form["image"].read()  # type: ignore[union-attr]
        # The decode's response goes straight into the encode: Serve resolves it.
        encoded = await self.encode.remote(self.decode.remote(data))
        return Response(encoded, media_type="image/jpeg")


# --- load ---------------------------------------------------------------------------------

class Images:
    """Distinct 64×64 PNGs (noise, so none repeats): every submission is a new thread."""

    def __init__(self) -> None:
        self.seed = 0

    def take(self, n: int) -> list[tuple[bytes, str, str]]:
        """``n`` (multipart body, content type, sha256) made before any timer starts."""
        out = []
        for _ in range(n):
            self.seed += 1
            pixels = np.random.default_rng(self.seed).integers(0, 256, (64, 64, 3), np.uint8)
            buf = io.BytesIO()
            PILImage.fromarray(pixels).save(buf, "PNG")
            png = buf.getvalue()
            out.append((*multipart(png), hashlib.sha256(png).hexdigest()))
        return out


def multipart(image: bytes) -> tuple[bytes, str]:
    b = BOUNDARY
    body = (f"--{b}\r\nContent-Disposition: form-data; name=\"envelope\"\r\n"
            f"Content-Type: application/json\r\n\r\n{json.dumps(ENVELOPE)}\r\n"
            f"--{b}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"i.png\"\r\n"
            f"Content-Type: image/png\r\n\r\n").encode() + image + f"\r\n--{b}--\r\n".encode()
    return body, f"multipart/form-data; boundary={b}"


Job = Callable[[aiohttp.ClientSession, tuple[bytes, str, str]], Awaitable[str]]


async def closed_loop(job: Job, items: list, clients: int) -> dict:
    """``clients`` workers taking the next item until none is left; each job returns the
    outcome it saw (``done``, ``200``, or what went wrong)."""
    outcomes: Counter[str] = Counter()
    latencies: list[float] = []
    queue = list(reversed(items))
    connector = aiohttp.TCPConnector(limit=clients)
    timeout = aiohttp.ClientTimeout(total=300)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        async def worker() -> None:
            while queue:
                item = queue.pop()
                started = time.perf_counter()
                outcomes[await job(session, item)] += 1
                latencies.append(time.perf_counter() - started)

        began = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(clients)))
        wall = time.perf_counter() - began
    return {"per_s": len(items) / wall, "n": len(items), "wall_s": wall,
            "p50_ms": 1000 * statistics.median(latencies), "outcomes": dict(outcomes)}


class Sides:
    """One request cycle of each side, as a client makes it."""

    def __init__(self, base: str, auth: dict, poll_s: float, long_poll: bool) -> None:
        self.base, self.auth, self.poll_s, self.long_poll = base, auth, poll_s, long_poll
        self.gets = 0  # status reads made by Tilemore's clients (what polling costs)
        self.last_done = ""  # a thread that ended done (the status reads' subject)
        self.accepted: tuple[str, float] = ("", 0.0)  # the last thread, when its 202 came

    async def floor(self, s: aiohttp.ClientSession, item: tuple[bytes, str, str]) -> str:
        body, ctype, _ = item
        async with s.post(f"{self.base}/floor/", data=body,
                          headers={"Content-Type": ctype}) as r:
            await r.read()
            first = r.status
        async with s.get(f"{self.base}/floor/") as r:
            await r.read()
            return str(first) if first != 200 else str(r.status)

    async def tilemore(self, s: aiohttp.ClientSession, item: tuple[bytes, str, str],
                       poll_s: float | None = None) -> str:
        body, ctype, sha = item
        async with s.post(f"{self.base}/bench/submitted/{sha}/", data=body,
                          headers={**self.auth, "Content-Type": ctype}) as r:
            answer = await r.json()
            if r.status != 202 or "thread_id" not in answer:
                return f"HTTP {r.status} {answer.get('code', answer.get('status'))}"
        self.accepted = (answer["thread_id"], time.time())
        url = f"{self.base}/threads/{answer['thread_id']}"
        while answer["status"] == "processing":
            if not self.long_poll:
                await asyncio.sleep(self.poll_s if poll_s is None else poll_s)
            self.gets += 1
            # A long poll, as the SDKs' wait() makes it: answered when the thread ends.
            async with s.get(f"{url}?wait=30" if self.long_poll else url,
                             headers=self.auth) as r:
                answer = await r.json()
        if answer["status"] == "done":
            self.last_done = url
        return answer["status"]

    async def status(self, s: aiohttp.ClientSession, item: object) -> str:
        async with s.get(self.last_done, headers=self.auth) as r:
            answer = await r.json()
            return answer["status"] if r.status == 200 else f"HTTP {r.status}"

    async def peer(self, s: aiohttp.ClientSession, item: tuple[bytes, str, str]) -> str:
        body, ctype, _ = item
        async with s.post(f"{self.base}/peer/", data=body,
                          headers={"Content-Type": ctype}) as r:
            data = await r.read()
            return str(r.status) if r.status != 200 or data[:2] == b"\xff\xd8" else "not JPEG"


# --- CPU per process ----------------------------------------------------------------------

def ray_processes() -> dict[int, str]:
    """PID → title of every Ray worker this process started (its descendants only: other
    Ray sessions on the machine are not ours to count)."""
    parent: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            parent[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
    mine, frontier = set(), {os.getpid()}
    while frontier:
        frontier = {pid for pid, ppid in parent.items() if ppid in frontier} - mine
        mine |= frontier
    titles = {}
    for pid in mine:
        try:
            title = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode()
        except OSError:
            continue
        if title.startswith("ray::"):
            titles[pid] = title.removeprefix("ray::")
    return titles


def cpu_seconds(pids: list[int]) -> dict[int, float]:
    """utime + stime of each process, in seconds."""
    return {pid: stat[1] for pid in pids if (stat := process_cpu(pid)) is not None}


class CpuMeter:
    """CPU seconds spent by each named group of processes over the measured phases."""

    def __init__(self, groups: dict[str, str]) -> None:
        titles = ray_processes()
        self.pids = {name: [pid for pid, t in titles.items()
                            if t == prefix or t.startswith((prefix + ".", prefix + " "))]
                     for name, prefix in groups.items()}
        self.spent: dict[str, float] = dict.fromkeys(groups, 0.0)

    def missing(self, names: list[str]) -> list[str]:
        return [n for n in names if not self.pids.get(n)]

    async def measure(self, run: Awaitable[dict]) -> dict:
        every = [pid for pids in self.pids.values() for pid in pids]
        before = cpu_seconds(every)
        result = await run
        after = cpu_seconds(every)
        for name, pids in self.pids.items():
            self.spent[name] += sum(after.get(p, before[p]) - before[p] for p in pids
                                    if p in before)
        return result


# --- the run ------------------------------------------------------------------------------

def idle_breakdown(store: Any, timelines: list[tuple[float, str, float, float]]
                   ) -> dict[str, float]:
    """Where each idle thread's time went, from the client's clock and the times its record
    holds (the same machine's clock, read in the ingress, the replicas and the conductor):
    medians, in ms. "ingress": sent to recorded; "to first task": recorded to the first
    task's start (the hand-off, the lease, reading the record and the input); "between
    tasks": from each task's end to the next one's start (its checkpoint, Ray passing the
    image on); "to done": the last task's end to the thread recorded done (charges,
    records, the result stored); "done seen": to the client's long poll answering."""
    parts: dict[str, list[float]] = {k: [] for k in (
        "ingress", "202 back", "to first task", "tasks", "between tasks", "to done",
        "done seen")}
    for sent, thread_id, accepted, seen in timelines:
        rec = store.get_thread(thread_id)
        tasks = sorted(rec.tasks, key=lambda t: t.started_at or 0.0)
        gaps = [b.started_at - a.finished_at for a, b in zip(tasks, tasks[1:], strict=False)]
        for key, value in (
                ("ingress", rec.created_at - sent), ("202 back", accepted - sent),
                ("to first task", tasks[0].started_at - rec.created_at),
                ("tasks", sum(t.finished_at - t.started_at for t in tasks)),
                ("between tasks", sum(gaps)),
                ("to done", rec.finished_at - tasks[-1].finished_at),
                ("done seen", seen - rec.finished_at)):
            parts[key].append(1000 * value)
    return {k: round(statistics.median(v), 2) for k, v in parts.items() if v}


async def idle(job: Callable[[aiohttp.ClientSession, tuple], Awaitable[str]], items: list
               ) -> dict:
    """Each item alone, one after the other: submit to result seen."""
    times, outcomes = [], Counter()
    async with aiohttp.ClientSession() as session:
        for item in items:
            started = time.perf_counter()
            outcomes[await job(session, item)] += 1
            times.append(1000 * (time.perf_counter() - started))
    times.sort()
    return {"median_ms": statistics.median(times), "p90_ms": times[int(0.9 * (len(times) - 1))],
            "all_ms": [round(t, 1) for t in times], "outcomes": dict(outcomes)}


def main() -> None:
    ap = arguments(__doc__)
    ap.add_argument("--threads", type=int, default=600, help="threads (and peer images, and "
                    "floor cycles) per side per round")
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=3, help="rounds, the sides alternated")
    ap.add_argument("--poll", action="store_true",
                    help="Tilemore's clients poll every --poll-ms (and --idle-poll-ms) "
                         "instead of long-polling (GET /threads/{id}?wait=30) as the SDKs do")
    ap.add_argument("--poll-ms", type=float, default=50.0,
                    help="how often Tilemore's clients poll under load, with --poll")
    ap.add_argument("--idle", type=int, default=40, help="idle threads (median of these)")
    ap.add_argument("--idle-poll-ms", type=float, default=5.0)
    ap.add_argument("--quiet-s", type=float, default=10.0,
                    help="seconds without load over which each process's own CPU is read")
    ap.add_argument("--checkpoint-policy", choices=("costly", "always"), default="costly",
                    help="the service's TILEMORE_CHECKPOINT_POLICY (always: as before it)")
    args = parse(ap, threads=16, clients=4, rounds=1, idle=3, quiet_s=1.0)
    for name in ("threads", "clients", "rounds", "idle"):
        if not 1 <= getattr(args, name) <= 100_000:
            ap.error(f"--{name} must be between 1 and 100000")
    if not 1 <= args.poll_ms <= 10_000 or not 1 <= args.idle_poll_ms <= 10_000:
        ap.error("poll intervals must be between 1 and 10000 ms")
    if not 0.5 <= args.quiet_s <= 600:
        ap.error("--quiet-s must be between 0.5 and 600")

    peer = PeerIngress.bind(PeerDecode.bind(), PeerEncode.bind())
    settings, auth = start_service(extra_apps={"/floor": Floor.bind(), "/peer": peer},
                                   pipeline_paths=[PIPELINE],
                                   checkpoint_policy=args.checkpoint_policy)
    sides = Sides(settings.base_url, auth, args.poll_ms / 1000, long_poll=not args.poll)
    images = Images()
    n, c = args.threads, args.clients

    async def run() -> dict:
        # Warm-up: the first thread waits for the conductor and its replicas to start.
        first = await idle(sides.tilemore, images.take(1))
        if first["outcomes"] != {"done": 1}:
            raise SystemExit(f"the first thread did not end done: {first['outcomes']}")
        warm = min(64, n)
        for job in (sides.floor, sides.tilemore, sides.peer):
            await closed_loop(job, images.take(warm), c)
        tilemore_meter = CpuMeter({**SERVICE, **OTHERS})  # only Tilemore's phases
        if missing := tilemore_meter.missing(list(SERVICE)):
            raise SystemExit(f"no process found for {missing}: {ray_processes()}")
        rounds: dict[str, list[dict]] = {"floor": [], "tilemore": [], "peer": []}
        per_side = {"floor": CpuMeter({**SERVICE, **OTHERS}),
                    "peer": CpuMeter({**SERVICE, **OTHERS})}
        gets_before = sides.gets
        for _ in range(args.rounds):
            rounds["floor"].append(await per_side["floor"].measure(
                closed_loop(sides.floor, images.take(n), c)))
            rounds["tilemore"].append(await tilemore_meter.measure(
                closed_loop(sides.tilemore, images.take(n), c)))
            rounds["peer"].append(await per_side["peer"].measure(
                closed_loop(sides.peer, images.take(n), c)))
        gets = sides.gets - gets_before
        # What one status read costs, alone (so polling can be told from the rest), and
        # what each process spends doing nothing (timers, health checks, lease renewals).
        reads_meter = CpuMeter({**SERVICE, **OTHERS})
        reads = await reads_meter.measure(closed_loop(sides.status, [None] * n, c))
        quiet_meter = CpuMeter({**SERVICE, **OTHERS})
        await quiet_meter.measure(asyncio.sleep(args.quiet_s))
        idle_poll = args.idle_poll_ms / 1000

        async def one_thread(s: aiohttp.ClientSession, item: tuple) -> str:
            sent = time.time()
            status = await sides.tilemore(s, item, poll_s=idle_poll)
            timelines.append((sent, *sides.accepted, time.time()))
            return status

        timelines: list[tuple[float, str, float, float]] = []

        latency = {"tilemore": await idle(one_thread, images.take(args.idle)),
                   "floor": await idle(sides.floor, images.take(args.idle)),
                   "peer": await idle(sides.peer, images.take(args.idle))}
        return {"rounds": rounds, "tilemore_cpu": tilemore_meter, "per_side": per_side,
                "gets": gets, "latency": latency, "reads": reads, "reads_cpu": reads_meter,
                "quiet_cpu": quiet_meter, "timelines": timelines}

    got = asyncio.run(run())
    rounds, latency = got["rounds"], got["latency"]
    breakdown = idle_breakdown(open_store(settings.db), got["timelines"])
    rate = {side: statistics.median(r["per_s"] for r in rs) for side, rs in rounds.items()}
    threads = n * args.rounds

    def per_unit(meter: CpuMeter, groups: dict[str, str], units: int = threads
                 ) -> dict[str, float]:
        return {name: round(1000 * meter.spent[name] / units, 3) for name in groups
                if meter.pids.get(name)}

    cpu = per_unit(got["tilemore_cpu"], SERVICE)
    cpu_total = sum(cpu.values())
    per_read = per_unit(got["reads_cpu"], SERVICE, n)
    gets_per_thread = got["gets"] / threads
    # The same thread fetched by a client that reads its status once (a long poll, a
    # webhook's one fetch): the measured cost less the extra reads, each at its own cost.
    one_read = {k: round(max(0.0, v - (gets_per_thread - 1) * per_read.get(k, 0.0)), 3)
                for k, v in cpu.items()}
    quiet = {k: round(100 * v / args.quiet_s, 2)
             for k, v in got["quiet_cpu"].spent.items() if got["quiet_cpu"].pids.get(k)}
    result = {
        "machine": machine(), "load_average": os.getloadavg(), "threads_per_round": n,
        "checkpoint_policy": args.checkpoint_policy,
        "clients": c, "rounds": args.rounds, "long_poll": not args.poll,
        "poll_ms": args.poll_ms if args.poll else None,
        "floor_cycles_per_s": rate["floor"], "tilemore_threads_per_s": rate["tilemore"],
        "peer_images_per_s": rate["peer"],
        "floor_ratio": rate["tilemore"] / rate["floor"], "floor_target": 0.8,
        "peer_ratio": rate["tilemore"] / rate["peer"], "peer_target": 1.2,
        "gets_per_thread": gets_per_thread,
        "cpu_ms_per_thread": cpu, "cpu_ms_per_thread_total": cpu_total, "cpu_target_ms": 10,
        "cpu_ms_per_thread_others": per_unit(got["tilemore_cpu"], OTHERS),
        "status_reads_per_s": got["reads"]["per_s"], "cpu_ms_per_status_read": per_read,
        "cpu_ms_per_thread_one_read": one_read,
        "cpu_ms_per_thread_one_read_total": round(sum(one_read.values()), 3),
        "idle_cpu_percent_of_a_core": quiet, "quiet_s": args.quiet_s,
        "cpu_ms_per_floor_cycle": per_unit(got["per_side"]["floor"], {**SERVICE, **OTHERS}),
        "cpu_ms_per_peer_image": per_unit(got["per_side"]["peer"], {**SERVICE, **OTHERS}),
        "idle": latency, "idle_poll_ms": args.idle_poll_ms if args.poll else None,
        "idle_target_ms": 25, "idle_breakdown_ms": breakdown,
        "rounds_detail": rounds,
    }
    print(f"{n} threads × {args.rounds} rounds at {c} clients on {machine()}, load average "
          f"{os.getloadavg()[0]:.1f}")
    print(f"  HTTP floor (no-op multipart POST + GET): {rate['floor']:7.1f} /s")
    print(f"  Tilemore two-stage threads:              {rate['tilemore']:7.1f} /s  "
          f"{result['floor_ratio']:.2f}× the floor (≥ 0.8), {result['peer_ratio']:.2f}× the "
          f"peer (≥ 1.2); {result['gets_per_thread']:.1f} GETs per thread")
    print(f"  peer (Serve + Pillow composition):       {rate['peer']:7.1f} images/s")
    print(f"  CPU per thread: {cpu_total:.1f} ms (≤ 10): "
          + ", ".join(f"{k} {v:.1f}" for k, v in cpu.items()))
    print(f"  status reads alone: {got['reads']['per_s']:.0f}/s, "
          f"{sum(per_read.values()):.1f} ms each; per thread read once: "
          f"{result['cpu_ms_per_thread_one_read_total']:.1f} ms: "
          + ", ".join(f"{k} {v:.1f}" for k, v in one_read.items()))
    print("  doing nothing, % of a core: " + ", ".join(f"{k} {v:.1f}" for k, v in quiet.items()
                                                     if k in SERVICE))
    print("  idle, submit to done seen: " + ", ".join(
        f"{k} {v['median_ms']:.1f} ms" for k, v in latency.items())
        + " (Tilemore ≤ 25 ms, " + (f"polling every {args.idle_poll_ms:g} ms)" if args.poll
                                    else "long-polling)"))
    print("  where an idle thread's time goes (medians): " + ", ".join(
        f"{k} {v:.1f} ms" for k, v in breakdown.items()))
    outcomes = {f"{side} round {i}": r["outcomes"] for side, rs in rounds.items()
                for i, r in enumerate(rs)}
    expected = {"floor": "200", "tilemore": "done", "peer": "200"}
    wrong = {k: o for k, o in outcomes.items() if o != {expected[k.split()[0]]: n}}
    if got["reads"]["outcomes"] != {"done": n}:
        wrong["status reads"] = got["reads"]["outcomes"]
    wrong |= {f"idle {k}": v["outcomes"] for k, v in latency.items()
              if v["outcomes"] != {expected[k]: args.idle}}
    finish("control_plane", args, result, {
        f"every thread done and every request 200, not {wrong}": not wrong,
        "rates, ratios, CPU and latencies finite and positive": positive(
            *rate.values(), result["floor_ratio"], result["peer_ratio"], cpu_total,
            *(v["median_ms"] for v in latency.values())),
        "the idle threads' steps happened in order": all(
            v >= -1.0 for v in breakdown.values()),  # 1 ms: clocks read in other processes
        f"CPU measured in every service process, not only {sorted(cpu)}": set(cpu) == set(
            SERVICE)})


if __name__ == "__main__":
    main()
