"""A stand-in S3 over real HTTP: moto's server mode on a free loopback port, with the test
credentials boto3 then signs with (moto accepts any)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from moto.server import ThreadedMotoServer

from support.service_harness import free_port

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
               "AWS_DEFAULT_REGION": "us-east-1"}


@contextmanager
def moto_server() -> Iterator[str]:
    """A running server, for as long as the block lasts: its endpoint URL. The caller puts
    :data:`CREDENTIALS` where its clients read them (the environment, a child's env)."""
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@contextmanager
def moto_s3(monkeypatch) -> Iterator[str]:
    """:func:`moto_server` with :data:`CREDENTIALS` set in this process's environment."""
    for var, value in CREDENTIALS.items():
        monkeypatch.setenv(var, value)
    with moto_server() as endpoint:
        yield endpoint
