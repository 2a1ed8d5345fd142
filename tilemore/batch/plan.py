"""What a batch will do, decided before anything runs: which inputs, under which output
names, which are already done (resume), and the key that makes each image's charges once-only.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from tilemore.api.envelope import canonical_json
from tilemore.batch.locations import Location, LocationError

REPORT_NAME = "_tilemore_batch_report.json"
EXTENSIONS = {"jpeg": ".jpg", "png": ".png", "webp": ".webp"}
CONTENT_TYPES = {"jpeg": "image/jpeg", "png": "image/png", "webp": "image/webp"}


@dataclass(frozen=True)
class Item:
    name: str  # relative, in the source
    output: str  # relative, in the destination


@dataclass
class Plan:
    todo: list[Item] = field(default_factory=list)
    existing: list[Item] = field(default_factory=list)  # output already there: skipped
    collisions: list[tuple[Item, str]] = field(default_factory=list)  # (item, taken by)

    @property
    def inputs(self) -> int:
        return len(self.todo) + len(self.existing) + len(self.collisions)


def output_name(name: str, output_format: str) -> str:
    """The same relative name with the output format's extension: ``a/b.png`` → ``a/b.jpg``."""
    folder, _, base = name.rpartition("/")
    stem = base.rsplit(".", 1)[0] if "." in base[1:] else base
    return f"{folder}/{stem}{EXTENSIONS[output_format]}" if folder else (
        f"{stem}{EXTENSIONS[output_format]}")


def make_plan(source: Location, dest: Location, output_format: str) -> Plan:
    """List the source, leaving out the destination where it lies inside the source; refuse a
    destination that is the source or holds it (outputs could overwrite inputs)."""
    if source.within(dest) is not None:
        raise LocationError(f"the destination {dest.uri()} must not be the source or hold it; "
                            "write the outputs elsewhere (a sub-folder of the source is fine)")
    skip = dest.within(source)
    names = list(source.names(skip=skip or None))
    done = set(dest.names())
    return plan_items(names, done, output_format)


def plan_items(names: Iterable[str], done: set[str], output_format: str) -> Plan:
    plan = Plan()
    taken: dict[str, str] = {}
    for name in sorted(names):
        if name == REPORT_NAME:
            continue
        item = Item(name, output_name(name, output_format))
        if item.output in taken:  # a.png and a.jpg would both write a.jpg
            plan.collisions.append((item, taken[item.output]))
            continue
        taken[item.output] = name
        (plan.existing if item.output in done else plan.todo).append(item)
    return plan


def run_key(*, account: str, adjustments: Mapping[str, Any], output_format: str,
            pipeline: str, fingerprint: str) -> str:
    """What every image of one batch shares in its idempotency key."""
    blob = canonical_json({"kind": "batch", "account": account, "adjustments": adjustments,
                           "output_format": output_format, "pipeline": pipeline,
                           "fingerprint": fingerprint})
    return hashlib.sha256(blob.encode()).hexdigest()


def image_key(run: str, data: bytes) -> str:
    """One image's key: its content and the run's key. The same file, in this batch or a
    resumed or repeated one, gets the same key, so its tasks are charged once."""
    return hashlib.sha256(f"{run}:{hashlib.sha256(data).hexdigest()}".encode()).hexdigest()


def thread_id(key: str) -> str:
    """The ledger keys charges by (thread, task): a batch image's synthetic thread."""
    return f"batch-{key[:32]}"
