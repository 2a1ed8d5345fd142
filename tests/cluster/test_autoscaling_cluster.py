"""Capacity follows demand: a backlog on an autoscaled operator pool makes Ray's autoscaler
launch a worker node of the type that fits, and the node goes away once the pool has shrunk
back and it is idle.

The cluster is Ray's fake multi-node one (``ray.cluster_utils.AutoscalingCluster``'s: a real
head with Ray's autoscaler, whose "cloud" starts raylets on this machine), shaped like the
shipped cluster configs: a head that hands out no CPUs, a ``cpu-spot`` type and a
``gpu-spot`` type that has CPUs too (Ray's autoscaler keeps CPU-only demand off GPU types).
It is this module's own cluster, so it runs before the package's shared ``cluster`` fixture
starts (pytest runs the modules in name order) and is gone before that one begins."""

from __future__ import annotations

import json
import logging
import os
import signal
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import ray
from ray.cluster_utils import AutoscalingCluster, Cluster
from support.images import photo
from support.operators import Nap, SpinParams
from support.service_harness import free_port
from support.waits import until

from tilemore import Resources
from tilemore.engine.ray_backend import RayBackend, ship_by_value
from tilemore.image import Image
from tilemore.settings import Settings

pytestmark = pytest.mark.slow

HEAD_TYPE = "ray.head.default"  # the name the fake provider gives the head
IDLE_TIMEOUT_MINUTES = 0.1  # an idle worker node goes after 6 s
OBJECT_STORE = 100 * 2**20
WORKER_TYPES = {
    # Like cluster-configs/*.yaml, scaled down: CPUs only, or CPUs and a GPU.
    "cpu-spot": {"resources": {"CPU": 2, "spot": 1, "object_store_memory": OBJECT_STORE},
                 "node_config": {}, "min_workers": 0, "max_workers": 2},
    "gpu-spot": {"resources": {"CPU": 2, "GPU": 1, "spot": 1,
                               "object_store_memory": OBJECT_STORE},
                 "node_config": {}, "min_workers": 0, "max_workers": 2},
}
# What TILEMORE_OPERATOR_AUTOSCALING says for the pool, with second-long delays.
NAP_AUTOSCALING = {"nap": {"min_replicas": 1, "max_replicas": 4, "target_ongoing_requests": 1,
                           "upscale_delay_s": 0, "downscale_delay_s": 2,
                           "look_back_period_s": 0.5}}


class GpuNap(Nap):
    """Nap on a whole GPU: one replica per GPU node."""

    name = "gpu-nap"
    resources = Resources(num_cpus=1, num_gpus=1)


