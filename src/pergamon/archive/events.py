"""Domain events the core emits after a commit; subscribers (audit, notifications) react to them.

Names are stable because later issues store them. A subscriber that raises is logged and
ignored: a notification never fails the operation that caused it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pergamon.archive.origin import Origin

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class InstanceStored:
    name = "instance-stored"
    sop_class_uid: str
    sop_instance_uid: str
    study_uid: str
    series_uid: str
    patient_id: str
    origin: Origin
    replaced: bool


@dataclass(frozen=True)
class InstanceRejectedOnIngest:
    name = "instance-rejected-on-ingest"
    sop_instance_uid: str
    reason: str
    origin: Origin


@dataclass(frozen=True)
class InstancesSent:
    name = "instances-sent"
    destination: str
    sop_instance_uids: tuple[str, ...]
    failed: int
    origin: Origin


@dataclass(frozen=True)
class QueryPerformed:
    name = "query-performed"
    level: str
    keys: dict[str, Any]
    matches: int
    origin: Origin


@dataclass(frozen=True)
class CommitmentReported:
    name = "commitment-reported"
    transaction_uid: str
    committed: int
    failed: int
    destination: str


@dataclass(frozen=True)
class ApplicationStarted:
    name = "application-started"
    ae_title: str


@dataclass(frozen=True)
class ApplicationStopped:
    name = "application-stopped"
    ae_title: str


@dataclass(frozen=True)
class ClockOffsetExceeded:
    """The local clock is off by more than `time.max_offset` seconds from a time server (IHE CT, ITI-1).

    `offset` is the server's time minus ours (positive: our clock is behind), `server` is
    ``host:port`` of the best sample, `limit` the configured maximum.
    """

    name = "clock-offset-exceeded"
    offset: float
    server: str
    limit: float


@dataclass(frozen=True)
class NodeAuthenticationFailed:
    """A peer failed TLS node authentication (IHE ITI-19) on `door` ("dicom", "http", "syslog", ...).

    `peer` is "host:port"; `reason` is OpenSSL's (no certificate, untrusted certificate, protocol
    or cipher refused). Audited as ITI-20 "Node-Authentication-failure" (Security Alert 110113).
    """

    name = "node-authentication-failed"
    peer: str
    reason: str
    door: str


Subscriber = Callable[[Any], None]


class EventBus:
    """Synchronous fan-out of committed events to subscribers registered in the wiring."""

    def __init__(self) -> None:
        self._subscribers: list[Subscriber] = []

    def subscribe(self, subscriber: Subscriber) -> None:
        self._subscribers.append(subscriber)

    def emit(self, event: Any) -> None:
        for subscriber in self._subscribers:
            try:
                subscriber(event)
            except Exception:
                log.exception("event subscriber %r failed on %s", subscriber, event.name)
