"""Stopping the service's Ray side in order: HTTP intake, the conductor, then Ray itself.

Serve's controller, told to shut down, kills the HTTP proxies on its first shutdown tick
(new connections are refused from then on), lets the ingress replicas finish the requests
they hold, then ends itself. Threads need no draining: every state change is in the
registry as it happens, and the conductor resumes 'processing' threads when it starts,
skipping finished (checkpointed, charged) tasks. So the conductor is killed outright, as a
crash would be, rather than left to see operator replicas die under it while Ray goes down.
"""

from __future__ import annotations

import time

import ray
from ray.exceptions import GetTimeoutError, RayActorError

from tilemore.engine.ray_private import serve_controller


def begin_serve_shutdown(timeout: float) -> bool:
    """Tell Serve's controller to shut down, without waiting (``serve.shutdown()`` would wait
    on a call the controller never answers: it kills itself at the end, and Ray then prints
    that call's failure on our terminal). False when there is no controller to tell."""
    try:
        name, namespace = serve_controller()
        controller = ray.get_actor(name, namespace=namespace)
        ray.get(controller.graceful_shutdown.remote(wait=False), timeout=timeout)
    except (ValueError, RayActorError, GetTimeoutError):
        return False
    return True


def serve_stopped(timeout: float) -> bool:
    """Wait for Serve's controller to be gone: it goes last, once its apps and proxies have."""
    deadline = time.monotonic() + timeout
    name, namespace = serve_controller()
    while True:
        try:
            ray.get_actor(name, namespace=namespace)
        except ValueError:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)


def kill_actor(name: str, namespace: str, timeout: float) -> bool:
    """Kill a named actor without restart; True once it is gone (or was never there)."""
    try:
        actor = ray.get_actor(name, namespace=namespace)
    except ValueError:
        return True
    ray.kill(actor, no_restart=True)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:  # ray.kill only sends the order: wait for the death
        try:
            ray.get(actor.__ray_ready__.remote(), timeout=max(0.05, deadline - time.monotonic()))
        except RayActorError:
            return True
        except GetTimeoutError:
            return False
        time.sleep(0.05)
    return False


def disconnect() -> None:
    """``ray.shutdown()``: stops a cluster this process started, else only disconnects."""
    ray.shutdown()