class FakeCloud(AutoscalingCluster):
    """``AutoscalingCluster`` made fit for a machine shared with other Ray sessions.

    The class as Ray ships it cannot be used here: its base config
    (``fake_multi_node/example.yaml``) is not in the wheel, its ``start`` and ``shutdown``
    run ``ray stop --force`` (which kills every Ray process on the machine, other sessions'
    included), and its fake nodes join the GCS on port 6379 whoever owns that port. This one
    builds the config itself, starts the head in this process (``ray.cluster_utils.Cluster``)
    on a free port that the fake nodes are told, and stops only the processes it started."""

    def _generate_config(self, head_resources: dict, worker_node_types: dict,
                         autoscaler_v2: bool = False, **config_kwargs: Any) -> dict:
        # The keys the fake provider needs; head_start_ray_commands and the like stay
        # empty, since no node here is set up over SSH.
        config: dict[str, Any] = {
            "cluster_name": "tilemore-fake",
            "max_workers": sum(t["max_workers"] for t in worker_node_types.values()),
            "provider": {"type": "fake_multinode", "use_node_id_as_ip": True,
                         "disable_node_updaters": True, "disable_launch_config_check": True},
            "available_node_types": {
                **worker_node_types,
                HEAD_TYPE: {"resources": head_resources, "node_config": {},
                                     "max_workers": 0}},
            "head_node_type": HEAD_TYPE,
            "auth": {}, "docker": {}, "upscaling_speed": 1.0, "idle_timeout_minutes": 5,
            "file_mounts": {}, "cluster_synced_files": [], "rsync_exclude": [],
            "rsync_filter": [], "file_mounts_sync_continuously": False,
            **{k: [] for k in ("initialization_commands", "setup_commands",
                               "head_setup_commands", "worker_setup_commands",
                               "head_start_ray_commands", "worker_start_ray_commands")},
        }
        config.update(config_kwargs)
        return config

    def start(self, _system_config: dict | None = None,
              override_env: dict | None = None) -> None:
        port = free_port()
        ip = ray._private.services.get_node_ip_address()  # noqa: SLF001
        self._config["provider"]["gcs_address"] = f"{ip}:{port}"
        self._config_file = Path(tempfile.mkstemp(suffix=".json")[1])
        self._config_file.write_text(json.dumps(self._config))
        head = dict(self._head_resources)
        # The autoscaler (the head's monitor process) reads these when it starts.
        env = {"RAY_FAKE_CLUSTER": "1", "AUTOSCALER_UPDATE_INTERVAL_S": "1",
               **(override_env or {})}
        saved = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        try:
            self.head = Cluster(initialize_head=True, head_node_args={
                "gcs_server_port": port, "num_cpus": head.pop("CPU", 0),
                "num_gpus": head.pop("GPU", 0), "resources": head,
                "autoscaling_config": str(self._config_file), "include_dashboard": False,
                "dashboard_port": free_port(),
                "_system_config": _system_config or {}})
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
        self.address = self.head.address

    def shutdown(self) -> None:
        # The fake nodes are the monitor's children: end them first, then the head's own.
        monitor = self.head.head_node.all_processes.get("monitor", [])
        for info in monitor:
            for pid in _descendants(info.process.pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        self.head.shutdown()
        self._config_file.unlink(missing_ok=True)


def _descendants(pid: int) -> list[int]:
    """Every process below ``pid``, from /proc."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


@pytest.fixture(scope="module")
def fake_cloud() -> Iterator[FakeCloud]:
    if ray.is_initialized():
        pytest.fail("this test needs its own Ray cluster: run it before the package's "
                    "shared one starts (or on its own)")
    cloud = FakeCloud(head_resources={"CPU": 0}, worker_node_types=WORKER_TYPES,
                      idle_timeout_minutes=IDLE_TIMEOUT_MINUTES)
    cloud.start()
    try:
        ray.init(address=cloud.address, logging_level=logging.WARNING)
        yield cloud
    finally:
        ray.shutdown()
        cloud.shutdown()


def workers() -> dict[str, dict[str, float]]:
    """The live worker nodes (every node but the head, which has no CPUs): id → resources."""
    return {n["NodeID"]: n["Resources"] for n in ray.nodes()
            if n["Alive"] and n["Resources"].get("CPU")}


def launched_types() -> set[str]:
    """The worker types the autoscaler reports as up, starting or about to launch (the
    status `ray status` prints, which the autoscaler keeps in the GCS)."""
    raw = ray.experimental.internal_kv._internal_kv_get(  # noqa: SLF001
        ray._private.ray_constants.DEBUG_AUTOSCALING_STATUS)  # noqa: SLF001
    report = json.loads(raw).get("autoscaler_report") or {} if raw else {}
    types = {*report.get("active_nodes", {}), *report.get("pending_launches", {}),
             *(node_type for _, node_type, _ in report.get("pending_nodes", []))}
    return types - {HEAD_TYPE}


class Watch:
    """What the autoscaler did, gathered at each look (a call): every worker node seen (id →
    resources, also those gone since) and every worker type it launched."""

    def __init__(self) -> None:
        self.nodes: dict[str, dict[str, float]] = {}
        self.types: set[str] = set()

    def __call__(self) -> None:
        self.nodes.update(workers())
        self.types.update(launched_types())


def backlog(backend: RayBackend, operator: type, replicas: int, calls_in_flight: int,
            look, seconds: float = 90) -> tuple[set[int], int]:
    """Keep ``calls_in_flight`` one-second calls in flight until ``replicas`` different
    replicas have answered (or ``seconds`` pass); every call must succeed. Returns the
    replicas' pids and the calls made."""
    image = backend.put(Image(photo(16, 16)))
    params = SpinParams(seconds=1.0)
    in_flight: set = set()
    pids: set[int] = set()
    calls = 0
    deadline = time.monotonic() + seconds
    while len(pids) < replicas and time.monotonic() < deadline:
        while len(in_flight) < calls_in_flight:
            in_flight.add(backend.call(f"t{calls}", operator, params, [image])[1])
            calls += 1
        for stats in backend.wait(list(in_flight), timeout=1):
            in_flight.discard(stats)
            st = backend.get(stats)
            assert st.failure is None, st.failure
            pids.add(st.pid)
        look()
    while in_flight:
        for stats in backend.wait(list(in_flight), timeout=30):
            in_flight.discard(stats)
            backend.get(stats)
    return pids, calls


def test_a_backlog_launches_cpu_nodes_which_go_away_when_idle(fake_cloud):
    assert workers() == {}  # min_workers 0: nothing but the head
    settings = Settings.from_env({"TILEMORE_OPERATOR_AUTOSCALING": json.dumps(NAP_AUTOSCALING)})
    backend = RayBackend(settings)
    look = Watch()
    seen, types = look.nodes, look.types
    try:
        # The pool's first replica needs a CPU, which only a worker node has: its pending
        # actor is the demand that launches one.
        started = time.monotonic()
        backend.prepare([Nap])
        look()
        print(f"first node and replica up in {time.monotonic() - started:.1f} s")
        assert len(seen) == 1

        # A backlog: eight calls kept in flight, one replica wanted per call, so four (the
        # max); two fit on the first node, the other two wait for a second.
        started = time.monotonic()
        pids, calls = backlog(backend, Nap, replicas=4, calls_in_flight=8, look=look)
        print(f"grown to {len(pids)} replicas on {len(seen)} nodes in "
              f"{time.monotonic() - started:.1f} s, {calls} calls")
        assert len(pids) == 4, backend.replica_states()
        assert len(seen) == 2
        # Both of the type that fits: CPUs without a GPU. The GPU type has CPUs too, but
        # Ray's autoscaler keeps CPU-only demand off it.
        assert all("GPU" not in r and r["CPU"] == 2 for r in seen.values()), seen
        assert types == {"cpu-spot"}, types

        # The backlog gone: the pool shrinks back to one replica, and the node left without
        # one is removed once idle.
        started = time.monotonic()
        assert until(lambda: len(workers()) == 1, timeout=60), workers()
        print(f"back to one node in {time.monotonic() - started:.1f} s")
        assert len(backend.replicas(Nap)) == 1
    finally:
        backend.close()
    # Nothing left on the last one either: it goes too.
    assert until(lambda: workers() == {}, timeout=60), workers()


def test_a_gpu_backlog_launches_gpu_nodes(fake_cloud):
    """The other way round: replicas that need a GPU get nodes of the GPU type, one per
    replica here, and none of the CPU type; they go away when the pool is closed."""
    assert until(lambda: workers() == {}, timeout=60), workers()  # the test above's are gone
    ship_by_value(Nap)  # GpuNap's base class, from a module the workers cannot import
    auto = {"gpu-nap": {**NAP_AUTOSCALING["nap"], "max_replicas": 2}}
    backend = RayBackend(Settings(operator_autoscaling=auto))
    look = Watch()
    seen, types = look.nodes, look.types
    try:
        started = time.monotonic()
        backend.prepare([GpuNap])
        look()
        assert len(seen) == 1
        pids, calls = backlog(backend, GpuNap, replicas=2, calls_in_flight=4, look=look)
        print(f"GPU pool grown to {len(pids)} replicas on {len(seen)} nodes in "
              f"{time.monotonic() - started:.1f} s, {calls} calls")
        assert len(pids) == 2, backend.replica_states()
        assert len(seen) == 2 and all(r.get("GPU") == 1 for r in seen.values()), seen
        assert types == {"gpu-spot"}, types
    finally:
        backend.close()
    assert until(lambda: workers() == {}, timeout=60), workers()
