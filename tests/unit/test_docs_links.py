"""The README stays short and its set-up commands stay the ones CI runs; every relative link
of the README and docs/ leads somewhere; every setting is in docs/settings.md."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tilemore.settings import ENV_PREFIX, Settings

ROOT = Path(__file__).parents[2]
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"(?<!!)\[[^\]\n]*\]\(([^)\s]+)\)")
SERVE = "python3 -m venv .venv && .venv/bin/pip install -e . && .venv/bin/tilemore serve"


def test_readme_is_at_most_300_lines():
    assert len(README.read_text().splitlines()) <= 300


def test_readme_runs_what_ci_runs():
    """`.ci/run` ends with the README's test command: a fresh clone runs what a reader would."""
    ci = (ROOT / ".ci" / "run").read_text().strip().splitlines()[-1]
    blocks = re.findall(r"^```sh\n(.*?)^```", README.read_text(), re.S | re.M)
    commands = [b.strip() for b in blocks]
    assert ci.startswith("python3 -m venv .venv && ") and "pytest" in ci
    assert ci in commands, "the README's test command differs from .ci/run's"
    assert SERVE in commands


def anchors(page: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces as '-'."""
    text = re.sub(r"^```.*?^```", "", page.read_text(), flags=re.S | re.M)
    heads = re.findall(r"^#{1,6} (.+?)\s*$", text, re.M)
    return {re.sub(r"[^\w\- ]", "", h.replace("`", "").lower()).replace(" ", "-")
            for h in heads}


def links() -> list[tuple[Path, str]]:
    found = []
    for page in PAGES:
        text = re.sub(r"^```.*?^```", "", page.read_text(), flags=re.S | re.M)
        found += [(page, target) for target in LINK.findall(text)
                  if not re.match(r"[a-z][a-z0-9+.-]*:", target)]  # not http:, mailto:
    return found


def test_the_pages_have_relative_links():
    assert len(links()) > 40


@pytest.mark.parametrize("page,target", links(),
                         ids=lambda v: v.name if isinstance(v, Path) else v)
def test_relative_link_leads_somewhere(page, target):
    path, _, anchor = target.partition("#")
    dest = (page.parent / path).resolve() if path else page
    assert dest.exists(), f"{page.name}: {target} names no file"
    assert dest.is_relative_to(ROOT)
    if anchor and dest.suffix == ".md":
        assert anchor in anchors(dest), f"{page.name}: {target}: no such heading"


def test_every_setting_is_in_the_settings_page():
    rows = set(re.findall(r"^\| `(TILEMORE_[A-Z0-9_]+)` \|", (ROOT / "docs" / "settings.md")
                          .read_text(), re.M))
    fields = {ENV_PREFIX + name.upper() for name in Settings.model_fields}
    assert len(fields) > 50
    assert sorted(fields - rows) == [], "document these settings in docs/settings.md"
    assert sorted(rows - fields) == [], "docs/settings.md lists settings that are gone"


REPO_PATH = re.compile(r"`((?:tilemore|tilemore_deployments|tilemore_operators|benchmarks|"
                       r"tests|sdk|cluster-configs|examples)/[\w/.*-]*)`")
GENERATED = ("benchmarks/out/",)  # what a benchmark writes (git-ignored): not in a fresh clone


def test_every_repository_path_named_exists():
    """A module or file the pages name in code spans (`tilemore/api/app.py`,
    `tilemore/store/error_index*.py`) is there: a rename shows here, not to a reader."""
    named = {m for page in PAGES for m in REPO_PATH.findall(page.read_text())}
    assert len(named) > 40
    gone = sorted(n for n in named
                  if not n.startswith(GENERATED) and not list(ROOT.glob(n.rstrip("/"))))
    assert gone == [], f"the docs name paths that do not exist: {gone}"
