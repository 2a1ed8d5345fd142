"""Autoscaling on the tests' Ray session: an operator pool and the Serve ingress each grow
under load and shrink back when it stops (small delays, so it takes seconds)."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import ray
from support.images import photo
from support.operators import Nap, SpinParams
from support.service_harness import free_port, http
from support.waits import until

from tilemore.engine import ray_private
from tilemore.engine.ray_backend import RayBackend
from tilemore.image import Image
from tilemore.settings import Settings

QUICK = {"min_replicas": 1, "max_replicas": 3, "target_ongoing_requests": 1,
         "upscale_delay_s": 0.5, "downscale_delay_s": 2, "look_back_period_s": 0.5}


@pytest.fixture
def elastic(ray_session):
    backend = RayBackend(Settings(operator_autoscaling={"nap": QUICK}))
    yield backend
    backend.close()


def alive(actor) -> bool:
    return ray_private.actor_info(actor).get("State") != "DEAD"


def test_an_operator_pool_grows_under_load_and_shrinks_back_when_idle(elastic):
    backend = elastic
    backend.prepare([Nap])
    assert len(backend.replicas(Nap)) == 1  # min_replicas
    image = backend.put(Image(photo(16, 16)))
    params = SpinParams(seconds=0.2)
    in_flight: set = set()
    pids: set[int] = set()
    sizes: list[int] = []
    calls = 0

    def settle(timeout: float) -> None:
        for stats in backend.wait(list(in_flight), timeout=timeout):
            in_flight.discard(stats)
            st = backend.get(stats)  # a replica retired mid-call would raise ReplicaLost
            assert st.failure is None, st.failure
            pids.add(st.pid)

    # Six calls kept in flight: with a target of one per replica, three replicas (the max).
    deadline = time.monotonic() + 90
    while len(pids) < 3 and time.monotonic() < deadline:
        while len(in_flight) < 6:
            in_flight.add(backend.call(f"t{calls}", Nap, params, [image])[1])
            calls += 1
        settle(timeout=1)
        sizes.append(len(backend.replicas(Nap)))
    assert max(sizes) == 3 and len(pids) == 3, (sizes, pids)  # every new replica took calls
    grown = backend.replicas(Nap)
    while in_flight:
        settle(timeout=10)

    # Idle: back to min_replicas after the downscale delay; the retired replicas are killed.
    assert until(lambda: len(backend.replicas(Nap)) == 1, timeout=30), backend.replicas(Nap)
    assert until(lambda: sum(map(alive, grown)) == 1, timeout=30)
    time.sleep(1)
    assert len(backend.replicas(Nap)) == 1  # and it stays there while idle
    out, stats = backend.call("after", Nap, params, [image])
    assert backend.get(stats).failure is None and backend.get(out).width == 16


def test_a_retired_replica_finishes_its_call_before_it_is_killed(ray_session, monkeypatch):
    """Rounds run by hand here (the thread's period made an hour): a replica chosen to go
    while busy leaves the rotation at once, and is killed only once its call is done."""
    from tilemore.engine import ray_pools

    monkeypatch.setattr(ray_pools, "AUTOSCALE_PERIOD_S", 3600)
    # grows at once; shrinks only when the test says (a slow start must not be retired)
    instant = {**QUICK, "max_replicas": 2, "upscale_delay_s": 0, "downscale_delay_s": 3600,
               "look_back_period_s": 0.001}
    backend = RayBackend(Settings(operator_autoscaling={"nap": instant}))
    try:
        backend.prepare([Nap])
        image = backend.put(Image(photo(8, 8)))
        queued = [backend.call(f"q{i}", Nap, SpinParams(seconds=1), [image])[1]
                  for i in range(2)]
        backend.autoscale()  # two in flight, one per replica wanted: a second starts
        scaling = backend.pools._scaling[Nap]  # noqa: SLF001 - the test peeks, then steers
        assert len(scaling.starting) == 1
        ray.get(list(scaling.starting))  # its setup has run...
        backend.autoscale()  # ...so this round puts it in the rotation
        assert len(backend.replicas(Nap)) == 2 and not scaling.starting
        for h in queued:
            backend.get(h)
        first, second = backend.replicas(Nap)
        slow = [backend.call(f"s{i}", Nap, SpinParams(seconds=3), [image])[1]
                for i in range(2)]  # one on each replica
        # As if the load had halved: two in flight at two per replica want one replica.
        policy = scaling.policy
        policy.config = policy.config.model_copy(update={"target_ongoing_requests": 2,
                                                         "downscale_delay_s": 0})
        backend.autoscale()
        assert backend.replicas(Nap) == [first]  # the newest left the rotation...
        backend.autoscale()
        assert alive(second)  # ...but runs its call to the end
        stats = [backend.get(h) for h in slow]
        assert [s.failure for s in stats] == [None, None] and len({s.pid for s in stats}) == 2
        backend.autoscale()
        assert until(lambda: not alive(second), timeout=30)
        assert alive(first) and backend.replicas(Nap) == [first]
    finally:
        backend.close()


def test_a_fixed_pool_does_not_scale(ray_backend):
    """Autoscaling is off by default: settings.replicas, however busy."""
    ray_backend.prepare([Nap])
    image = ray_backend.put(Image(photo(8, 8)))
    handles = [ray_backend.call(f"f{i}", Nap, SpinParams(seconds=0.3), [image])[1]
               for i in range(6)]
    time.sleep(1.2)
    assert len(ray_backend.replicas(Nap)) == 1
    assert len({ray_backend.get(h).pid for h in handles}) == 1
    assert ray_backend.pools._scaler is None  # noqa: SLF001 - no autoscaling thread either


def ingress_replicas(app: str = "tilemore") -> int:
    from ray import serve

    status = serve.status().applications[app].deployments["Ingress"]
    return status.replica_states.get("RUNNING", 0)


def test_the_ingress_deployment_scales_with_http_load(ray_session, tmp_path):
    """Serve's own autoscaling, configured from Settings: concurrent requests raise the
    ingress's replicas to its max, and they fall back to min once the load stops."""
    from ray import serve

    from tilemore_deployments.billing import running_billing
    from tilemore_deployments.conductor import NAMESPACE, running_conductors
    from tilemore_deployments.ingress import build_app

    settings = Settings(data_dir=tmp_path, port=free_port(), ingress_min_replicas=1,
                        ingress_max_replicas=2, ingress_target_ongoing_requests=1,
                        ingress_upscale_delay_s=0.5, ingress_downscale_delay_s=2,
                        ingress_look_back_period_s=1)
    serve.start(http_options={"host": "127.0.0.1", "port": settings.port})
    serve.run(build_app(settings), name="tilemore", route_prefix="/")
    try:
        assert ingress_replicas() == 1
        # Eight clients, each sending its next request as soon as the last is answered:
        # several requests are always in progress, above the target of one per replica.
        stop = threading.Event()

        def hammer() -> None:
            while not stop.is_set():
                http("GET", f"{settings.base_url}/healthz")

        with ThreadPoolExecutor(8) as pool:
            for _ in range(8):
                pool.submit(hammer)
            grew = until(lambda: ingress_replicas() == 2, timeout=60, step=0.5)
            stop.set()
        assert grew, serve.status().applications["tilemore"].deployments["Ingress"]
        assert until(lambda: ingress_replicas() == 1, timeout=60, step=0.5)
        assert http("GET", f"{settings.base_url}/healthz").status == 200
    finally:
        # Serve itself too: the next module's serve.start gets its own port then.
        serve.shutdown()
        for name in (*running_conductors(), *running_billing()):
            try:
                ray.kill(ray.get_actor(name, namespace=NAMESPACE))
            except ValueError:
                pass
