"""Storage Commitment Push Model SCP (N-ACTION / N-EVENT-REPORT), PS3.4 Annex J; IHE RAD-10.

The N-ACTION request is validated and written to the durable job queue before it is answered,
so its success status (PS3.4 J.3.2.1.3: "request received", not "committed") is only sent for
a request that a crash cannot lose. Two jobs follow:

* ``storage-commitment-check`` verifies the references (`archive.commitment`: indexed, same SOP
  class, blob present with its recorded SHA-256) and enqueues the report with that result;
* ``storage-commitment-report`` delivers the N-EVENT-REPORT (PS3.4 J.3.3): Event Type 1 when all
  were committed, 2 with a Failed SOP Sequence otherwise. It goes on the association that
  carried the N-ACTION when that is still open and idle, else on a new association to the
  requester's configured address (`[[dicom.remote]]`, PS3.4 J.3.3.1.2/J.3.3.1.3) on which
  Pergamon proposes the SCP role by SCP/SCU Role Selection (PS3.7 D.3.3.4), as the Note to
  J.3.3.1.2 asks. An unreachable requester makes the job retry with backoff. How the job thread
  can send safely on an association pynetdicom serves in another thread: see `_send_on_same`.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import uuid
from io import BytesIO
from typing import Any, cast

from pydicom import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import evt
from pynetdicom.association import Association
from pynetdicom.dimse_primitives import N_ACTION, N_EVENT_REPORT
from pynetdicom.dsutils import encode
from pynetdicom.events import Event
from pynetdicom.presentation import build_role
from pynetdicom.sop_class import (  # type: ignore[attr-defined]  # generated at import time
    StorageCommitmentPushModel,
    StorageCommitmentPushModelInstance,
)

from pergamon.archive.commitment import CommitFailure, CommitmentResult, Reference, check_commitment
from pergamon.archive.events import CommitmentReported
from pergamon.archive.jobs import Done, Job, JobHandler, JobResult, Retry
from pergamon.archive.service import Archive
from pergamon.dimse import network
from pergamon.dimse.status import (
    N_CLASS_INSTANCE_CONFLICT,
    N_INVALID_ARGUMENT,
    N_NO_SUCH_ACTION_TYPE,
    N_NO_SUCH_SOP_INSTANCE,
    N_PROCESSING_FAILURE,
    SUCCESS,
    status_dataset,
)

log = logging.getLogger(__name__)

CHECK_JOB = "storage-commitment-check"
REPORT_JOB = "storage-commitment-report"

# PS3.4 J.3.2.1.1: Action Type ID 1 "Request Storage Commitment".
REQUEST_STORAGE_COMMITMENT = 1
# PS3.4 J.3.3.1.1: Event Type ID 1 "Storage Commitment Request Successful", 2 "... Complete - Failures Exist".
EVENT_ALL_COMMITTED = 1
EVENT_FAILURES_EXIST = 2

# Failure Reason (0008,1197) values, PS3.4 J.3.3.1.1 / PS3.3 C.14.1.1.
FAILURE_REASONS: dict[CommitFailure, int] = {
    CommitFailure.PROCESSING_FAILURE: N_PROCESSING_FAILURE,
    CommitFailure.NO_SUCH_INSTANCE: N_NO_SUCH_SOP_INSTANCE,
    CommitFailure.CLASS_INSTANCE_CONFLICT: N_CLASS_INSTANCE_CONFLICT,
}

# Seconds after the N-ACTION before a report may go on the same association: an SCU that releases
# right after the N-ACTION-RSP (the usual case, PS3.4 J.3.3.1.3) has done so by then, and its
# report goes on a new association instead of crossing its A-RELEASE-RQ.
SAME_ASSOCIATION_GRACE = 1.0
# The association must have been silent this long (no DIMSE message either way) to count as idle.
SAME_ASSOCIATION_QUIET = 0.2
_PENDING_STATUSES = (0xFF00, 0xFF01)
_N_EVENT_REPORT_RSP, _C_CANCEL_RQ = 0x8100, 0x0FFF  # Command Field values, PS3.7 E.1
_TRANSFER_SYNTAXES = [ExplicitVRLittleEndian, ImplicitVRLittleEndian]


class _Answer:
    """The response to one of our N-EVENT-REPORT requests, filled in by the DIMSE hook."""

    def __init__(self) -> None:
        self.arrived = threading.Event()
        self.status: int | None = None


class _LiveAssociation:
    """An association that carried an N-ACTION, watched so the report can be sent on it safely.

    pynetdicom's DIMSE notification events keep `in_flight` (requests not yet finally answered)
    and `last_activity` current; release, abort and close set `closed`.
    """

    def __init__(self, assoc: Association) -> None:
        self.id = uuid.uuid4().hex
        self.assoc = assoc
        self.closed = threading.Event()
        self.send_lock = threading.Lock()
        self.in_flight: set[int] = set()
        self.last_activity = time.monotonic()
        self.message_id = 0  # of our N-EVENT-REPORT requests on this association
        self.answers: dict[int, _Answer] = {}

    def on_received(self, event: Event) -> None:
        """EVT_DIMSE_RECV (DUL thread): count requests; catch the answer to our N-EVENT-REPORT."""
        command = event.message.command_set  # type: ignore[attr-defined]
        self.last_activity = time.monotonic()
        field = int(command.CommandField)
        if field == _N_EVENT_REPORT_RSP:
            answer = self.answers.get(int(command.MessageIDBeingRespondedTo))
            if answer is not None:
                answer.status = int(command.Status)
                answer.arrived.set()
        elif not field & 0x8000 and field != _C_CANCEL_RQ:  # a request that gets a response
            self.in_flight.add(int(command.MessageID))

    def on_sent(self, event: Event) -> None:
        command = event.message.command_set  # type: ignore[attr-defined]
        self.last_activity = time.monotonic()
        if int(command.CommandField) & 0x8000 and int(command.Status) not in _PENDING_STATUSES:
            self.in_flight.discard(int(command.MessageIDBeingRespondedTo))

    def idle(self) -> bool:
        return not self.in_flight and time.monotonic() - self.last_activity >= SAME_ASSOCIATION_QUIET


class LiveAssociations:
    """The associations of this process that carried an N-ACTION and are still open, by id.

    Ids are random, so a job created by another node or before a restart finds nothing here
    and its report goes on a new association.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_id: dict[str, _LiveAssociation] = {}

    def register(self, assoc: Association, message_id: int) -> _LiveAssociation:
        """The entry of `assoc` (created and hooked on its first N-ACTION); marks the N-ACTION in flight."""
        with self._lock:
            for gone in [key for key, entry in self._by_id.items() if not entry.assoc.is_established]:
                self._by_id.pop(gone).closed.set()  # its close event was missed; do not keep it alive
            live = next((entry for entry in self._by_id.values() if entry.assoc is assoc), None)
            if live is None:
                live = _LiveAssociation(assoc)
                self._by_id[live.id] = live
                assoc.bind(evt.EVT_DIMSE_RECV, live.on_received)
                assoc.bind(evt.EVT_DIMSE_SENT, live.on_sent)
                for closing in (evt.EVT_RELEASED, evt.EVT_ABORTED, evt.EVT_CONN_CLOSE):
                    assoc.bind(closing, self._closed_handler(live))
            live.in_flight.add(message_id)
            return live

    def _closed_handler(self, live: _LiveAssociation) -> Any:
        def closed(_event: Event) -> None:
            live.closed.set()
            with self._lock:
                self._by_id.pop(live.id, None)

        return closed

    def get(self, live_id: str | None) -> _LiveAssociation | None:
        if not live_id:
            return None
        with self._lock:
            live = self._by_id.get(live_id)
        if live is not None and not live.assoc.is_established:
            live.closed.set()
            return None
        return live


