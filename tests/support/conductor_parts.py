"""A conductor's parts on a real store and ledger (the ``backend`` fixture's database) with
the in-process backend (no Ray): the conductor tests build their conductors from these."""

from __future__ import annotations

import time
from decimal import Decimal

from support.thread_records import service_parts, stored_thread
from tilemore.billing import Entry
from tilemore.billing.service import Billing
from tilemore.engine import LocalBackend
from tilemore.service.conductor import Conductor


class Parts:
    """Domain ``acme`` with 10 in its ledger, whose clock is ``now[0]``; the thumbnail
    pipeline, checkpointing its tasks."""

    def __init__(self, backend) -> None:
        self.settings, self.store, self.blobs, self.catalog = service_parts(backend)
        self.now = [time.time()]
        self.ledger = backend.ledger(clock=lambda: self.now[0])
        self.ledger.append([Entry("acme", "order", Decimal("10"), reference="o")])
        self.fingerprint = self.catalog.pipeline("thumbnail").fingerprint
        self._conductors: list[Conductor] = []
        self._backends: list[LocalBackend] = []

    def accept(self, key: str, hold: str = "1"):
        """What the ingress does: reserve, store the image, record the thread."""
        self.ledger.reserve("acme", key, Decimal(hold))
        return stored_thread(self.store, self.blobs, self.fingerprint, key)

    def conductor(self, billing: Billing, backend=None, **kw) -> Conductor:
        if backend is None:  # made here: closed here
            backend = LocalBackend(self.settings)
            self._backends.append(backend)
        conductor = Conductor(self.store, self.blobs, self.catalog, backend, billing=billing,
                              **kw)
        self._conductors.append(conductor)
        return conductor

    def close(self) -> None:
        """Stop the conductors made here (their sweepers and pools), so no thread outlives
        the test."""
        for conductor in self._conductors:
            conductor.close()
        for backend in self._backends:
            backend.close()
