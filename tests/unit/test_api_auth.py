"""Tokens: the two header forms, scopes, and tokens made before scopes existed (SQLite and
PostgreSQL)."""

from __future__ import annotations

import hashlib
import json
import time

import pytest

from tilemore.api.auth import Authenticator, InsufficientScope
from tilemore.errors import Forbidden, TilemoreError, Unauthorized
from tilemore.store import SCOPES, check_scopes


def test_a_bearer_token_names_its_domain(store):
    _, secret = store.issue_token("acme")
    auth = Authenticator(store, cache_seconds=0)
    for header in (f"Bearer {secret}", f"bearer  {secret} ", f"Token {secret} Domain acme"):
        caller = auth(header, "c")
        assert (caller.domain, caller.account) == ("acme", "acme")
        assert caller.scopes == frozenset(SCOPES)
    with pytest.raises(Forbidden) as err:
        auth(f"Token {secret} Domain rival", "c")
    assert err.value.code == "wrong_domain"


@pytest.mark.parametrize("header, code", [
    (None, "missing_credentials"),
    ("Bearer", "malformed_credentials"),
    ("Bearer a b", "malformed_credentials"),
    ("Basic dXNlcjpwYXNz", "malformed_credentials"),
    ("Bearer " + "x" * 600, "malformed_credentials"),
    ("Bearer tm_not_a_token", "invalid_token"),
])
def test_bad_headers_are_401_with_a_code(store, header, code):
    with pytest.raises(Unauthorized) as err:
        Authenticator(store, cache_seconds=0)(header, "c")
    assert err.value.code == code


def test_a_token_holds_only_its_scopes(store):
    _, secret = store.issue_token("acme", scopes=("read",))
    caller = Authenticator(store, cache_seconds=0)(f"Bearer {secret}", "c")
    assert caller.scopes == {"read"}
    caller.require("read")
    for scope in ("submit", "billing"):
        with pytest.raises(InsufficientScope) as err:
            caller.require(scope)
        assert (err.value.status, err.value.code) == (403, "insufficient_scope")
    listed = {t.id: t.scopes for t in store.list_tokens("acme")}
    assert ("read",) in listed.values()


@pytest.mark.parametrize("scopes", [["admin"], ["read", "write"], [], "read nope", [1], "x" * 999])
def test_an_unknown_scope_is_refused(store, scopes):
    with pytest.raises(TilemoreError) as err:
        store.issue_token("acme", scopes=scopes)
    assert err.value.status == 422 and err.value.code == "unknown_scope"
    assert store.list_tokens("acme") == []  # nothing issued


def test_scopes_are_canonical():
    assert check_scopes("billing read") == ("read", "billing")
    assert check_scopes(["submit", "submit"]) == ("submit",)


def test_tokens_made_before_scopes_keep_all_three(backend):
    """A database from the release before scopes: its tokens table has no scopes column.
    Opening it adds the column, and every existing token may do everything it did."""
    first = backend.store()
    first.create_domain("acme")
    first.close()
    backend.execute("ALTER TABLE tokens DROP COLUMN scopes")
    secret = "tm_old_token"
    backend.execute("INSERT INTO tokens (id, domain, account, token_hash, created_at) VALUES "
                    f"('tok_old', 'acme', 'acme', '{hashlib.sha256(secret.encode()).hexdigest()}'"
                    f", {time.time()})")
    store = backend.store()
    assert store.find_token(secret).scopes == SCOPES
    caller = Authenticator(store, cache_seconds=0)(f"Bearer {secret}", "c")
    assert caller.scopes == frozenset(SCOPES)
    _, new = store.issue_token("acme", scopes=("submit",))
    assert store.find_token(new).scopes == ("submit",)


def test_the_admin_cli_issues_and_lists_scoped_tokens(backend, monkeypatch, capsys):
    from tilemore.cli import main

    for name, value in backend.env.items():
        monkeypatch.setenv(name, value)
    backend.store().create_domain("acme")
    assert main(["admin", "issue-token", "acme", "--scope", "read", "--scope", "submit"]) == 0
    out = capsys.readouterr().out
    fields = dict(line.split(":", 1) for line in out.strip().splitlines())
    assert fields["scopes"].split() == ["submit", "read"]
    assert fields["header"].strip() == f"Authorization: Bearer {fields['token'].strip()}"
    assert main(["admin", "issue-token", "acme", "--scope", "root"]) == 1
    assert "unknown scope 'root'" in capsys.readouterr().err
    assert main(["admin", "tokens", "acme", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [t["scopes"] for t in listed] == [["submit", "read"]]
