"""The repair-quality benchmark runs end to end in its smoke mode (tiny crops, one photo):
every damage of the issue's table gets a row, QC picks the repair made for it, and the
figures are written."""

from __future__ import annotations

from support.benchmark_smoke import run_smoke


def test_denoise_quality_smoke(tmp_path):
    result = run_smoke("denoise_quality", tmp_path)
    assert result["held_out"] == ["chelsea"]
    damages = result["damages"]
    assert list(damages) == ["jpeg10", "salt_pepper5", "sigma15_jpeg30", "sigma25", "clean"]
    picks = {case: t["picks"][0] for case, t in damages.items()}
    assert picks == {"jpeg10": "deblock", "salt_pepper5": "impulse",
                     "sigma15_jpeg30": "deblock", "sigma25": "dncnn", "clean": "keep"}
    assert damages["clean"]["qc_min"] >= 40
    assert damages["salt_pepper5"]["gain"] > 10
    for t in damages.values():
        assert t["oracle"] >= t["qc"] and set(t["psnr"]) >= {"dncnn", "deblock", "keep"}
