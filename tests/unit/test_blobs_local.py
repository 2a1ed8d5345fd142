"""The local blob store's delete and listing, on real files."""

from __future__ import annotations

import os
import time

import pytest

from tilemore.blobs import blob_key
from tilemore.blobs.local import LocalBlobStore


def test_delete_and_list(tmp_path):
    blobs = LocalBlobStore(tmp_path)
    keys = [blobs.put(f"blob {i}".encode()) for i in range(20)]
    listed = {b.key: b for b in blobs.list()}
    assert set(listed) == set(keys)
    assert listed[keys[0]].bytes == len(b"blob 0")
    first = keys[0][:1]
    assert {b.key for b in blobs.list(first)} == {k for k in keys if k.startswith(first)}
    assert [b.key for b in blobs.list(keys[3])] == [keys[3]]
    (tmp_path / keys[4][:2] / ".tmp-half-written").write_bytes(b"x")  # not a blob
    assert len(list(blobs.list())) == 20

    gone = blobs.delete(keys[:5] + ["0" * 64])  # an absent key counts as gone
    assert gone == keys[:5] + ["0" * 64]
    assert not any(blobs.exists(k) for k in keys[:5])
    assert {b.key for b in blobs.list()} == set(keys[5:])
    assert blobs.delete(keys[:5]) == keys[:5]  # again: nothing to do, no error


def test_prefix_must_be_hex(tmp_path):
    with pytest.raises(ValueError):
        list(LocalBlobStore(tmp_path).list("../etc"))


def test_put_of_a_stored_blob_refreshes_it_and_a_guarded_delete_keeps_it(tmp_path):
    """The put/delete race rule, on the store's side: a blob put again after the collector
    chose it (its cut-off taken before the put) is not removed."""
    blobs = LocalBlobStore(tmp_path)
    key = blobs.put(b"shared checkpoint")
    path = tmp_path / key[:2] / key
    os.utime(path, (time.time() - 3600, time.time() - 3600))  # written an hour ago
    cutoff = time.time() - 1  # the collector: untouched for longer than its grace
    assert blobs.put(b"shared checkpoint") == key  # another thread's replica, meanwhile
    assert blobs.delete([key], modified_before=cutoff) == []
    assert blobs.get(key) == b"shared checkpoint"
    os.utime(path, (time.time() - 3600, time.time() - 3600))
    assert blobs.delete([key], modified_before=cutoff) == [key]


def test_a_refused_delete_leaves_the_blob_and_says_so(tmp_path):
    """A blob the file system will not remove (here: its name is a folder, which unlink
    refuses even to root) is left, and not reported gone."""
    blobs = LocalBlobStore(tmp_path)
    ok = blobs.put(b"removable")
    stuck = blob_key(b"stuck")
    (tmp_path / stuck[:2] / stuck).mkdir(parents=True)
    assert blobs.delete([stuck, ok]) == [ok]
    assert (tmp_path / stuck[:2] / stuck).is_dir()


def test_a_large_delete_on_threads_says_exactly_what_went(tmp_path):
    """Over the threaded path (hundreds of keys): an absent key counts as gone; one refused,
    and one written since the cut-off, stay and are not reported; the rest go, in order."""
    blobs = LocalBlobStore(tmp_path)
    keys = [blobs.put(f"blob {i}".encode()) for i in range(300)]
    old = time.time() - 3600
    for k in keys:
        os.utime(tmp_path / k[:2] / k, (old, old))
    cutoff = time.time() - 60
    refreshed = keys[150]
    blobs.put(b"blob 150")  # put again after the cut-off
    stuck = blob_key(b"stuck")
    (tmp_path / stuck[:2] / stuck).mkdir(parents=True)
    asked = [*keys[:100], stuck, "0" * 64, *keys[100:]]
    gone = blobs.delete(asked, modified_before=cutoff)
    assert gone == [k for k in asked if k not in (stuck, refreshed)]
    assert {b.key for b in blobs.list()} == {refreshed, stuck}
    with pytest.raises(Exception, match="not a blob key"):
        blobs.delete([*keys[:70], "../escape"])  # refused before anything is removed
