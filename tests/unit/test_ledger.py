"""The ledger's invariants: append-only, chained, charged once, never below zero — on
SQLite and on PostgreSQL (the ``backend`` fixture runs each test on both)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tilemore.billing import (
    DuplicateReference,
    Entry,
    InsufficientCredits,
    InvalidAmount,
    fmt,
    parse_amount,
)
from tilemore.billing.entries import Settlement

D = Decimal


@pytest.fixture
def ledger(backend):
    return backend.ledger()


def test_amounts_are_strings_with_at_most_twenty_digits():
    assert fmt(parse_amount("6.1958589666101")) == "6.19585896661010000000"
    assert parse_amount("0.00000000000000000001") == D("1e-20")
    for bad, words in ((0.5, "not a float"), (3, "not int"), ("abc", "not a number"),
                       ("-1", "greater than zero"), ("0", "greater than zero"),
                       ("1.000000000000000000001", "more than 20"), ("NaN", "finite"),
                       ("Infinity", "finite"), (True, "not bool")):
        with pytest.raises(InvalidAmount, match=words):
            parse_amount(bad)


def test_orders_charges_and_balances(ledger):
    ledger.append([Entry("acme", "order", D("10"), reference="o-1"),
                   Entry("acme", "bonus", D("1.5"), reference="o-1")])
    ledger.append([Entry("acme", "charge", D("-0.00061677849800000000"), "t1", "decode",
                         "decode", 12.0)])
    assert ledger.balance("acme") == D("11.49938322150200000000")
    assert ledger.thread_cost("t1") == D("0.00061677849800000000")
    assert ledger.verify().ok


def test_a_task_is_charged_once(ledger):
    ledger.append([Entry("acme", "order", D("1"), reference="o")])
    charge = Entry("acme", "charge", D("-0.25"), "t1", "nlmeans", "nlmeans", 2.0)
    first = ledger.append([charge])[0]
    again = ledger.append([charge])[0]
    assert again.duplicate and again.seq == first.seq
    assert ledger.balance("acme") == D("0.75") and len(ledger.entries("acme")) == 2


def test_a_settlement_charges_and_releases_in_one_transaction(ledger):
    ledger.append([Entry("acme", "order", D("2"), reference="o")])
    ledger.reserve("acme", "hold-1", D("1.5"))
    before = Entry("acme", "charge", D("-0.25"), "t1", "decode", "decode", 1.0, hold="hold-1")
    ledger.append([before])  # an earlier run charged this one, at an older price
    settled = ledger.write([Settlement((
        replace(before, amount=D("-0.3")),  # the original stands: no conflict, no new entry
        Entry("acme", "charge", D("-0.5"), "t1", "encoder", "encoder", 1.0, hold="hold-1"),
    ), "hold-1", "t1")])[0]
    assert [a.duplicate for a in settled] == [True, False]
    assert ledger.thread_cost("t1") == D("0.75") and ledger.balance("acme") == D("1.25")
    assert ledger.held("acme") == D("0") and ledger.hold_keys() == []
    assert ledger.verify().ok


def test_a_settlement_is_refused_whole(ledger):
    ledger.append([Entry("acme", "order", D("1"), reference="o")])
    ledger.reserve("acme", "hold-1", D("1"))
    with pytest.raises(InsufficientCredits):  # more than the estimate: nothing happens
        ledger.write([Settlement((Entry("acme", "charge", D("-0.6"), "t1", "a"),
                                  Entry("acme", "charge", D("-0.6"), "t1", "b")), "hold-1")])
    assert ledger.balance("acme") == D("1") and ledger.held("acme") == D("1")
    assert len(ledger.entries()) == 1


def test_reused_reference_with_another_amount_is_a_conflict(ledger):
    ledger.append([Entry("acme/sub", "payment", D("5"), reference="pay-1")])
    assert ledger.append([Entry("acme/sub", "payment", D("5"), reference="pay-1")])[0].duplicate
    with pytest.raises(DuplicateReference):
        ledger.append([Entry("acme/sub", "payment", D("6"), reference="pay-1")])


def test_never_below_zero_and_the_batch_is_refused_whole(ledger):
    ledger.append([Entry("acme", "order", D("1"), reference="o")])
    with pytest.raises(InsufficientCredits):
        ledger.append([Entry("acme", "charge", D("-0.6"), "t1", "a"),
                       Entry("acme", "charge", D("-0.6"), "t1", "b")])
    assert ledger.balance("acme") == D("1") and len(ledger.entries()) == 1


def test_the_database_refuses_update_and_delete(backend, ledger):
    ledger.append([Entry("acme", "order", D("1"), reference="o")])
    refused = ["UPDATE ledger SET amount = '100' WHERE seq = 1", "DELETE FROM ledger"]
    if backend.name == "postgres":
        refused.append("TRUNCATE ledger")  # skips row triggers: refused by its own
    for sql in refused:
        with pytest.raises(backend.integrity_error, match="append-only"):
            backend.execute(sql)
    assert len(ledger.entries()) == 1


def test_tampering_is_detected(backend, ledger):
    ledger.append([Entry("acme", "order", D("1"), reference="o"),
                   Entry("acme", "charge", D("-0.5"), "t", "x")])
    backend.execute(backend.drop_trigger_sql("ledger_no_update"))  # someone with the database
    backend.execute("UPDATE ledger SET amount = '-0.10000000000000000000' WHERE seq = 2")
    report = ledger.verify()
    assert not report.ok and any("entry 2" in p for p in report.problems)


def test_traced_totals_land_on_the_parent(ledger):
    ledger.append([Entry("acme/sub", "payment", D("2"), reference="p")])
    ledger.append([Entry("acme/sub", "charge", D("-0.5"), "t", "x", traced_for="acme")])
    daily = {(r["account"]): r for r in ledger._query("SELECT * FROM daily")}  # noqa: SLF001
    assert D(daily["acme"]["traced_total"]) == D("0.5")
    assert D(daily["acme/sub"]["transaction_total"]) == D("0.5")
    assert ledger.verify().ok


amounts = st.decimals(min_value=D("0.00000000000000000001"), max_value=D("50"), places=20,
                      allow_nan=False, allow_infinity=False)
operations = st.lists(st.tuples(st.sampled_from(["order", "charge", "payment"]),
                                st.sampled_from(["acme", "acme/a", "acme/b"]), amounts,
                                st.integers(0, 5)), max_size=40)


# Each example gets its own empty database (``sibling``), so the fixture's scope is harmless.
@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=operations)
def test_property_balances_equal_their_entries(backend, ops):
    db = backend.sibling()
    ledger = db.ledger()
    try:
        for i, (kind, account, amount, task) in enumerate(ops):
            entry = (Entry(account, "charge", -amount, f"t{i % 7}", f"task{task}",
                           traced_for="acme" if account != "acme" else None)
                     if kind == "charge" else Entry(account, kind, amount, reference=f"r{i}"))
            try:
                ledger.append([entry])
            except (InsufficientCredits, DuplicateReference):
                pass
        for account in ("acme", "acme/a", "acme/b"):
            total = sum((D(r["amount"]) for r in ledger.entries(account)), D(0))
            assert ledger.balance(account) == total >= 0
        assert ledger.verify().ok
    finally:
        db.close()


def test_histories(backend):
    from datetime import date, datetime, timedelta

    from tilemore.billing.history import HistoryOutOfRange, abbreviated, detailed

    now = [datetime(2026, 11, 1, 12, tzinfo=UTC).timestamp()]
    ledger = backend.ledger(clock=lambda: now[0])
    ledger.append([Entry("acme", "order", D("10"), reference="o1"),
                   Entry("acme", "bonus", D("1"), reference="o1")])
    now[0] += 86400 * 3  # Nov 4
    ledger.append([Entry("acme", "charge", D("-0.25"), "t1", "a", "nlmeans", 12.0),
                   Entry("acme/s", "payment", D("3"), reference="p1")])
    ledger.append([Entry("acme/s", "charge", D("-0.5"), "t2", "a", traced_for="acme")])
    today = date(2026, 11, 5)
    rows = abbreviated(ledger, "acme", today)
    assert len(rows) == 31 and rows[-1]["date"] == "2026-11-05"
    assert set(rows[0]) == {"date", "amount_when_day_started", "transaction_total",
                            "traced_total", "ordered_total", "applied_commitment_bonus"}
    by = {r["date"]: r for r in rows}
    assert by["2026-11-01"]["ordered_total"] == "10.00000000000000000000"
    assert by["2026-11-01"]["applied_commitment_bonus"] == "1.00000000000000000000"
    assert by["2026-11-02"]["amount_when_day_started"] == "11.00000000000000000000"
    assert by["2026-11-04"]["transaction_total"] == "0.25000000000000000000"
    assert by["2026-11-04"]["traced_total"] == "0.50000000000000000000"
    assert by["2026-11-05"]["amount_when_day_started"] == "10.75000000000000000000"
    ops = detailed(ledger, "acme", date(2026, 11, 4), date(2026, 11, 4))
    assert [o["operator"] for o in ops] == ["nlmeans"] and ops[0]["megapixels"] == 12.0
    assert detailed(ledger, "acme", date(2026, 11, 4), today) == ops  # yesterday is fine
    with pytest.raises(HistoryOutOfRange):
        detailed(ledger, "acme", today - timedelta(days=3), today)


def test_group_writer_answers_each_caller(backend):
    from concurrent.futures import ThreadPoolExecutor

    from tilemore.billing.writer import LedgerWriter

    ledger = backend.ledger()
    ledger.append([Entry("acme", "order", D("1"), reference="o")])
    writer = LedgerWriter(ledger)
    entries = [Entry("acme", "charge", D("-0.1"), f"t{i}", "x") for i in range(15)]
    with ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(writer.append, e) for e in entries]
    outcomes = []
    for f in futures:
        try:
            outcomes.append(f.result())
        except InsufficientCredits:
            outcomes.append(None)
    writer.close()
    assert sum(o is not None for o in outcomes) == 10  # exactly what 1 credit covers
    assert ledger.balance("acme") == D("0") and ledger.verify().ok


def test_a_closed_writer_answers_at_once(backend):
    """An entry handed in after close fails 503 at once: a caller waiting for an answer
    nobody gives held a test run's exit for an hour."""
    from tilemore.billing.writer import LedgerWriter
    from tilemore.errors import ServiceUnavailable

    ledger = backend.ledger()
    writer = LedgerWriter(ledger)
    before = writer.submit(Entry("acme", "order", D("1"), reference="o"))
    writer.close()
    assert before.result(timeout=5).duplicate is False  # handed in before: answered
    with pytest.raises(ServiceUnavailable):
        writer.append(Entry("acme", "charge", D("-0.1"), "t1", "x"))
    writer.close()  # twice is fine
    assert ledger.balance("acme") == D("1")


