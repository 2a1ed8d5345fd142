"""Threads put into a store by hand (the ``backend`` fixture's database), and the crash a
resuming conductor picks up after, for the store, resume and trace tests."""

from __future__ import annotations

from support.images import encode, photo
from tilemore.blobs.local import LocalBlobStore
from tilemore.catalog import Catalog
from tilemore.store import NewThread

# A tuple, each thread given its own list: a test may change one thread's tasks.
TASKS = (("decode", "decode"), ("shifter", "shifter"), ("encoder", "encoder"))


def new_thread(key: str = "k1") -> NewThread:
    """A thread's record with no image behind it: enough for the store alone."""
    return NewThread(domain="acme", account="acme", idem_key=key, pipeline="thumbnail",
                     fingerprint="f", meta_parts=["a"], image_sha256="0" * 64, input_key="0" * 64,
                     output_format="png", envelope={"adjustments": {}}, tasks=list(TASKS))


def service_parts(backend):
    """(settings, store with domain ``acme``, blobs, catalog), checkpointing every task (the
    crash below is after a decode too cheap to store under the default policy)."""
    settings = backend.settings(checkpoint_tasks=True, checkpoint_policy="always")
    store = backend.store()
    store.create_domain("acme")
    blobs = LocalBlobStore(settings.blob_path)
    return settings, store, blobs, Catalog.load(settings)


def stored_thread(store, blobs, fingerprint: str, key: str = "k"):
    """A thumbnail thread for ``acme`` whose input image is in ``blobs``, as accepted."""
    image_key = blobs.put(encode(photo(32, 24), "PNG"))
    rec, _ = store.create_thread(NewThread(
        domain="acme", account="acme", idem_key=key, pipeline="thumbnail",
        fingerprint=fingerprint,
        meta_parts=[], image_sha256=image_key, input_key=image_key, output_format="png",
        envelope={"adjustments": {}}, tasks=list(TASKS)))
    return rec


def died_after_decode(store, thread_id: str) -> None:
    """Pretend the service died after `decode`: shifter and encoder never finished."""
    with store._tx() as db:  # noqa: SLF001 - setting up a crash by hand
        db.execute("UPDATE threads SET status = 'processing', result = NULL WHERE id = ?",
                   (thread_id,))
        db.execute("UPDATE tasks SET status = 'pending', checkpoint_key = NULL WHERE"
                   " thread_id = ? AND task_id != 'decode'", (thread_id,))
