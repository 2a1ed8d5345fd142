"""100 small images through the Python SDK at concurrency 16, versus the same flow written
directly with aiohttp (ask, upload on needs-file, poll, download), in one run, on the service
(local Ray + Serve). Both poll every 0.1 s; every round uses images neither side has sent.

Target (issue 16): SDK ≤ 1.1× the hand-written flow.

    python benchmarks/sdk_overhead.py [--images 100] [--concurrency 16] [--rounds 2]
    python benchmarks/sdk_overhead.py --smoke   # 8 images, one round: seconds, after start-up
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import statistics
import time

import aiohttp
import tilemore_sdk as sdk
from _common import arguments, finish, machine, parse, photo_jpeg, positive
from _service import start_service

ADJUST = {"master": {"algorithm": "bilateral"}, "shifter": {"resize": {"width": 64}}}
POLL = 0.1
TARGET = 1.1


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
                    await asyncio.sleep(POLL)
                    async with s.get(f"{base}/threads/{answer['thread_id']}",
                                     headers=auth) as r:
                        answer = await r.json()
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


def main() -> None:
    ap = arguments(__doc__)
    ap.add_argument("--images", type=int, default=100)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=2)
    args = parse(ap, images=8, concurrency=4, rounds=1)
    settings, auth = start_service()  # its bench domain has credits
    token = auth["Authorization"].split()[1]
    base = settings.base_url
    seed = [0]

    def fresh() -> list[bytes]:
        seed[0] += 1
        return [photo_jpeg(128, 96, seed=seed[0] * 1000 + i) for i in range(args.images)]

    asyncio.run(with_sdk(base, token, fresh()[:16], args.concurrency))  # warm-up
    asyncio.run(by_hand(base, auth, fresh()[:16], args.concurrency))
    sdk_times, hand_times, outputs = [], [], []
    for _ in range(args.rounds):
        for kind, times in (("sdk", sdk_times), ("hand", hand_times)):
            images = fresh()
            started = time.perf_counter()
            if kind == "sdk":
                outputs.append(asyncio.run(with_sdk(base, token, images, args.concurrency)))
            else:
                outputs.append(asyncio.run(by_hand(base, auth, images, args.concurrency)))
            times.append(time.perf_counter() - started)
    t_sdk, t_hand = statistics.median(sdk_times), statistics.median(hand_times)
    ratio = t_sdk / t_hand
    # each round's two runs side by side: steadier than the medians' ratio on a shared machine
    paired = statistics.median(s / h for s, h in zip(sdk_times, hand_times, strict=True))
    result = {"machine": machine(), "images": args.images, "concurrency": args.concurrency,
              "sdk_s": t_sdk, "by_hand_s": t_hand, "ratio": ratio, "target": TARGET,
              "paired_ratio": paired,
              "sdk_all_s": sdk_times, "by_hand_all_s": hand_times, "outputs": outputs}
    print(f"{args.images} images at concurrency {args.concurrency} on {machine()}")
    print(f"  Python SDK:        {t_sdk:.2f} s  ({', '.join(f'{t:.2f}' for t in sdk_times)})")
    print(f"  aiohttp by hand:   {t_hand:.2f} s  ({', '.join(f'{t:.2f}' for t in hand_times)})")
    print(f"  ratio {ratio:.3f} (target ≤ {TARGET}): {'met' if ratio <= TARGET else 'NOT met'}"
          f"; median of the rounds' own ratios {paired:.3f}")
    finish("sdk_overhead", args, result, {
        f"every image's output came back each round, not {outputs}":
            outputs == [args.images] * (2 * args.rounds),
        "times and ratio are finite and positive": positive(t_sdk, t_hand, ratio, paired)})


if __name__ == "__main__":
    main()
