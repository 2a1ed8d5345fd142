"""``tilemore run`` as a user runs it, in its own process, on the tests' Ray cluster."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from PIL import Image as PILImage
from support.images import encode, noisy, photo


def tilemore(ray_address: str, *argv: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "TILEMORE_RAY_ADDRESS": ray_address, "COLUMNS": "120"}
    return subprocess.run([sys.executable, "-m", "tilemore.cli", *argv], env=env,
                          capture_output=True, text=True, timeout=300)


def test_run_on_ray(ray_session, tmp_path):
    src = tmp_path / "photo.jpg"
    src.write_bytes(encode(noisy(photo(480, 360), 12), "JPEG", quality=92))
    adj = tmp_path / "adj.json"
    adj.write_text(json.dumps({"master": {"algorithm": "denoised-multiformat"},
                               "shifter": {"crop": {"aspect": "1:1"},
                                           "resize": {"width": 128}}}))
    out = tmp_path / "out.jpeg"
    proc = tilemore(ray_session, "run", str(src), "-a", str(adj), "-f", "jpeg", "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    assert PILImage.open(out).size == (128, 128)
    for words in ("master/nlmeans", "master/bilateral", "master/guided", "master/dncnn",
                  "QC picked",
                  "critical path"):
        assert words in proc.stdout
    assert "Traceback" not in proc.stderr


def test_bad_image_on_ray_is_one_line(ray_session, tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    proc = tilemore(ray_session, "run", str(bad))
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        "tilemore: decode (decode) [corrupt_image]: the image header is corrupt: "
        + proc.stderr.split("corrupt: ", 1)[1].strip()
    ]
