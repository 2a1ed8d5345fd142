"""Which finished tasks a resumed thread runs again (:func:`tilemore.service.resume._to_run`):
with the default checkpoint policy, cheap tasks keep no checkpoint, and run again only when
a task still to run reads their output."""

from __future__ import annotations

import pytest
from support.pipelines import TWO_SPINNERS, pipeline_from

from tilemore.operator import Selection
from tilemore.pipeline import build_graph
from tilemore.service.resume import _to_run

ALL = {"decode", "master/left", "master/right", "master/select", "encoder"}
RIGHT = Selection(pick=1, scores=[1.0, 2.0])  # picks master/right


@pytest.fixture(scope="module")
def graph(tmp_path_factory):
    p = pipeline_from(tmp_path_factory.mktemp("p"), TWO_SPINNERS)
    g = build_graph(p, {"master": {"algorithm": "race", "seconds": 0}})
    assert {t.id for t in g.tasks} == ALL
    return g


def test_the_pick_runs_again_with_what_it_reads_and_nothing_else(graph):
    todo = _to_run(graph, finished=ALL - {"encoder"}, stored={"master/select"}, skipped=set(),
                   verdicts={"master/select": RIGHT})
    assert todo == {"encoder", "master/right", "decode"}  # not the other branch, not QC


def test_a_stored_pick_is_read_back_and_nothing_before_it_runs(graph):
    todo = _to_run(graph, finished=ALL - {"encoder"}, stored={"master/select", "master/right"},
                   skipped=set(), verdicts={"master/select": RIGHT})
    assert todo == {"encoder"}


def test_a_selector_without_its_verdict_runs_again_on_all_its_candidates(graph):
    todo = _to_run(graph, finished=ALL, stored={"master/left", "encoder"}, skipped=set(),
                   verdicts={})
    assert todo == {"master/select", "master/right", "decode"}  # left's checkpoint is read


def test_a_finished_output_without_a_checkpoint_runs_again(graph):
    finished = ALL
    assert _to_run(graph, finished, ALL, set(), {"master/select": RIGHT}) == set()
    todo = _to_run(graph, finished, ALL - {"encoder"}, set(), {"master/select": RIGHT})
    assert todo == {"encoder"}  # it reads the stored pick


def test_a_skipped_branch_never_runs(graph):
    todo = _to_run(graph, finished={"decode", "master/right"}, stored=set(),
                   skipped={"master/left"}, verdicts={})
    assert todo == {"master/select", "encoder", "master/right", "decode"}
    assert "master/left" not in todo


def test_nothing_finished_runs_everything(graph):
    assert _to_run(graph, set(), set(), set(), {}) == ALL
