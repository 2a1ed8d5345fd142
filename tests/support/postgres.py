"""PostgreSQL for the tests: the server ``TILEMORE_TEST_POSTGRES_DSN`` names, or a throwaway
cluster started here (``initdb``/``pg_ctl``), and a fresh schema per test for isolation.

The throwaway cluster lives in a temporary folder: its unix socket there, TCP on a free
loopback port, trust authentication (nothing but this machine can reach it), and no fsync
(the tests check semantics, not durability). Run as root, the PostgreSQL binaries refuse to
start, so they run as the ``postgres`` user, who then owns the folder.
"""

from __future__ import annotations

import glob
import os
import pwd
import re
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path
from urllib.parse import quote

import psycopg
import pytest

from tilemore.ports import free_port

DSN_ENV = "TILEMORE_TEST_POSTGRES_DSN"


class NoPostgres(RuntimeError):
    """Neither a DSN nor PostgreSQL's binaries: the tests that need it cannot run."""


def find_bindir() -> Path | None:
    """The newest installed server's binaries (Debian keeps them out of PATH)."""
    found = glob.glob("/usr/lib/postgresql/*/bin/initdb")

    def version(path: str) -> tuple[int, ...]:
        return tuple(int(p) for p in re.findall(r"\d+", Path(path).parts[-3]))

    if found:
        return Path(max(found, key=version)).parent
    on_path = shutil.which("initdb")
    return Path(on_path).parent if on_path else None


class Cluster:
    """A throwaway PostgreSQL cluster; ``stop()`` and ``start()`` make an outage."""

    # The tests' cluster is thrown away: nothing it writes needs to survive a crash.
    DURABILITY = "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"

    def __init__(self, bindir: Path, durability: str | None = None) -> None:
        self.bindir = bindir
        self.durability = self.DURABILITY if durability is None else durability
        self.root = Path(tempfile.mkdtemp(prefix="tilemore-pg-"))
        self.data = self.root / "data"
        self.port = free_port()
        self._as: list[str] = []
        if os.geteuid() == 0:
            user = pwd.getpwnam("postgres")
            os.chown(self.root, user.pw_uid, user.pw_gid)
            self._as = ["runuser", "-u", "postgres", "--"]
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust",
                  "-E", "UTF8", "--no-sync")
        self.start()

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        options = (f"-c listen_addresses=127.0.0.1 -c port={self.port}"
                   f" -c unix_socket_directories={self.root} -c max_connections=300 "
                   + self.durability)
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.root / "server.log"),
                  "-o", options, "-w", "-t", "60", "start")

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    def destroy(self) -> None:
        subprocess.run([*self._as, str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m",
                        "immediate", "-w", "stop"], capture_output=True, check=False)
        shutil.rmtree(self.root, ignore_errors=True)

    def _run(self, tool: str, *args: str) -> None:
        done = subprocess.run([*self._as, str(self.bindir / tool), *args], capture_output=True,
                              text=True, check=False, cwd=self.root)
        if done.returncode != 0:
            log = self.root / "server.log"
            tail = log.read_text()[-2000:] if log.exists() else ""
            raise NoPostgres(f"{tool} failed ({done.returncode}): {done.stderr.strip()}\n{tail}")


def unavailable(reason: str) -> None:
    """No PostgreSQL to test against: a failure where CI is set (it must test both
    backends), a skip that says why elsewhere."""
    if os.environ.get("CI"):
        pytest.fail(f"PostgreSQL is required when CI is set: {reason}", pytrace=False)
    pytest.skip(f"PostgreSQL tests skipped: {reason}")


def start_cluster() -> Cluster:
    bindir = find_bindir()
    if bindir is None:
        raise NoPostgres(f"set {DSN_ENV} to a PostgreSQL server, or install PostgreSQL "
                         "(initdb was found neither in /usr/lib/postgresql/*/bin nor on PATH)")
    return Cluster(bindir)


def cluster_or_give_up() -> Cluster:
    """A throwaway cluster, or the test ends as :func:`unavailable` says."""
    try:
        return start_cluster()
    except NoPostgres as exc:
        reason = str(exc)
    unavailable(reason)  # outside the except: no chained traceback in the report
    raise AssertionError("unreachable")


def given_server() -> str | None:
    """The DSN of TILEMORE_TEST_POSTGRES_DSN, checked; a failure (never a skip) when it does
    not answer, since it was asked for explicitly."""
    dsn = os.environ.get(DSN_ENV)
    if not dsn:
        return None
    try:
        with psycopg.connect(dsn, connect_timeout=10):
            return dsn
    except psycopg.Error as exc:
        reason = f"{DSN_ENV} is set but the server does not answer: {exc}"
    pytest.fail(reason, pytrace=False)


def fresh_schema(dsn: str) -> tuple[str, str]:
    """A new, empty schema: (its name, a URL whose connections work inside it)."""
    name = "t_" + uuid.uuid4().hex[:16]
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{name}"')
    joiner = "&" if "?" in dsn else "?"
    return name, f"{dsn}{joiner}options={quote(f'-c search_path={name}')}"


def drop_schema(dsn: str, name: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
