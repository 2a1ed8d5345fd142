"""Every error Tilemore raises on purpose, each with a machine-readable ``code``.

The HTTP layer maps ``status`` to the response code and ``code`` to the body; the CLI prints
``message`` on one line. Errors cross Ray process boundaries, so each one pickles by its
constructor arguments (``__reduce__``).
"""

from __future__ import annotations

from pathlib import Path


class TilemoreError(Exception):
    """Base class: a clear, expected failure (bad input, bad configuration)."""

    code: str = "tilemore_error"
    status: int = 400

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code

    def __reduce__(self):  # keep code across pickling (Ray moves errors between processes)
        return (_rebuild, (type(self), self.message, self.code, self.__dict__))

    def to_dict(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message}


def _rebuild(cls: type[TilemoreError], message: str, code: str, state: dict) -> TilemoreError:
    err = cls.__new__(cls)
    Exception.__init__(err, message)
    err.__dict__.update(state)
    err.message, err.code = message, code
    return err


class PipelineFileError(TilemoreError):
    """A pipeline definition file is invalid. Names the file, the stage and the problem."""

    code = "invalid_pipeline"
    status = 500  # a server-side configuration error, never the caller's fault

    def __init__(self, path: Path | str, problem: str, *, stage: str | None = None) -> None:
        where = f"{path}" + (f": stage '{stage}'" if stage else "")
        super().__init__(f"{where}: {problem}")
        self.path, self.stage, self.problem = str(path), stage, problem


class AdjustmentError(TilemoreError):
    """The caller's ``adjustments`` do not fit the pipeline (HTTP 422)."""

    code = "invalid_adjustments"
    status = 422


class UnknownAlgorithm(AdjustmentError):
    code = "unknown_algorithm"


class UnknownStage(AdjustmentError):
    code = "unknown_stage"


class UnknownParameter(AdjustmentError):
    code = "unknown_parameter"


class InvalidParameter(AdjustmentError):
    code = "invalid_parameter"


class UnknownOperator(TilemoreError):
    code = "unknown_operator"
    status = 422


class UnknownPipeline(TilemoreError):
    code = "unknown_pipeline"
    status = 404


class UnsupportedOutputFormat(TilemoreError):
    code = "unsupported_output_format"
    status = 422


class ImageError(TilemoreError):
    """The input image cannot be used; ``code`` says why."""

    code = "invalid_image"
    status = 400


class EmptyImage(ImageError):
    code = "empty_image"


class CorruptImage(ImageError):
    code = "corrupt_image"


class TruncatedImage(ImageError):
    code = "truncated_image"


class UnsupportedImageFormat(ImageError):
    code = "unsupported_image_format"
    status = 415


class ImageTooLarge(ImageError):
    code = "image_too_large"
    status = 413


class GeometryError(TilemoreError):
    """A crop or resize that cannot apply to this image (known only once it is decoded)."""

    code = "invalid_geometry"
    status = 422


class Unauthorized(TilemoreError):
    status = 401


class Forbidden(TilemoreError):
    status = 403


class NotFound(TilemoreError):
    status = 404


class Conflict(TilemoreError):
    status = 409


class TooManyRequests(TilemoreError):
    """Slow down (the answer carries Retry-After)."""

    code = "too_many_requests"
    status = 429
    retry_after: int = 1


class ServiceUnavailable(TilemoreError):
    """Try again shortly (the answer carries Retry-After)."""

    code = "unavailable"
    status = 503
    retry_after: int = 1  # seconds, for the Retry-After header


class DatabaseUnavailable(ServiceUnavailable):
    """The database (PostgreSQL) cannot be reached right now; requests succeed again once it
    is back, without a restart."""

    code = "database_unavailable"
    retry_after = 2


class DatabaseBusy(DatabaseUnavailable):
    """The embedded database's write lock stayed taken longer than the wait allowed."""

    code = "database_busy"
    retry_after = 1


class DatabaseFull(DatabaseUnavailable):
    """The disk under the embedded database is full: nothing was written."""

    code = "database_full"
    retry_after = 30


class InvalidSearch(TilemoreError):
    """An error search the index cannot run: ``empty_query``, ``invalid_query`` (syntax the
    database rejects, or no searchable word), ``invalid_limit``."""

    code = "invalid_query"
    status = 400
