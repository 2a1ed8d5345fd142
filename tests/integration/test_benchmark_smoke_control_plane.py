"""benchmarks/control_plane.py end to end in its smoke mode, in a process of its own with
its own local Ray (the shared integration session is neither used nor disturbed): the
three sides ran on one Serve instance, every thread ended done, and the CPU of each of the
four service processes was found and measured."""

from __future__ import annotations

import pytest
from support.benchmark_smoke import positive, run_smoke

pytestmark = pytest.mark.slow


def test_control_plane_smoke(tmp_path):
    r = run_smoke("control_plane", tmp_path, timeout=300)
    n = r["threads_per_round"] * r["rounds"]
    assert r["rounds"] == 1 and n < 100  # the smoke load, not the real one
    for side in ("floor", "tilemore", "peer"):
        assert len(r["rounds_detail"][side]) == 1
    assert r["rounds_detail"]["tilemore"][0]["outcomes"] == {"done": r["threads_per_round"]}
    assert all(positive(r[k]) for k in ("floor_cycles_per_s", "tilemore_threads_per_s",
                                        "peer_images_per_s", "floor_ratio", "peer_ratio"))
    assert set(r["cpu_ms_per_thread"]) == {"ingress replica", "Serve proxy", "conductor",
                                           "billing actor"}
    assert r["cpu_ms_per_thread_total"] == pytest.approx(sum(r["cpu_ms_per_thread"].values()))
    assert r["gets_per_thread"] >= 1  # a submission answers processing: done is polled for
    assert all(positive(r["idle"][side]["median_ms"]) for side in ("tilemore", "floor", "peer"))
    # Status reads alone, and the per-thread cost with one read, per service process.
    assert positive(r["status_reads_per_s"])
    assert set(r["cpu_ms_per_status_read"]) == set(r["cpu_ms_per_thread_one_read"]) \
        == set(r["cpu_ms_per_thread"])
    assert r["cpu_ms_per_thread_one_read_total"] <= r["cpu_ms_per_thread_total"] + 1e-6
    # Where an idle thread's time went, each step from its record's times, in order.
    steps = r["idle_breakdown_ms"]
    assert set(steps) == {"ingress", "202 back", "to first task", "tasks", "between tasks",
                          "to done", "done seen"}
    assert all(v >= -1.0 for v in steps.values())
    assert sum(steps[k] for k in ("ingress", "to first task", "tasks", "between tasks",
                                  "to done", "done seen")) \
        <= 1.5 * r["idle"]["tilemore"]["all_ms"][-1] + 10  # medians of parts of a whole
