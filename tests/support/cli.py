"""The ``tilemore`` command line run in the test's process, as the CLI tests call it."""

from __future__ import annotations

import pytest

from tilemore.cli import main


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """``tilemore ARGV…``: its exit code, and what it printed on stdout and on stderr."""
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err
