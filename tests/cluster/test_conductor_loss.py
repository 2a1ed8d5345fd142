"""Two conductors on two nodes share the threads through leases; the node of one is killed
mid-run. Every thread completes — the survivor takes the dead one's threads once their
leases run out — and each (thread, task) is charged exactly once."""

from __future__ import annotations

import time
from decimal import Decimal
from pathlib import Path

import ray
from support.images import encode, noisy, photo

from tilemore.billing.ledger import Entry, open_ledger
from tilemore.store import NewThread, open_store

from .nodes import node_of

DATA = Path(__file__).parents[1] / "data"
THREADS = 12
LEASE = 3.0


@ray.remote(num_cpus=0, max_restarts=0)
class ConductorHost:
    """A conductor in a process of its own on the node it is placed on, running the slow
    test pipeline on threads of that process."""

    def __init__(self, root: str, name: str) -> None:
        from tilemore.billing.service import Billing
        from tilemore.blobs import open_blob_store
        from tilemore.catalog import Catalog
        from tilemore.engine import LocalBackend
        from tilemore.service.conductor import Conductor
        from tilemore.settings import Settings

        settings = Settings(data_dir=Path(root), checkpoint_tasks=True,
                            pipeline_paths=[DATA / "slow.yaml"])
        self.conductor = Conductor(
            open_store(settings.db), open_blob_store(settings.blobs), Catalog.load(settings),
            LocalBackend(settings), billing=Billing(open_ledger(settings.db)), concurrency=4,
            name=name, lease_seconds=LEASE, claim_seconds=0.2)
        self.conductor.start_sweeping()

    def active(self) -> int:
        return self.conductor.active()


def test_a_conductors_node_dies_and_its_threads_complete_elsewhere(cluster, tmp_path):
    from tilemore.blobs import open_blob_store
    from tilemore.catalog import Catalog
    from tilemore.settings import Settings

    settings = Settings(data_dir=tmp_path, checkpoint_tasks=True,
                        pipeline_paths=[DATA / "slow.yaml"])
    store, ledger = open_store(settings.db), open_ledger(settings.db)
    store.create_domain("acme")
    ledger.append([Entry("acme", "order", Decimal("1000"), reference="o")])
    blobs = open_blob_store(settings.blobs)
    slow = Catalog.load(settings).pipeline("slow")
    ids = []
    for i in range(THREADS):
        key = blobs.put(encode(noisy(photo(48, 32), 10, seed=i), "PNG"))
        rec, _ = store.create_thread(NewThread(
            domain="acme", account="acme", idem_key=f"k{i}", pipeline="slow",
            fingerprint=slow.fingerprint, meta_parts=[], image_sha256=key, input_key=key,
            output_format="png", envelope={"adjustments": {}},
            tasks=[("decode", "decode"), ("first", "spin"), ("second", "spin"),
                   ("encoder", "encoder")]))
        ids.append(rec.id)

    doomed_node = cluster.add_node(num_cpus=2, resources={"on_demand": 1})
    cluster.wait_for_nodes()
    survivor = ConductorHost.options(resources={"node:__internal_head__": 0.001}).remote(
        str(tmp_path), "survivor")
    doomed = ConductorHost.options(resources={"on_demand": 1}).remote(str(tmp_path), "doomed")
    ray.get([survivor.active.remote(), doomed.active.remote()])  # both up
    assert node_of(doomed) == doomed_node.node_id
    deadline = time.monotonic() + 60
    while ray.get(doomed.active.remote()) == 0:  # it has threads of its own, mid-run
        assert time.monotonic() < deadline
        time.sleep(0.1)
    held = store._query("SELECT id FROM threads WHERE lease_owner = 'doomed'"  # noqa: SLF001
                        " AND status = 'processing'")
    assert held
    killed_at = time.monotonic()
    cluster.remove_node(doomed_node, allow_graceful=False)

    deadline = time.monotonic() + 120
    while store.unfinished_threads():
        assert time.monotonic() < deadline, store.unfinished_threads()
        time.sleep(0.25)
    taken_over = {r["id"] for r in held}
    assert all(store.get_thread(t).status == "done" for t in ids)
    # Each task charged once, however many conductors ran a part of its thread.
    charges = [(e["thread_id"], e["task_id"]) for e in ledger.entries("acme")
               if e["kind"] == "charge"]
    assert sorted(charges) == sorted((t, task) for t in ids
                                     for task in ("decode", "first", "second", "encoder"))
    # The survivor took them over within the lease plus the work left (two 1 s tasks each).
    assert time.monotonic() - killed_at < LEASE + 4 * 2 * len(taken_over) + 10
    ray.kill(survivor)
    store.close()
    ledger.close()
