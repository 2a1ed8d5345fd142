"""The ledger's invariants: append-only, chained, charged once, never below zero."""

from __future__ import annotations

import sqlite3
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tilemore.billing import (
    DuplicateReference,
    Entry,
    InsufficientCredits,
    InvalidAmount,
    SQLiteLedger,
    fmt,
    parse_amount,
)

D = Decimal


@pytest.fixture
def ledger(tmp_path):
    led = SQLiteLedger(tmp_path / "ledger.db")
    yield led
    led.close()


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


def test_the_database_refuses_update_and_delete(ledger):
    ledger.append([Entry("acme", "order", D("1"), reference="o")])
    db = sqlite3.connect(ledger.path)
    for sql in ("UPDATE ledger SET amount = '100' WHERE seq = 1", "DELETE FROM ledger"):
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            db.execute(sql)
    db.close()


def test_tampering_is_detected(ledger):
    ledger.append([Entry("acme", "order", D("1"), reference="o"),
                   Entry("acme", "charge", D("-0.5"), "t", "x")])
    db = sqlite3.connect(ledger.path)
    db.execute("DROP TRIGGER ledger_no_update")  # someone with the database file
    db.execute("UPDATE ledger SET amount = '-0.10000000000000000000' WHERE seq = 2")
    db.commit()
    db.close()
    report = ledger.verify()
    assert not report.ok and any("entry 2" in p for p in report.problems)


def test_traced_totals_land_on_the_parent(ledger):
    ledger.append([Entry("acme/sub", "payment", D("2"), reference="p")])
    ledger.append([Entry("acme/sub", "charge", D("-0.5"), "t", "x", traced_for="acme")])
    daily = {(r["account"]): r for r in ledger._db.execute("SELECT * FROM daily")}  # noqa
    assert D(daily["acme"]["traced_total"]) == D("0.5")
    assert D(daily["acme/sub"]["transaction_total"]) == D("0.5")
    assert ledger.verify().ok


amounts = st.decimals(min_value=D("0.00000000000000000001"), max_value=D("50"), places=20,
                      allow_nan=False, allow_infinity=False)
operations = st.lists(st.tuples(st.sampled_from(["order", "charge", "payment"]),
                                st.sampled_from(["acme", "acme/a", "acme/b"]), amounts,
                                st.integers(0, 5)), max_size=40)


@settings(max_examples=40, deadline=None)
@given(ops=operations)
def test_property_balances_equal_their_entries(tmp_path_factory, ops):
    ledger = SQLiteLedger(tmp_path_factory.mktemp("prop") / "l.db")
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
        ledger.close()
