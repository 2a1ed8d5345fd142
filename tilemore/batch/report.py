"""The batch's report: counts, credits, and every file that was not processed and why.
Written to the destination as ``_tilemore_batch_report.json`` (each run replaces it)."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from tilemore.batch.plan import Plan
from tilemore.batch.worker import Outcome
from tilemore.billing.money import ZERO, add, fmt


@dataclass
class BatchReport:
    source: str
    dest: str
    pipeline: str
    fingerprint: str
    output_format: str
    adjustments: dict[str, Any]
    account: str
    plan: Plan
    workers: int = 0
    started_at: float = field(default_factory=time.time)
    finished_at: float | None = None
    interrupted: bool = False
    outcomes: list[Outcome] = field(default_factory=list)

    def add(self, outcome: Outcome) -> None:
        self.outcomes.append(outcome)

    @property
    def done(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.status == "done"]

    @property
    def failed(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.status != "done"]

    @property
    def credits(self) -> Decimal:
        return add(ZERO, *(Decimal(o.credits) for o in self.outcomes))

    @property
    def seconds(self) -> float:
        return (self.finished_at or time.time()) - self.started_at

    def counts(self) -> dict[str, int]:
        return {"inputs": self.plan.inputs, "done": len(self.done),
                "already_done": len(self.plan.existing),
                "failed": len(self.failed) + len(self.plan.collisions),
                "not_run": len(self.plan.todo) - len(self.outcomes)}

    def skipped(self) -> list[dict[str, str]]:
        """Every input that has no output after this run, with the reason."""
        rows = [{"path": o.name, "code": o.code, "reason": o.reason, "task": o.task}
                for o in sorted(self.failed, key=lambda o: o.name)]
        rows += [{"path": item.name, "code": "output_name_taken",
                  "reason": f"{item.output} is the output of {other}", "task": ""}
                 for item, other in self.plan.collisions]
        return rows

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source, "dest": self.dest, "pipeline": self.pipeline,
            "fingerprint": self.fingerprint, "output_format": self.output_format,
            "adjustments": self.adjustments, "account": self.account,
            "workers": self.workers,
            "started_at": _iso(self.started_at),
            "finished_at": _iso(self.finished_at) if self.finished_at else None,
            "seconds": round(self.seconds, 3), "interrupted": self.interrupted,
            "counts": self.counts(), "credits_charged": fmt(self.credits),
            "skipped": self.skipped(),
            "done": [{"path": o.name, "output": o.output, "thread_id": o.thread_id,
                      "credits": o.credits, "seconds": round(o.seconds, 3), "qc_pick": o.qc}
                     for o in sorted(self.done, key=lambda o: o.name)],
        }

    def to_json(self) -> bytes:
        return json.dumps(self.to_dict(), indent=2, ensure_ascii=False).encode() + b"\n"


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z")
