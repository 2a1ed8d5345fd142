"""Failed tasks as Elastic Common Schema lines, and the conductor's recorder around them."""

from __future__ import annotations

import json
import logging
from types import SimpleNamespace

from tilemore.errors import CorruptImage
from tilemore.service.ecs import LOGGER, EcsErrorLog, ecs_document
from tilemore.service.failures import FailureRecorder, error_type
from tilemore.store import ErrorRecord

RECORD = ErrorRecord("acme", "acme/studio", "t1", "boom", "explode", "ZeroDivisionError",
                     "the operator broke", "Traceback…\nZeroDivisionError: the operator broke",
                     2, False, 1_700_000_000.25)


def test_an_ecs_document_carries_the_error_and_where_it_happened():
    doc = ecs_document(RECORD)
    assert list(doc)[:3] == ["@timestamp", "log.level", "message"]  # the spec's order
    assert doc["@timestamp"] == "2023-11-14T22:13:20.250Z"
    assert doc["log.level"] == "warning" and doc["ecs.version"].startswith("8.")
    assert "the operator broke" in doc["message"] and "t1" in doc["message"]
    assert doc["error"] == {"type": "ZeroDivisionError", "message": "the operator broke",
                            "stack_trace": RECORD.traceback}
    assert doc["service"] == {"name": "tilemore"}
    assert doc["event"]["dataset"] == "tilemore.errors"
    assert doc["event"]["action"] == "task-retried"
    assert doc["labels"] == {"domain": "acme", "account": "acme/studio", "thread_id": "t1",
                             "task_id": "boom", "operator": "explode", "attempt": "2",
                             "final": "false"}
    assert "trace" not in doc
    assert ecs_document(RECORD, trace_id="4bf92f3577b34da6")["trace"] == {
        "id": "4bf92f3577b34da6"}
    final = ecs_document(ErrorRecord(**{**RECORD.__dict__, "final": True}))
    assert final["log.level"] == "error" and final["event"]["action"] == "task-failed"


def test_lines_go_to_the_logger_and_are_appended_to_the_file(tmp_path, caplog):
    path = tmp_path / "logs" / "errors.ndjson"
    path.parent.mkdir()
    path.write_text('{"earlier": "line"}\n')
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        EcsErrorLog(path).emit(RECORD)
        EcsErrorLog(path).emit(RECORD)
    lines = path.read_text().splitlines()
    assert len(lines) == 3 and json.loads(lines[0]) == {"earlier": "line"}
    for line in lines[1:]:
        doc = json.loads(line)
        assert doc["error"]["type"] == "ZeroDivisionError"
        assert doc["error"]["stack_trace"].endswith("the operator broke")
    logged = [r for r in caplog.records if r.name == LOGGER]
    assert len(logged) == 2 and json.loads(logged[0].getMessage()) == json.loads(lines[1])


def test_without_a_path_only_the_logger(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        EcsErrorLog().emit(RECORD)
    assert json.loads(caplog.records[-1].getMessage())["labels"]["task_id"] == "boom"
    assert list(tmp_path.iterdir()) == []


def test_an_unwritable_file_or_index_never_fails_the_thread(tmp_path, caplog):
    class Down:
        def record_error(self, error):
            raise OSError("database down")

    blocked = tmp_path / "a-file"
    blocked.write_text("")
    recorder = FailureRecorder(Down(), EcsErrorLog(blocked / "errors.ndjson"))
    thread = SimpleNamespace(domain="acme", account="acme", id="t1")
    failed = SimpleNamespace(task_id="boom", operator="explode",
                             error=ZeroDivisionError("the operator broke"), traceback="tb",
                             attempts=3)
    recorder.failed(thread, failed)  # no exception
    assert "not indexed" in caplog.text and "could not append" in caplog.text


def test_recorder_fills_every_field(tmp_path):
    class Kept:
        def __init__(self):
            self.errors = []

        def record_error(self, error):
            self.errors.append(error)

    kept = Kept()
    recorder = FailureRecorder(kept, EcsErrorLog(tmp_path / "e.ndjson"))
    thread = SimpleNamespace(domain="acme", account="acme/studio", id="t1")
    task = SimpleNamespace(id="boom", operator=SimpleNamespace(name="explode"))
    failure = SimpleNamespace(error=ZeroDivisionError("the operator broke"), traceback="tb")
    recorder.retried(thread, SimpleNamespace(task=task, failures=1, failure=failure, delay=0.2))
    recorder.failed(thread, SimpleNamespace(task_id="boom", operator="explode",
                                            error=CorruptImage("bad bytes"), traceback="tb2",
                                            attempts=2))
    first, last = kept.errors
    assert (first.domain, first.account, first.thread_id, first.task_id, first.operator) == (
        "acme", "acme/studio", "t1", "boom", "explode")
    assert (first.error_type, first.message, first.attempt, first.final) == (
        "ZeroDivisionError", "the operator broke", 1, False)
    assert (last.error_type, last.traceback, last.attempt, last.final) == (
        "tilemore.errors.CorruptImage", "tb2", 2, True)
    assert last.at >= first.at > 0
    assert len((tmp_path / "e.ndjson").read_text().splitlines()) == 2


def test_error_type_names():
    assert error_type(KeyError("x")) == "KeyError"
    assert error_type(CorruptImage("x")) == "tilemore.errors.CorruptImage"
