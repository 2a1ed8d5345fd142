"""How many pixels one ingress replica decodes at once, across all its requests.

Checking an upload decodes it (corrupt and truncated images are refused before anything is
recorded), and decoding costs memory in proportion to pixels. The budget bounds the sum over
the requests in flight: one that does not fit waits a little for others to finish, then gets
503 with Retry-After instead of taking the replica's memory.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from tilemore.errors import ServiceUnavailable


class DecodeBusy(ServiceUnavailable):
    code = "decode_busy"
    retry_after = 2


class PixelBudget:
    def __init__(self, pixels: int, wait_seconds: float) -> None:
        self.pixels = pixels
        self.wait_seconds = wait_seconds
        self._in_flight = 0
        self._changed = threading.Condition()

    @property
    def in_flight(self) -> int:
        with self._changed:
            return self._in_flight

    @contextmanager
    def hold(self, pixels: int) -> Iterator[None]:
        """Hold ``pixels`` of the budget while the block runs (blocking: off the event loop).
        An image larger than the whole budget holds all of it, alone."""
        need = min(pixels, self.pixels)
        deadline = time.monotonic() + self.wait_seconds
        with self._changed:
            while self._in_flight + need > self.pixels:
                left = deadline - time.monotonic()
                if left <= 0 or not self._changed.wait(left):
                    if self._in_flight + need <= self.pixels:
                        break
                    raise DecodeBusy(
                        f"this server is decoding {self._in_flight:,} pixels of other uploads; "
                        f"{pixels:,} more do not fit its budget of {self.pixels:,} now")
            self._in_flight += need
        try:
            yield
        finally:
            with self._changed:
                self._in_flight -= need
                self._changed.notify_all()
