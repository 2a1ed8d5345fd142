"""What the benchmarks share: deterministic test photos, a median timer, the flags every
benchmark has (``--smoke``, ``--out``) and writing its figures with its own sanity checks."""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image as PILImage
from skimage import data as skdata

OUT = Path(__file__).parent / "out"


def photo_jpeg(width: int = 4000, height: int = 3000, sigma: float = 12.0, seed: int = 0,
               quality: int = 92) -> bytes:
    """A noisy photo of the given size (scikit-image's coffee, upscaled), as JPEG bytes."""
    base = PILImage.fromarray(skdata.coffee()).resize((width, height),
                                                      PILImage.Resampling.LANCZOS)
    rng = np.random.default_rng(seed)
    pixels = np.asarray(base).astype(np.float32)
    pixels += rng.normal(0, sigma, pixels.shape).astype(np.float32)
    buf = io.BytesIO()
    PILImage.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(buf, "JPEG",
                                                                       quality=quality)
    return buf.getvalue()


def photo_size(megapixels: float) -> tuple[int, int]:
    """Width and height of a 4:3 photo of about ``megapixels`` (a camera's shape)."""
    width = int(math.sqrt(megapixels * 1e6 * 4 / 3))
    return width, width * 3 // 4


def median_time(fn: Callable[[], object], repeat: int) -> tuple[float, list[float]]:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times), times


def process_cpu(pid: int | str) -> tuple[int, float] | None:
    """(parent pid, user + system CPU seconds) of a process, from /proc; None once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine() -> str:
    import os
    return f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"


def commit() -> str:
    """The commit the figures are measured at (``+dirty`` with uncommitted changes), so a
    figure copied into the README can name it."""
    here = Path(__file__).parent
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                          text=True, cwd=here).stdout.strip() or "unknown"
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", "."],
                           capture_output=True, text=True, cwd=here.parent).stdout.strip()
    return head + ("+dirty" if dirty else "")


def save(name: str, result: dict, path: Path | None = None) -> Path:
    path = path or OUT / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"commit": commit(), **result}, indent=2, default=str))
    return path


def arguments(doc: str | None) -> argparse.ArgumentParser:
    """A benchmark's parser, with the flags every benchmark has."""
    ap = argparse.ArgumentParser(description=(doc or "").split("\n\n")[0])
    ap.add_argument("--smoke", action="store_true",
                    help="tiny inputs, one round (seconds, for CI): the same code path, its "
                         "result checked for sanity, not for speed")
    ap.add_argument("--out", type=Path,
                    help="write the figures here (default: benchmarks/out/NAME.json, or "
                         "NAME.smoke.json with --smoke, so a smoke run never replaces figures)")
    return ap


def parse(ap: argparse.ArgumentParser, **smoke: object) -> argparse.Namespace:
    """Parse the command line; with ``--smoke``, ``smoke`` overrides the named options."""
    args = ap.parse_args()
    if args.smoke:
        for name, value in smoke.items():
            if not hasattr(args, name):
                raise AttributeError(f"--smoke sets {name}, which the parser lacks")
            setattr(args, name, value)
    return args


def positive(*values: object) -> bool:
    """Every value is a finite number above zero (a rate, a time, a ratio)."""
    return all(isinstance(v, int | float) and math.isfinite(v) and v > 0 for v in values)


def finish(name: str, args: argparse.Namespace, result: dict,
           checks: dict[str, bool]) -> Path:
    """Write the figures (with the commit and whether this was a smoke run), then exit 1 if
    any sanity check failed: a benchmark whose result is nonsense must fail, not print it."""
    default = OUT / (f"{name}.smoke.json" if args.smoke else f"{name}.json")
    failed = [what for what, ok in checks.items() if not ok]
    path = save(name, {"smoke": args.smoke, **result, "checks_failed": failed},
                args.out or default)
    if failed:
        print(f"{name}: sanity checks failed: {'; '.join(failed)} (figures in {path})",
              file=sys.stderr)
        sys.exit(1)
    return path
