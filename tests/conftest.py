from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # tests/support/images.py as `support.images`

from support import backends, postgres  # noqa: E402

from tilemore.catalog import Catalog  # noqa: E402


@pytest.fixture(scope="session")
def catalog() -> Catalog:
    return Catalog.load()


@pytest.fixture(scope="session")
def denoised(catalog):
    return catalog.pipeline("denoised")


# -- the databases: SQLite, and PostgreSQL (see tests/support/postgres.py) ---------------------


@pytest.fixture(scope="session")
def postgres_dsn():
    """A PostgreSQL server for the whole session: TILEMORE_TEST_POSTGRES_DSN, else a
    throwaway cluster started once and removed at the end (see tests/support/postgres.py)."""
    dsn = postgres.given_server()
    if dsn:
        yield dsn
        return
    cluster = postgres.cluster_or_give_up()
    try:
        yield cluster.dsn
    finally:
        cluster.destroy()


@pytest.fixture(params=backends.NAMES)
def backend(request, tmp_path):
    """Run the test once on SQLite and once on a fresh PostgreSQL schema."""
    db = backends.Backend.of(request, tmp_path)
    yield db
    db.close()


@pytest.fixture
def store(backend):
    """``backend``'s thread and token store with two domains, acme and rival: for what one
    domain may do and the other may not."""
    s = backend.store()
    s.create_domain("acme")
    s.create_domain("rival")
    return s


def pytest_unconfigure(config):
    """A CI run once hung after the summary, on a thread that kept the process alive. Name the
    threads that can hold the exit; if leaving takes minutes, print every stack and fail."""
    import faulthandler
    import threading

    holding = [t.name for t in threading.enumerate()
               if t is not threading.main_thread() and t.is_alive() and not t.daemon]
    if holding:
        print(f"\nthreads that hold the exit: {', '.join(holding)}", file=sys.stderr)
    faulthandler.dump_traceback_later(120, exit=True)
