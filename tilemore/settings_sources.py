"""Where settings come from, as raw ``TILEMORE_*`` strings (:meth:`Settings.from_env` checks
them): the environment, a ``.env`` file and a secrets folder, by that priority."""

from __future__ import annotations

import difflib
import os
from collections.abc import Iterable, Mapping, Set
from pathlib import Path

from pydantic import ValidationError

from tilemore.errors import TilemoreError

ENV_PREFIX = "TILEMORE_"
ENV_FILE_VAR = ENV_PREFIX + "ENV_FILE"
SECRETS_DIR_VAR = ENV_PREFIX + "SECRETS_DIR"
MAX_ENV_FILE = 1 << 20  # bytes of a .env file read
MAX_SECRET = 64 << 10  # bytes of one secret file


def raw_values(fields: Iterable[str], environ: Mapping[str, str] | None) -> dict[str, object]:
    """Each setting given, by field name, as its raw string (``pipeline_paths`` split on
    ``os.pathsep``). ``environ``: the process's own when None, which also reads ``.env`` in
    the working folder by default."""
    own = environ is None
    environ = os.environ if environ is None else environ
    fields = list(fields)
    found = layered(environ, {ENV_PREFIX + name.upper() for name in fields},
                    default_env_file=own)
    values: dict[str, object] = {}
    for name in fields:
        raw = found.get(ENV_PREFIX + name.upper())
        if raw is None or raw == "":
            continue
        values[name] = raw.split(os.pathsep) if name == "pipeline_paths" else raw
    return values


def invalid_setting(exc: ValidationError) -> TilemoreError:
    """The first of a validation's errors, named by its variable."""
    err = exc.errors()[0]
    if not err["loc"]:  # a rule across settings: its message names them
        return TilemoreError(err["msg"].removeprefix("Value error, "), code="invalid_setting")
    var = ENV_PREFIX + str(err["loc"][0]).upper()
    return TilemoreError(f"{var}: {err['msg']}", code="invalid_setting")


def layered(environ: Mapping[str, str], names: Set[str], *,
            default_env_file: bool) -> dict[str, str]:
    """The environment over the ``.env`` file (``TILEMORE_ENV_FILE``; ``.env`` in the working
    folder when ``default_env_file``) over the secrets folder (``TILEMORE_SECRETS_DIR``).
    ``names``: the settings' variables."""
    env_file = environ.get(ENV_FILE_VAR) or (".env" if default_env_file else None)
    return {**secrets_folder(environ.get(SECRETS_DIR_VAR), names),
            **dotenv_file(env_file, names), **environ}


def dotenv_file(path: str | os.PathLike[str] | None, names: Set[str]) -> dict[str, str]:
    """The ``TILEMORE_*`` lines of a ``.env`` file (python-dotenv's syntax, which
    pydantic-settings reads too); other names are left to whoever shares the file. A missing
    default file is no error; a named one that is missing, too large, or names a setting that
    does not exist is ``invalid_setting``."""
    if path is None:
        return {}
    file = Path(path)
    if not file.is_file():
        if str(path) == ".env":
            return {}
        raise TilemoreError(f"{ENV_FILE_VAR}: no file {file}", code="invalid_setting")
    if file.stat().st_size > MAX_ENV_FILE:
        raise TilemoreError(f"{file}: over {MAX_ENV_FILE:,} bytes; is it a .env file?",
                            code="invalid_setting")
    from dotenv import dotenv_values

    found = {k: v for k, v in dotenv_values(file).items()
             if k.startswith(ENV_PREFIX) and v is not None}
    _known(found, names | {ENV_FILE_VAR, SECRETS_DIR_VAR}, f"in {file}")
    return found


def secrets_folder(path: str | os.PathLike[str] | None, names: Set[str]) -> dict[str, str]:
    """Settings from one file each (``TILEMORE_DATABASE_URL``, or ``database_url``), as a
    Kubernetes Secret mounted as a volume gives them; a final newline is not part of the
    value. Other files (Kubernetes' own ``..data`` links) are skipped."""
    if not path:
        return {}
    folder = Path(path)
    if not folder.is_dir():
        raise TilemoreError(f"{SECRETS_DIR_VAR}: no folder {folder}", code="invalid_setting")
    found: dict[str, str] = {}
    for entry in sorted(folder.iterdir()):
        var = entry.name.upper()
        var = var if var.startswith(ENV_PREFIX) else ENV_PREFIX + var
        if var not in names or not entry.is_file():
            continue
        if entry.stat().st_size > MAX_SECRET:
            raise TilemoreError(f"{entry}: over {MAX_SECRET:,} bytes for one setting",
                                code="invalid_setting")
        found[var] = entry.read_text().removesuffix("\n").removesuffix("\r")
    return found


def _known(found: Mapping[str, str], names: Set[str], where: str) -> None:
    for var in found:
        if var not in names:
            near = difflib.get_close_matches(var, sorted(names), n=1)
            hint = f"; did you mean {near[0]}?" if near else ""
            raise TilemoreError(f"{var} {where}: no such setting{hint}",
                                code="invalid_setting")
