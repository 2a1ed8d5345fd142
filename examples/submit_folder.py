"""Submit every image of a folder through the Python SDK, several at a time, with a progress
bar; results land in an output folder. Safe to run again: finished images are not redone or
re-billed (the API is idempotent), so an interrupted run simply continues.

    python examples/submit_folder.py PHOTOS/ OUT/ --endpoint http://127.0.0.1:8000 \\
        --token "$(cat tilemore-data/demo-token)" --domain demo -a examples/adjustments.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

import tilemore_sdk as sdk

SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".tif", ".tiff"}
EXTENSIONS = {"jpeg": ".jpg", "png": ".png", "webp": ".webp"}


class Bar:
    """A one-line progress bar on stderr (no dependency beyond the SDK)."""

    def __init__(self, total: int) -> None:
        self.total, self.done, self.failed, self.started = total, 0, 0, time.monotonic()

    def step(self, ok: bool) -> None:
        self.done += 1
        self.failed += not ok
        width = 30
        filled = width * self.done // max(self.total, 1)
        rate = self.done / max(time.monotonic() - self.started, 1e-9)
        sys.stderr.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total}"
                         f"  {rate:.1f} img/s  {self.failed} failed ")
        sys.stderr.flush()


async def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("source", type=Path)
    ap.add_argument("dest", type=Path)
    ap.add_argument("--endpoint", required=True)
    ap.add_argument("--token", required=True)
    ap.add_argument("--domain", required=True)
    ap.add_argument("-a", "--adjustments", type=Path, help="a JSON file of adjustments")
    ap.add_argument("-f", "--format", default="jpeg", choices=sdk.FORMATS)
    ap.add_argument("-j", "--concurrency", type=int, default=8)
    args = ap.parse_args()
    adjustments = json.loads(args.adjustments.read_text()) if args.adjustments else {}
    images = sorted(p for p in args.source.iterdir() if p.suffix.lower() in SUFFIXES)
    args.dest.mkdir(parents=True, exist_ok=True)
    bar = Bar(len(images))
    gate = asyncio.Semaphore(args.concurrency)
    failures: list[str] = []

    async with sdk.AsyncTilemore(args.endpoint, args.token, args.domain) as tm:
        async def one(path: Path) -> None:
            async with gate:
                out = args.dest / (path.stem + EXTENSIONS[args.format])
                try:
                    await tm.submit(path, args.format, adjustments, meta={"file": path.name},
                                    output=out)
                    bar.step(True)
                except sdk.TilemoreError as exc:
                    failures.append(f"{path.name}: {exc}")
                    bar.step(False)

        await asyncio.gather(*(one(p) for p in images))
    sys.stderr.write("\n")
    for line in failures:
        print(line, file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
