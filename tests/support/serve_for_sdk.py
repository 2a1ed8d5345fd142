"""Run the Tilemore service (Ray-free harness) for another language's SDK tests: prints one
JSON line (url, token, proxy_url, rival_token, samples) and serves until stdin closes."""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

TESTS = Path(__file__).parents[1]
sys.path.insert(0, str(TESTS))  # run as a script: `support` is a package in tests/

from support.fault_proxy import DroppingProxy  # noqa: E402
from support.images import encode, noisy, photo  # noqa: E402
from support.service_harness import Service  # noqa: E402


def main() -> None:
    root = Path(tempfile.mkdtemp(prefix="tilemore-sdk-"))
    svc = Service(root, pipeline_paths=[TESTS / "data" / "broken.yaml"])
    proxy = DroppingProxy(svc.port, drop_uploads=1, cut_after=2048)
    samples = []
    for seed in range(4):
        path = root / f"sample{seed}.jpg"
        path.write_bytes(encode(noisy(photo(96, 72), 10, seed=seed), "JPEG", quality=90))
        samples.append(str(path))
    print(json.dumps({"url": svc.url, "token": svc.token, "proxy_url": proxy.url,
                      "samples": samples, "folder": str(root)}), flush=True)
    sys.stdin.read()
    proxy.close()
    svc.close()


if __name__ == "__main__":
    main()
