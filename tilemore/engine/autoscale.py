"""How many replicas an operator pool wants: Ray Serve's request-based policy, without Ray.

Serve scales its deployments (the ingress) itself; operator pools are plain actors, so
:class:`~tilemore.engine.ray_pools.RayPools` asks a :class:`ScalePolicy` per pool, with the
same rule and names as Serve's ``autoscaling_config``: ``ceil(mean ongoing / target)``
replicas, clamped to ``[min, max]``, applied once the wish to grow (or shrink) has held for
``upscale_delay_s`` (or ``downscale_delay_s``). Pure Python, so it is tested without a cluster.
"""

from __future__ import annotations

import math
from collections import deque

from tilemore.operator import Operator
from tilemore.settings import Autoscaling, Settings

__all__ = ["Autoscaling", "ScalePolicy", "autoscaling_for"]


def autoscaling_for(operator: type[Operator], settings: Settings) -> Autoscaling | None:
    """The operator's autoscaling, or None for a fixed pool of ``settings.replicas``.
    The settings name wins (null turns it off), then the operator's own, then ``"*"``."""
    overrides = settings.operator_autoscaling
    if operator.name in overrides:
        return overrides[operator.name]
    return operator.autoscaling or overrides.get("*")


class ScalePolicy:
    """Feed it the pool's ongoing calls now and then; it answers the replicas to run.

    ``floor`` raises ``min_replicas`` (a graph that uses an operator in two branches needs
    two replicas however idle they are)."""

    def __init__(self, config: Autoscaling, floor: int = 1) -> None:
        self.config = config
        self.floor = floor
        self._samples: deque[tuple[float, float]] = deque()  # (time, ongoing calls)
        self._since: float | None = None  # when the current wish to grow/shrink began
        self._direction = 0  # +1 grow, -1 shrink, 0 content

    @property
    def bounds(self) -> tuple[int, int]:
        low = max(self.config.min_replicas, self.floor)
        return low, max(self.config.max_replicas, low)

    def desired(self, ongoing: float) -> int:
        """Serve's formula: enough replicas for ``target_ongoing_requests`` each, clamped."""
        low, high = self.bounds
        return min(max(math.ceil(ongoing / self.config.target_ongoing_requests), low), high)

    def decide(self, now: float, ongoing: float, current: int) -> int:
        """The replicas to run from ``now`` on, given ``ongoing`` calls (running or queued)
        and ``current`` replicas (starting ones included)."""
        self._samples.append((now, ongoing))
        while self._samples[0][0] < now - self.config.look_back_period_s:
            self._samples.popleft()
        low, high = self.bounds
        if not low <= current <= high:  # out of bounds: no delay, as Serve
            self.reset()
            return min(max(current, low), high)
        mean = sum(n for _, n in self._samples) / len(self._samples)
        want = self.desired(mean)
        direction = (want > current) - (want < current)
        if direction == 0:
            self.reset()
            return current
        if direction != self._direction:  # a change of mind restarts the clock: no flapping
            self._direction, self._since = direction, now
        assert self._since is not None
        delay = self.config.upscale_delay_s if direction > 0 else self.config.downscale_delay_s
        if now - self._since + 1e-6 < delay:
            return current
        self.reset()
        return want

    def reset(self) -> None:
        """Forget the wish in progress (after acting on it, or when a start failed)."""
        self._since, self._direction = None, 0
