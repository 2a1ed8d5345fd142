"""Where tasks run. ``backend`` is the seam; ``ray_backend`` is the only module importing Ray."""

from tilemore.engine.backend import Backend, LocalBackend
from tilemore.engine.host import OperatorHost, TaskStats

__all__ = ["Backend", "LocalBackend", "OperatorHost", "TaskStats"]
