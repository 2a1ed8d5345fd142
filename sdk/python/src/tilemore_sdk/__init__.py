"""Tilemore's Python SDK: ``Tilemore(...).submit(path, "jpeg", adjustments)`` and the result.

No HTTP, hashing, handshakes, polling or retries to write: the client does them, safely,
because the API is idempotent on the request's parameters.
"""

from tilemore_sdk._client import FORMATS, AsyncTilemore, Result
from tilemore_sdk._errors import (
    AuthenticationError,
    ConflictError,
    ConnectionFailed,
    InputError,
    InsufficientCreditsError,
    InvalidRequestError,
    NotFoundError,
    PermissionDeniedError,
    ServerError,
    TaskCanceledError,
    TaskFailedError,
    TilemoreError,
    UnsupportedFormatError,
)
from tilemore_sdk._sync import Tilemore

__version__ = "0.1.0"

__all__ = [
    "FORMATS", "AsyncTilemore", "AuthenticationError", "ConflictError", "ConnectionFailed",
    "InputError", "InsufficientCreditsError", "InvalidRequestError", "NotFoundError",
    "PermissionDeniedError", "Result", "ServerError", "TaskCanceledError", "TaskFailedError",
    "Tilemore", "TilemoreError", "UnsupportedFormatError", "__version__",
]
