"""Which finished tasks get a checkpoint: those that would cost more to run again than to
store (``TILEMORE_CHECKPOINT_POLICY=costly``, the default), or all of them (``always``).

A decode or an encode of a thumbnail takes a fraction of a millisecond, and storing its
output takes a fsync'd write (a request, on S3): the checkpoint would cost more than it could
ever save. A thread picked up again runs such a task again (see
:mod:`tilemore.service.resume`), and it is not charged again.

The cost of storing is learnt from the replica's own puts, as a fixed part (the write's
fsync, a request) and a part per megabyte of raw output (compression and transfer). A
selector's verdict is always stored, whatever its run took: it is a few bytes, and it is the
thread's QC record, which no re-run should change. Its puts teach the fixed part.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from tilemore.image import Encoded, Image

Mode = Literal["costly", "always"]

SMALL_BYTES = 64 * 1024  # a put this small costs its fixed part, near enough
WEIGHT = 0.2  # of each new put in the running estimates: a few puts adapt them


@dataclass
class PutCost:
    """What a put costs here: ``fixed`` seconds plus ``per_mb`` seconds per raw megabyte."""

    fixed: float
    per_mb: float

    def estimate(self, raw_bytes: int) -> float:
        return self.fixed + self.per_mb * raw_bytes / 1e6

    def observed(self, raw_bytes: int, seconds: float) -> None:
        """A put of ``raw_bytes`` took ``seconds``: the estimates move towards it."""
        if raw_bytes <= SMALL_BYTES:
            self.fixed += WEIGHT * (seconds - self.fixed)
        else:
            rate = max(0.0, seconds - self.fixed) * 1e6 / raw_bytes
            self.per_mb += WEIGHT * (rate - self.per_mb)


class CheckpointPolicy:
    def __init__(self, mode: Mode = "costly", put_seconds: float = 0.002,
                 put_mb_per_second: float = 200.0) -> None:
        self.mode = mode
        self.cost = PutCost(put_seconds, 1.0 / put_mb_per_second)

    @classmethod
    def of(cls, settings: Any) -> CheckpointPolicy:
        return cls(settings.checkpoint_policy, settings.checkpoint_put_seconds,
                   settings.checkpoint_put_mb_per_second)

    def worth_storing(self, run_seconds: float, output: Any, *, verdict: bool = False) -> bool:
        """Whether a task that ran ``run_seconds`` has its ``output`` stored."""
        if self.mode == "always" or verdict:
            return True
        return run_seconds > self.cost.estimate(raw_bytes(output))


def raw_bytes(value: Any) -> int:
    """An output's size before compression: what a put of it has to handle."""
    if isinstance(value, Image):
        return int(value.pixels.nbytes)
    if isinstance(value, Encoded):
        return len(value.data)
    if isinstance(value, bytes):
        return len(value)
    return 0
