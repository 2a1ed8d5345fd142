"""``tilemore billing`` and the billing parts of ``tilemore admin``, on a real store
(SQLite, and PostgreSQL through TILEMORE_DATABASE_URL)."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest
from support.cli import run

from tilemore.billing.ledger import Entry


@pytest.fixture
def db(backend, monkeypatch):
    for name, value in backend.env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("COLUMNS", "200")
    backend.store().create_domain("acme")
    return backend


def test_add_credits_with_plan_bonus_balance_and_history(capsys, db):
    assert run(capsys, "admin", "set-plan", "acme", "--bonus-percent", "5")[0] == 0
    code, out, _ = run(capsys, "admin", "add-credits", "acme", "--order-id", "inv-1",
                       "--amount", "200")
    assert code == 0 and "bonus 10.00000000000000000000" in out
    assert "already recorded" in run(capsys, "admin", "add-credits", "acme", "--order-id",
                                     "inv-1", "--amount", "200")[1]
    code, _, err = run(capsys, "admin", "add-credits", "acme", "--order-id", "inv-1",
                       "--amount", "300")
    assert code == 1 and "[duplicate_reference]" in err
    code, out, _ = run(capsys, "billing", "balance", "-d", "acme")
    assert "210" in out and "210.0" not in out  # tables show credits without trailing zeros
    code, out, _ = run(capsys, "billing", "balance", "-d", "acme", "--json")
    assert code == 0 and json.loads(out)["balance"] == "210.00000000000000000000"  # JSON: all
    # moved to admin: `tilemore billing` no longer creates credits
    assert "No such command 'top-up'" in run(capsys, "billing", "top-up", "-d", "acme",
                                             "--order-id", "x", "--amount", "1")[2]
    code, out, _ = run(capsys, "billing", "history", "-d", "acme")
    assert code == 0 and out.count("-") > 31 and "amount_when_day_started" in out


def test_subaccounts_and_operations(capsys, db):
    assert "created" in run(capsys, "billing", "subaccounts", "create", "-d", "acme",
                            "studio")[1]
    code, _, err = run(capsys, "billing", "subaccounts", "pay", "-d", "acme", "studio",
                       "--payment-id", "p1", "--amount", "3.5")
    assert code == 1 and "[insufficient_credits]" in err  # the domain has nothing to move
    assert run(capsys, "admin", "add-credits", "acme", "--order-id", "o", "--amount", "5")[0] == 0
    code, out, _ = run(capsys, "billing", "subaccounts", "pay", "-d", "acme", "studio",
                       "--payment-id", "p1", "--amount", "3.5")
    assert code == 0 and "3.50000000000000000000" in out and "from acme" in out
    assert "1.5 " in run(capsys, "billing", "balance", "-d", "acme")[1]
    db.ledger().append(
        [Entry("acme/studio", "charge", Decimal("-0.25"), "thread-1", "encoder", "encoder", 2.0,
               traced_for="acme")])
    code, out, _ = run(capsys, "billing", "operations", "-d", "acme", "--sub", "studio")
    assert code == 0 and "encoder" in out and "-0.25 " in out
    code, out, _ = run(capsys, "billing", "operations", "-d", "acme", "--sub", "studio",
                       "--json")
    assert [r["amount"] for r in json.loads(out)] == ["3.50000000000000000000",
                                                      "-0.25000000000000000000"]
    code, out, _ = run(capsys, "billing", "subaccounts", "list", "-d", "acme")
    assert "studio" in out and "3.25 " in out
    code, out, _ = run(capsys, "billing", "subaccounts", "list", "-d", "acme", "--json")
    assert json.loads(out)[0]["available"] == "3.25000000000000000000"
    assert "ledger ok: 4 entries" in run(capsys, "admin", "verify-ledger")[1]


def test_set_price_is_data(capsys, db):
    assert run(capsys, "admin", "set-price", "encoder", "--per-call", "0.5",
               "--per-megapixel", "0")[0] == 0
    assert db.ledger().prices()["encoder"] == (
        Decimal("0.5"), Decimal("0"))


def test_verify_ledger_fails_loudly_on_tampering(capsys, db):
    db.ledger().append([Entry("acme", "order", Decimal("1"), reference="o")])
    db.execute(db.drop_trigger_sql("ledger_no_update"))
    db.execute("UPDATE ledger SET amount = '1000.00000000000000000000'")
    code, _, err = run(capsys, "admin", "verify-ledger")
    assert code == 1 and "does not verify" in err


@pytest.mark.parametrize("argv, words", [
    (["billing", "balance", "-d", "nobody"], "no domain 'nobody'"),
    (["billing", "balance", "-d", "acme", "--sub", "ghost"], "no sub-account 'ghost'"),
    (["admin", "add-credits", "acme", "--order-id", "x", "--amount", "lots"],
     "[invalid_amount]"),
    (["admin", "add-credits", "acme", "--order-id", "x", "--amount", "-3"],
     "[invalid_amount]"),
    (["admin", "add-credits", "acme", "--order-id", "x", "--amount", "1e18"],
     "[amount_out_of_range]"),
    (["admin", "add-credits", "nobody", "--order-id", "x", "--amount", "1"],
     "no domain 'nobody'"),
    (["billing", "operations", "-d", "acme", "--date", "2020-01-01"],
     "[history_out_of_range]"),
    (["billing", "operations", "-d", "acme", "--date", "soon"], "not YYYY-MM-DD"),
    (["admin", "set-price", "sharpen", "--per-call", "1", "--per-megapixel", "1"],
     "no operator 'sharpen'"),
    (["admin", "set-price", "encoder", "--per-call", "-1", "--per-megapixel", "1"],
     "cannot be negative"),
])
def test_bad_input(capsys, db, argv, words):
    code, _, err = run(capsys, *argv)
    assert code == 1 and words in err and len(err.strip().splitlines()) == 1
