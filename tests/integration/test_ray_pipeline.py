"""Pipelines on real Ray: operator actors, parallel branches, object refs, customer code."""

from __future__ import annotations

import textwrap
import time

import numpy as np
import pytest
import ray
from support.images import encode, noisy, photo
from support.pipelines import TWO_SPINNERS, one_stage, pipeline_from

from tilemore.engine import LocalBackend
from tilemore.engine.host import TaskStats
from tilemore.engine.ray_backend import RayBackend
from tilemore.image import Encoded, Image
from tilemore.operator import Selection
from tilemore.pipeline import build_graph, run_graph
from tilemore.pipeline.run import TaskFailed
from tilemore.registry import OperatorRegistry

NOISY_JPEG = encode(noisy(photo(320, 240), 15), "JPEG", quality=92)
ADJUSTMENTS = {"master": {"strength": 0.8}, "shifter": {"resize": {"width": 200}},
               "encoder": {"quality": 85}}


def test_ray_gives_the_same_bytes_as_in_process(denoised, ray_backend):
    graph = build_graph(denoised, ADJUSTMENTS, "jpeg")
    on_ray = run_graph(graph, NOISY_JPEG, ray_backend)
    local = LocalBackend()
    try:
        in_process = run_graph(graph, NOISY_JPEG, local)
    finally:
        local.close()
    assert on_ray.output.data == in_process.output.data
    assert on_ray.qc[0].pick == in_process.qc[0].pick
    assert on_ray.qc[0].scores == pytest.approx(in_process.qc[0].scores)
    workers = {s.pid for s in on_ray.stats.values()}
    assert len(workers) == len(on_ray.stats)  # every operator that ran is its own actor


def test_two_branches_of_t_seconds_take_about_t(tmp_path, ray_backend):
    t = 1.5
    graph = build_graph(pipeline_from(tmp_path, TWO_SPINNERS), {"master": {"seconds": t}})
    ray_backend.prepare([task.operator for task in graph.tasks])
    started = time.perf_counter()
    result = run_graph(graph, encode(photo(64, 48)), ray_backend)
    wall = time.perf_counter() - started
    a, b = result.stats["master/a"], result.stats["master/b"]
    assert a.pid != b.pid  # two replicas of one operator, one per branch
    assert max(a.started, b.started) < min(a.finished, b.finished)  # they overlapped
    assert t <= wall < 1.5 * t, f"two {t}s branches took {wall:.2f}s"


def test_replicas_are_long_lived(tmp_path, ray_backend):
    p = pipeline_from(tmp_path, """
        stages:
          - {name: decode, operator: decode}
          - {name: count, operator: counter}
          - {name: encoder, operator: encoder}
    """)
    graph = build_graph(p, {})
    pids = {run_graph(graph, encode(photo(32, 32)), ray_backend).stats["count"].pid
            for _ in range(3)}
    assert len(pids) == 1  # the same actor served every run
    host = ray_backend.replicas(graph.task("count").operator)[0]
    assert ray.get(host.ready.remote()) == "counter"
    op_state = ray.get(host.run.remote("probe", graph.task("count").params,
                                       Image(photo(8, 8))))[0].extra
    assert op_state["setups"] == 1 and op_state["calls"] == 4


def test_only_small_values_come_back_to_the_conductor(denoised):
    """Images stay in the object store: the conductor fetches stats (QC's verdict rides on
    the selector's), QC's plan and the encoded result, never a decoded image, and never the
    selector's output: that is the picked image, handed straight to the next stage."""
    fetched: list[object] = []

    class Spy(RayBackend):
        def get(self, handle):
            value = super().get(handle)
            fetched.append(value)
            return value

    backend = Spy()
    try:
        run_graph(build_graph(denoised, ADJUSTMENTS, "jpeg"), NOISY_JPEG, backend)
    finally:
        backend.close()
    assert Image not in fetched
    assert set(map(type, fetched)) == {TaskStats, dict, Encoded}  # dict: the branch plan
    verdicts = [v.selection for v in fetched if isinstance(v, TaskStats) and v.selection]
    assert len(verdicts) == 1 and isinstance(verdicts[0], Selection)


def test_declared_resources_are_held(ray_backend):
    from tilemore import Operator, Resources

    class Half(Operator):
        name = "half-cpu"
        resources = Resources(num_cpus=0.5)

    total = ray.cluster_resources()["CPU"]
    assert settle(lambda: ray.available_resources().get("CPU") == total)  # earlier actors gone
    ray_backend.prepare([Half, Half])  # used twice → two replicas
    assert ray.available_resources()["CPU"] == pytest.approx(total - 1.0)


