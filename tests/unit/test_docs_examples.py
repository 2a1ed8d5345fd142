"""Every example of README.md and docs/*.md marked ``<!-- tested -->`` runs against the real
CLI and a real service (``tests/support/service_harness.py``), page by page, so none goes stale; the
rules are in ``tests/support/docs_examples.py``. The ``ray`` ones run in
``tests/integration/test_docs_examples_on_ray.py``."""

from __future__ import annotations

import json
import re
import shutil

import pytest
from support.docs_examples import (
    PAGES,
    READER_URL,
    ROOT,
    all_examples,
    console,
    environment,
    examples,
    lay_out,
    missing_words,
    open_demo,
    run_node,
    run_shell,
)
from support.service_harness import Service

from tilemore.pipeline import build_graph

RUN_HERE = [p for p in PAGES if any(e.how != "ray" for e in examples(p))]


def test_the_pages_mark_their_examples():
    marked = all_examples()
    assert {e.how.split()[0] if e.how else "" for e in marked} >= {
        "", "ray", "file", "output", "same-as", "adjustments"}
    by_lang = {e.lang for e in marked if not e.how}
    assert by_lang >= {"sh", "python", "js", "console"}
    # The README's own: curl, both SDKs, the operator and its pipeline, `tilemore run`.
    readme = examples(ROOT / "README.md")
    assert [e.lang for e in readme if not e.how] == ["sh", "python", "js", "sh"]
    assert {e.how for e in readme} >= {"ray", "output", "file sharpen.py", "file sharp.yaml"}


def test_an_output_check_finds_a_missing_column():
    assert missing_words("candidate  score  whiteness", "candidate score") == ["whiteness"]
    assert missing_words("decode  0.031  vm:11601", "decode 0.2 other:17") == []


@pytest.mark.parametrize("page", RUN_HERE, ids=lambda p: str(p.relative_to(ROOT)))
def test_page_examples_run(page, catalog, tmp_path, monkeypatch):
    folder = lay_out(tmp_path / "repo")
    service = Service(folder / "tilemore-data",
                      payment_webhook_secret=environment()["TILEMORE_PAYMENT_WEBHOOK_SECRET"])
    try:
        token = open_demo(service)
        env = environment()
        monkeypatch.chdir(folder)
        last_output = None
        for ex in examples(page):
            body = ex.body.replace(READER_URL, service.url)
            kind, _, arg = ex.how.partition(" ")
            if kind == "ray":
                last_output = None  # tests/integration runs it, with its output
                continue
            if kind == "file":
                (folder / arg).write_text(ex.body)
            elif kind == "same-as":
                assert ex.body == (ROOT / arg).read_text(), f"{ex.name} differs from {arg}"
            elif kind == "output":
                if last_output is not None:
                    assert missing_words(ex.body, last_output) == [], ex.name
            elif kind == "adjustments":
                doc = json.loads(ex.body)
                pipeline = catalog.pipeline(doc.get("pipeline", "denoised"))
                build_graph(pipeline, doc.get("adjustments", doc))  # raises on a bad one
            elif ex.lang == "console":
                for command, shown in console(body):
                    proc = run_shell(command, folder, env)
                    printed = proc.stdout + proc.stderr
                    assert proc.returncode == 0, f"{ex.name}: $ {command}\n{printed}"
                    assert missing_words(shown, printed) == [], f"{ex.name}: $ {command}"
                last_output = None
            elif ex.lang == "sh":
                for tool in ("curl", "openssl"):
                    if re.search(rf"\b{tool}\b", body) and not shutil.which(tool):
                        pytest.skip(f"{tool} is not installed")
                proc = run_shell(body, folder, env)
                assert proc.returncode == 0, f"{ex.name}:\n{proc.stdout}\n{proc.stderr}"
                last_output = proc.stdout
            elif ex.lang == "python":
                exec(compile(body, ex.name, "exec"), {"TOKEN": token, "__name__": "docs"})
                last_output = None
            elif ex.lang == "js":
                if not shutil.which("node"):
                    pytest.skip("node is not installed")
                proc = run_node(body, folder, env, service.url, token)
                assert proc.returncode == 0, f"{ex.name}:\n{proc.stdout}\n{proc.stderr}"
                last_output = proc.stdout
            else:
                pytest.fail(f"{ex.name}: no way to run a {ex.lang!r} block")
    finally:
        service.close()

