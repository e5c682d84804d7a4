"""Turning the core's domain events into DICOM PS3.15 A.5 audit messages (ITI-20 Record Audit Event).

`AuditTrail.handle` is subscribed to the archive's event bus, so every door (DIMSE, DICOMweb,
import, later HL7 and web services) is audited once, here, from the events the core emits:

| Domain event                | Audit message (PS3.15 A.5.3)                                      |
|-----------------------------|-------------------------------------------------------------------|
| ApplicationStarted/Stopped  | 110100 Application Activity, 110120 / 110121 (A.5.3.1)            |
| InstanceStored (dimse/http) | 110104 DICOM Instances Transferred, C (U if replaced), per transfer (below) |
| InstanceStored (import)     | 110107 Import, action C (A.5.3.8)                                 |
| InstanceRejectedOnIngest    | 110104 (110107 for import) with outcome 8 and the reason          |
| InstancesSent               | 110104, action R, one message per patient (ITI TF-2 §3.20.7.1)   |
| QueryPerformed              | 110112 Query (A.5.3.11): C-FIND SOP class + identifier, or QIDO URI |
| NodeAuthenticationFailed    | 110113 Security Alert, type 110126 Node Authentication            |
| ClockOffsetExceeded         | 110113 Security Alert, private type (CID 403 is extensible; ITI-1 names none) |
| PatientUpdated, ...Merged, ...IdentifierChanged | 110110 Patient Record (A.5.3.10), C / U; a merge: U + D |
| OrderReceived (RAD-4/13)    | 110111 Procedure Record, C (new) / U (changed) / D (cancelled)    |
| PixUpdateReceived (ITI-10)  | 110110 Patient Record, U, one patient object per identifier (ITI TF-2 3.10.5.1.2) |
| PixQuerySent (ITI-9)        | 110112 Query, E, the QBP as query parameters (ITI TF-2 3.9.5.1.1) |
| CommitmentReported          | not audited: no PS3.15 A.5.3 / ITI-20 event for storage commitment |
| ProcedureStepReceived (MPPS)| not audited: the Radiology Audit Trail option is not claimed (ihe-iti.md 10) |

Stored instances are audited per transfer, as dcm4chee does, not per instance: what one peer
stores of one study within `audit.transfer_batch_seconds` of the previous instance becomes one
110104 message listing the SOP classes with their instance counts. A 500-slice series is
then one message rather than 500, and the main process builds one XML document for it (per instance
this was ~0.6 ms of its CPU). The batch lives in memory until sent: a crash of the main process
loses the audit of the last second's stores (the objects themselves are durable).

Auditing never fails the operation that caused it: a message that cannot be built is logged and
dropped, and so is a sink error (the sink, a durable queue, is expected not to raise).
"""

from __future__ import annotations

import dataclasses
import getpass
import logging
import os
import socket
import threading
import time
import urllib.parse
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property
from typing import Any

from sqlalchemy import select

from pergamon.archive.index.schema import instance, patient, series, study
from pergamon.archive.origin import Origin
from pergamon.archive.service import Archive
from pergamon.audit import codes as c
from pergamon.audit import messages as m

log = logging.getLogger(__name__)

# C-FIND SOP classes (PS3.4 C.6): the level alone tells the information model we answered with.
PATIENT_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.1.1"
STUDY_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.2.1"
EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1"
_LOOKUP_CHUNK = 500
# InstanceStored audits remember the patient and accession of this many studies; any event not
# named here (patient updates, merges, orders, ...) may change them and clears what is remembered.
_STORED_STUDIES_REMEMBERED = 1024
_KEEPS_STORED_STUDIES = frozenset(
    {"InstanceStored", "InstanceRejectedOnIngest", "InstancesSent", "QueryPerformed", "CommitmentReported"}
)
# A transfer's message waits at most this many batch periods after its first instance, and counts at most
# this many instances: a long transfer is audited in steps rather than only once it ends.
_TRANSFER_MAX_PERIODS = 10
_TRANSFER_MAX_INSTANCES = 1000
_QIDO_RESOURCES = {"PATIENT": "patients", "STUDY": "studies", "SERIES": "series", "IMAGE": "instances"}
# Consistent Time (ITI-1) names no audit event; PS3.15 A.5.3.11 EventTypeCode is from the extensible CID 403.
CLOCK_OFFSET_EXCEEDED = c.Code("clock-offset-exceeded", "99PERGAMON", "Clock Offset Exceeded")
RAD_12 = c.Code("RAD-12", "IHE Transactions", "Patient Update")
RAD_4 = c.Code("RAD-4", "IHE Transactions", "Procedure Scheduled")
RAD_13 = c.Code("RAD-13", "IHE Transactions", "Procedure Updated")
ITI_9 = c.Code("ITI-9", "IHE Transactions", "PIX Query")
ITI_10 = c.Code("ITI-10", "IHE Transactions", "PIX Update Notification")