def settle(condition, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def test_customer_operator_file_runs_on_workers(tmp_path, ray_backend):
    (tmp_path / "posterize.py").write_text(textwrap.dedent("""
        from pydantic import Field
        from tilemore import Image, Operator, OperatorParams, Resources

        class PosterizeParams(OperatorParams):
            levels: int = Field(4, ge=2, le=256)

        class Posterize(Operator):
            name = "posterize"
            resources = Resources(num_cpus=1)
            Params = PosterizeParams

            def process(self, params, image: Image) -> Image:
                step = 256 // params.levels
                return image.with_rgb((image.rgb() // step) * step)
    """))
    (tmp_path / "poster.yaml").write_text(textwrap.dedent("""
        pipeline: poster
        operator_modules: [posterize.py]
        stages:
          - {name: decode, operator: decode}
          - {name: poster, operator: posterize}
          - {name: encoder, operator: encoder, params: {format: png}}
    """))
    from tilemore.pipeline import load_pipeline

    pipeline = load_pipeline(tmp_path / "poster.yaml", OperatorRegistry.with_builtins())
    result = run_graph(build_graph(pipeline, {"poster": {"levels": 2}}), encode(photo(40, 30)),
                       ray_backend)
    import io

    from PIL import Image as PILImage
    out = np.asarray(PILImage.open(io.BytesIO(result.output.data)))
    assert set(np.unique(out)) <= {0, 128}


def test_bad_input_fails_with_its_code_on_ray(denoised, ray_backend):
    with pytest.raises(TaskFailed) as info:
        run_graph(build_graph(denoised, {}), NOISY_JPEG[: len(NOISY_JPEG) // 3], ray_backend)
    assert info.value.task_id == "decode" and info.value.error.code == "truncated_image"


def test_tiles_fan_out_across_replicas(tmp_path):
    from support.operators import box_blur_twice

    from tilemore.settings import Settings

    p = one_stage(tmp_path, "blur", "tiled-blur")
    src = photo(256, 128)  # 8 tiles of 64 px at this memory budget
    backend = RayBackend(Settings(replicas=2, tile_memory_bytes=2**22))
    try:
        graph = build_graph(p, {"blur": {"seconds": 0.3}})
        backend.prepare([t.operator for t in graph.tasks])
        started = time.perf_counter()
        result = run_graph(graph, encode(src), backend)
        blur_seconds = result.stats["blur"].seconds
        wall = time.perf_counter() - started
    finally:
        backend.close()
    import io

    from PIL import Image as PILImage
    out = np.asarray(PILImage.open(io.BytesIO(result.output.data)))
    assert np.array_equal(out, box_blur_twice(src))  # stitched = whole-image result
    assert result.stats["blur"].tiles == 8  # reported, for the task's trace span
    assert blur_seconds < 8 * 0.3 * 0.75, f"8 tiles of 0.3 s took {blur_seconds:.2f} s"
    assert wall > 0


def test_a_gpu_operator_falls_back_to_cpu_without_gpus(ray_backend):
    from tilemore import Operator, Resources

    class WantsGPU(Operator):
        name = "wants-gpu"
        resources = Resources(num_cpus=1, num_gpus=1, gpu_optional=True)

    assert not ray.cluster_resources().get("GPU")
    ray_backend.prepare([WantsGPU])  # would wait forever for a GPU without the fallback
    assert ray.get(ray_backend.replicas(WantsGPU)[0].ready.remote()) == "wants-gpu"


def test_a_replica_killed_mid_task_is_retried_on_its_restart(tmp_path, ray_backend):
    """The actor dies under a running task (as when its node goes): the task runs again on
    the restarted replica, and the thread completes as if nothing happened."""
    p = one_stage(tmp_path, "work", "spin")
    graph = build_graph(p, {"work": {"seconds": 2.0}})
    spin = graph.task("work").operator
    ray_backend.prepare([t.operator for t in graph.tasks])
    retries, killed, armed = [], [], []

    def kill_once(tasks):
        if any(t.id == "work" for t in tasks) and not armed:
            armed.append("work")
            def later():
                time.sleep(0.8)
                killed.append(time.time())
                for actor in ray_backend.replicas(spin):
                    ray.kill(actor, no_restart=False)
            import threading
            threading.Thread(target=later, daemon=True).start()

    result = run_graph(graph, encode(photo(64, 48)), ray_backend, on_start=kill_once,
                       on_retry=retries.append)
    # Ray re-sent the call to the restarted replica; the task ran again from the start
    assert {r.task.id for r in retries} <= {"work"}
    assert result.stats["work"].started > killed[0]
    assert result.stats["work"].seconds >= 2.0
    assert result.output.content_type == "image/png"
