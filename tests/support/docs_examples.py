"""The examples of README.md and docs/*.md that a test runs, and a folder to run them in.

A fenced block runs when the line before it is an HTML comment (invisible once rendered):

- ``<!-- tested -->``: a ``sh`` block runs in bash (``-euo pipefail``), a ``python`` block is
  executed, a ``js`` block runs in node. Each must succeed.
- ``<!-- tested: ray -->``: the same, on the tests' Ray cluster (an integration test).
- ``<!-- tested: file NAME -->``: the block is written to NAME, for the blocks after it.
- ``<!-- tested: output -->``: what the block before printed; every word in it (numbers, host
  names and timings aside) must be in the real output, so a column or a branch that is gone
  or renamed shows.
- ``<!-- tested: same-as PATH -->``: the block is PATH's text, to the byte.
- ``<!-- tested: adjustments -->``: a JSON envelope or adjustments, accepted by the pipeline
  it names (``denoised`` by default) as a submission's would be.

A ``console`` block is commands (``$ …``) and what they print: each command must succeed, and
what it prints must hold the words shown under it. A block indented in a list item counts.

The blocks of one page run in order in one folder laid out as the repository's is for a
reader: ``examples/`` (the photo a 256x192 crop of ``examples/noisy-coffee.jpg`` so the suite
stays quick, except for ``ray`` blocks, which get the real one), ``photo.jpg`` and
``photos/`` with two small images, ``.venv`` (this test run's), and ``tilemore-data/``, the
data folder of a real service on ``http://127.0.0.1:8000`` in a reader's copy — here
``tests/support/service_harness.py``'s, whose address replaces that one. The ``demo`` domain has
credits and its token in ``tilemore-data/demo-token``, as ``tilemore serve`` leaves them;
``TOKEN`` and ``ENDPOINT``, the placeholders a reader fills in from ``tilemore serve``'s
banner, are set to the harness's.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

from PIL import Image as PILImage

ROOT = Path(__file__).parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
READER_URL = "http://127.0.0.1:8000"
PAYMENT_SECRET = "whsec-docs-examples"
BLOCK = re.compile(r"^(?P<indent>[ \t]*)<!-- tested(?::[ \t]*(?P<how>[^\n]*?))?[ \t]*-->\n"
                   r"(?P=indent)```(?P<lang>[\w-]*)[^\n]*\n(?P<body>.*?)^(?P=indent)```[ \t]*$",
                   re.M | re.S)
WORD = re.compile(r"\b[A-Za-z][\w-]*\b(?!:\d)")  # not host:pid


@dataclass(frozen=True)
class Example:
    page: Path
    index: int  # its place among the page's tested blocks
    how: str  # "", "ray", "file NAME", "output", "same-as PATH"
    lang: str
    body: str
    line: int

    @property
    def name(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def examples(page: Path) -> list[Example]:
    text = page.read_text()
    return [Example(page, i, (m["how"] or "").strip(), m["lang"],
                    textwrap.dedent(m["body"]) if m["indent"] else m["body"],
                    text.count("\n", 0, m.start()) + 2)
            for i, m in enumerate(BLOCK.finditer(text))]


def console(body: str) -> list[tuple[str, str]]:
    """A ``console`` block's commands (``$ …``), each with the output shown after it."""
    steps: list[tuple[str, str]] = []
    for line in body.splitlines():
        if line.startswith("$ "):
            steps.append((line[2:], ""))
        elif steps:
            steps[-1] = (steps[-1][0], steps[-1][1] + line + "\n")
    return steps


def all_examples() -> list[Example]:
    return [e for page in PAGES for e in examples(page)]


def words(text: str) -> set[str]:
    return set(WORD.findall(text))


def missing_words(documented: str, printed: str) -> list[str]:
    """Words of a documented output that the real output lacks."""
    return sorted(words(documented) - words(printed))


def jpeg(image: PILImage.Image) -> bytes:
    buf = io.BytesIO()
    image.convert("RGB").save(buf, "JPEG", quality=90)
    return buf.getvalue()


def lay_out(folder: Path, real_photo: bool = False) -> Path:
    """The reader's repository folder: examples/, photos/ and an empty tilemore-data/."""
    (folder / "examples").mkdir(parents=True)
    for name in ("adjustments.json", "submit_folder.py"):
        shutil.copy(ROOT / "examples" / name, folder / "examples" / name)
    photo = PILImage.open(ROOT / "examples" / "noisy-coffee.jpg")
    if real_photo:
        shutil.copy(ROOT / "examples" / "noisy-coffee.jpg", folder / "examples")
    else:
        small = photo.crop((300, 200, 556, 392))
        (folder / "examples" / "noisy-coffee.jpg").write_bytes(jpeg(small))
    (folder / "photo.jpg").write_bytes(jpeg(photo.crop((0, 0, 320, 240))))
    (folder / "photos").mkdir()
    for i, box in enumerate([(0, 0, 96, 64), (400, 300, 480, 360)]):
        (folder / "photos" / f"p{i}.jpg").write_bytes(jpeg(photo.crop(box)))
    (folder / "tilemore-data").mkdir()
    (folder / ".venv").symlink_to(sys.prefix, target_is_directory=True)  # .venv/bin/tilemore
    return folder


def open_demo(service) -> str:
    """The domains the pages use, as `tilemore serve` and an admin would have left them; the
    demo token is written where `tilemore serve` keeps it. Returns the token."""
    service.store.create_domain("demo")
    service.billing.order("demo", "demo-credits", Decimal("100"))
    service.store.create_domain("denoised")
    _, token = service.store.issue_token("demo")
    (service.settings.data_dir / "demo-token").write_text(token + "\n")
    return token


def environment(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The reader's shell: this venv's `tilemore` and `python` first on PATH, no settings of
    the test run, wide tables."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TILEMORE_")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["COLUMNS"] = "170"
    env["TILEMORE_PAYMENT_WEBHOOK_SECRET"] = PAYMENT_SECRET
    return {**env, **(extra or {})}


def run_shell(body: str, folder: Path, env: dict[str, str], timeout: float = 240
              ) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-euo", "pipefail", "-c", body], cwd=folder, env=env,
                          capture_output=True, text=True, timeout=timeout)


def run_node(body: str, folder: Path, env: dict[str, str], url: str, token: str
             ) -> subprocess.CompletedProcess:
    modules = folder / "node_modules"
    modules.mkdir(exist_ok=True)
    if not (modules / "tilemore-sdk").exists():
        (modules / "tilemore-sdk").symlink_to(ROOT / "sdk" / "node", target_is_directory=True)
    prelude = "".join(f"const {name} = {value!r};\n" for name, value in
                      (("ENDPOINT", url), ("TOKEN", token))
                      if re.search(rf"\b{name}\b", body)
                      and not re.search(rf"\b(const|let|var) {name}\b", body))
    script = folder / "example.cjs"
    script.write_text(prelude + body)
    return subprocess.run(["node", str(script)], cwd=folder, env=env, capture_output=True,
                          text=True, timeout=240)
