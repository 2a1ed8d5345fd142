"""Preemption notices: each cloud warns a spot/preemptible VM shortly before taking it back,
through its metadata service. A watcher on each node polls the notice and, when it comes,
drains the node (through a callback, so this module needs no Ray): nothing new lands there,
and the work on it moves elsewhere while the node still runs.

- AWS: ``/latest/meta-data/spot/instance-action`` answers 404 until a notice, then
  ``{"action": "terminate"|"stop"|"hibernate", "time": "2026-11-25T15:00:00Z"}`` (two minutes
  ahead). IMDSv2: a session token from ``PUT /latest/api/token`` first.
- GCP: ``/computeMetadata/v1/instance/preempted`` answers ``FALSE`` or ``TRUE`` (about 30 s
  ahead), with the ``Metadata-Flavor: Google`` header.
- Azure: ``/metadata/scheduledevents`` lists events; a ``Preempt`` event has a
  ``NotBefore`` time (at least 30 s ahead), with the ``Metadata: true`` header.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import Literal, Protocol

log = logging.getLogger("tilemore.preemption")

Provider = Literal["aws", "gcp", "azure"]
DEFAULT_URLS: dict[str, str] = {
    "aws": "http://169.254.169.254",
    "gcp": "http://metadata.google.internal",
    "azure": "http://169.254.169.254",
}


@dataclass(frozen=True)
class Notice:
    provider: str
    deadline: float | None  # Unix time the node goes, when the cloud says
    detail: str

    def seconds_left(self, now: float | None = None) -> float | None:
        if self.deadline is None:
            return None
        return max(0.0, self.deadline - (time.time() if now is None else now))


class NoticeSource(Protocol):
    def poll(self) -> Notice | None:
        """The notice if there is one now; None if not. Raises OSError when unreachable."""


def _get(url: str, headers: dict[str, str], timeout: float,
         method: str = "GET") -> tuple[int, str]:
    req = urllib.request.Request(url, headers=headers, method=method)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 - fixed hosts
            return resp.status, resp.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        return exc.code, ""


def _iso_time(text: str) -> float | None:
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        try:
            return parsedate_to_datetime(text).timestamp()  # Azure: RFC 1123 dates
        except (TypeError, ValueError):
            return None


class AwsNotice:
    def __init__(self, base_url: str = DEFAULT_URLS["aws"], timeout: float = 1.0) -> None:
        self.base, self.timeout = base_url.rstrip("/"), timeout

    def poll(self) -> Notice | None:
        status, token = _get(f"{self.base}/latest/api/token",
                             {"X-aws-ec2-metadata-token-ttl-seconds": "60"}, self.timeout, "PUT")
        headers = {"X-aws-ec2-metadata-token": token} if status == 200 else {}
        status, body = _get(f"{self.base}/latest/meta-data/spot/instance-action", headers,
                            self.timeout)
        if status != 200:
            return None  # 404: no notice
        try:
            doc = json.loads(body)
        except json.JSONDecodeError:
            return Notice("aws", None, f"unreadable instance-action: {body[:80]!r}")
        return Notice("aws", _iso_time(str(doc.get("time", ""))),
                      f"spot instance-action {doc.get('action', '?')}")


class GcpNotice:
    def __init__(self, base_url: str = DEFAULT_URLS["gcp"], timeout: float = 1.0) -> None:
        self.base, self.timeout = base_url.rstrip("/"), timeout

    def poll(self) -> Notice | None:
        status, body = _get(f"{self.base}/computeMetadata/v1/instance/preempted",
                            {"Metadata-Flavor": "Google"}, self.timeout)
        if status == 200 and body.strip().upper() == "TRUE":
            return Notice("gcp", time.time() + 30, "instance preempted")
        return None


class AzureNotice:
    def __init__(self, base_url: str = DEFAULT_URLS["azure"], timeout: float = 1.0) -> None:
        self.base, self.timeout = base_url.rstrip("/"), timeout

    def poll(self) -> Notice | None:
        status, body = _get(f"{self.base}/metadata/scheduledevents?api-version=2020-07-01",
                            {"Metadata": "true"}, self.timeout)
        if status != 200:
            return None
        try:
            events = json.loads(body).get("Events", [])
        except (json.JSONDecodeError, AttributeError):
            return None
        for event in events:
            if event.get("EventType") == "Preempt":
                return Notice("azure", _iso_time(str(event.get("NotBefore", ""))),
                              f"scheduled event {event.get('EventId', '?')}")
        return None


def notice_source(provider: Provider, base_url: str | None = None) -> NoticeSource:
    kinds = {"aws": AwsNotice, "gcp": GcpNotice, "azure": AzureNotice}
    if provider not in kinds:
        raise ValueError(f"unknown cloud provider '{provider}': aws, gcp or azure")
    return kinds[provider](base_url or DEFAULT_URLS[provider])


class PreemptionWatcher:
    """Polls ``source`` every ``interval`` seconds; on the first notice calls ``drain`` once
    and stops. An unreachable metadata service is logged once and polled again."""

    def __init__(self, source: NoticeSource, drain: Callable[[Notice], None],
                 interval: float = 5.0) -> None:
        self.source, self.drain, self.interval = source, drain, interval
        self.notice: Notice | None = None
        self._stop = threading.Event()
        self._warned = False

    def check(self) -> Notice | None:
        try:
            notice = self.source.poll()
        except OSError as exc:
            if not self._warned:
                log.warning("preemption notices: metadata service unreachable (%s)", exc)
                self._warned = True
            return None
        if notice is not None and self.notice is None:
            self.notice = notice
            log.warning("preemption notice (%s): %s; draining this node", notice.provider,
                        notice.detail)
            self.drain(notice)
        return notice

    def run(self) -> Notice:
        """Block until a notice comes (and the node is drained) or :meth:`stop`."""
        while not self._stop.is_set():
            if self.check() is not None:
                break
            self._stop.wait(self.interval)
        return self.notice  # type: ignore[return-value]

    def stop(self) -> None:
        self._stop.set()
