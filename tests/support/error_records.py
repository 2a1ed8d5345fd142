"""Error records as the conductor writes them to the error index, for the index's and the
CLI's tests."""

from __future__ import annotations

from tilemore.store import ErrorRecord

TRACEBACK = '''Traceback (most recent call last):
  File "tilemore/engine/host.py", line 88, in run
    out = op.process(params, image)
  File "tests/support/operators.py", line 69, in process
    raise {kind}("{message}")
{kind}: {message}'''


def error(thread="t1", *, domain="acme", account=None, task="boom", operator="explode",
          kind="ZeroDivisionError", message="the operator broke", attempt=1, final=True,
          at=1_700_000_000.0) -> ErrorRecord:
    """One attempt's error; its traceback names ``kind`` and ``message``."""
    return ErrorRecord(domain, account or domain, thread, task, operator, kind, message,
                       TRACEBACK.format(kind=kind, message=message), attempt, final, at)
