"""Client memory while a large input goes through each SDK: a 200 MB input sent by the Python
SDK and by the NodeJS SDK (``create``, then ``wait``: hashed in a first pass, uploaded from
disk), each client in a process of its own, against the Ray-free service
(``tests/support/service_harness.py``: uvicorn, SQLite, local blobs, in this process).

The input is a small JPEG followed by random bytes up to the size (decoders stop at the
image's end marker, so the thread runs on a small picture while the client sends every byte);
each SDK gets bytes of its own, so each really uploads. A client resets its peak-RSS mark
(``/proc/self/clear_refs``) just before the call, after its imports and the client's creation;
the figure is ``VmHWM`` after the call minus ``VmRSS`` before it.

Target: RSS growth ≤ 50 MB for either SDK.

    python benchmarks/sdk_memory.py [--mb 200]
    python benchmarks/sdk_memory.py --smoke   # 60 MB: still more than the bound, so a client
                                              # that held the input whole would fail it
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import arguments, finish, machine, parse, photo_jpeg, positive

ROOT = Path(__file__).parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from support.service_harness import Service  # noqa: E402

TARGET_MB = 50
ADJUST = {"shifter": {"resize": {"width": 32}}}

PROBE = """
def rss(field):
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
"""

PYTHON_CLIENT = PROBE + """
import json, sys, time
import tilemore_sdk as sdk
endpoint, token, path, adjust = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
with sdk.Tilemore(endpoint, token, "acme", poll_interval=0.05) as tm:
    tm.balance()  # the session and its connection exist: not counted as the upload's
    open("/proc/self/clear_refs", "w").write("5")  # the peak mark, reset to now
    before = rss("VmRSS")
    started = time.perf_counter()
    thread = tm.wait(tm.create(path, "png", adjust), check=False)
    seconds = time.perf_counter() - started
    print(json.dumps({"status": thread.status, "before": before, "peak": rss("VmHWM"),
                      "seconds": seconds}))
"""

NODE_CLIENT = """
import { readFileSync, writeFileSync } from 'node:fs';
const [sdkUrl, endpoint, token, path, adjust] = process.argv.slice(1);
const { Tilemore } = await import(sdkUrl);
const rss = (field) => Number(readFileSync('/proc/self/status', 'utf8').split('\\n')
  .find((l) => l.startsWith(`${field}:`)).split(/\\s+/)[1]) * 1024;
const tm = new Tilemore({
  apiEndpoint: endpoint, apiToken: token, domain: 'acme', pollIntervalMs: 50,
});
await tm.balance();
globalThis.gc?.();
writeFileSync('/proc/self/clear_refs', '5');
const before = rss('VmRSS');
const started = performance.now();
const thread = await tm.wait(await tm.create(path, 'png', JSON.parse(adjust)), { check: false });
const seconds = (performance.now() - started) / 1000;
console.log(JSON.stringify({ status: thread.status, before, peak: rss('VmHWM'), seconds }));
"""


def padded_input(path: Path, size: int, seed: int) -> None:
    """A small JPEG, then random bytes up to ``size`` (written a MiB at a time)."""
    head = photo_jpeg(64, 48, seed=seed)
    left = size - len(head)
    with path.open("wb") as f:
        f.write(head)
        while left > 0:
            chunk = os.urandom(min(left, 1 << 20))
            f.write(chunk)
            left -= len(chunk)


def run_client(argv: list[str]) -> dict:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=600, cwd=ROOT)
    if done.returncode != 0:
        raise RuntimeError(f"{argv[0]} client exited {done.returncode}: {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = arguments(__doc__)
    ap.add_argument("--mb", type=int, default=200, help="input size, MB (10^6 bytes)")
    args = parse(ap, mb=60)
    size = args.mb * 10**6
    node = shutil.which("node")
    root = Path(tempfile.mkdtemp(prefix="tilemore-sdk-memory-"))
    svc = Service(root / "service", max_input_bytes=max(size * 2, 64 * 2**20))
    try:
        results: dict[str, dict] = {}
        clients = {"python": [sys.executable, "-c", PYTHON_CLIENT]}
        if node:
            sdk_url = (ROOT / "sdk" / "node" / "index.mjs").as_uri()
            clients["node"] = [node, "--expose-gc", "--input-type=module", "-e", NODE_CLIENT,
                               sdk_url]
        for seed, (name, argv) in enumerate(clients.items()):
            path = root / f"{name}-input.bin"
            padded_input(path, size, seed)
            started = time.perf_counter()
            out = run_client([*argv, svc.url, svc.token, str(path), json.dumps(ADJUST)])
            out["wall_seconds"] = time.perf_counter() - started
            out["rss_growth_mb"] = (out["peak"] - out["before"]) / 2**20
            out["mb_per_second"] = args.mb / out["seconds"]
            results[name] = out
            path.unlink()
            print(f"{name}: {args.mb} MB sent, thread {out['status']}, client RSS growth "
                  f"{out['rss_growth_mb']:.1f} MB (target ≤ {TARGET_MB}), "
                  f"{out['mb_per_second']:.0f} MB/s", flush=True)
    finally:
        svc.close()
        shutil.rmtree(root, ignore_errors=True)
    checks = {f"{n}: the thread ran on the uploaded input": r["status"] == "done"
              for n, r in results.items()}
    checks.update({f"{n}: figures are positive": positive(r["seconds"], r["peak"])
                   for n, r in results.items()})
    checks["the node client ran"] = "node" in results or not os.environ.get("CI")
    checks.update({f"{n}: RSS growth ≤ {TARGET_MB} MB": r["rss_growth_mb"] <= TARGET_MB
                   for n, r in results.items()})
    finish("sdk_memory", args, {"machine": machine(), "input_mb": args.mb,
                                "target_mb": TARGET_MB, "clients": results}, checks)


if __name__ == "__main__":
    main()