@dataclass
class _Transfer:
    """Instances one peer stored of one study, audited together once the peer pauses."""

    origin: Origin
    action: str
    who: m.Patient
    study: m.Study
    first: float
    last: float
    when: datetime
    count: int = 0


class AuditTrail:
    """Subscriber of the event bus: the audit messages of each audited event, handed to `sink`."""

    def __init__(self, archive: Archive, sink: Callable[[bytes], None]) -> None:
        self.archive = archive
        self.sink = sink
        self.batch_seconds = archive.settings.audit.transfer_batch_seconds
        self._transfers: dict[tuple[Any, ...], _Transfer] = {}
        self._transfers_lock = threading.Lock()
        self._flusher: threading.Thread | None = None
        self._closed = threading.Event()
        # InstanceStored audits: the index's (patient, accessions) per study and header, see `_stored_objects`.
        self._stored_study_cache: OrderedDict[tuple[Any, ...], tuple[m.Patient, tuple[str, ...]]] = OrderedDict()
        self._stored_study_lock = threading.Lock()
        self._stored_study_generation = 0

    def handle(self, event: Any) -> None:
        """Build the event's messages and hand each to the sink; never raises into the core."""
        name = type(event).__name__
        if name not in _KEEPS_STORED_STUDIES:
            self.flush()  # a patient change or the stop comes after the stores that preceded it
            with self._stored_study_lock:
                self._stored_study_generation += 1
                self._stored_study_cache.clear()
        if name == "InstanceStored" and self.batch_seconds > 0 and event.origin.door != "import":
            try:
                self._collect(event)
            except Exception:
                log.exception("cannot audit the store of %s: dropped", event.sop_instance_uid)
            return
        try:
            built = self.messages_for(event)
        except Exception:
            log.exception("cannot build the audit message(s) of %s: dropped", getattr(event, "name", event))
            return
        for message in built:
            self._send(message, name)

    def _send(self, message: bytes, what: str) -> None:
        try:
            self.sink(message)
        except Exception:
            log.exception("audit sink failed on a message of %s: dropped", what)

    # --- stored instances, audited per transfer --------------------------------------------------

    def _collect(self, event: Any) -> None:
        """Add a stored instance to its transfer (peer, action, patient, study); send a full one at once."""
        who, what = self._stored_objects(event)
        action = "U" if event.replaced else "C"
        key = (event.origin, action, who, event.study_uid)
        now = time.monotonic()
        with self._transfers_lock:
            transfer = self._transfers.get(key)
            if transfer is None:
                transfer = _Transfer(
                    event.origin, action, who, m.Study(event.study_uid, accessions=what.accessions), now, now,
                    datetime.now(UTC),
                )  # fmt: skip
                self._transfers[key] = transfer
            transfer.study.add(event.sop_class_uid)  # counted per SOP class, as before (no instance list)
            transfer.count += 1
            transfer.last, transfer.when = now, datetime.now(UTC)
            full = transfer.count >= _TRANSFER_MAX_INSTANCES or self._closed.is_set()  # closed: no timer left
            if full:
                del self._transfers[key]
            elif self._flusher is None and not self._closed.is_set():
                self._flusher = threading.Thread(
                    target=self._flush_when_due, name="pergamon-audit-batches", daemon=True
                )
                self._flusher.start()
        if full:
            self._send_transfer(transfer)

    def _flush_when_due(self) -> None:
        """Send each transfer once its peer paused `batch_seconds`, or it is `_TRANSFER_MAX_PERIODS` of them old."""
        period = self.batch_seconds
        while not self._closed.wait(min(period / 4, 0.25)):
            now = time.monotonic()
            with self._transfers_lock:
                due = [
                    key
                    for key, t in self._transfers.items()
                    if now - t.last >= period or now - t.first >= period * _TRANSFER_MAX_PERIODS
                ]
                ready = [self._transfers.pop(key) for key in due]
            for transfer in ready:
                self._send_transfer(transfer)

    def flush(self) -> None:
        """Send every transfer still collecting (before a stop, a patient change, or on demand)."""
        with self._transfers_lock:
            ready = list(self._transfers.values())
            self._transfers.clear()
        for transfer in ready:
            self._send_transfer(transfer)

    def close(self) -> None:
        """Stop the batch timer and send what is left."""
        self._closed.set()
        self.flush()

    def _send_transfer(self, transfer: _Transfer) -> None:
        try:
            origin = transfer.origin
            message = m.instances_transferred(
                self.source, transfer.action, self.peer(origin, requestor=True), self.local(origin), transfer.who,
                [transfer.study], when=transfer.when,
            )  # fmt: skip
        except Exception:
            log.exception("cannot build the audit message of %d stored instance(s): dropped", transfer.count)
            return
        self._send(message, "InstanceStored")

    def messages_for(self, event: Any) -> list[bytes]:
        """The audit messages for one domain event (empty for events that are not audited)."""
        builder = getattr(self, f"_on_{type(event).__name__}", None)
        if builder is None:
            return []
        return list(builder(event))

    # --- who takes part --------------------------------------------------------------------------

    @cached_property
    def source(self) -> m.AuditSource:
        audit = self.archive.settings.audit
        return m.AuditSource(audit.source_id or self.ae_title, audit.enterprise_site_id)

    @property
    def ae_title(self) -> str:
        return self.archive.settings.dicom.ae_title

    @cached_property
    def hostname(self) -> str:
        return socket.gethostname()

    def local(self, origin: Origin | None = None, *, requestor: bool = False) -> m.Participant:
        """Pergamon itself: its AE title, `AETITLES=` on the DIMSE door, else the process ID."""
        ae = (origin.called_ae if origin is not None and origin.called_ae else "") or self.ae_title
        door = origin.door if origin is not None else "dimse"
        alternative = m.aetitles(ae) if door == "dimse" else str(os.getpid())
        return m.Participant(ae, requestor, alternative_user_id=alternative, host=self.hostname)

    def peer(self, origin: Origin, *, requestor: bool) -> m.Participant:
        """The other side of a request, from its origin: a DICOM AE, an HTTP client, a file."""
        if origin.door == "dimse":
            return m.Participant.application(origin.calling_ae, origin.peer, requestor=requestor)
        host, _ = m.network_access_point(origin.peer)
        return m.Participant(origin.user or host or origin.door, requestor, host=origin.peer)

    def destination_ae(self, ae_title: str, *, requestor: bool) -> m.Participant:
        remote = self.archive.settings.remote_ae(ae_title)
        return m.Participant.application(ae_title, remote.host if remote else "", requestor=requestor)

    @staticmethod
    def operator() -> m.Participant:
        """The person running this process (import, start, stop)."""
        try:
            user = getpass.getuser()
        except Exception:
            user = str(os.getuid()) if hasattr(os, "getuid") else "unknown"
        return m.Participant(user, True)

    # --- what the events touch ---------------------------------------------------------------------

    def lookup(self, sop_uids: Sequence[str]) -> dict[tuple[str, str], tuple[m.Patient, dict[str, m.Study]]]:
        """Patient and studies (SOP classes and counts) of the given instances, grouped by patient."""
        grouped: dict[tuple[str, str], tuple[m.Patient, dict[str, m.Study]]] = {}
        query = select(
            instance.c.sop_uid,
            instance.c.sop_class_uid,
            study.c.study_uid,
            study.c.accession_number,
            patient.c.patient_id,
            patient.c.issuer,
        ).select_from(instance.join(series).join(study).join(patient))
        with self.archive.db.read() as conn:
            for start in range(0, len(sop_uids), _LOOKUP_CHUNK):
                chunk = list(sop_uids[start : start + _LOOKUP_CHUNK])
                for row in conn.execute(query.where(instance.c.sop_uid.in_(chunk))):
                    key = (row.patient_id or "", row.issuer or "")
                    _, studies = grouped.setdefault(key, (m.Patient(*key), {}))
                    accession = (row.accession_number,) if row.accession_number else ()
                    studies.setdefault(row.study_uid, m.Study(row.study_uid, accessions=accession)).add(
                        row.sop_class_uid, row.sop_uid
                    )
        return grouped

    def _stored_objects(self, event: Any) -> tuple[m.Patient, m.Study]:
        """The patient and study of a stored instance as the index has them (a study's first patient wins).

        The index answer is remembered per study and header (patient, issuer, accession), so a
        study's later instances are audited without a lookup; events that may change a study's
        patient or accession clear it (`handle`).
        """
        issuer, accession = getattr(event, "issuer", None), getattr(event, "accession_number", None)
        key = (event.study_uid, event.patient_id, issuer, accession)
        with self._stored_study_lock:
            known = self._stored_study_cache.get(key) if issuer is not None else None
            generation = self._stored_study_generation
        if known is not None:
            who, accessions = known
            what = m.Study(event.study_uid, accessions=accessions)
            what.add(event.sop_class_uid, event.sop_instance_uid)
            return who, what
        found = self.lookup([event.sop_instance_uid])
        for who, studies in found.values():
            if event.study_uid in studies:
                what = studies[event.study_uid]
                if issuer is not None:
                    self._remember_stored_study(key, who, what.accessions, generation)
                return who, what
        fallback = m.Study(event.study_uid)
        fallback.add(event.sop_class_uid, event.sop_instance_uid)
        return m.Patient(event.patient_id), fallback

    def _remember_stored_study(
        self, key: tuple[Any, ...], who: m.Patient, accessions: tuple[str, ...], generation: int
    ) -> None:
        with self._stored_study_lock:
            if generation != self._stored_study_generation:
                return  # a clearing event overlapped the lookup
            cache = self._stored_study_cache
            cache[key] = (who, accessions)
            while len(cache) > _STORED_STUDIES_REMEMBERED:
                cache.popitem(last=False)

    # --- one method per audited event ----------------------------------------------------------

    def _on_ApplicationStarted(self, event: Any) -> Iterator[bytes]:
        yield m.application_activity(self.source, self.local(), started=True, launcher=self.operator())

    def _on_ApplicationStopped(self, event: Any) -> Iterator[bytes]:
        yield m.application_activity(self.source, self.local(), started=False, launcher=self.operator())

    def _on_InstanceStored(self, event: Any) -> Iterator[bytes]:
        who, what = self._stored_objects(event)
        origin: Origin = event.origin
        if origin.door == "import":
            yield self._import(origin, who, [what])
            return
        action = "U" if event.replaced else "C"
        yield m.instances_transferred(
            self.source, action, self.peer(origin, requestor=True), self.local(origin), who, [what]
        )

    def _on_InstanceRejectedOnIngest(self, event: Any) -> Iterator[bytes]:
        origin: Origin = event.origin
        reason = f"{event.sop_instance_uid}: {event.reason}" if event.sop_instance_uid else event.reason
        if origin.door == "import":
            yield self._import(origin, None, [], outcome=c.SERIOUS_FAILURE, description=reason)
            return
        yield m.instances_transferred(
            self.source, "C", self.peer(origin, requestor=True), self.local(origin), None, [],
            outcome=c.SERIOUS_FAILURE, description=reason,
        )  # fmt: skip

    def _import(
        self, origin: Origin, who: m.Patient | None, what: list[m.Study], *, outcome: int = c.SUCCESS,
        description: str = "",
    ) -> bytes:  # fmt: skip
        media = m.Participant(origin.path or "unknown", False, media=c.MEDIA_URI)
        importer = m.Participant(self.ae_title, False, alternative_user_id=str(os.getpid()), host=self.hostname)
        return m.import_(
            self.source, importer, media, who, what, others=[self.operator()], outcome=outcome,
            description=description,
        )  # fmt: skip

    def _on_InstancesSent(self, event: Any) -> Iterator[bytes]:
        origin: Origin = event.origin
        sent = len(event.sop_instance_uids)
        if not sent and not event.failed:
            return
        outcome = c.SUCCESS if not event.failed else c.MINOR_FAILURE if sent else c.SERIOUS_FAILURE
        description = f"{sent} sent, {event.failed} failed" if event.failed else ""
        sender = self.local(origin)
        if origin.door == "dimse":
            third_party = event.destination.strip() != origin.calling_ae
            receiver = self.destination_ae(event.destination, requestor=not third_party)
            if not third_party and origin.peer:
                receiver = m.Participant.application(event.destination, origin.peer, requestor=True)
            others = [self.peer(origin, requestor=True)] if third_party else []
        else:
            receiver, others = self.peer(origin, requestor=True), []
        grouped = self.lookup(event.sop_instance_uids)
        if not grouped:
            yield m.instances_transferred(self.source, "R", sender, receiver, None, [], others=others,
                                          outcome=outcome, description=description)  # fmt: skip
        for who, studies in grouped.values():
            yield m.instances_transferred(self.source, "R", sender, receiver, who, list(studies.values()),
                                          others=others, outcome=outcome, description=description)  # fmt: skip

    def _on_QueryPerformed(self, event: Any) -> Iterator[bytes]:
        origin: Origin = event.origin
        keys: dict[str, Any] = dict(event.keys)
        patient_id = str(keys.get("PatientID", "") or "")
        who = None
        if patient_id and not any(c in patient_id for c in "*?\\,"):
            who = m.Patient(patient_id, str(keys.get("IssuerOfPatientID", "") or ""))
        requestor, responder = self.peer(origin, requestor=True), self.local(origin)
        if origin.door == "dimse":
            sop_class = getattr(event, "sop_class_uid", "") or (
                PATIENT_ROOT_FIND if event.level == "PATIENT" else STUDY_ROOT_FIND
            )
            identifier, syntax = encode_identifier(event.level, keys)
            yield m.query(self.source, requestor, responder, identifier, sop_class_uid=sop_class,
                          transfer_syntax=syntax, patient=who)  # fmt: skip
            return
        resource = _QIDO_RESOURCES.get(event.level, event.level.lower())
        uri = origin.path or f"{self.archive.settings.http.base_path}/{resource}"
        query_string = urllib.parse.urlencode(sorted((k, str(v)) for k, v in keys.items()))
        yield m.query(self.source, requestor, responder, query_string.encode(), uri=uri, patient=who)

    def _on_NodeAuthenticationFailed(self, event: Any) -> Iterator[bytes]:
        peer = str(getattr(event, "peer", "") or "")
        host, _ = m.network_access_point(peer)
        door = str(getattr(event, "door", "") or "")
        reporter = m.Participant(self.ae_title, False, alternative_user_id=str(os.getpid()), host=self.hostname)
        performer = m.Participant(host or peer or "unknown", True, host=peer)
        reason = str(getattr(event, "reason", "") or "")
        yield m.node_authentication_failure(self.source, reporter, performer, f"{door}: {reason}" if door else reason)

    def _on_ClockOffsetExceeded(self, event: Any) -> Iterator[bytes]:
        reporter = m.Participant(self.ae_title, False, alternative_user_id=str(os.getpid()), host=self.hostname)
        text = f"clock offset {event.offset:+.3f} s from {event.server} exceeds {event.limit:g} s"
        yield m.security_alert(self.source, CLOCK_OFFSET_EXCEEDED, reporter, subject=str(event.server),
                               subject_type=c.ID_NODE, alert_description=text)  # fmt: skip

    # --- patient reconciliation (PIR, RAD-12): Patient Record 110110 (PS3.15 A.5.3.10) -------------

    def _hl7_participants(self, origin: Origin | None) -> list[m.Participant]:
        """The HL7 sender (Source Role ID) and Pergamon, its receiver (Destination Role ID)."""
        local = dataclasses.replace(self.local(origin), requestor=False, role=c.ROLE_DESTINATION)
        if origin is None:
            return [local]
        host, _ = m.network_access_point(origin.peer)
        sender = origin.user or origin.calling_ae or host or origin.door  # HL7: MSH-4|MSH-3 (ITI TF-2 3.10.5.1.2)
        return [m.Participant(sender, True, c.ROLE_SOURCE, host=origin.peer), local]

    def _patient_record(self, event: Any, action: str, who: m.Patient) -> bytes:
        return m.patient_record(self.source, action, self._hl7_participants(event.origin), who,
                                event_types=[RAD_12], message_id=event.message_id)  # fmt: skip

    def _on_PatientUpdated(self, event: Any) -> Iterator[bytes]:
        who = m.Patient(event.patient_id, event.issuer, event.patient_name)
        yield self._patient_record(event, "C" if event.created else "U", who)

    def _on_PatientMerged(self, event: Any) -> Iterator[bytes]:
        # ITI TF-2 3.8.5.1.2 (merge): the surviving patient is updated, the subsumed one deleted.
        yield self._patient_record(event, "U", m.Patient(event.patient_id, event.issuer, event.patient_name))
        yield self._patient_record(event, "D", m.Patient(event.obsolete_id, event.obsolete_issuer))

    def _on_PatientIdentifierChanged(self, event: Any) -> Iterator[bytes]:
        yield self._patient_record(event, "U", m.Patient(event.patient_id, event.issuer, event.patient_name))

    # --- orders (RAD-4 / RAD-13) and PIX (ITI-9 / ITI-10) -----------------------------------------

    def _on_OrderReceived(self, event: Any) -> Iterator[bytes]:
        transaction = RAD_4 if event.transaction == "RAD-4" else RAD_13
        who = m.Patient(event.patient_id or "unknown", event.issuer, event.patient_name)
        yield m.procedure_record(self.source, event.action, self._hl7_participants(event.origin), who,
                                 event_types=[transaction], message_id=event.message_id)  # fmt: skip

    def _on_PixUpdateReceived(self, event: Any) -> Iterator[bytes]:
        # ITI TF-2 3.10.5.1.2: one Patient Record (U) listing every identifier of the notification.
        details = (("MSH-10", event.message_id.encode()),) if event.message_id else ()
        patients = [m.Patient(pid, issuer) for pid, issuer in event.identifiers]
        others = [m.ParticipantObject(p.cx, c.ID_PATIENT_NUMBER, "1", "1", details=details) for p in patients[1:]]
        yield m.build(c.PATIENT_RECORD, "U", c.SUCCESS, self._hl7_participants(event.origin), self.source,
                      event_types=[ITI_10], patient=patients[0], patient_details=details,
                      objects=others)  # fmt: skip

    def _on_PixQuerySent(self, event: Any) -> Iterator[bytes]:
        consumer = m.Participant(event.sender, not event.user, c.ROLE_SOURCE, str(os.getpid()), host=self.hostname)
        manager = m.Participant(event.receiver, False, c.ROLE_DESTINATION, host=event.manager)
        participants = [consumer, manager]
        if event.user:
            participants.append(m.Participant(event.user, True))
        outcome = c.SUCCESS if not event.outcome else c.MINOR_FAILURE
        yield m.hl7_query(self.source, participants, event.query, ITI_9, message_id=event.message_id,
                          patients=[m.Patient(event.patient_id, event.issuer)], outcome=outcome,
                          description=event.outcome)  # fmt: skip


def encode_identifier(level: str, keys: dict[str, Any]) -> tuple[bytes, str]:
    """The C-FIND identifier as Explicit VR Little Endian bytes (ParticipantObjectQuery of A.5.3.11).

    Rebuilt from the matching keys the event carries; a key pydicom cannot encode is left out.
    """
    from pydicom.dataset import Dataset
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_dataset

    ds = Dataset()
    ds.QueryRetrieveLevel = level
    for keyword, value in keys.items():
        try:
            setattr(ds, keyword, value)
        except Exception:
            log.debug("query key %s=%r left out of the audit identifier", keyword, value)
    buffer = DicomBytesIO()
    buffer.is_little_endian = True
    buffer.is_implicit_VR = False
    try:
        write_dataset(buffer, ds)
    except Exception:
        return repr(sorted(keys.items())).encode(), ""
    return buffer.getvalue(), EXPLICIT_VR_LITTLE_ENDIAN
