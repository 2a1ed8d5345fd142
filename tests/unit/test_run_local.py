"""The conductor's logic, on the in-process backend (no Ray)."""

from __future__ import annotations

import numpy as np
import pytest
from images import encode, photo
from PIL import Image as PILImage
from pipelines import TWO_SPINNERS, pipeline_from

from tilemore.engine import LocalBackend
from tilemore.pipeline import build_graph, run_graph
from tilemore.pipeline.run import TaskFailed


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
