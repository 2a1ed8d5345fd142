"""Preemption notices from each cloud's metadata service (a fake one on loopback)."""

from __future__ import annotations

import logging

import pytest
from support.fake_metadata import FakeMetadata

from tilemore.cluster.preemption import PreemptionWatcher, notice_source
from tilemore.ports import free_port


@pytest.fixture
def meta():
    m = FakeMetadata()
    yield m
    m.close()


@pytest.mark.parametrize("provider", ["aws", "gcp", "azure"])
def test_no_notice_until_the_cloud_says_so(meta, provider):
    source = notice_source(provider, meta.url)
    assert source.poll() is None
    when = meta.preempt(seconds=90)
    notice = source.poll()
    assert notice is not None and notice.provider == provider
    if provider == "gcp":  # GCP says only TRUE; its notice is 30 s
        assert 25 <= notice.seconds_left() <= 30
    else:
        assert notice.deadline == when.timestamp()


def test_node_specific_paths(meta):
    meta.preempt("node-b")
    assert notice_source("aws", f"{meta.url}/node-a").poll() is None
    assert notice_source("aws", f"{meta.url}/node-b").poll() is not None


def test_the_watcher_drains_once_and_stops(meta):
    drained = []
    watcher = PreemptionWatcher(notice_source("azure", meta.url), drained.append, interval=0.01)
    assert watcher.check() is None and drained == []
    meta.preempt()
    notice = watcher.run()
    watcher.check()  # a notice seen again does not drain again
    assert drained == [notice] and notice.provider == "azure"


def test_an_unreachable_metadata_service_warns_once(caplog):
    port = free_port()  # nothing listens there once closed
    drained = []
    watcher = PreemptionWatcher(notice_source("gcp", f"http://127.0.0.1:{port}"),
                                drained.append, interval=0.01)
    with caplog.at_level(logging.WARNING, "tilemore.preemption"):
        assert watcher.check() is None and watcher.check() is None
    assert len([r for r in caplog.records if "unreachable" in r.message]) == 1
    assert drained == []


def test_unknown_provider():
    with pytest.raises(ValueError, match="unknown cloud provider 'ibm'"):
        notice_source("ibm")  # type: ignore[arg-type]
