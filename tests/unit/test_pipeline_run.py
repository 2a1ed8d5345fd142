"""The conductor's logic, on the in-process backend (no Ray)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image as PILImage
from support.images import encode, photo
from support.pipelines import TWO_SPINNERS, one_stage, pipeline_from

from tilemore.engine import LocalBackend
from tilemore.engine.backend import ReplicaLost
from tilemore.image import Image
from tilemore.operator import Operator, Selection
from tilemore.pipeline import build_graph, run_graph
from tilemore.pipeline.run import MAX_LOSSES, TaskFailed
from tilemore.settings import Settings


@pytest.fixture(scope="module")
def backend():
    b = LocalBackend()
    yield b
    b.close()


def decode_png(data: bytes) -> np.ndarray:
    import io
    return np.asarray(PILImage.open(io.BytesIO(data)))


def test_selector_routes_the_picked_branch(tmp_path, backend):
    p = pipeline_from(tmp_path, TWO_SPINNERS)
    dark = (photo(64, 48) // 4).astype(np.uint8)  # inverting makes it brighter
    g = build_graph(p, {"master": {"algorithm": "race", "seconds": 0}})
    result = run_graph(g, encode(dark), backend)
    assert result.qc[0].pick == "right"
    assert set(result.qc[0].scores) == {"left", "right"}
    assert np.array_equal(decode_png(result.output.data), 255 - dark)


def test_progress_reports_every_task(tmp_path, backend):
    p = pipeline_from(tmp_path, TWO_SPINNERS)
    seen = []
    g = build_graph(p, {"master": {"seconds": 0}})
    run_graph(g, encode(photo(32, 32)), backend, on_progress=seen.append)
    assert [s.done for s in seen] == list(range(1, len(g.tasks) + 1))
    assert {s.task.task_id for s in seen} == {t.id for t in g.tasks}


def test_failure_names_the_task_and_keeps_the_error(tmp_path, backend):
    p = pipeline_from(tmp_path, """
        stages:
          - {name: decode, operator: decode}
          - {name: boom, operator: explode}
          - {name: encoder, operator: encoder}
    """)
    with pytest.raises(TaskFailed) as info:
        run_graph(build_graph(p, {}), encode(photo(32, 32)), backend)
    assert info.value.task_id == "boom" and isinstance(info.value.error, ZeroDivisionError)
    assert "the operator broke" in info.value.traceback and not info.value.expected


def test_bad_image_fails_in_decode_with_its_code(denoised, backend):
    with pytest.raises(TaskFailed) as info:
        run_graph(build_graph(denoised, {}), b"not an image", backend)
    assert info.value.task_id == "decode" and info.value.error.code == "corrupt_image"
    assert info.value.expected


def test_branches_overlap_on_threads(tmp_path, backend):
    """Two branches of 0.3 s each finish in about 0.3 s: they really run at once.
    (Busy loops hold the GIL, so this uses the operators' timestamps, not the wall time.)"""
    p = pipeline_from(tmp_path, TWO_SPINNERS)
    result = run_graph(build_graph(p, {"master": {"seconds": 0.3}}), encode(photo(32, 32)),
                       backend)
    a, b = result.stats["master/a"], result.stats["master/b"]
    assert a.started < b.finished and b.started < a.finished


def flaky(tmp_path, retry: str = ""):
    return one_stage(tmp_path, "shaky", "flaky", f", retry: {retry}" if retry else "")


def test_a_transient_failure_is_retried_with_backoff(tmp_path, backend):
    p = flaky(tmp_path)
    counter = tmp_path / "calls"
    retries, done = [], []
    g = build_graph(p, {"shaky": {"failures": 2, "counter": str(counter)}})
    result = run_graph(g, encode(photo(32, 32)), backend, on_retry=retries.append,
                       on_progress=done.append)
    assert counter.read_text() == "3"
    assert [(r.task.id, r.failures) for r in retries] == [("shaky", 1), ("shaky", 2)]
    assert [r.delay for r in retries] == [0.05, 0.1]  # the operator's backoff, doubling
    assert isinstance(retries[0].failure.error, ConnectionResetError)
    assert [p.task.task_id for p in done].count("shaky") == 1  # reported (charged) once
    assert result.output.content_type == "image/png"


def test_a_task_out_of_retries_fails_with_its_error(tmp_path, backend):
    p = flaky(tmp_path)
    g = build_graph(p, {"shaky": {"failures": 99, "counter": str(tmp_path / "calls")}})
    done = []
    with pytest.raises(TaskFailed) as info:
        run_graph(g, encode(photo(32, 32)), backend, on_progress=done.append)
    assert info.value.attempts == 3 and (tmp_path / "calls").read_text() == "3"
    assert isinstance(info.value.error, ConnectionResetError)
    assert "after 3 attempts" in str(info.value)
    assert "shaky" not in [p.task.task_id for p in done]


@pytest.mark.parametrize("retry, calls", [
    ("{max_retries: 0}", "1"),  # the pipeline's override
    ("{retry_on: [MemoryError]}", "1"),  # not an exception that retries
    ("{max_retries: 5, backoff_seconds: 0}", "4"),
])
def test_the_pipeline_file_overrides_the_policy(tmp_path, backend, retry, calls):
    p = flaky(tmp_path, retry)
    g = build_graph(p, {"shaky": {"failures": 3, "counter": str(tmp_path / "calls")}})
    if calls == "4":
        run_graph(g, encode(photo(32, 32)), backend)
    else:
        with pytest.raises(TaskFailed):
            run_graph(g, encode(photo(32, 32)), backend)
    assert (tmp_path / "calls").read_text() == calls


def test_bad_input_is_never_retried(denoised, backend):
    retries = []
    with pytest.raises(TaskFailed) as info:
        run_graph(build_graph(denoised, {}), b"not an image", backend, on_retry=retries.append)
    assert info.value.attempts == 1 and retries == []


def test_a_retry_reads_its_inputs_again_from_their_checkpoints(tmp_path):
    """A failure may be an input lost with its node: the retry gets it from the checkpoint."""
    from tilemore.blobs import open_blob_store
    from tilemore.engine import checkpoint
    from tilemore.settings import Settings

    settings = Settings(data_dir=tmp_path, checkpoint_tasks=True, checkpoint_policy="always")
    blobs = open_blob_store(settings.blobs)
    reloaded = []

    def reload(stats):
        reloaded.append(stats.task_id)
        return checkpoint.load(blobs.get(stats.checkpoint))

    local = LocalBackend(settings)
    try:
        p = flaky(tmp_path)
        g = build_graph(p, {"shaky": {"failures": 1, "counter": str(tmp_path / "calls")}})
        result = run_graph(g, encode(photo(32, 24)), local, reload=reload)
    finally:
        local.close()
    assert reloaded == ["decode"]
    assert decode_png(result.output.data).shape == (24, 32, 3)


class LosingBackend:
    """The in-process backend, but the first ``losses`` runs of ``task`` are lost with their
    replica, as :class:`~tilemore.engine.ray_backend.RayBackend` reports a lost node."""

    def __init__(self, inner: LocalBackend, task: str, losses: int) -> None:
        self.inner, self.task, self.losses = inner, task, losses
        self.stats_of: dict = {}

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def call(self, task_id, operator, params, inputs):
        out, st = self.inner.call(task_id, operator, params, inputs)
        self.stats_of[st] = task_id
        return out, st

    def get(self, handle):
        if self.stats_of.pop(handle, None) == self.task and self.losses > 0:
            self.losses -= 1
            raise ReplicaLost("ActorDiedError: the node died")
        return self.inner.get(handle)


def test_a_run_lost_with_its_replica_runs_again_outside_the_retry_policy(tmp_path, backend):
    p = flaky(tmp_path, "{max_retries: 0}")  # the policy allows no retry at all
    g = build_graph(p, {"shaky": {"failures": 0, "counter": str(tmp_path / "calls")}})
    retries, done = [], []
    result = run_graph(g, encode(photo(32, 32)), LosingBackend(backend, "shaky", 3),
                       on_retry=retries.append, on_progress=done.append)
    assert [(r.failures, r.delay) for r in retries] == [(1, 0.0), (2, 0.0), (3, 0.0)]
    assert all(isinstance(r.failure.error, ReplicaLost) for r in retries)
    assert (tmp_path / "calls").read_text() == "4"  # it ran 4 times, reported once
    assert [d.task.task_id for d in done].count("shaky") == 1
    assert decode_png(result.output.data).shape == (32, 32, 3)


def test_a_loss_runs_again_the_inputs_too_cheap_to_have_a_checkpoint(tmp_path):
    """The decode before a lost task kept no checkpoint (the default policy: it ran faster
    than storing its output would take), so it runs again with it; after a failure that is
    not a loss its output is still where it was, and it does not."""
    settings = Settings(data_dir=tmp_path, checkpoint_tasks=True, checkpoint_put_seconds=1)
    local = LocalBackend(settings)
    try:
        for lost, (failures, handed) in {True: (0, 2), False: (1, 1)}.items():
            p = flaky(tmp_path, "{backoff_seconds: 0}")
            counter = tmp_path / f"calls-{lost}"
            g = build_graph(p, {"shaky": {"failures": failures, "counter": str(counter)}})
            started: list[str] = []
            result = run_graph(g, encode(photo(32, 24)),
                               LosingBackend(local, "shaky", 1 if lost else 0),
                               reload=lambda st: pytest.fail(f"{st.task_id} was stored"),
                               on_start=lambda ts: started.extend(t.id for t in ts))
            assert started.count("decode") == handed, lost
            assert started.count("shaky") == started.count("encoder") == 2, started
            assert result.stats["decode"].checkpoint is None
            assert decode_png(result.output.data).shape == (24, 32, 3)
    finally:
        local.close()


def test_a_loss_after_qc_runs_again_only_the_pick_it_needs(tmp_path):
    """The encoder reads the picked candidate through the selector. Lost, it runs again
    with that candidate alone: the verdict (always stored) stands, the other branch and
    the selector do not run again."""
    settings = Settings(data_dir=tmp_path, checkpoint_tasks=True, checkpoint_put_seconds=1)
    dark = (photo(40, 30) // 4).astype(np.uint8)
    g = build_graph(pipeline_from(tmp_path, TWO_SPINNERS),
                    {"master": {"algorithm": "race", "seconds": 0}})
    local = LocalBackend(settings)
    started: list[str] = []
    try:
        result = run_graph(g, encode(dark), LosingBackend(local, "encoder", 1),
                           reload=lambda st: pytest.fail(f"{st.task_id} was stored"),
                           on_start=lambda ts: started.extend(t.id for t in ts))
    finally:
        local.close()
    assert sorted(started) == sorted(["decode", "master/left", "master/right", "master/select",
                                      "master/right", "encoder", "encoder"])
    assert result.stats["master/select"].checkpoint is not None  # the verdict
    assert result.qc[0].pick == "right"
    assert np.array_equal(decode_png(result.output.data), 255 - dark)


def test_a_task_lost_again_and_again_fails_its_thread(tmp_path, backend):
    p = flaky(tmp_path)
    g = build_graph(p, {"shaky": {"failures": 0, "counter": str(tmp_path / "calls")}})
    with pytest.raises(TaskFailed) as info:
        run_graph(g, encode(photo(32, 32)), LosingBackend(backend, "shaky", MAX_LOSSES + 1))
    assert isinstance(info.value.error, ReplicaLost)
    assert info.value.attempts == MAX_LOSSES + 1


def test_every_stage_is_handed_on_at_once_and_judged_in_order(tmp_path, backend):
    """The graph runs as a DAG: a stage is handed to the backend with its inputs' handles
    before they finish (no round trip between stages), and progress still comes in the
    graph's order, each task's inputs finished before it was."""
    p = flaky(tmp_path)  # decode → shaky → encoder
    g = build_graph(p, {"shaky": {"failures": 0, "counter": str(tmp_path / "calls")}})
    events = []
    run_graph(g, encode(photo(32, 32)), backend,
              on_start=lambda ts: events.extend(("start", t.id) for t in ts),
              on_progress=lambda pr: events.append(("done", pr.task.task_id, pr)))
    assert [e[:2] for e in events] == [
        ("start", "decode"), ("start", "shaky"), ("start", "encoder"),
        ("done", "decode"), ("done", "shaky"), ("done", "encoder")]
    decode, shaky, encoder = (e[2] for e in events[3:])
    assert decode.inputs_ready is None  # it reads the submitted file
    assert shaky.inputs_ready == decode.task.finished
    assert encoder.task.started >= shaky.task.finished  # the backend waited for its input


def test_a_failed_stage_takes_back_what_was_handed_on_past_it(tmp_path, backend):
    """The encoder was handed shaky's failed output: it is taken back, handed again after
    the retry, and reported once, after shaky."""
    p = flaky(tmp_path)
    g = build_graph(p, {"shaky": {"failures": 2, "counter": str(tmp_path / "calls")}})
    started, done = [], []
    result = run_graph(g, encode(photo(32, 24)), backend,
                       on_start=lambda ts: started.extend(t.id for t in ts),
                       on_progress=lambda pr: done.append(pr.task.task_id))
    assert started == ["decode", "shaky", "encoder"] + ["shaky", "encoder"] * 2
    assert done == ["decode", "shaky", "encoder"]
    assert decode_png(result.output.data).shape == (24, 32, 3)


def test_a_stage_failing_for_good_is_named_not_the_one_after_it(tmp_path, backend):
    p = flaky(tmp_path, "{max_retries: 0}")
    g = build_graph(p, {"shaky": {"failures": 1, "counter": str(tmp_path / "calls")}})
    with pytest.raises(TaskFailed) as info:
        run_graph(g, encode(photo(32, 32)), backend)
    assert info.value.task_id == "shaky" and isinstance(info.value.error, ConnectionResetError)


class CountingGets:
    """The in-process backend, noting every handle fetched back to the conductor."""

    def __init__(self, inner: LocalBackend) -> None:
        self.inner, self.fetched = inner, []

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def get(self, handle):
        self.fetched.append(handle)
        return self.inner.get(handle)


def test_qc_hands_on_the_picked_image_inside_the_graph(tmp_path, backend):
    """The whole graph, selector and the stage after it included, is handed over in one
    step: the next stage receives the selector's output, which is the picked image, and the
    verdict comes back with the selector's stats, never as an output fetched before the
    next stage may start."""
    p = pipeline_from(tmp_path, TWO_SPINNERS)
    dark = (photo(40, 30) // 4).astype(np.uint8)
    g = build_graph(p, {"master": {"algorithm": "race", "seconds": 0}})
    steps: list[list[str]] = []
    counting = CountingGets(backend)
    result = run_graph(g, encode(dark), counting, on_start=lambda ts: steps.append(
        [t.id for t in ts]))
    assert steps == [[t.id for t in g.tasks]]
    picked = backend.get(result.handles["master/select"])
    assert np.array_equal(picked.pixels, backend.get(result.handles["master/right"]).pixels)
    assert result.handles["master/select"] not in counting.fetched
    assert result.qc[0].pick == "right"
    assert np.array_equal(decode_png(result.output.data), 255 - dark)


def test_a_resumed_run_reads_the_pick_from_its_candidates_checkpoint(tmp_path):
    """A selector that finished in an earlier attempt checkpointed its verdict only; the
    stage after it gets the picked candidate's checkpoint, and nothing before runs again."""
    from tilemore.blobs import open_blob_store
    from tilemore.engine import checkpoint
    from tilemore.pipeline.run import Completed

    settings = Settings(data_dir=tmp_path, checkpoint_tasks=True, checkpoint_policy="always")
    blobs = open_blob_store(settings.blobs)
    p = pipeline_from(tmp_path, TWO_SPINNERS)
    dark = (photo(40, 30) // 4).astype(np.uint8)
    g = build_graph(p, {"master": {"algorithm": "race", "seconds": 0}})
    local = LocalBackend(settings)
    try:
        first = run_graph(g, encode(dark), local)
        verdict = checkpoint.load(blobs.get(first.stats["master/select"].checkpoint))
        assert isinstance(verdict, Selection) and verdict.pick == 1
        earlier = {tid: Completed(st, lambda st=st: checkpoint.load(blobs.get(st.checkpoint)))
                   for tid, st in first.stats.items() if tid != "encoder"}
        started: list[str] = []
        again = run_graph(g, encode(dark), local, completed=earlier,
                          on_start=lambda ts: started.extend(t.id for t in ts))
    finally:
        local.close()
    assert started == ["encoder"]
    assert again.qc[0].pick == "right"
    assert np.array_equal(decode_png(again.output.data), 255 - dark)


def test_a_selector_whose_verdict_names_no_candidate_fails_its_task(tmp_path, backend):
    from tilemore.engine.host import OperatorHost

    class PicksNothing(Operator):
        name = "picks-nothing"
        role = "selector"

        def process(self, params, original, *candidates):
            return Selection(pick=len(candidates), scores=[1.0] * len(candidates))

    host = OperatorHost(PicksNothing)
    image = Image(photo(8, 8))
    output, stats = host.run("select", PicksNothing.Params(), image, image, image)
    assert output is None and isinstance(stats.failure.error, TypeError)
    assert "one score per candidate" in str(stats.failure.error)
