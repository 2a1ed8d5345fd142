"""The ledger's invariants: append-only, chained, charged once, never below zero — on
SQLite and on PostgreSQL (the ``backend`` fixture runs each test on both)."""

from __future__ import annotations

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
