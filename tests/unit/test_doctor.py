"""``tilemore doctor`` on real folders and a real SQLite file (no Ray started: --ray is not
given in unit tests)."""

from __future__ import annotations

import json
import sqlite3

import pytest

from tilemore.cli import main


@pytest.fixture
def data_dir(tmp_path, monkeypatch):
    for name in ("TILEMORE_DATABASE_URL", "TILEMORE_DATABASE", "TILEMORE_BLOB_DIR",
                 "TILEMORE_BLOB_STORE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TILEMORE_DATA_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("COLUMNS", "200")
    return tmp_path / "state"


def doctor(capsys, *argv: str) -> tuple[int, dict]:
    code = main(["doctor", "--json", *argv])
    out = capsys.readouterr().out
    body = json.loads(out)
    return code, {c["name"]: c for c in body["checks"]} | {"ok": body["ok"]}


def test_a_fresh_folder_warns_and_creates_nothing(capsys, data_dir):
    code, checks = doctor(capsys)
    assert code == 0 and checks["ok"] is True
    assert checks["database"]["status"] == "warn"
    assert "tilemore serve" in checks["database"]["advice"]
    assert checks["blob store"]["status"] in ("ok", "warn")
    assert "writable" in checks["blob store"]["detail"]
    assert checks["ray"]["status"] == "ok" and "not started" in checks["ray"]["detail"]
    assert checks["packages"]["status"] == "ok" and "pydantic" in checks["packages"]["detail"]
    assert checks["gpu"]["status"] in ("ok", "warn")
    for c in ("ray", "database", "blob store", "gpu", "packages"):
        assert set(checks[c]) == {"name", "status", "detail", "advice"}
    assert not data_dir.exists()  # the doctor looks; it does not make a database


def test_a_database_the_service_made_is_ok(capsys, data_dir):
    assert main(["admin", "create-domain", "acme"]) == 0
    capsys.readouterr()
    code, checks = doctor(capsys)
    assert code == 0 and checks["database"]["status"] == "ok"
    assert "schema present" in checks["database"]["detail"]
    assert str(data_dir / "tilemore.db") in checks["database"]["detail"]


def test_a_foreign_database_fails(capsys, data_dir):
    data_dir.mkdir()
    db = sqlite3.connect(data_dir / "tilemore.db")
    db.execute("CREATE TABLE photos (id INTEGER)")
    db.commit()
    db.close()
    code, checks = doctor(capsys)
    assert code == 1 and checks["ok"] is False
    assert checks["database"]["status"] == "fail" and "domains" in checks["database"]["detail"]
    (data_dir / "tilemore.db").write_bytes(b"not a database at all" * 100)
    code, checks = doctor(capsys)
    assert code == 1 and checks["database"]["status"] == "fail"


def test_an_unwritable_blob_store_fails(capsys, data_dir, tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("in the way")
    monkeypatch.setenv("TILEMORE_BLOB_DIR", str(blocker / "blobs"))
    code, checks = doctor(capsys)
    assert code == 1 and checks["blob store"]["status"] == "fail"
    assert "not a folder" in checks["blob store"]["detail"]


def test_the_table_has_advice_and_a_summary(capsys, data_dir):
    code = main(["doctor"])
    out = capsys.readouterr().out
    assert code == 0
    for words in ("ray", "database", "blob store", "gpu", "packages", "warnings", "advice"):
        assert words in out
