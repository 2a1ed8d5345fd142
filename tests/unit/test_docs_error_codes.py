"""Every error code the code can give (``code = "…"`` or ``code="…"``) is documented in the
README or docs/, so a caller who meets one can look it up."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).parents[2]
CODE = re.compile(r'\bcode\s*=\s*"([a-z][a-z_]*)"')


def codes_in_code() -> set[str]:
    files = [*ROOT.joinpath("tilemore").rglob("*.py"),
             *ROOT.joinpath("tilemore_operators").rglob("*.py")]
    return {c for f in files for c in CODE.findall(f.read_text())}


def test_every_error_code_is_documented():
    docs = ROOT.joinpath("README.md").read_text() + "".join(
        p.read_text() for p in sorted(ROOT.joinpath("docs").glob("*.md")))
    codes = codes_in_code()
    assert len(codes) > 50  # the pattern still finds them
    spans = " ".join(re.findall(r"`[^`\n]+`", docs))  # codes are written as code
    missing = sorted(c for c in codes if not re.search(rf"\b{c}\b", spans))
    assert missing == [], f"document these error codes in the README or docs/: {missing}"