def test_writers_in_many_processes_share_one_chain(backend):
    """Two ledger objects (two connections, as two processes have) append and reserve at
    once: the chain does not fork and the balance is spent exactly once."""
    import threading

    first, second = backend.ledger(), backend.ledger()
    first.append([Entry("acme", "order", D("1"), reference="o")])
    barrier = threading.Barrier(8)
    outcomes: list[bool] = []

    def spend(i: int) -> None:
        ledger = (first, second)[i % 2]
        barrier.wait()
        for j in range(3):
            try:
                ledger.reserve("acme", f"hold-{i}-{j}", D("0.01"))
                ledger.append([Entry("acme", "charge", D("-0.05"), f"t{i}", f"task{j}",
                                     hold=f"hold-{i}-{j}")])
                outcomes.append(True)
            except InsufficientCredits:
                outcomes.append(False)

    threads = [threading.Thread(target=spend, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(outcomes) == 20 and second.balance("acme") == D("0")
    assert len(first.entries()) == 21 and second.verify().ok


def test_large_balances_keep_every_digit(ledger):
    big = parse_amount("999999999999999999.99999999999999999999")
    ledger.append([Entry("acme", "order", big, reference="o")])
    ledger.append([Entry("acme", "charge", D("-0.00000000000000000001"), "t", "a")])
    assert fmt(ledger.balance("acme")) == "999999999999999999.99999999999999999998"
    with pytest.raises(InvalidAmount, match="10\\^18"):
        parse_amount("1000000000000000000")
    assert ledger.verify().ok


def test_balances_and_daily_totals_stay_below_10_18(backend, ledger):
    """10^18 is the range both databases keep exactly: an entry that would reach it is
    refused with a code (PostgreSQL's NUMERIC(38, 20) would otherwise overflow: a 500)."""
    from tilemore.billing.money import AmountOutOfRange

    top = parse_amount("999999999999999999.5")
    ledger.append([Entry("acme", "order", top, reference="o1")])
    for entries in ([Entry("acme", "order", D("0.5"), reference="o2")],  # balance = 10^18
                    [Entry("acme", "order", D(10) ** 18, reference="o3")],  # the amount
                    [Entry("acme", "charge", -(D(10) ** 18), "t", "a")]):
        with pytest.raises(AmountOutOfRange) as refused:
            ledger.append(entries, allow_negative=True)
        assert (refused.value.code, refused.value.status) == ("amount_out_of_range", 422)
    # A day's total is kept in the same type: moved out and bought again, the ordered
    # total of the day would pass the range although the balance does not.
    ledger.transfer("acme", "acme/s", "p1", parse_amount("999999999999999999"))
    with pytest.raises(AmountOutOfRange, match="ordered_total"):
        ledger.append([Entry("acme", "order", D("1"), reference="o4")])
    assert ledger.balance("acme") == D("0.5") and len(ledger.entries()) == 3
    assert ledger.verify().ok


def test_a_payment_moves_credits_from_the_domain(ledger):
    ledger.append([Entry("acme", "order", D("10"), reference="o")])
    ledger.reserve("acme", "running-thread", D("4"))
    with pytest.raises(InsufficientCredits, match="6.00000000000000000000 credits available"):
        ledger.transfer("acme", "acme/s", "pay-1", D("7"))  # the held 4 are not available
    moved = ledger.transfer("acme", "acme/s", "pay-1", D("6"))
    assert not moved.duplicate and moved.balance_after == D("6")
    assert ledger.balance("acme") == D("4") and ledger.balance("acme/s") == D("6")
    again = ledger.transfer("acme", "acme/s", "pay-1", D("6"))
    assert again.duplicate and again.seq == moved.seq and ledger.balance("acme") == D("4")
    with pytest.raises(DuplicateReference):
        ledger.transfer("acme", "acme/s", "pay-1", D("1"))
    kinds = [(r["account"], r["kind"], D(r["amount"])) for r in ledger.entries()]
    assert kinds[1:] == [("acme", "payment", D("-6")), ("acme/s", "payment", D("6"))]
    daily = {r["account"]: r for r in ledger._query("SELECT * FROM daily")}  # noqa: SLF001
    # The domain spent what it moved; the sub-account received it.
    assert D(daily["acme"]["transaction_total"]) == D("6")
    assert D(daily["acme"]["ordered_total"]) == D("10")
    assert D(daily["acme/s"]["ordered_total"]) == D("6")
    assert ledger.verify().ok


def test_a_payment_recorded_before_transfers_is_not_debited_on_replay(ledger):
    ledger.append([Entry("acme", "order", D("10"), reference="o"),
                   Entry("acme/s", "payment", D("2"), reference="old-pay")])  # as it was
    assert ledger.transfer("acme", "acme/s", "old-pay", D("2")).duplicate
    assert ledger.balance("acme") == D("10") and ledger.balance("acme/s") == D("2")


def test_a_payment_notification_credits_once(ledger):
    entries = [Entry("acme", "order", D("5"), reference="inv-1"),
               Entry("acme", "bonus", D("0.5"), reference="inv-1")]
    first = ledger.append_event("evt-1", entries)
    assert first is not None and not first[0].duplicate
    assert ledger.append_event("evt-1", entries) is None  # a replay: nothing appended
    # Another event for the same order credits nothing either (the order is keyed).
    assert ledger.append_event("evt-2", entries)[0].duplicate
    with pytest.raises(DuplicateReference) as clash:
        ledger.append_event("evt-1", [Entry("acme", "order", D("6"), reference="inv-1")])
    assert clash.value.code == "event_conflict"
    assert ledger.balance("acme") == D("5.5") and len(ledger.entries()) == 2
    assert ledger.verify().ok


def test_a_sub_account_cannot_be_funded_past_10_18(backend):
    from datetime import UTC, datetime

    from tilemore.billing.money import AmountOutOfRange

    now = [datetime(2026, 11, 1, 12, tzinfo=UTC).timestamp()]
    ledger = backend.ledger(clock=lambda: now[0])
    big = parse_amount("900000000000000000")
    for day in range(2):  # a day's totals have room again the next day
        ledger.append([Entry("acme", "order", big, reference=f"o{day}")])
        if day == 0:
            ledger.transfer("acme", "acme/s", "p0", big)
        now[0] += 86400
    with pytest.raises(AmountOutOfRange, match="balance of 'acme/s'"):
        ledger.transfer("acme", "acme/s", "p1", big)
    assert ledger.balance("acme") == big and ledger.balance("acme/s") == big
    assert ledger.verify().ok


def test_histories_of_a_transfer(backend):
    """The domain spent what it moved (transaction_total), the sub-account received it
    (ordered_total), and the balances carried to the next days agree with both."""
    from datetime import date, datetime

    from tilemore.billing.history import abbreviated

    now = [datetime(2026, 11, 1, 12, tzinfo=UTC).timestamp()]
    ledger = backend.ledger(clock=lambda: now[0])
    ledger.append([Entry("acme", "order", D("10"), reference="o1")])
    ledger.transfer("acme", "acme/s", "p1", D("4"))
    acme = {r["date"]: r for r in abbreviated(ledger, "acme", date(2026, 11, 3))}
    sub = {r["date"]: r for r in abbreviated(ledger, "acme/s", date(2026, 11, 3))}
    assert acme["2026-11-01"]["transaction_total"] == "4.00000000000000000000"
    assert acme["2026-11-01"]["ordered_total"] == "10.00000000000000000000"
    assert sub["2026-11-01"]["ordered_total"] == "4.00000000000000000000"
    assert acme["2026-11-03"]["amount_when_day_started"] == "6.00000000000000000000"
    assert sub["2026-11-03"]["amount_when_day_started"] == "4.00000000000000000000"


def test_closing_a_sqlite_file_waits_for_a_read_in_flight_on_another_thread(tmp_path):
    """Closing freed a connection another thread was reading on (a segfault, once in CI's
    tests); now close waits for that read, and a read after close is a clean 503."""
    import threading
    import time

    from tilemore.errors import DatabaseUnavailable
    from tilemore.store.sqlite_db import SQLiteDatabase

    db = SQLiteDatabase(tmp_path / "x.db", "CREATE TABLE IF NOT EXISTS t (n INTEGER);")
    with db._tx() as w:  # noqa: SLF001
        w.executemany("INSERT INTO t VALUES (?)", [(i,) for i in range(2000)])
    reading, seen = threading.Event(), []

    def read() -> None:
        with db._read() as r:  # noqa: SLF001 - a long read on this thread's connection
            reading.set()
            time.sleep(0.3)  # close() is called meanwhile and must wait for us
            seen.append(r.execute("SELECT COUNT(*) FROM t").fetchone()[0])

    t = threading.Thread(target=read)
    t.start()
    reading.wait(5)
    closer = threading.Thread(target=db.close)
    closer.start()
    t.join(5)
    closer.join(5)
    assert seen == [2000] and not closer.is_alive()
    with pytest.raises(DatabaseUnavailable):
        db._query("SELECT 1")  # noqa: SLF001


def test_threads_that_come_and_go_reuse_sqlite_read_connections(tmp_path):
    """Read connections are lent and reused, never one per thread: SQLite keeps a closed
    connection's file handles while the process has the file open (an ingress, whose
    request threads come and go, once held 3,909)."""
    import os
    import threading

    from tilemore.store.sqlite_db import SQLiteDatabase

    db = SQLiteDatabase(tmp_path / "x.db", "CREATE TABLE IF NOT EXISTS t (n INTEGER);")

    def handles() -> int:
        return sum(1 for fd in os.listdir("/proc/self/fd")
                   if os.path.realpath(f"/proc/self/fd/{fd}").startswith(str(tmp_path)))

    before = handles()
    for _ in range(50):
        t = threading.Thread(target=lambda: db._query("SELECT COUNT(*) FROM t"))  # noqa: SLF001
        t.start()
        t.join()
    assert handles() <= before + 3  # one reader's file handles, not 50 threads' worth
    db.close()
