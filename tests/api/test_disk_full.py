"""The blob store's disk full — a real one: a 2 MiB tmpfs mounted as the blob folder. A
submission is refused with 503 and nothing is recorded; a thread whose checkpoint does not
fit waits, and completes once there is room again."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest
from support.images import encode, noisy, photo
from support.service_harness import Service


def mountable() -> bool:
    return os.geteuid() == 0 and shutil.which("mount") is not None


@pytest.fixture
def small_disk(tmp_path):
    if not mountable():
        if os.environ.get("CI"):
            pytest.fail("the disk-full tests need root to mount a tmpfs")
        pytest.skip("needs root to mount a tmpfs")
    folder = tmp_path / "blobs"
    folder.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(folder)], check=True)
    yield folder
    subprocess.run(["umount", "-l", str(folder)], check=False)


def fill(folder, leave: int = 0) -> None:
    """Take the disk's free space, less ``leave`` bytes."""
    st = os.statvfs(folder)
    free = st.f_bavail * st.f_frsize
    with open(folder / "ballast", "wb") as f:
        f.write(b"\0" * max(0, free - leave))


def test_an_upload_to_a_full_disk_is_a_503_and_nothing_is_recorded(tmp_path, small_disk):
    svc = Service(tmp_path / "svc", blob_dir=small_disk)
    try:
        fill(small_disk)
        img = encode(noisy(photo(96, 64), 10, seed=1), "PNG")
        before = files(small_disk)
        got = svc.submit(img)
        assert got.status == 503 and got.code == "blob_store_full"
        assert got.headers["retry-after"] == "30"
        assert "No space left" in got.json()["error"]["message"]
        assert files(small_disk) == before  # no half-written file left
        assert svc.store.unfinished_threads() == []  # nothing recorded, nothing charged
        assert svc.billing.balance("acme").held == 0  # and its reservation given back
        (small_disk / "ballast").unlink()
        assert svc.submit(img).status == 202  # the same request, once there is room
    finally:
        svc.close()


def test_a_thread_waits_for_room_then_completes(tmp_path, small_disk):
    svc = Service(tmp_path / "svc", blob_dir=small_disk, checkpoint_policy="always")
    svc.conductor.start_sweeping()
    try:
        img = encode(noisy(photo(96, 64), 10, seed=2), "PNG")  # checkpoints: ~18 KB each
        fill(small_disk, leave=len(img) + 8192)  # the upload fits, the checkpoints do not
        sent = svc.submit(img, {"adjustments": {"master": {"algorithm": "bilateral"}}})
        assert sent.status == 202, sent.body
        tid = sent.json()["thread_id"]
        body = svc.wait(tid, timeout=1.5)
        assert body["status"] == "processing"  # waiting, not failed
        (small_disk / "ballast").unlink()
        body = svc.wait(tid, timeout=30)
        assert body["status"] == "done", body
    finally:
        svc.close()


def files(folder) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if p.is_file())
