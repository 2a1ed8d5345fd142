"""A newcomer's path through README.md, from a fresh clone: install, ``tilemore serve``, a
submission with curl and one with the Python SDK, a stop with SIGTERM, then a new operator
from ``tilemore init operator`` validated, run and tested. Every command exits 0.

The commands are the README's own, read from its fenced blocks, so the test breaks when they
do. The tested blocks' contents (curl, the SDK, the README's own operator) are also run by
``tests/unit/test_docs_examples.py`` against an in-process service; here they run as a reader
runs them: in a clone of the committed HEAD (edits not yet committed are not what it tests),
with that clone's ``.venv/bin/tilemore``, against a real ``tilemore serve`` on its own Ray.

One step differs from the README, on purpose: its install line creates ``.venv`` and pip
installs every dependency from the registries (gigabytes: torch, Ray), which is slow and
needs the network. That real install is what ``.ci/run`` itself does on a fresh machine, and
the suite runs inside it. Here ``.venv`` is made with ``--system-site-packages`` and sees the
running interpreter's packages, and the clone (and its ``sdk/python``) is installed into it
with ``pip install --no-deps --no-build-isolation -e``, offline; the test then checks that
``tilemore`` is the clone's.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from PIL import Image as PILImage
from support.docs_examples import READER_URL, examples, jpeg
from support.service_harness import free_port, http

pytestmark = pytest.mark.slow

HERE = Path(__file__).resolve().parent
README_NAME = "README.md"
SERVE_START_S = 180  # a loaded 2-core machine: Ray, Serve and every operator's replicas
OPERATOR = "edge-glow"  # the newcomer's operator


def fenced(text: str, lang: str = "sh") -> list[str]:
    """The bodies of the page's fenced ``lang`` blocks, marked or not, in order."""
    return re.findall(rf"^```{lang}[^\n]*\n(.*?)^```[ \t]*$", text, re.M | re.S)


def commands(block: str) -> list[str]:
    """A shell block's command lines, continuation lines joined, comments dropped."""
    lines = block.replace("\\\n", " ").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


def readme_command(text: str, start: str) -> str:
    """The README's one command line that starts with ``start``."""
    found = [c for block in fenced(text) for c in commands(block) if c.startswith(start)]
    assert len(found) == 1, f"README.md: expected one command starting {start!r}, got {found}"
    return found[0]


@dataclass
class Clone:
    root: Path
    env: dict[str, str]  # a reader's shell: the clone's .venv/bin first on PATH
    readme: str

    def sh(self, command: str, timeout: float = 120) -> subprocess.CompletedProcess:
        """Run a command as a reader pastes it, in the clone's folder; it must exit 0."""
        proc = subprocess.run(["bash", "-euo", "pipefail", "-c", command], cwd=self.root,
                              env=self.env, capture_output=True, text=True, timeout=timeout)
        assert proc.returncode == 0, f"$ {command}\n{proc.stdout}\n{proc.stderr}"
        return proc


def parent_site_packages() -> list[str]:
    """Where the running interpreter's packages are (a venv's, then the base's)."""
    paths = [sysconfig.get_path("purelib"), sysconfig.get_path("platlib")]
    return list(dict.fromkeys(p for p in paths if p and Path(p).is_dir()))