LIVE = LiveAssociations()
"""The process-wide registry: handlers and job runners of every Archive in the process share it."""


def handle_n_action(event: Event, archive: Archive) -> tuple[int | Dataset, Dataset | None]:
    """Validate an N-ACTION Request Storage Commitment and queue it durably (PS3.4 J.3.2).

    Success once the request is in the job queue; the result comes later in an N-EVENT-REPORT.
    Failures: 0x0119 (not the Storage Commitment class), 0x0112 (not its well-known instance),
    0x0123 (Action Type ID not 1), 0x0115 (Transaction UID or Referenced SOP Sequence missing or
    malformed), 0x0110 (the request could not be queued).
    """
    request = cast(N_ACTION, event.request)
    assoc = event.assoc
    calling_ae = str(assoc.requestor.ae_title).strip()
    peer = f"{assoc.requestor.address}:{assoc.requestor.port}"
    if str(request.RequestedSOPClassUID) != StorageCommitmentPushModel:
        return _refuse(N_CLASS_INSTANCE_CONFLICT, "not the Storage Commitment Push Model class", calling_ae)
    if str(request.RequestedSOPInstanceUID) != StorageCommitmentPushModelInstance:
        return _refuse(N_NO_SUCH_SOP_INSTANCE, f"use instance {StorageCommitmentPushModelInstance}", calling_ae)
    if event.action_type != REQUEST_STORAGE_COMMITMENT:
        return _refuse(N_NO_SUCH_ACTION_TYPE, f"Action Type ID {event.action_type} unknown; only 1", calling_ae)
    try:
        transaction_uid, references = _parse_action_information(event.action_information)
    except ValueError as exc:
        return _refuse(N_INVALID_ARGUMENT, str(exc), calling_ae)
    except Exception as exc:  # pydicom decodes lazily: a corrupt dataset fails on first access
        return _refuse(N_INVALID_ARGUMENT, f"undecodable Action Information ({type(exc).__name__})", calling_ae)

    live = LIVE.register(assoc, cast(int, request.MessageID))
    payload = {
        "transaction_uid": transaction_uid,
        "references": [list(ref) for ref in references],
        "calling_ae": calling_ae,
        "peer": peer,
        "association": live.id,
        "received_at": time.time(),
    }
    try:
        pk = archive.jobs.enqueue(CHECK_JOB, payload)
    except Exception as exc:
        log.exception("storage commitment request %s from %s could not be queued", transaction_uid, calling_ae)
        return status_dataset(N_PROCESSING_FAILURE, f"cannot queue the request: {type(exc).__name__}"), None
    if archive.settings.remote_ae(calling_ae) is None:
        log.warning(
            "storage commitment request %s from %s: no [[dicom.remote]] for this AE title, so the report "
            "can only go on this association while it stays open",
            transaction_uid,
            calling_ae,
        )
    log.info(
        "storage commitment request %s received: %d reference(s) from %s at %s (job %d)",
        transaction_uid,
        len(references),
        calling_ae,
        peer,
        pk,
    )
    return SUCCESS, None


