"""The HTTP API on Ray Serve, on the tests' Ray cluster: the ingress deployment, the
conductor actor, operator actors; and the conductor killed mid-thread."""

from __future__ import annotations

import sqlite3
import time
from contextlib import closing
from decimal import Decimal
from pathlib import Path

import pytest
import ray
from support.images import encode, noisy, photo
from support.service_harness import Reply, free_port, http, multipart

from tilemore.billing.ledger import Entry, SQLiteLedger
from tilemore.service.generations import generation_of
from tilemore.settings import Settings
from tilemore.store import open_store

DATA = Path(__file__).parents[1] / "data"


@pytest.fixture(scope="module")
def api(ray_session, tmp_path_factory):
    from ray import serve

    from tilemore_deployments.billing import running_billing
    from tilemore_deployments.conductor import NAMESPACE, running_conductors
    from tilemore_deployments.ingress import build_app

    settings = Settings(data_dir=tmp_path_factory.mktemp("serve"), port=free_port(),
                        pipeline_paths=[DATA / "slow.yaml", DATA / "gated.yaml"])
    store = open_store(settings.db)
    store.create_domain("acme")
    _, token = store.issue_token("acme")
    SQLiteLedger(settings.database_path).append(
        [Entry("acme", "order", Decimal("50"), reference="seed")])
    serve.start(http_options={"host": "127.0.0.1", "port": settings.port})
    serve.run(build_app(settings), name="tilemore", route_prefix="/")
    yield settings, {"Authorization": f"Token {token} Domain acme"}, store
    serve.delete("tilemore")
    for name in (*running_conductors(), *running_billing()):
        ray.kill(ray.get_actor(name, namespace=NAMESPACE))


def submit(api, image: bytes, envelope: dict) -> Reply:
    import hashlib
    settings, auth, _ = api
    body, ctype = multipart(envelope, image)
    return http("POST", f"{settings.base_url}/shop/v1/submitted/"
                f"{hashlib.sha256(image).hexdigest()}/", body, {"Content-Type": ctype, **auth})


def wait(api, thread_id: str, timeout: float = 120) -> dict:
    settings, auth, _ = api
    deadline = time.monotonic() + timeout
    while True:
        body = http("GET", f"{settings.base_url}/threads/{thread_id}", headers=auth).json()
        if body["status"] != "processing" or time.monotonic() > deadline:
            return body
        time.sleep(0.1)


def test_submission_runs_on_operator_actors(api):
    img = encode(noisy(photo(160, 120), 12), "JPEG", quality=90)
    env = {"adjustments": {"shifter": {"resize": {"width": 80}}}, "output_format": "webp"}
    sent = submit(api, img, env)
    assert sent.status == 202, sent.body
    body = wait(api, sent.json()["thread_id"])
    assert body["status"] == "done", body
    assert {t["status"] for t in body["tasks"]} <= {"done", "skipped"}  # QC's plan skips
    assert body["qc"][0]["pick"] in ("nlmeans", "bilateral", "guided", "dncnn")
    got = http("GET", body["result"]["url"], headers=api[1])
    assert got.status == 200 and got.headers["content-type"] == "image/webp"
    again = submit(api, img, env)
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json()["thread_id"] == body["thread_id"]
    # charged once, per task, through the billing actor
    charged = Decimal(body["credits_charged"])
    assert charged > 0 and Decimal(again.json()["credits_charged"]) == charged
    balance = http("GET", f"{api[0].base_url}/billing/balance", headers=api[1]).json()
    assert Decimal(balance["balance"]) == Decimal("50") - charged
    assert Decimal(balance["held"]) == 0


def test_conductor_killed_mid_thread_resumes_from_checkpoints(api):
    from tilemore_deployments.conductor import NAMESPACE, running_conductors

    settings, _, store = api
    img = encode(photo(64, 48), "PNG")
    sent = submit(api, img, {"adjustments": {}, "pipeline": "slow"})
    thread_id = sent.json()["thread_id"]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        tasks = {t.task_id: t for t in store.get_thread(thread_id).tasks}
        if tasks["first"].status == "done":
            break
        time.sleep(0.05)
    before, decoded = tasks["first"], tasks["decode"]
    # Ray restarts the actor (max_restarts=-1); its operator actors die with it.
    ray.kill(ray.get_actor(newest(running_conductors()), namespace=NAMESPACE),
             no_restart=False)
    body = wait(api, thread_id)
    assert body["status"] == "done", body
    after = {t.task_id: t for t in store.get_thread(thread_id).tasks}
    assert after["first"] == before  # finished before the kill: not run again
    # nor the decode before it (stored or not: no task left reads it)
    assert after["decode"] == decoded