@pytest.fixture(scope="module")
def clone(tmp_path_factory) -> Iterator[Clone]:
    """A clone of the committed HEAD, installed into its own ``.venv`` as the README says."""
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    top = subprocess.run(["git", "-C", str(HERE), "rev-parse", "--show-toplevel"],
                         capture_output=True, text=True)
    if top.returncode != 0:
        pytest.skip(f"the tests do not run from a git checkout, nothing to clone: "
                    f"{top.stderr.strip()}")
    root = tmp_path_factory.mktemp("newcomer") / "tilemore"
    subprocess.run(["git", "clone", "--quiet", "--no-hardlinks", top.stdout.strip(),
                    str(root)], check=True, capture_output=True, timeout=120)
    readme = (root / README_NAME).read_text()

    # The README's install: `python3 -m venv .venv && .venv/bin/pip install -e . && …`.
    install = readme_command(readme, "python3 -m venv .venv && .venv/bin/pip install -e . ")
    venv_step, pip_step, serve_step = (s.strip() for s in install.split("&&"))
    assert (venv_step, pip_step, serve_step) == (
        "python3 -m venv .venv", ".venv/bin/pip install -e .", ".venv/bin/tilemore serve")
    # Offline instead (see the module's docstring): the running interpreter's packages.
    # No pip of its own (ensurepip's, and on 3.11 its old setuptools, would shadow the
    # running interpreter's): `.venv/bin/python -m pip` is the running interpreter's pip.
    subprocess.run([sys._base_executable, "-m", "venv", "--system-site-packages",
                    "--without-pip", ".venv"], cwd=root, check=True, capture_output=True,
                   timeout=120)
    venv_site = Path(subprocess.run(
        [".venv/bin/python", "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        cwd=root, check=True, capture_output=True, text=True).stdout.strip())
    # Plain paths, not site dirs: the parent's own editable installs (its .pth) stay out.
    (venv_site / "zz_parent_packages.pth").write_text("\n".join(parent_site_packages()) + "\n")
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("TILEMORE_", "RAY_", "PYTHON", "VIRTUAL_ENV"))}
    env |= {"PATH": f"{root / '.venv' / 'bin'}{os.pathsep}{env.get('PATH', '')}",
            "VIRTUAL_ENV": str(root / ".venv"), "COLUMNS": "170",
            "PIP_NO_INDEX": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    c = Clone(root, env, readme)
    pip = pip_step.replace(".venv/bin/pip install",
                           ".venv/bin/python -m pip install --no-deps --no-build-isolation")
    c.sh(f"{pip} -e sdk/python", timeout=300)

    # The clone's tilemore, not the checkout's the suite runs from.
    where = c.sh(".venv/bin/python -c 'import tilemore, tilemore_sdk; "
                 "print(tilemore.__file__); print(tilemore_sdk.__file__)'").stdout.split()
    assert [Path(w).is_relative_to(root) for w in where] == [True, True], where
    assert c.sh("command -v tilemore").stdout.strip() == str(root / ".venv/bin/tilemore")
    assert c.sh(".venv/bin/tilemore --version").stdout.strip()

    # The README's photo, cropped so that the pipeline runs in seconds on a busy machine
    # (as tests/support/docs_examples.py does); the real one is what `tilemore run` tests use.
    photo = root / "examples" / "noisy-coffee.jpg"
    photo.write_bytes(jpeg(PILImage.open(photo).crop((300, 200, 556, 392))))
    yield c


class Served:
    """The README's `.venv/bin/tilemore serve`, in the clone, in its own process group (so
    nothing it starts outlives it) and on its own Ray under a throwaway temp folder."""

    def __init__(self, c: Clone, command: str, port: int) -> None:
        self.ray_tmp = tempfile.mkdtemp(prefix="ray-newcomer-", dir="/tmp")  # short: sockets
        env = c.env | {"TILEMORE_PORT": str(port), "RAY_TMPDIR": self.ray_tmp,
                       "PYTHONUNBUFFERED": "1"}
        self.out = c.root / "serve.out"
        with open(self.out, "w") as out:
            self.proc = subprocess.Popen(["bash", "-c", f"exec {command}"], cwd=c.root,
                                         env=env, stdout=out, stderr=subprocess.STDOUT,
                                         start_new_session=True)

    def output(self) -> str:
        return self.out.read_text()

    def wait_for_banner(self) -> str:
        deadline = time.monotonic() + SERVE_START_S
        while "Ctrl-C stops" not in self.output():
            assert self.proc.poll() is None, f"tilemore serve exited:\n{self.output()}"
            assert time.monotonic() < deadline, f"no banner in {SERVE_START_S} s:\n" \
                                                f"{self.output()}"
            time.sleep(0.25)
        return self.output()

    def stop(self, grace: float) -> tuple[int, float]:
        started = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        rc = self.proc.wait(timeout=grace + 10)
        return rc, time.monotonic() - started

    def close(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=30)
        shutil.rmtree(self.ray_tmp, ignore_errors=True)


def banner_commands(banner: str) -> list[str]:
    """The banner's example: ``IMG=…``, the submission, the wait and the download."""
    lines = [line[2:] for line in banner.split("Submit an image", 1)[1].splitlines()
             if line.startswith("  ")]
    found = commands("\n".join(lines))
    assert found[0].startswith("IMG=") and [c.split()[0] for c in found[1:]] == ["curl"] * 3, \
        found
    return found


def json_values(text: str) -> list[object]:
    """The JSON documents curl printed one after another."""
    decoder, values, i = json.JSONDecoder(), [], 0
    while (i := _skip_space(text, i)) < len(text):
        value, i = decoder.raw_decode(text, i)
        values.append(value)
    return values


def _skip_space(text: str, i: int) -> int:
    while i < len(text) and text[i].isspace():
        i += 1
    return i


def test_serve_then_submit_with_curl_and_the_sdk(clone):
    c = clone
    install = readme_command(c.readme, "python3 -m venv .venv && .venv/bin/pip install -e . ")
    serve_command = install.split("&&")[-1].strip()
    port = free_port()
    served = Served(c, serve_command, port)
    try:
        banner = served.wait_for_banner()
        url = f"http://127.0.0.1:{port}"
        assert f"Tilemore is serving on {url}" in banner, banner
        token = re.search(r"token: (\S+)", banner)[1]
        assert (c.root / "tilemore-data" / "demo-token").read_text().strip() == token
        for path in ("/healthz", "/docs", "/openapi.json"):  # the README names the last two
            assert http("GET", url + path).status == 200, path
        auth = {"Authorization": f"Token {token} Domain demo"}

        # The banner's own curl example, "works when pasted from the repository's folder".
        pasted = banner_commands(banner)
        submitted = json.loads(c.sh("\n".join(pasted[:2]), timeout=60).stdout)
        assert submitted["status"] == "processing", submitted
        for command in pasted[2:]:
            c.sh(command.replace("THREAD_ID", submitted["thread_id"]), timeout=90)
        assert PILImage.open(c.root / "result.jpg").width == 1024

        # The README's curl block, as pasted from the clone's folder.
        curl_block = next(e for e in examples(c.root / README_NAME)
                          if e.lang == "sh" and "curl" in e.body and not e.how)
        if shutil.which("curl") is None:
            pytest.skip("curl is not installed")
        proc = c.sh(curl_block.body.replace(READER_URL, url), timeout=150)
        asked, thread = json_values(proc.stdout)
        assert asked["status"] == "needs-file", proc.stdout
        assert thread["status"] == "done", thread
        result = PILImage.open(c.root / "result.jpg")
        assert (result.format, result.width) == ("JPEG", 800)
        # The answer's link downloads the same image.
        with urllib.request.urlopen(urllib.request.Request(
                thread["result"]["url"], headers=auth), timeout=30) as resp:
            assert resp.read() == (c.root / "result.jpg").read_bytes()

        # The README's Python SDK block, run with the clone's .venv/bin/python.
        sdk_block = next(e for e in examples(c.root / README_NAME)
                         if e.lang == "python" and not e.how)
        script = c.root / "sdk_example.py"
        script.write_text(f"TOKEN = {token!r}\n" + sdk_block.body.replace(READER_URL, url))
        proc = c.sh(".venv/bin/python sdk_example.py", timeout=150)
        thread_id = proc.stdout.split()[0]
        answer = http("GET", f"{url}/threads/{thread_id}", headers=auth).json()
        assert answer["status"] == "done", answer
        assert PILImage.open(c.root / "coffee.jpg").format == "JPEG"

        grace = float(re.search(r"Ctrl-C or SIGTERM stops it within (\d+) s", c.readme)[1])
        rc, took = served.stop(grace)
        out = served.output()
        assert rc == 0, out
        assert took < grace, (took, out)
        assert "no thread in flight" in out, out
    finally:
        served.close()


def test_a_new_operator_is_validated_run_and_tested(clone):
    """`tilemore init operator NAME`, then the README's `tilemore validate`, `tilemore
    operators describe` and `tilemore run … --backend local` lines with the new names, then
    the test `init` wrote, with the clone's venv."""
    c = clone
    assert "`tilemore init operator NAME`" in c.readme
    module = OPERATOR.replace("-", "_")
    wrote = c.sh(f"tilemore init operator {OPERATOR}").stdout
    for name in (f"{module}.py", f"{OPERATOR}.yaml", f"test_{module}.py"):
        assert (c.root / name).is_file(), wrote

    # The README's authoring block, written for its own sharpen.py and sharp.yaml: the same
    # commands with the new operator's names, adjustments within its parameter's range.
    block = next(e for e in examples(c.root / README_NAME)
                 if e.lang == "sh" and "tilemore validate" in e.body and not e.how)
    ran = []
    for command in commands(block.body):
        words = shlex.split(command)
        assert words[0] == "tilemore", command
        renamed = [{"sharp.yaml": f"{OPERATOR}.yaml", "sharp": OPERATOR, "sharpen": OPERATOR,
                    "sharp.jpg": f"{module}.jpg"}.get(w, w) for w in words]
        if "-a" in renamed:
            at = renamed.index("-a") + 1
            assert set(json.loads(renamed[at])) == {"sharpen"}, command
            renamed[at] = json.dumps({OPERATOR: {"amount": 0.5}})
        c.sh(shlex.join(renamed), timeout=180)
        ran.append(renamed[1])
    assert ran == ["validate", "operators", "run"], ran
    assert "--backend" in command and "local" in command  # no Ray for this one
    out = PILImage.open(c.root / f"{module}.jpg")
    assert out.format == "JPEG" and out.size == (256, 192)

    # The test `init` wrote, run the way its "next:" line says.
    nxt = wrote.rsplit("next: ", 1)[1].strip()
    assert f"python -m pytest test_{module}.py" in nxt, wrote
    c.sh(nxt.replace("python -m pytest", "python -m pytest -q -p no:cacheprovider"),
         timeout=180)
