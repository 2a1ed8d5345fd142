"""The webhook outbox on SQLite and PostgreSQL (the ``backend`` fixture): an event written
twice is one delivery, deliverers claiming at once never take the same attempt, a late
outcome is fenced off, a low balance is one event per crossing, and the collector forgets
finished deliveries past their time to live, never pending ones."""

from __future__ import annotations

import json
import threading
import time

import pytest

from tilemore.blobs.local import LocalBlobStore
from tilemore.cli import main
from tilemore.lifecycle import Collector, Lifecycle
from tilemore.store.lifecycle import open_lifecycle_store
from tilemore.store.webhooks import Outgoing, TooManyEndpoints


def _world(backend):
    store = backend.store()
    store.create_domain("acme")
    ep = store.create_endpoint("acme", "https://hooks.example.com/t", ["thread.done"], None,
                               "whsec_a", most=2)
    return store, ep


def _out(ep, i: int) -> Outgoing:
    return Outgoing(ep.id, "acme", f"evt_{i}", "thread.done", b'{"id": "evt_%d"}' % i)


def test_an_event_written_twice_is_one_delivery(backend):
    store, ep = _world(backend)
    assert store.enqueue([_out(ep, 1), _out(ep, 2)]) == 2
    assert store.enqueue([_out(ep, 1)]) == 0  # the listener ran twice: nothing new
    assert len(store.deliveries("acme", ep.id)) == 2
    store.create_endpoint("acme", "https://b.example.com/", ["thread.done"], None, "s", 2)
    with pytest.raises(TooManyEndpoints):
        store.create_endpoint("acme", "https://c.example.com/", ["thread.done"], None, "s", 2)


def test_deliverers_claiming_at_once_never_take_the_same_attempt(backend):
    store, ep = _world(backend)
    store.enqueue([_out(ep, i) for i in range(60)])
    other = backend.store()  # a second process's connection
    taken: list[list[str]] = [[], []]

    def deliverer(k: int, s) -> None:
        while True:
            got = s.claim_deliveries(f"d{k}", 3, 60.0)
            if not got:
                return
            taken[k] += [c.id for c in got]

    workers = [threading.Thread(target=deliverer, args=(k, s))
               for k, s in enumerate((store, other))]
    for w in workers:
        w.start()
    for w in workers:
        w.join(60)
    everyone = taken[0] + taken[1]
    assert len(everyone) == 60 and len(set(everyone)) == 60  # each once, none twice
    assert store.claim_deliveries("d3", 10, 60.0) == []  # leased: not due again yet


def test_a_late_outcome_is_fenced_off_and_a_lapsed_lease_is_claimed_again(backend):
    store, ep = _world(backend)
    store.enqueue([_out(ep, 1)])
    first = store.claim_deliveries("d1", 10, 0.2)[0]
    time.sleep(0.3)  # d1 stalls past its lease: the row is due again
    second = store.claim_deliveries("d2", 10, 60.0)[0]
    assert (second.id, second.attempt) == (first.id, 2)
    assert not store.record_attempt(first, time.time(), 200, None, 0.1, "delivered")
    assert store.record_attempt(second, time.time(), 500, "HTTP 500", 0.1, "pending",
                                time.time() + 60)
    [d] = store.deliveries("acme", ep.id)
    assert d["status"] == "pending" and [a["n"] for a in d["attempts"]] == [2]
    assert store.resend("acme", d["id"])  # by hand: due now, a new window
    again = store.claim_deliveries("d1", 10, 60.0)
    assert [c.id for c in again] == [d["id"]]


def test_low_balance_is_one_event_per_crossing(backend):
    store, ep = _world(backend)

    def seen(below: bool, i: int) -> bool:
        return store.balance_crossed(ep.id, "acme", below, _out(ep, i) if below else None)

    assert not seen(False, 0)
    assert seen(True, 1)  # went below: one event
    assert not seen(True, 2) and not seen(True, 3)  # still below: none
    assert not seen(False, 4)  # topped up
    assert seen(True, 5)  # below again: one more
    assert sorted(d["event_id"] for d in store.deliveries("acme", ep.id)) == ["evt_1", "evt_5"]


def test_the_collector_forgets_finished_deliveries_past_their_time(backend, tmp_path):
    store, ep = _world(backend)
    store.enqueue([_out(ep, i) for i in range(3)], now=time.time() - 3 * 86400)
    claimed = store.claim_deliveries("d", 2, 60.0)  # two finish; one stays pending
    for c, state in zip(claimed, ("delivered", "given_up"), strict=True):
        store.record_attempt(c, time.time(), 200, None, 0.1, state)
    settings = backend.settings(retention_webhooks_seconds=2 * 86400)
    lifecycle = Lifecycle(backend._keep(open_lifecycle_store(settings.db)),  # noqa: SLF001
                          LocalBlobStore(tmp_path / "blobs"), settings.retention)
    report = Collector(lifecycle).run_pass()
    assert report.webhooks == 2
    assert [d["status"] for d in store.deliveries("acme", ep.id)] == ["pending"]
    assert report.to_dict()["webhook_deliveries"] == 2


def test_admin_shows_the_endpoints_and_their_deliveries(backend, monkeypatch, capsys):
    for name, value in backend.env.items():
        monkeypatch.setenv(name, value)
    store, ep = _world(backend)
    store.enqueue([_out(ep, 1), _out(ep, 2)])
    [c] = store.claim_deliveries("d", 1, 60.0)
    store.record_attempt(c, time.time(), 200, None, 0.1, "delivered")
    assert main(["admin", "webhooks", "acme", "--json"]) == 0
    [row] = json.loads(capsys.readouterr().out)
    assert row["id"] == ep.id and row["deliveries"] == {"pending": 1, "delivered": 1,
                                                        "given_up": 0}
    assert "whsec_a" not in json.dumps(row)  # never the secret
    assert main(["admin", "webhooks", "acme"]) == 0
    assert "webhook endpoints of acme" in capsys.readouterr().out  # the table (wrapped)
