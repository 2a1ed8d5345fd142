"""The examples of README.md and docs/*.md marked ``<!-- tested: ray -->`` run as a reader runs
them, on the tests' Ray cluster, on the real example photo; an ``output`` block after one must
name only words the real output prints (``tests/support/docs_examples.py`` has the rules)."""

from __future__ import annotations

import pytest
from support.docs_examples import (
    all_examples,
    console,
    environment,
    examples,
    lay_out,
    missing_words,
    run_shell,
)

ON_RAY = [e for e in all_examples() if e.how == "ray"]


def test_the_readme_run_example_is_among_them():
    assert any(e.page.name == "README.md" and "tilemore run" in e.body for e in ON_RAY)


@pytest.mark.slow
@pytest.mark.parametrize("example", ON_RAY, ids=lambda e: e.name)
def test_ray_example_runs(example, ray_session, tmp_path):
    folder = lay_out(tmp_path / "repo", real_photo=True)
    env = environment({"TILEMORE_RAY_ADDRESS": ray_session})
    if example.lang == "console":
        for command, shown in console(example.body):
            proc = run_shell(command, folder, env, timeout=280)
            printed = proc.stdout + proc.stderr
            assert proc.returncode == 0, f"{example.name}: $ {command}\n{printed}"
            assert missing_words(shown, printed) == [], f"{example.name}: $ {command}"
        return
    proc = run_shell(example.body, folder, env, timeout=280)
    assert proc.returncode == 0, f"{example.name}:\n{proc.stdout}\n{proc.stderr}"
    after = [e for e in examples(example.page) if e.index == example.index + 1]
    if after and after[0].how == "output":
        assert missing_words(after[0].body, proc.stdout) == [], after[0].name
