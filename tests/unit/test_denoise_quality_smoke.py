"""The repair-quality benchmark runs end to end in its smoke mode (tiny crops, one photo):
every damage of the issue's table gets a row, QC picks the repair made for it, and the
figures are written."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).parents[2] / "benchmarks"


def test_denoise_quality_smoke(tmp_path):
    out = tmp_path / "denoise_quality.json"
    run = subprocess.run([sys.executable, str(BENCHMARKS / "denoise_quality.py"), "--smoke",
                          "--out", str(out)], capture_output=True, text=True, timeout=240,
                         cwd=BENCHMARKS)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    result = json.loads(out.read_text())
    assert result["smoke"] is True and result["held_out"] == ["chelsea"]
    assert result["checks_failed"] == [] and result["commit"]
    damages = result["damages"]
    assert list(damages) == ["jpeg10", "salt_pepper5", "sigma15_jpeg30", "sigma25", "clean"]
    picks = {case: t["picks"][0] for case, t in damages.items()}
    assert picks == {"jpeg10": "deblock", "salt_pepper5": "impulse",
                     "sigma15_jpeg30": "deblock", "sigma25": "dncnn", "clean": "keep"}
    assert damages["clean"]["qc_min"] >= 40
    assert damages["salt_pepper5"]["gain"] > 10
    for t in damages.values():
        assert t["oracle"] >= t["qc"] and set(t["psnr"]) >= {"dncnn", "deblock", "keep"}
    assert "salt_pepper5" in run.stdout and "QC picks" in run.stdout
