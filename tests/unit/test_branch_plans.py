"""A selector that looks at its stage's input first rules branches out: they never run, are
recorded ``skipped`` with the selector's reason, are never charged, and give their share of
the credit hold back; the selector chooses among the rest."""

from __future__ import annotations

import sqlite3
from decimal import Decimal

import numpy as np
import pytest
from support.images import encode, photo
from support.pipelines import pipeline_from

from tilemore.engine import LocalBackend
from tilemore.pipeline import build_graph, run_graph
from tilemore.store.sqlite import SQLiteStore

PLANNED = """
algorithms:
  planned:
    branches:
      left: {operator: spin}
      right: {operator: invert}
      counted: {operator: counter}
    select: {operator: plan-then-pick}
stages:
  - {name: decode, operator: decode}
  - {name: master, choices: [planned]}
  - {name: encoder, operator: encoder, params: {format: png}}
"""


@pytest.fixture(scope="module")
def engine():
    b = LocalBackend()
    yield b
    b.close()


def test_ruled_out_branches_never_run(tmp_path, engine):
    g = build_graph(pipeline_from(tmp_path, PLANNED),
                    {"master": {"only": ["right"], "seconds": 0}})
    dark = (photo(64, 48) // 4).astype(np.uint8)
    plans = []
    result = run_graph(g, encode(dark), engine, on_plan=plans.append)
    assert [p.skipped for p in plans] == [{"master/left": "not wanted",
                                           "master/counted": "not wanted"}]
    assert plans[0].size == (64, 48) and "mean" in plans[0].measures
    assert set(result.stats) == {"decode", "master/right", "master/select", "encoder"}
    qc = result.qc[0]
    assert (qc.pick, list(qc.scores)) == ("right", ["right"])
    assert qc.details["right"]["told"] == 1  # the selector was told of one candidate
    assert qc.skipped == {"left": "not wanted", "counted": "not wanted"}
    assert qc.plan["reasons"]["right"] == "wanted"


def test_a_selector_without_a_verdict_runs_every_branch(tmp_path, engine):
    g = build_graph(pipeline_from(tmp_path, PLANNED), {"master": {"seconds": 0}})
    plans = []
    result = run_graph(g, encode(photo(32, 24)), engine, on_plan=plans.append)
    assert plans[0].skipped == {}
    assert {"master/left", "master/right", "master/counted"} <= set(result.stats)
    assert result.qc[0].details["left"]["told"] == 3


def test_a_resumed_run_keeps_what_was_ruled_out(tmp_path, engine):
    g = build_graph(pipeline_from(tmp_path, PLANNED),
                    {"master": {"only": ["left", "right"], "seconds": 0}})
    plans = []
    result = run_graph(g, encode(photo(32, 24)), engine, on_plan=plans.append,
                       skipped={"master/counted": "ruled out before the crash"})
    assert plans == []  # decided already: the selector is not asked again
    assert "master/counted" not in result.stats
    assert result.qc[0].skipped == {"counted": "ruled out before the crash"}


def test_an_older_database_learns_the_skipped_status(tmp_path):
    path = tmp_path / "old.db"
    with SQLiteStore(path) as store:  # a thread with a finished and a pending task
        store.create_domain("acme")
        rec, _ = store.create_thread(new_thread([("decode", "decode"), ("master/a", "spin")]))
        store.task_done(rec.id, "decode", 1.0, 2.0, 0.5, "k")
    db = sqlite3.connect(path)  # …in the tasks table of a release before `skipped`
    db.executescript("""
        ALTER TABLE tasks RENAME TO t_new;
        CREATE TABLE tasks (thread_id TEXT NOT NULL REFERENCES threads(id),
            task_id TEXT NOT NULL, position INTEGER NOT NULL, operator TEXT NOT NULL,
            status TEXT NOT NULL
            CHECK (status IN ('pending', 'running', 'done', 'failed', 'canceled')),
            started_at REAL, finished_at REAL, megapixels REAL, checkpoint_key TEXT,
            error TEXT, PRIMARY KEY (thread_id, task_id));
        INSERT INTO tasks SELECT thread_id, task_id, position, operator, status, started_at,
            finished_at, megapixels, checkpoint_key, error FROM t_new;
        DROP TABLE t_new;
    """)
    db.close()
    with SQLiteStore(path) as store:
        store.tasks_skipped(rec.id, {"master/a": "no use"})
        tasks = store.get_thread(rec.id).tasks
    assert [(t.task_id, t.status, t.note, t.checkpoint_key) for t in tasks] == [
        ("decode", "done", None, "k"), ("master/a", "skipped", "no use", None)]


def new_thread(tasks):
    from tilemore.store import NewThread

    return NewThread(domain="acme", account="acme", idem_key="k1", pipeline="p",
                     fingerprint="f", meta_parts=[], image_sha256="0" * 64, input_key="0" * 64,
                     output_format="png", envelope={"adjustments": {}}, tasks=tasks)


def test_part_of_a_hold_goes_back(backend):
    ledger = backend.ledger()
    ledger.append([_order("acme", "10")])
    ledger.reserve("acme", "key", Decimal("4"))
    ledger.release_part("key", Decimal("1.5"))
    assert ledger.held("acme") == Decimal("2.5")
    ledger.release_part("key", Decimal("9"))  # never below zero
    assert ledger.held("acme") == 0


def _order(account: str, amount: str):
    from tilemore.billing.ledger import Entry

    return Entry(account, "order", Decimal(amount), reference=f"o-{account}")