def _refuse(status: int, reason: str, calling_ae: str) -> tuple[Dataset, None]:
    log.warning("storage commitment N-ACTION from %s refused (0x%04X): %s", calling_ae, status, reason)
    return status_dataset(status, reason), None


def _parse_action_information(info: Dataset | None) -> tuple[str, list[Reference]]:
    """Transaction UID and references of PS3.4 Table J.3-1; ValueError names what is wrong."""
    if info is None:
        raise ValueError("no Action Information")
    transaction_uid = str(info.get("TransactionUID", "") or "").strip()
    references: list[Reference] = []
    for n, item in enumerate(info.get("ReferencedSOPSequence") or [], start=1):
        sop_class = str(item.get("ReferencedSOPClassUID", "") or "").strip()
        sop_instance = str(item.get("ReferencedSOPInstanceUID", "") or "").strip()
        if not sop_class or not sop_instance:
            raise ValueError(f"Referenced SOP Sequence item {n} lacks a SOP Class or Instance UID")
        references.append(Reference(sop_class, sop_instance))
    if not transaction_uid:
        raise ValueError("Transaction UID (0008,1195) missing")
    if len(transaction_uid) > 64:
        raise ValueError("Transaction UID (0008,1195) longer than 64 characters")
    if not references:
        raise ValueError("Referenced SOP Sequence (0008,1199) missing or empty")
    return transaction_uid, references


