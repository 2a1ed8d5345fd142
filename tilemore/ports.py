"""A free loopback TCP port for a server that binds it a moment later (tests, benchmarks).

Binding port 0 and closing the socket hands back a port from the kernel's ephemeral range;
until the server binds it, any process that binds port 0 may be given the same one, and a
Ray cluster starting up binds dozens (its gRPC servers, its workers). So the port is drawn
below the ephemeral range and above Ray's default worker ports, where nothing is handed out
unasked, and is checked free before it is returned.
"""

from __future__ import annotations

import random
import socket
from pathlib import Path

RAY_WORKER_PORTS_END = 19_999  # Ray's default --max-worker-port
_EPHEMERAL = Path("/proc/sys/net/ipv4/ip_local_port_range")
_TRIES = 64


def ephemeral_start() -> int:
    """The first port of the kernel's ephemeral range (Linux; 32768, its default, elsewhere)."""
    try:
        return int(_EPHEMERAL.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32_768


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def free_port() -> int:
    """A loopback port nothing listens on, outside the ranges other processes are handed."""
    low, high = RAY_WORKER_PORTS_END + 1, ephemeral_start() - 1
    if high - low >= _TRIES:
        for port in random.sample(range(low, high + 1), _TRIES):
            if _bindable(port):
                return port
    with socket.socket() as s:  # no quiet range on this machine: the kernel's pick
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
