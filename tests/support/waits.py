"""Waiting for something to become true, as the slower tests do."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable


def until(predicate: Callable[[], object], timeout: float, step: float = 0.2) -> bool:
    """Whether ``predicate()`` became true within ``timeout`` seconds, asked every ``step``."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(step)
    return True


def close_child(proc: subprocess.Popen, timeout: float = 60) -> None:
    """Stop a child that runs until its stdin closes (the service processes the replica tests
    and the benchmarks start), killing it if it takes longer than ``timeout``."""
    proc.stdin.close()  # type: ignore[union-attr]
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