def event_report(transaction_uid: str, result: CommitmentResult, retrieve_ae: str) -> tuple[int, Dataset]:
    """Event Type ID and Event Information of the N-EVENT-REPORT (PS3.4 Table J.3-2)."""
    ds = Dataset()
    ds.TransactionUID = transaction_uid
    ds.RetrieveAETitle = retrieve_ae
    if result.committed:
        ds.ReferencedSOPSequence = [_item(ref) for ref in result.committed]
    if result.failed:
        ds.FailedSOPSequence = [_item(ref, FAILURE_REASONS[reason]) for ref, reason in result.failed]
    return (EVENT_FAILURES_EXIST if result.failed else EVENT_ALL_COMMITTED), ds


def _item(ref: Reference, failure_reason: int | None = None) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = ref.sop_class_uid
    item.ReferencedSOPInstanceUID = ref.sop_instance_uid
    if failure_reason is not None:
        item.FailureReason = failure_reason
    return item


def job_handlers(archive: Archive, dicom_server: Any) -> dict[str, JobHandler]:
    """Durable job kinds this service runs (kind -> handler)."""
    return {
        CHECK_JOB: lambda job: run_check(archive, job),
        REPORT_JOB: lambda job: run_report(archive, job),
    }


def run_check(archive: Archive, job: Job) -> JobResult:
    """Check the references and queue the report with the result (fixed from then on).

    The result is computed once, so retries of an undeliverable report do not re-read every
    blob. If the process dies between queueing the report and settling this job, the check runs
    again and the requester may get the report twice (same Transaction UID).
    """
    payload = job.payload
    references = [Reference(*ref) for ref in payload["references"]]
    result = check_commitment(archive, references)
    report = {
        **{key: payload[key] for key in ("transaction_uid", "calling_ae", "peer", "association", "received_at")},
        "committed": [list(ref) for ref in result.committed],
        "failed": [[*ref, reason.value] for ref, reason in result.failed],
    }
    archive.jobs.enqueue(REPORT_JOB, report)
    uid = payload["transaction_uid"]
    log.info("storage commitment %s checked: %d committed, %d failed", uid, len(result.committed), len(result.failed))
    return Done()


def run_report(archive: Archive, job: Job) -> JobResult:
    """Deliver the N-EVENT-REPORT: same association if possible, else a new one (PS3.4 J.3.3)."""
    payload = job.payload
    transaction_uid = payload["transaction_uid"]
    calling_ae = payload["calling_ae"]
    result = CommitmentResult(
        committed=[Reference(*ref) for ref in payload["committed"]],
        failed=[(Reference(cls, inst), CommitFailure(reason)) for cls, inst, reason in payload["failed"]],
    )
    event_type, info = event_report(transaction_uid, result, archive.settings.dicom.ae_title)

    route: str | None = None
    live = LIVE.get(payload.get("association"))
    if live is not None:
        remaining = payload["received_at"] + SAME_ASSOCIATION_GRACE - time.time()
        if remaining > 0:
            live.closed.wait(remaining)
        if _send_on_same(live, event_type, info, transaction_uid):
            route = f"the same association (from {payload['peer']})"
    if route is None:
        outcome = _send_on_new(archive, calling_ae, event_type, info)
        if isinstance(outcome, Retry):
            return outcome
        route = outcome

    log.info(
        "storage commitment report %s sent to %s: event type %d, %d committed, %d failed, on %s",
        transaction_uid,
        calling_ae,
        event_type,
        len(result.committed),
        len(result.failed),
        route,
    )
    archive.bus.emit(CommitmentReported(transaction_uid, len(result.committed), len(result.failed), calling_ae))
    return Done()


