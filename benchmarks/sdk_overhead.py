"""100 small images through each SDK at concurrency 16, versus the same flow written by hand
(ask, upload on needs-file, wait, download) in the same language, in one run, on the service
(local Ray + Serve): the Python SDK against aiohttp, the NodeJS SDK against Node's own
``fetch``. Both sides wait as the SDKs do: long polls (``GET /threads/{id}?wait=20``, answered
when the thread ends), pausing 0.1 s after one the service answered early. Every run uses
images no run has sent; each round runs every pair, the SDK first in even rounds and the
hand-written flow first in odd ones.

A Node run is a process of its own (``node``, from PATH): it reads its images into memory,
then times the flow alone, as the Python side times its own (Node's start-up is not counted,
on either of its sides).

Target (issue 16): each SDK ≤ 1.1× its hand-written flow.

    python benchmarks/sdk_overhead.py [--images 100] [--concurrency 16] [--rounds 2]
                                      [--clients python,node]
    python benchmarks/sdk_overhead.py --smoke   # 8 images, one round: seconds, after start-up
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import aiohttp
import tilemore_sdk as sdk
from _common import arguments, finish, machine, parse, photo_jpeg, positive
from _service import start_service

ADJUST = {"master": {"algorithm": "bilateral"}, "shifter": {"resize": {"width": 64}}}
POLL = 0.1  # the pause after a long poll answered early, on both sides
LONG_POLL = 20  # seconds: the SDKs' own
TARGET = 1.1
NODE_SDK = Path(__file__).parents[1] / "sdk" / "node" / "index.mjs"

# One Node run: `node --input-type=module -e NODE_RUN MODE SDK_URL BASE TOKEN CONCURRENCY
# POLL_MS LONG_POLL_S ADJUSTMENTS FILE...`; prints {"outputs": n, "seconds": s, "cpu": the
# client's own CPU seconds over the same span, steadier than the wall clock}. `sdk` goes
# through the NodeJS SDK's submit (create, wait, download: the result streamed and its hash
# checked); `hand` is the flow written with fetch as an integrator would: no retries, no hash
# check.
NODE_RUN = """
import { readFileSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
const [mode, sdkUrl, base, token, concurrency, pollMs, longPoll, adjustJson, ...files] =
  process.argv.slice(1);
const images = files.map((f) => readFileSync(f));
const adjust = JSON.parse(adjustJson);
const envelope = { output_format: 'jpeg', adjustments: adjust, meta: {} };
const auth = { Authorization: `Token ${token} Domain bench` };
const poll = Number(pollMs);
const { Tilemore } = await import(sdkUrl);

async function byHand(img) {
  const url = `${base}/sdk/submitted/${createHash('sha256').update(img).digest('hex')}/`;
  let r = await fetch(url, { method: 'POST', body: JSON.stringify(envelope),
    headers: { ...auth, 'Content-Type': 'application/json' } });
  let answer = await r.json();
  if (answer.status === 'needs-file') {
    const form = new FormData();
    form.append('envelope', JSON.stringify(envelope));
    form.append('image', new Blob([img]), 'input');
    r = await fetch(url, { method: 'POST', body: form, headers: auth });
    answer = await r.json();
  }
  while (answer.status === 'processing') {
    const url = `${base}/threads/${answer.thread_id}?wait=${longPoll}`;
    answer = await (await fetch(url, { headers: auth })).json();
    if (answer.status === 'processing') await sleep(poll);
  }
  if (answer.status !== 'done') return false;
  r = await fetch(answer.result.url, { headers: auth });
  return r.status === 200 && (await r.arrayBuffer()).byteLength > 0;
}

const started = performance.now();
const cpuBefore = process.cpuUsage();
let one = byHand;
if (mode === 'sdk') {
  const tm = new Tilemore({ apiEndpoint: base, apiToken: token, domain: 'bench',
    pollIntervalMs: poll, maxPollIntervalMs: poll });
  one = async (img) => {
    let size = 0;
    for await (const chunk of await tm.submit(img, 'jpeg', adjust)) size += chunk.length;
    return size > 0;
  };
}
let next = 0;
let outputs = 0;
await Promise.all(Array.from({ length: Number(concurrency) }, async () => {
  while (next < images.length) {
    if (await one(images[next++])) outputs += 1;
  }
}));
const seconds = (performance.now() - started) / 1000;
const cpu = process.cpuUsage(cpuBefore);
console.log(JSON.stringify({ outputs, seconds, cpu: (cpu.user + cpu.system) / 1e6 }));
"""


async def by_hand(base: str, auth: dict, images: list[bytes], concurrency: int) -> int:
    """The flow by hand; the number of outputs downloaded."""
    gate = asyncio.Semaphore(concurrency)
    envelope = {"output_format": "jpeg", "adjustments": ADJUST, "meta": {}}
    async with aiohttp.ClientSession() as s:
        async def one(img: bytes) -> bool:
            async with gate:
                url = f"{base}/sdk/submitted/{hashlib.sha256(img).hexdigest()}/"
                async with s.post(url, json=envelope, headers=auth) as r:
                    answer = await r.json()
                if answer["status"] == "needs-file":
                    form = aiohttp.FormData()
                    form.add_field("envelope", json.dumps(envelope),
                                   content_type="application/json")
                    form.add_field("image", img, filename="input")
                    async with s.post(url, data=form, headers=auth) as r:
                        answer = await r.json()
                while answer["status"] == "processing":
                    async with s.get(f"{base}/threads/{answer['thread_id']}?wait={LONG_POLL}",
                                     headers=auth) as r:
                        answer = await r.json()
                    if answer["status"] == "processing":
                        await asyncio.sleep(POLL)
                if answer["status"] != "done":
                    return False
                async with s.get(answer["result"]["url"], headers=auth) as r:
                    return r.status == 200 and len(await r.read()) > 0
        return sum(await asyncio.gather(*(one(i) for i in images)))


async def with_sdk(base: str, token: str, images: list[bytes], concurrency: int) -> int:
    """The flow through the SDK; the number of outputs it returned."""
    gate = asyncio.Semaphore(concurrency)
    async with sdk.AsyncTilemore(base, token, "bench", poll_interval=POLL,
                                 max_poll_interval=POLL) as tm:
        async def one(img: bytes) -> bool:
            async with gate:
                return len((await tm.submit(img, "jpeg", ADJUST)).data) > 0
        return sum(await asyncio.gather(*(one(i) for i in images)))


def timed(run: Callable[[], int]) -> tuple[int, float]:
    started = time.perf_counter()
    outputs = run()
    return outputs, time.perf_counter() - started


NODE_CPU: dict[str, list[float]] = {"sdk": [], "hand": []}  # each Node run's client CPU


def node_run(node: str, mode: str, base: str, token: str, images: list[bytes],
             concurrency: int) -> tuple[int, float]:
    """(outputs, seconds) of one Node run over ``images``, timed inside the Node process;
    its CPU seconds go to ``NODE_CPU``."""
    folder = Path(tempfile.mkdtemp(prefix="tilemore-sdk-overhead-"))
    try:
        files = []
        for i, img in enumerate(images):
            (folder / f"{i}.jpg").write_bytes(img)
            files.append(str(folder / f"{i}.jpg"))
        done = subprocess.run([node, "--input-type=module", "-e", NODE_RUN, mode,
                               NODE_SDK.as_uri(), base, token, str(concurrency),
                               str(int(POLL * 1000)), str(LONG_POLL), json.dumps(ADJUST),
                               *files],
                              capture_output=True, text=True, timeout=1800)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    if done.returncode != 0:
        raise RuntimeError(f"node ({mode}) exited {done.returncode}: {done.stderr[-2000:]}")
    out = json.loads(done.stdout.strip().splitlines()[-1])
    NODE_CPU[mode].append(out["cpu"])
    return out["outputs"], out["seconds"]


def summary(sdk_times: list[float], hand_times: list[float], outputs: list[int]) -> dict:
    t_sdk, t_hand = statistics.median(sdk_times), statistics.median(hand_times)
    # each round's two runs side by side: steadier than the medians' ratio on a shared machine
    paired = statistics.median(s / h for s, h in zip(sdk_times, hand_times, strict=True))
    return {"sdk_s": t_sdk, "by_hand_s": t_hand, "ratio": t_sdk / t_hand,
            "paired_ratio": paired, "sdk_all_s": sdk_times, "by_hand_all_s": hand_times,
            "outputs": outputs}


def main() -> None:
    ap = arguments(__doc__)
    ap.add_argument("--images", type=int, default=100)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--clients", default="python,node",
                    help="which SDKs, comma-separated: python, node")
    args = parse(ap, images=8, concurrency=4, rounds=1)
    clients = [c.strip() for c in args.clients.split(",") if c.strip()]
    if not clients or set(clients) - {"python", "node"}:
        ap.error(f"--clients: python and/or node, not {args.clients!r}")
    node = shutil.which("node")
    if "node" in clients and not node:
        if os.environ.get("CI"):
            ap.error("node is not on PATH (CI must measure the NodeJS SDK)")
        print("node is not on PATH: the NodeJS SDK is not measured")
        clients.remove("node")
    settings, auth = start_service()  # its bench domain has credits
    token = auth["Authorization"].split()[1]
    base = settings.base_url
    seed = [0]

    def fresh(n: int = args.images) -> list[bytes]:
        seed[0] += 1
        return [photo_jpeg(128, 96, seed=seed[0] * 1000 + i) for i in range(n)]

    runs: dict[tuple[str, str], Callable[[list[bytes]], int | tuple[int, float]]] = {
        ("python", "sdk"): lambda imgs: asyncio.run(
            with_sdk(base, token, imgs, args.concurrency)),
        ("python", "hand"): lambda imgs: asyncio.run(
            by_hand(base, auth, imgs, args.concurrency)),
        ("node", "sdk"): lambda imgs: node_run(node, "sdk", base, token, imgs,
                                               args.concurrency),
        ("node", "hand"): lambda imgs: node_run(node, "hand", base, token, imgs,
                                                args.concurrency),
    }

    def measure(client: str, side: str, images: list[bytes]) -> tuple[int, float]:
        if client == "node":  # timed in its own process, after its start-up
            return runs[client, side](images)  # type: ignore[return-value]
        return timed(lambda: runs[client, side](images))  # type: ignore[arg-type,return-value]

    for client in clients:  # warm-up: connections, Serve's replicas, the JIT
        for side in ("sdk", "hand"):
            measure(client, side, fresh(min(16, args.images)))
    for runs_cpu in NODE_CPU.values():
        runs_cpu.clear()  # the warm-up's
    times = {(c, s): [] for c in clients for s in ("sdk", "hand")}
    outputs: dict[str, list[int]] = {c: [] for c in clients}
    for rnd in range(args.rounds):
        sides = ("sdk", "hand") if rnd % 2 == 0 else ("hand", "sdk")
        for client in clients:
            for side in sides:
                n, seconds = measure(client, side, fresh())
                times[client, side].append(seconds)
                outputs[client].append(n)
    results = {c: summary(times[c, "sdk"], times[c, "hand"], outputs[c]) for c in clients}
    if "node" in results:  # the Node client's own CPU: what the SDK costs the caller
        cpu_sdk, cpu_hand = statistics.median(NODE_CPU["sdk"]), statistics.median(NODE_CPU["hand"])
        results["node"].update({"sdk_cpu_s": cpu_sdk, "by_hand_cpu_s": cpu_hand,
                                "cpu_ratio": cpu_sdk / cpu_hand, "sdk_cpu_all_s": NODE_CPU["sdk"],
                                "by_hand_cpu_all_s": NODE_CPU["hand"]})
    print(f"{args.images} images at concurrency {args.concurrency}, {args.rounds} rounds, "
          f"on {machine()}")
    names = {"python": ("Python SDK", "aiohttp by hand"), "node": ("NodeJS SDK", "fetch by hand")}
    for c, r in results.items():
        for label, t, all_t in ((names[c][0], r["sdk_s"], r["sdk_all_s"]),
                                (names[c][1], r["by_hand_s"], r["by_hand_all_s"])):
            print(f"  {label + ':':<18} {t:.2f} s  ({', '.join(f'{x:.2f}' for x in all_t)})")
        print(f"  {c} ratio {r['ratio']:.3f} (target ≤ {TARGET}): "
              f"{'met' if r['ratio'] <= TARGET else 'NOT met'}; median of the rounds' own "
              f"ratios {r['paired_ratio']:.3f}")
        if "cpu_ratio" in r:
            print(f"  {c} client CPU: SDK {r['sdk_cpu_s']:.2f} s, by hand "
                  f"{r['by_hand_cpu_s']:.2f} s (medians): {r['cpu_ratio']:.3f}")
    checks = {}
    for c, r in results.items():
        checks[f"{c}: every image's output came back each run, not {r['outputs']}"] = (
            r["outputs"] == [args.images] * (2 * args.rounds))
        checks[f"{c}: times and ratios are finite and positive"] = positive(
            r["sdk_s"], r["by_hand_s"], r["ratio"], r["paired_ratio"], r.get("cpu_ratio", 1))
    finish("sdk_overhead", args, {"machine": machine(), "images": args.images,
                                  "concurrency": args.concurrency, "rounds": args.rounds,
                                  "target": TARGET, "clients": results}, checks)


if __name__ == "__main__":
    main()
