"""tilemore.ports.free_port: a port no process is handed unasked between the pick and the bind."""

from __future__ import annotations

import socket

from tilemore import ports


def test_a_free_port_lies_between_rays_worker_ports_and_the_ephemeral_range():
    picked = {ports.free_port() for _ in range(20)}
    assert all(ports.RAY_WORKER_PORTS_END < p < ports.ephemeral_start() for p in picked)
    for port in picked:  # and nothing listens there
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))


def test_a_port_in_use_is_never_picked(monkeypatch):
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        taken = held.getsockname()[1]
        # the quiet range is that one port, which is taken: the kernel's pick instead
        monkeypatch.setattr(ports, "RAY_WORKER_PORTS_END", taken - 1)
        monkeypatch.setattr(ports, "ephemeral_start", lambda: taken + 1)
        assert ports.free_port() != taken


def test_an_unreadable_range_falls_back_to_the_kernels_default(monkeypatch, tmp_path):
    monkeypatch.setattr(ports, "_EPHEMERAL", tmp_path / "missing")
    assert ports.ephemeral_start() == 32_768