def _send_on_same(live: _LiveAssociation, event_type: int, info: Dataset, transaction_uid: str) -> bool:
    """Send the report on the N-ACTION's association if it is open and idle; True once answered success.

    pynetdicom 3.0.4 lets other threads of an acceptor call `send_*`, pausing the reactor for it,
    but (1) the pause does not wait for a running handler (the reactor counts as paused while a
    handler runs, so that handlers may send), which would interleave our message with the
    handler's responses; (2) `send_n_event_report` takes the next DIMSE message as its response,
    whatever it is, so a request the peer sends meanwhile would be swallowed and never answered;
    (3) it waits the whole DIMSE timeout if the peer asks to release meanwhile (pynetdicom and
    others ignore P-DATA once they sent A-RELEASE-RQ). Hence the reactor is paused first
    (pynetdicom's own `_reactor_checkpoint` / `_is_paused` protocol: private, but unchanged since
    pynetdicom 1.5), the report is sent only if no request is in progress or queued, the
    association was quiet and no A-RELEASE/A-ABORT is waiting, and `_exchange` waits for the
    response to our Message ID only. The Note to PS3.4 J.3.3.1.2 expects that the same
    association may fail; the caller then uses a new one.
    """
    assoc = live.assoc
    checkpoint: threading.Event | None = getattr(assoc, "_reactor_checkpoint", None)
    if checkpoint is None or not hasattr(assoc, "_is_paused"):
        return False
    with live.send_lock:
        if not assoc.is_established or not live.idle():
            log.info("storage commitment report %s: its association is busy or closing", transaction_uid)
            return False
        checkpoint.clear()
        try:
            deadline = time.monotonic() + 2.0
            while not assoc._is_paused:
                if time.monotonic() > deadline or not assoc.is_established:
                    return False
                time.sleep(0.0005)
            if not (live.idle() and assoc.dimse.msg_queue.empty() and assoc.dul.peek_next_pdu() is None):
                return False
            code = _exchange(live, checkpoint, event_type, info)
        except Exception:
            log.exception("storage commitment report %s: sending on the same association failed", transaction_uid)
            return False
        finally:
            checkpoint.set()
    if code == SUCCESS:
        return True
    log.warning(
        "storage commitment report %s: the same association answered %s; trying a new association",
        transaction_uid,
        "nothing" if code is None else f"0x{code:04X}",
    )
    return False


