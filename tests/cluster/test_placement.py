"""Where operator replicas land, and what they hold there: replicas of one operator spread
over nodes (a lost node takes one of them, not all), and a GPU operator's CPU fallback holds
the CPUs it declares for it and runs that many intra-op threads."""

from __future__ import annotations

import os
from typing import Any

import ray
from tilemore_operators.dncnn import DnCNNDenoise

from tilemore import Operator, Resources
from tilemore.engine.ray_backend import RayBackend
from tilemore.settings import Settings

from .nodes import cpus_all_free, node_of


class Anywhere(Operator):
    name = "placement-anywhere"
    resources = Resources(num_cpus=1)

    def process(self, params: Any, *inputs: Any) -> Any:
        return None


class Probe(DnCNNDenoise):
    """The CNN itself (its resources and its setup), reporting what its replica holds."""

    name = "placement-cnn"

    def process(self, params: Any, *inputs: Any) -> Any:
        import torch

        return {"threads": torch.get_num_threads(), "context_cpus": self.context.cpus,
                "device": self.context.device, "omp": os.environ.get("OMP_NUM_THREADS"),
                "assigned": ray.get_runtime_context().get_assigned_resources()}


def test_replicas_of_an_operator_spread_over_nodes(cluster):
    workers = [n for n in ray.nodes() if n["Alive"] and n["Resources"].get("CPU")]
    assert len(workers) == 3  # each with room for all three replicas: packing would fit
    backend = RayBackend(Settings(replicas=3))
    total = ray.cluster_resources()["CPU"]
    try:
        backend.prepare([Anywhere])
        nodes = [node_of(a) for a in backend.replicas(Anywhere)]
        assert len(set(nodes)) == 3, f"replicas share nodes: {nodes}"
    finally:
        backend.close()
    assert cpus_all_free(total)


def test_the_cnn_without_a_gpu_holds_its_fallback_cpus_and_threads(cluster):
    assert not ray.cluster_resources().get("GPU")  # the gpu kind has gpu_node, not GPU
    assert Probe.resources.num_cpus == 1 and Probe.resources.cpus_without_gpu() == 2
    backend = RayBackend(Settings(replicas=1))
    total = ray.cluster_resources()["CPU"]
    try:
        backend.prepare([Probe])
        actor = backend.replicas(Probe)[0]
        seen, _ = ray.get(actor.run.remote("probe", Probe.Params()))
        assert seen["assigned"].get("CPU") == 2 and "GPU" not in seen["assigned"]
        assert seen["context_cpus"] == 2 and seen["device"] == "cpu"
        assert seen["threads"] == 2, seen  # torch's intra-op threads follow the CPUs held
    finally:
        backend.close()
    assert cpus_all_free(total)