def test_billing_actor_killed_mid_append_charges_each_task_once(api):
    """The billing actor (the deploy's: the newest) dies while threads are being settled: Ray
    restarts it and re-sends the calls; charges are keyed by (thread, task), so none is lost
    and none is doubled."""
    from tilemore_deployments.billing import running_billing
    from tilemore_deployments.conductor import NAMESPACE

    settings, auth, _ = api
    imgs = [encode(noisy(photo(96, 64), 8, seed=100 + i), "PNG") for i in range(6)]
    env = {"adjustments": {"master": {"algorithm": "bilateral"}}, "output_format": "png"}
    ids = [submit(api, img, env).json()["thread_id"] for img in imgs]
    for _ in range(3):  # while the threads' tasks are being charged
        time.sleep(0.4)
        ray.kill(ray.get_actor(running_billing()[-1], namespace=NAMESPACE), no_restart=False)
    bodies = [wait(api, tid) for tid in ids]
    assert [b["status"] for b in bodies] == ["done"] * len(ids), bodies
    today = time.strftime("%Y-%m-%d", time.gmtime())
    ops = http("GET", f"{settings.base_url}/billing/operations?date={today}",
               headers=auth).json()["operations"]
    for tid, body in zip(ids, bodies, strict=True):
        mine = sorted(o["task_id"] for o in ops if o["thread_id"] == tid)
        assert mine == sorted(t["id"] for t in body["tasks"])  # once each
        assert sum(-Decimal(o["amount"]) for o in ops if o["thread_id"] == tid) == \
            Decimal(body["credits_charged"])
    report = SQLiteLedger(settings.database_path).verify()
    assert report.ok, report


def newest(conductors: list[str]) -> str:
    """The first conductor of the latest generation: the one the ingress hands threads to."""
    return max((n for n in conductors if n.startswith("tilemore-conductor@")),
               key=generation_of)


def lease_of(settings: Settings, thread_id: str) -> tuple[str | None, int]:
    with closing(sqlite3.connect(settings.database_path)) as db:
        return db.execute("SELECT lease_owner, lease_epoch FROM threads WHERE id = ?",
                          (thread_id,)).fetchone()


def running_on(settings: Settings, thread_id: str, timeout: float = 60) -> tuple[str, int]:
    deadline = time.monotonic() + timeout
    while (lease := lease_of(settings, thread_id))[0] is None:
        assert time.monotonic() < deadline, "the thread was never claimed"
        time.sleep(0.05)
    return lease


def test_a_redeploy_lets_the_old_conductor_finish_its_threads(api, tmp_path):
    """A rolling upgrade: the new deploy's conductor retires the old one, which finishes the
    thread it runs (no lease lost, no task run twice) and then goes; new threads run on the
    new generation."""
    from ray import serve

    from tilemore_deployments.billing import running_billing, stop_older_billing
    from tilemore_deployments.conductor import running_conductors
    from tilemore_deployments.ingress import build_app

    settings, auth, store = api
    old = newest(running_conductors())  # (another module's may linger: older, retired too)
    gate = tmp_path / "open"  # the thread runs until the test creates this file
    sent = submit(api, encode(photo(64, 40), "PNG"),
                  {"adjustments": {"gate": {"path": str(gate)}}, "pipeline": "gated"})
    thread_id = sent.json()["thread_id"]
    owner, epoch = running_on(settings, thread_id)
    assert owner == old
    serve.run(build_app(settings), name="tilemore", route_prefix="/")  # the redeploy
    deadline = time.monotonic() + 60
    while newest(running_conductors()) == old:  # the new generation's conductor is up
        assert time.monotonic() < deadline, "no conductor of the new generation started"
        time.sleep(0.05)
    assert store.get_thread(thread_id).status == "processing"  # the old one finishes it
    gate.touch()
    body = wait(api, thread_id)
    assert body["status"] == "done", body
    # the old conductor kept its lease to the end: nobody claimed the thread meanwhile (it
    # gives the lease back just after the thread's end is written)
    owner_after, epoch_after = lease_of(settings, thread_id)
    assert epoch_after == epoch and owner_after in (None, old)
    today = time.strftime("%Y-%m-%d", time.gmtime())
    ops = http("GET", f"{settings.base_url}/billing/operations?date={today}",
               headers=auth).json()["operations"]
    assert sorted(o["task_id"] for o in ops if o["thread_id"] == thread_id) == \
        sorted(t["id"] for t in body["tasks"])  # each task charged once
    deadline = time.monotonic() + 60
    while len({generation_of(n) for n in running_conductors()}) > 1:
        assert time.monotonic() < deadline, "an older conductor was never stopped"
        time.sleep(0.2)
    new = newest(running_conductors())
    assert old not in running_conductors() and generation_of(new) > generation_of(old)
    # each deploy calls its own billing actor; the older goes once nothing calls it (the new
    # first conductor stops it two minutes after the old conductors: here, at once)
    old_billing, new_billing = (f"tilemore-billing@{generation_of(n)}" for n in (old, new))
    assert {old_billing, new_billing} <= set(running_billing())
    assert old_billing in stop_older_billing(generation_of(new))
    assert old_billing not in running_billing() and new_billing in running_billing()
    later = submit(api, encode(photo(64, 44), "PNG"), {"adjustments": {}, "pipeline": "slow"})
    assert running_on(settings, later.json()["thread_id"])[0] == new
    assert wait(api, later.json()["thread_id"])["status"] == "done"
