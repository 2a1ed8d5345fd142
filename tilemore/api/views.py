"""How records look on the wire: a thread, a searched error."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from tilemore.store import ErrorHit, ThreadRecord

EXTENSIONS = {"jpeg": "jpg", "png": "png", "webp": "webp"}


def iso(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC).isoformat(
        timespec="milliseconds").replace("+00:00", "Z")


def result_filename(rec: ThreadRecord) -> str:
    return f"result.{EXTENSIONS.get(rec.output_format, rec.output_format)}"


def thread_body(rec: ThreadRecord, base_url: str) -> dict[str, Any]:
    done = sum(t.status == "done" for t in rec.tasks)
    skipped = sum(t.status == "skipped" for t in rec.tasks)
    body: dict[str, Any] = {
        "status": rec.status,
        "thread_id": rec.id,
        "pipeline": rec.pipeline,
        "meta_parts": rec.meta_parts,
        "meta": rec.envelope.get("meta", {}),
        "created_at": iso(rec.created_at),
        "updated_at": iso(rec.updated_at),
        "finished_at": iso(rec.finished_at),
        "progress": {"done": done, "total": len(rec.tasks) - skipped},
        "tasks": [
            {"id": t.task_id, "operator": t.operator, "status": t.status,
             "started_at": iso(t.started_at), "finished_at": iso(t.finished_at),
             "seconds": None if t.seconds is None else round(t.seconds, 4),
             "megapixels": t.megapixels, **({"error": t.error} if t.error else {}),
             **({"reason": t.note} if t.note else {})}
            for t in rec.tasks
        ],
        "qc": rec.qc,
        "trace_id": rec.trace_id,  # the OpenTelemetry trace of its runs; null: not traced
    }
    if rec.cancel_requested and rec.status == "processing":
        body["cancel_requested"] = True
    if rec.result is not None:
        r = rec.result
        body["result"] = {
            "url": f"{base_url.rstrip('/')}/results/{rec.id}/{result_filename(rec)}",
            "content_type": r.content_type, "bytes": r.bytes, "sha256": r.sha256,
            "width": r.width, "height": r.height,
        }
    if rec.error_code is not None:
        body["error"] = {"code": rec.error_code, "message": rec.error_message}
    return body


def search_body(query: str | None, hits: list[ErrorHit]) -> dict[str, Any]:
    """The answer of ``GET /errors`` (and ``tilemore errors search --json``)."""
    return {"query": query, "count": len(hits), "errors": [_error(h) for h in hits]}


def _error(hit: ErrorHit) -> dict[str, Any]:
    e = hit.record
    return {"id": hit.id, "time": iso(e.at), "domain": e.domain, "account": e.account,
            "thread_id": e.thread_id, "task_id": e.task_id, "operator": e.operator,
            "attempt": e.attempt, "final": e.final, "type": e.error_type,
            "message": e.message, "snippet": hit.snippet, "score": round(hit.score, 6),
            "traceback": e.traceback}
