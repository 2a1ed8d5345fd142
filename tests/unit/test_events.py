"""The conductor's events: every concern hears a thread's progress in order, a required
listener's failure stops the run, a best-effort one's never does. A real store and ledger
(SQLite and PostgreSQL), the in-process backend (no Ray)."""

from __future__ import annotations

import pytest

from tilemore.billing.service import Billing
from tilemore.service.events import Listener, Listeners, ThreadEnded, ThreadEnding


class Heard(Listener):
    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []

    def _note(self, event) -> None:
        self.events.append((event.hook, getattr(getattr(event, "task", None), "id", "")
                            or getattr(getattr(event, "stats", None), "task_id", "")))

    task_finished = task_retried = task_failed = _note

    def tasks_started(self, event) -> None:
        self.events += [(event.hook, t.id) for t in event.tasks]

    def thread_ending(self, event: ThreadEnding) -> None:
        self.events.append((event.hook, ",".join(sorted(s.task_id for s in event.tasks))))

    def thread_ended(self, event: ThreadEnded) -> None:
        self.events.append((event.hook, event.status))


class Broken(Listener):
    def task_finished(self, event) -> None:
        raise RuntimeError("a webhook outbox that is down")


def test_a_listener_hears_every_task_and_the_end_in_order(parts):
    heard = Heard()
    billing = Billing(parts.ledger)
    conductor = parts.conductor(billing, listeners=[Broken(), heard])
    rec = parts.accept("k1")
    assert conductor.run_thread(rec.id) == "done"  # the broken best-effort one changed nothing
    assert heard.events == [  # every stage handed on at once (a DAG), judged in order
        ("tasks_started", "decode"), ("tasks_started", "shifter"),
        ("tasks_started", "encoder"),
        ("task_finished", "decode"), ("task_finished", "shifter"),
        ("task_finished", "encoder"), ("thread_ending", "decode,encoder,shifter"),
        ("thread_ended", "done")]
    assert billing.thread_cost(rec.id) > 0  # the service's own listeners charged…
    tasks = parts.store.get_thread(rec.id).tasks
    assert [t.status for t in tasks] == ["done"] * 3  # …and recorded
    conductor.close()
    billing.close()


def test_a_thread_is_settled_in_one_trip_to_billing_before_it_is_recorded(parts):
    """Every task charged once and the hold given back, in one call and one transaction,
    while the thread is still processing: an ended thread is a settled one."""
    calls = []

    class Counting(Billing):
        def settle(self, **kwargs):
            calls.append((kwargs["thread_id"], [c.task_id for c in kwargs["charges"]],
                          parts.store.get_thread(kwargs["thread_id"]).status))
            return super().settle(**kwargs)

        def release(self, key: str) -> None:
            calls.append(("release", key))
            super().release(key)

    billing = Counting(parts.ledger)
    conductor = parts.conductor(billing)
    rec = parts.accept("k-settle")
    try:
        assert conductor.run_thread(rec.id) == "done"
        assert calls == [(rec.id, ["decode", "shifter", "encoder"], "processing")]
        charges = [e for e in parts.ledger.entries("acme") if e["kind"] == "charge"]
        assert sorted(e["task_id"] for e in charges) == ["decode", "encoder", "shifter"]
        assert parts.ledger.held("acme") == 0
    finally:
        conductor.close()
        billing.close()


class Refusing(Listener):
    required = True

    def tasks_started(self, event) -> None:
        raise RuntimeError("refused")


def test_a_required_listener_stops_the_run(parts):
    billing = Billing(parts.ledger)
    conductor = parts.conductor(billing, listeners=[Refusing()])
    rec = parts.accept("k2")
    with pytest.raises(RuntimeError, match="refused"):
        conductor.run_thread(rec.id)
    assert parts.store.get_thread(rec.id).status == "processing"  # the next sweep retries it
    conductor.close()
    billing.close()


def test_best_effort_failures_are_logged_not_raised(caplog):
    class Event:  # the smallest event a listener can get
        hook = "thread_ended"
        thread = type("T", (), {"id": "t1"})()

    class Failing(Listener):
        def thread_ended(self, event) -> None:
            raise ValueError("down")

    heard = []

    class After(Listener):
        def thread_ended(self, event) -> None:
            heard.append(event)

    Listeners([Failing(), After()]).emit(Event())  # type: ignore[arg-type]
    assert len(heard) == 1 and "Failing's thread_ended failed: down" in caplog.text
