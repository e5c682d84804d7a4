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
    # From the stored header, so subscribers need no index lookup; None: not known by the emitter.
    issuer: str | None = None
    accession_number: str | None = None


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



# Patient reconciliation (PIR, RAD-12): emitted by `archive.patients` after its transaction commits.


@dataclass(frozen=True)
class PatientUpdated:
    """Demographics of a patient were created (`created`) or updated; `message_id` is HL7 MSH-10."""

    name = "patient-updated"
    patient_id: str
    issuer: str
    patient_name: str
    created: bool
    message_id: str
    origin: Origin | None


@dataclass(frozen=True)
class PatientMerged:
    """The obsolete patient's `studies` studies now belong to the surviving patient; its ID matches nothing."""

    name = "patient-merged"
    patient_id: str
    issuer: str
    patient_name: str
    obsolete_id: str
    obsolete_issuer: str
    studies: int
    message_id: str
    origin: Origin | None


@dataclass(frozen=True)
class PatientIdentifierChanged:
    """A patient's identifier (ID and issuer) was changed from `old_id`/`old_issuer` (ADT A47)."""

    name = "patient-identifier-changed"
    patient_id: str
    issuer: str
    patient_name: str
    old_id: str
    old_issuer: str
    message_id: str
    origin: Origin | None


# Orders (RAD-4 / RAD-13) and PIX (ITI-9 / ITI-10): emitted after the change is committed.


@dataclass(frozen=True)
class OrderReceived:
    """An order message was applied: `action` C (new), U (changed, status) or D (cancelled, discontinued).

    `transaction` is "RAD-4" for a new order, "RAD-13" for a later one; `message_id` is HL7 MSH-10.
    """

    name = "order-received"
    action: str
    transaction: str
    placer_order_number: str
    filler_order_number: str
    accession_number: str
    patient_id: str
    issuer: str
    patient_name: str
    message_id: str
    origin: Origin | None


@dataclass(frozen=True)
class PixUpdateReceived:
    """An ITI-10 PIX Update Notification was applied: `identifiers` ((id, issuer) pairs) name one patient."""

    name = "pix-update-received"
    identifiers: tuple[tuple[str, str], ...]
    message_id: str
    origin: Origin | None


@dataclass(frozen=True)
class PixQuerySent:
    """An ITI-9 PIX Query was sent to `manager` ("host:port"); `query` is the QBP message as sent.

    `outcome` is "" when an answer was applied, else why not (refused, unreachable, nonsense).
    `sender` / `receiver` are the MSH-4|MSH-3 and MSH-6|MSH-5 of the query; `user` who asked, if known.
    """

    name = "pix-query-sent"
    patient_id: str
    issuer: str
    query: bytes
    message_id: str
    manager: str
    sender: str
    receiver: str
    outcome: str
    user: str = ""


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
