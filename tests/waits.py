"""Waiting for something to become true, as the slower tests do."""

from __future__ import annotations

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
