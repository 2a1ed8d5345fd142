"""Storage: what one thread writes to the blob store and what it leaves, with today's data
lifecycle and checkpoint policy against the former checkpoint-everything policy, in one run;
and how fast the collector removes expired threads on SQLite.

For one photo through a pipeline (default: the example ``denoised``, 12 MP), run in this
process (the in-process backend, no Ray), alternating three policies:

- ``everything``: every task's output stored raw and kept for ever (before issue 15);
- ``always``: every task's output stored compressed, removed when the thread is done;
- ``costly``: the same, but only the tasks that ran longer than storing their output would
  take (``TILEMORE_CHECKPOINT_POLICY``'s default, issue 14).

Reported: bytes written during the thread by kind (input, checkpoint, result), tasks
checkpointed, bytes kept after ``done``, the checkpoints' size against raw (``always``: every
task's), and time to done (wall clock, and the CPU the process spent: on a shared machine the
wall clock mostly measures the neighbours). Targets: kept ≤ 1.2× (input + result);
checkpoints ≤ 60 % of raw; time to done within 5 % of the former policy.

Collector: ``--threads`` expired threads (each with its own input and result blob, local
files) removed by collector passes; target ≥ 5,000 threads/s.

    python benchmarks/storage.py [--size 4000x3000] [--pipeline denoised] [--rounds 2]
    python benchmarks/storage.py --smoke     # 640x480 through thumbnail, 300 threads
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from pathlib import Path

from _common import arguments, finish, machine, parse, photo_jpeg, positive

from tilemore.blobs import blob_key
from tilemore.blobs.local import LocalBlobStore
from tilemore.catalog import Catalog
from tilemore.engine import LocalBackend, checkpoint
from tilemore.lifecycle import Collector, Lifecycle
from tilemore.service.conductor import Conductor
from tilemore.settings import Settings
from tilemore.store import NewThread, open_store
from tilemore.store.lifecycle import open_lifecycle_store

ORIGINAL_DUMP = checkpoint.dump  # compressed, as stored now


def raw_dump(value: object) -> bytes:
    """The former checkpoint format: pixels uncompressed (still readable by load)."""
    import json
    import struct

    from tilemore.image import Image

    if not isinstance(value, Image):
        return ORIGINAL_DUMP(value)
    header = {"kind": "image", "shape": list(value.pixels.shape), "icc_profile": None,
              "exif": None, "source_format": value.source_format, "extra": value.extra}
    head = json.dumps(header).encode()
    return b"TMCK1" + struct.pack(">I", len(head)) + head + value.pixels.tobytes()


def folder_bytes(blobs: LocalBlobStore) -> int:
    return sum(b.bytes for b in blobs.list())


def one_thread(root: Path, pipeline: str, image: bytes, adjustments: dict,
               policy: str) -> dict:
    """One thread, run to done under ``policy``; what it wrote and left, and its time."""
    settings = Settings(data_dir=root, checkpoint_tasks=True, metrics=False,
                        checkpoint_policy="costly" if policy == "costly" else "always")
    store = open_store(settings.db)
    store.create_domain("bench")
    blobs = LocalBlobStore(settings.blob_path)
    catalog = Catalog.load(settings)
    lc_store = open_lifecycle_store(settings.db) if policy != "everything" else None
    lifecycle = Lifecycle(lc_store, blobs, settings.retention) if lc_store else None
    written: dict[str, int] = {"checkpoint": 0, "checkpoint_raw": 0, "stored": 0}

    def counted(value: object) -> bytes:
        data = (ORIGINAL_DUMP if policy != "everything" else raw_dump)(value)
        written["stored"] += 1
        written["checkpoint"] += len(data)
        written["checkpoint_raw"] += len(raw_dump(value))
        return data

    key = blob_key(image)
    if lifecycle:
        lifecycle.pin(key, "input", len(image))
    blobs.put(image, "input")
    graph_pipeline = catalog.pipeline(pipeline)
    from tilemore.pipeline.graph import build_graph

    graph = build_graph(graph_pipeline, adjustments, "jpeg")
    rec, _ = store.create_thread(NewThread(
        domain="bench", account="bench", idem_key=f"{policy}-{time.time_ns()}",
        pipeline=pipeline, fingerprint=graph_pipeline.fingerprint, meta_parts=[],
        image_sha256=key, input_key=key, output_format="jpeg",
        envelope={"adjustments": adjustments}, tasks=[(t.id, t.operator.name)
                                                      for t in graph.tasks]))
    if lifecycle:
        lifecycle.refer(rec.id, "bench", "input", key, len(image))
    backend = LocalBackend(settings)
    conductor = Conductor(store, blobs, catalog, backend, lifecycle=lifecycle)
    checkpoint.dump = counted  # the replicas run in this process
    try:
        started, cpu = time.perf_counter(), time.process_time()
        status = conductor.run_thread(rec.id)
        seconds = time.perf_counter() - started
        # every thread of this process: the replicas run here. Unlike the wall clock, barely
        # moved by what else the machine runs
        cpu = time.process_time() - cpu
    finally:
        checkpoint.dump = ORIGINAL_DUMP
        conductor.close()
        backend.close()
    done = store.get_thread(rec.id)
    result = done.result.bytes if done.result else 0
    kept = folder_bytes(blobs)
    store.close()
    if lc_store:
        lc_store.close()
    return {"status": status, "seconds": seconds, "cpu_seconds": cpu, "input": len(image),
            "result": result,
            "checkpoint": written["checkpoint"], "checkpoint_raw": written["checkpoint_raw"],
            "written": len(image) + written["checkpoint"] + result, "kept": kept,
            "tasks": sum(t.status == "done" for t in done.tasks),  # not the skipped branches
            "checkpointed": written["stored"]}


def collector_rate(root: Path, threads: int) -> dict:
    """Expired threads, each with its own input and result, removed by collector passes."""
    settings = Settings(data_dir=root, metrics=False, gc_batch=1000, blob_grace_seconds=0)
    store = open_store(settings.db)
    store.create_domain("bench")
    lc = open_lifecycle_store(settings.db)
    blobs = LocalBlobStore(settings.blob_path)
    old = time.time() - 10**8  # ended long ago: everything expired
    rows, refs, files, dates = [], [], [], []
    for i in range(threads):
        inp, res = f"input {i}".encode() * 50, f"result {i}".encode() * 20
        ik, rk = blob_key(inp), blob_key(res)
        for k, data in ((ik, inp), (rk, res)):  # set up as files, without the puts' fsyncs
            path = settings.blob_path / k[:2] / k
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            os.utime(path, (old, old))
        tid = f"t{i:08d}"
        rows.append((tid, f"k{i}", ik))
        refs += [(tid, "input", ik, old), (tid, "result", rk, old)]
        files += [(ik, "input", len(inp), old), (rk, "result", len(res), old)]
        dates.append((tid, old))
    with store._tx() as db:  # noqa: SLF001 - thousands of ended threads, in one go
        db.executemany(
            "INSERT INTO threads (id, domain, account, idem_key, status, pipeline, fingerprint,"
            " meta_parts, image_sha256, input_key, output_format, envelope, created_at,"
            " updated_at, finished_at) VALUES (?, 'bench', 'bench', ?, 'done', 'p', 'f', '[]',"
            " ?, ?, 'jpeg', '{}', 0, 0, 0)", [(t, k, i, i) for t, k, i in rows])
    with lc._tx() as db:  # noqa: SLF001
        db.executemany("INSERT INTO blobs VALUES (?, ?, ?, ?)", files)
        db.executemany("INSERT INTO blob_refs VALUES (?, ?, ?, 'bench', ?)", refs)
        db.executemany("INSERT INTO thread_expiry VALUES (?, 'bench', 'done', ?, ?, ?, NULL, ?)",
                       [(t, o, o, o, o) for t, o in dates])
    unlinking = [0.0]
    delete = blobs.delete

    def timed_delete(keys, **kw):  # the files' share of the time
        t = time.perf_counter()
        try:
            return delete(keys, **kw)
        finally:
            unlinking[0] += time.perf_counter() - t

    blobs.delete = timed_delete  # type: ignore[method-assign]
    collector = Collector(Lifecycle(lc, blobs, settings.retention))
    started = time.perf_counter()
    removed = blobs_removed = 0
    while True:
        report = collector.run_pass(errors=False)
        removed += report.records
        blobs_removed += sum(c for c, _ in report.blobs.values())
        if not report.records and not report.blobs:
            break
    seconds = time.perf_counter() - started
    left = sum(1 for _ in blobs.list())
    store.close()
    lc.close()
    db_seconds = max(seconds - unlinking[0], 1e-9)
    return {"threads": threads, "removed": removed, "blobs_removed": blobs_removed,
            "blobs_left": left, "seconds": seconds, "threads_per_s": removed / seconds,
            "unlink_seconds": unlinking[0], "database_seconds": db_seconds,
            "database_threads_per_s": removed / db_seconds}


def main() -> None:
    ap = arguments(__doc__)
    ap.add_argument("--size", default="4000x3000", help="the input photo, WIDTHxHEIGHT")
    ap.add_argument("--pipeline", default="denoised")
    ap.add_argument("--rounds", type=int, default=2, help="rotated runs of each policy")
    ap.add_argument("--threads", type=int, default=20_000, help="expired threads collected")
    args = parse(ap, size="640x480", pipeline="thumbnail", rounds=1, threads=300)
    width, height = (int(v) for v in args.size.split("x"))
    image = photo_jpeg(width, height)
    adjustments = ({"shifter": {"resize": {"width": 1600, "mode": "fit"}}}
                   if args.pipeline == "thumbnail" else {})
    policies = ("everything", "always", "costly")
    runs: dict[str, list[dict]] = {p: [] for p in policies}
    with tempfile.TemporaryDirectory(prefix="tilemore-storage-") as tmp:
        for r in range(args.rounds):
            for policy in policies[r % 3:] + policies[:r % 3]:  # each goes first in turn
                run = one_thread(Path(tmp) / f"{policy}-{r}", args.pipeline, image,
                                 adjustments, policy)
                runs[policy].append(run)
                print(f"round {r + 1} {policy:>10}: {run['status']} in {run['seconds']:.2f} s"
                      f" ({run['cpu_seconds']:.1f} s CPU);"
                      f" wrote {run['written'] / 1e6:.2f} MB (checkpoints"
                      f" {run['checkpoint'] / 1e6:.2f} MB, {run['checkpointed']} of"
                      f" {run['tasks']} tasks), kept {run['kept'] / 1e6:.2f} MB")
        gc = collector_rate(Path(tmp) / "gc", args.threads)
    new, every, old = runs["costly"][-1], runs["always"][-1], runs["everything"][-1]
    wall = {p: statistics.median(r["seconds"] for r in runs[p]) for p in policies}
    cpu = {p: statistics.median(r["cpu_seconds"] for r in runs[p]) for p in policies}
    t_new, t_old, cpu_new, cpu_old = wall["costly"], wall["everything"], cpu["costly"], \
        cpu["everything"]
    kept_ratio = new["kept"] / (new["input"] + new["result"])
    ck_ratio = every["checkpoint"] / every["checkpoint_raw"] if every["checkpoint_raw"] else 0.0
    time_ratio = t_new / t_old
    result = {"machine": machine(), "size": args.size, "pipeline": args.pipeline,
              "rounds": args.rounds, **runs,
              "kept_over_input_result": kept_ratio, "kept_target": 1.2,
              "checkpoints_over_raw": ck_ratio, "checkpoints_target": 0.6,
              "time_to_done_s": wall, "time_ratio": time_ratio, "time_target": 1.05,
              "cpu_to_done_s": cpu, "cpu_ratio": cpu_new / cpu_old,
              "cpu_ratio_costly_over_always": cpu_new / cpu["always"], "collector": gc,
              "collector_target_threads_per_s": 5000}
    print(f"{width * height / 1e6:g} MP through {args.pipeline} on {machine()}")
    print(f"  kept after done: {new['kept'] / 1e6:.2f} MB = {kept_ratio:.2f}× (input + result)"
          f" (target ≤ 1.2; before: {old['kept'] / 1e6:.2f} MB)")
    print(f"  checkpoints: {ck_ratio:.2f} of raw (target ≤ 0.6); costly stored"
          f" {new['checkpointed']} of {new['tasks']} tasks, {new['checkpoint'] / 1e6:.2f} MB"
          f" against {every['checkpoint'] / 1e6:.2f} MB for all")
    print(f"  time to done: {t_new:.2f} s vs {t_old:.2f} s = {time_ratio:.3f} (target ≤ 1.05);"
          f" CPU to done {cpu_new:.1f} s vs {cpu_old:.1f} s = {cpu_new / cpu_old:.3f};"
          f" against always {cpu['always']:.1f} s = {cpu_new / cpu['always']:.3f}")
    print(f"  collector: {gc['removed']:,} expired threads in {gc['seconds']:.2f} s ="
          f" {gc['threads_per_s']:,.0f}/s (target ≥ 5,000), {gc['unlink_seconds']:.2f} s of it"
          f" deleting {gc['blobs_removed']:,} files; the database's share alone"
          f" {gc['database_threads_per_s']:,.0f}/s")
    finish("storage", args, result, {
        "every thread ended done": all(r["status"] == "done" for v in runs.values() for r in v),
        "the lifecycle kept less than was written": every["kept"] < every["written"],
        "the former policy kept more (its checkpoints)": old["kept"] > new["kept"],
        "kept is input + result at most": new["kept"] <= new["input"] + new["result"],
        "checkpoints compressed": 0 < ck_ratio < 1,
        "the collector removed every expired thread and blob":
            gc["removed"] == gc["threads"] and gc["blobs_left"] == 0,
        "costly stored no more than always": new["checkpoint"] <= every["checkpoint"],
        "times are positive": positive(*wall.values(), *cpu.values(), gc["seconds"]),
    })


if __name__ == "__main__":
    main()