def _exchange(live: _LiveAssociation, checkpoint: threading.Event, event_type: int, info: Dataset) -> int | None:
    """Send an N-EVENT-REPORT-RQ on the paused association; the status of its response, or None.

    Like `Association.send_n_event_report`, but the response is recognised by its Message ID
    Being Responded To (PS3.7 9.3.4.2). While the reactor is paused, our response is taken from
    the DIMSE queue. If anything else comes first (the peer sent a request that crossed ours, or
    it asks to release or aborts), that is left to the reactor, which is resumed, and the
    response is then caught by the EVT_DIMSE_RECV hook (the reactor drops it afterwards with a
    pynetdicom warning). No response within the DIMSE timeout aborts the association, as
    pynetdicom does.
    """
    assoc = live.assoc
    context = next(cx for cx in assoc.accepted_contexts if cx.abstract_syntax == StorageCommitmentPushModel)
    syntax = context.transfer_syntax[0]
    encoded = encode(info, syntax.is_implicit_VR, syntax.is_little_endian, syntax.is_deflated)
    if encoded is None:
        raise ValueError("cannot encode the Event Information")
    live.message_id = live.message_id % 0xFFFF + 1
    request = N_EVENT_REPORT()
    request.MessageID = live.message_id
    request.AffectedSOPClassUID = StorageCommitmentPushModel
    request.AffectedSOPInstanceUID = StorageCommitmentPushModelInstance
    request.EventTypeID = event_type
    request.EventInformation = BytesIO(encoded)
    answer = live.answers[live.message_id] = _Answer()
    deadline = time.monotonic() + (assoc.dimse_timeout or 60.0)
    try:
        assoc.dimse.send_msg(request, cast(int, context.context_id))
        while time.monotonic() < deadline and not checkpoint.is_set():
            if not assoc.is_established or assoc.dul.peek_next_pdu() is not None:
                checkpoint.set()  # A-RELEASE-RQ or A-ABORT: the reactor handles it
                break
            try:
                item = assoc.dimse.msg_queue.get(timeout=0.05)
            except queue.Empty:
                continue
            message = item[1]
            if isinstance(message, N_EVENT_REPORT) and message.MessageIDBeingRespondedTo == request.MessageID:
                return cast(int | None, message.Status)
            assoc.dimse.msg_queue.put(item)  # a crossing request: for the reactor
            checkpoint.set()
        while time.monotonic() < deadline and assoc.is_established and not answer.arrived.wait(0.05):
            pass
        if answer.arrived.is_set():
            return answer.status
        if assoc.is_established:
            log.error("no N-EVENT-REPORT response within the DIMSE timeout; aborting the association")
            assoc.abort()
        return None
    finally:
        live.answers.pop(request.MessageID, None)


def _send_on_new(archive: Archive, calling_ae: str, event_type: int, info: Dataset) -> str | Retry:
    """Send the report on a new association to the requester; a description of it, or Retry."""
    remote = archive.settings.remote_ae(calling_ae)
    if remote is None:
        return Retry(
            f"no [[dicom.remote]] with AE title {calling_ae!r}: add its host and port so the storage "
            "commitment report can be delivered"
        )
    where = f"{remote.ae_title}@{remote.host}:{remote.port}"
    ae = network.outbound_ae(archive)
    ae.add_requested_context(StorageCommitmentPushModel, _TRANSFER_SYNTAXES)
    # Note to PS3.4 J.3.3.1.2: the association requester here is the Storage Commitment SCP, so it
    # proposes the SCP role (SCU role 0, SCP role 1) by SCP/SCU Role Selection (PS3.7 D.3.3.4).
    role = build_role(StorageCommitmentPushModel, scp_role=True)
    assoc = ae.associate(
        remote.host,
        remote.port,
        ae_title=remote.ae_title,
        ext_neg=[role],
        evt_handlers=network.CONNECTION_HANDLERS,
        tls_args=network.tls_args(archive, remote),
    )
    if not assoc.is_established:
        return Retry(f"storage commitment report: {where} {network.why_not_established(assoc, remote)}")
    try:
        accepted = [cx for cx in assoc.accepted_contexts if cx.abstract_syntax == StorageCommitmentPushModel]
        if not accepted:
            return Retry(f"storage commitment report: {where} refused the Storage Commitment Push Model context")
        if not accepted[0].as_scp:
            log.info("%s did not accept Pergamon in the SCP role; sending the report anyway", where)
        status, _reply = assoc.send_n_event_report(
            info, event_type, StorageCommitmentPushModel, StorageCommitmentPushModelInstance
        )
    finally:
        if assoc.is_established:
            assoc.release()
    code = getattr(status, "Status", None)
    if code != SUCCESS:
        answer = "no answer" if code is None else f"status 0x{int(code):04X}"
        return Retry(f"storage commitment report: {where} answered the N-EVENT-REPORT with {answer}")
    return f"a new association to {where}"
