"""``tilemore admin``: domains and tokens in the store the service reads (SQLite, and
PostgreSQL through TILEMORE_DATABASE_URL)."""

from __future__ import annotations

import pytest
from support.cli import run


@pytest.fixture
def db(backend, monkeypatch):
    for name, value in backend.env.items():
        monkeypatch.setenv(name, value)
    return backend


def test_domain_and_token_lifecycle(capsys, db):
    assert run(capsys, "admin", "create-domain", "denoised")[1].strip() == \
        "domain denoised created"
    assert "already exists" in run(capsys, "admin", "create-domain", "denoised")[1]
    code, out, _ = run(capsys, "admin", "issue-token", "denoised")
    assert code == 0
    fields = dict(line.split(":", 1) for line in out.strip().splitlines())
    token_id, secret = fields["token id"].strip(), fields["token"].strip()
    store = db.store()
    assert store.find_token(secret).domain == "denoised"
    assert secret not in db.table_text("tokens")  # hashed
    code, out, _ = run(capsys, "admin", "tokens", "denoised")
    assert token_id in out and secret not in out
    assert run(capsys, "admin", "revoke-token", token_id)[0] == 0
    assert store.find_token(secret).revoked_at is not None


@pytest.mark.parametrize("argv, words", [
    (["admin", "issue-token", "nobody"], "no domain 'nobody'"),
    (["admin", "tokens", "nobody"], "no domain 'nobody'"),
    (["admin", "revoke-token", "tok_000000000000"], "no active token"),
    (["admin", "create-domain", "../etc"], "use letters, digits"),
])
def test_admin_bad_input(capsys, db, argv, words):
    code, _, err = run(capsys, *argv)
    assert code == 1 and words in err and len(err.strip().splitlines()) == 1
