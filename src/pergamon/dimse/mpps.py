"""MPPS and GP-PPS SCP (N-CREATE / N-SET), MPPS forwarding and IAN as SCU (PS3.4 F.7, F.10, R).

IHE RAD-6/7 and RAD-20/21 (and CARD-1) arrive as MPPS N-CREATE/N-SET, RAD-42 as GP-PPS, whose SOP
class is retired and unknown to pynetdicom 3.0.4: it is registered here, at import, with
pynetdicom's `register_uid` under `ProcedureStepServiceClass`, so its N-CREATE/N-SET reach the same
handlers (an unregistered class would get the base `ServiceClass`, which serves no N-service).
pynetdicom binds one handler per event whatever the SOP class, so `handle_n_create` and
`handle_n_set` dispatch on the request's SOP Class UID.

The state machine and the merge rules are in `archive.mpps`; a success status is sent only after
the step, its message log and its forwarding jobs are committed. Two jobs leave the process:

* ``mpps-forward`` replays, on a new association to a `workflow.mpps_forward` peer, every
  N-CREATE/N-SET of one MPPS that peer has not acknowledged yet, unchanged and with the same SOP
  Instance UID (IHE PPS Manager);
* ``ian-send`` sends one Instance Availability Notification N-CREATE (RAD-49, `archive.ian`).

An unreachable peer, or no answer, makes the job retry with backoff; a peer that answers with a
failure status fails the job (shown in `/api/jobs`, where an operator can retry it). An N-CREATE
answered 0111H "Duplicate SOP Instance" counts as delivered: an earlier attempt got through but
its answer was lost.
"""

from __future__ import annotations

import logging
from typing import cast

from pydicom import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid
from pynetdicom import register_uid
from pynetdicom.association import Association
from pynetdicom.dimse_primitives import N_CREATE, N_SET
from pynetdicom.events import Event
from pynetdicom.service_class_n import ProcedureStepServiceClass
from pynetdicom.status import code_to_category

from pergamon.archive import errors, ian, mpps
from pergamon.archive.jobs import Done, Failed, Job, JobHandler, JobResult, Retry
from pergamon.archive.service import Archive
from pergamon.dimse import network
from pergamon.dimse.status import (
    N_CLASS_INSTANCE_CONFLICT,
    N_DUPLICATE_SOP_INSTANCE,
    N_INVALID_ATTRIBUTE_VALUE,
    N_MISSING_ATTRIBUTE,
    N_NO_SUCH_SOP_CLASS,
    N_NO_SUCH_SOP_INSTANCE,
    N_PROCESSING_FAILURE,
    PPS_NO_LONGER_UPDATABLE_ERROR_ID,
    SUCCESS,
    status_dataset,
    status_for,
)

log = logging.getLogger(__name__)

register_uid(mpps.GPPPS_CLASS, "GeneralPurposePerformedProcedureStep", ProcedureStepServiceClass)

PPS_CLASSES = (mpps.MPPS_CLASS, mpps.GPPPS_CLASS)
_TRANSFER_SYNTAXES = [ExplicitVRLittleEndian, ImplicitVRLittleEndian]

PPS_ERRORS: dict[type[errors.PergamonError], int] = {
    mpps.MissingStatus: N_MISSING_ATTRIBUTE,
    mpps.InvalidStatus: N_INVALID_ATTRIBUTE_VALUE,
    mpps.DuplicateStep: N_DUPLICATE_SOP_INSTANCE,
    mpps.NoSuchStep: N_NO_SUCH_SOP_INSTANCE,
    mpps.ClassInstanceConflict: N_CLASS_INSTANCE_CONFLICT,
    mpps.NoLongerUpdatable: N_PROCESSING_FAILURE,
}


def handle_n_create(event: Event, archive: Archive) -> tuple[int | Dataset, Dataset | None]:
    """N-CREATE of an MPPS or GP-PPS (PS3.4 F.7.2.1): store it IN PROGRESS, queue its forwarding.

    Failures: 0118H (another SOP class), 0120H (no status), 0106H (status not IN PROGRESS),
    0111H (the SOP Instance UID exists), 0110H (the dataset cannot be decoded or stored).
    """
    request = cast(N_CREATE, event.request)
    sop_class = str(request.AffectedSOPClassUID or "")
    if sop_class not in PPS_CLASSES:
        return status_dataset(N_NO_SUCH_SOP_CLASS, f"N-CREATE not supported for {sop_class}"), None
    given = request.AffectedSOPInstanceUID
    # PS3.7 10.1.5.1.4: when the SCU leaves the SOP Instance UID out, the SCP assigns it.
    sop_uid = str(given) if given else generate_uid()
    calling_ae = str(event.assoc.requestor.ae_title).strip()
    try:
        attributes = event.attribute_list
        step = mpps.create(archive, sop_class, sop_uid, attributes, calling_ae)
    except errors.PergamonError as exc:
        log.warning("N-CREATE %s from %s refused: %s", sop_uid, calling_ae, exc)
        return status_dataset(status_for(exc, PPS_ERRORS, N_PROCESSING_FAILURE), str(exc)), None
    except Exception as exc:  # undecodable attribute list, database down: nothing was stored
        log.exception("N-CREATE %s from %s failed", sop_uid, calling_ae)
        return status_dataset(N_PROCESSING_FAILURE, f"{type(exc).__name__}: {exc}"), None
    log.info("%s %s created by %s: %s", _name(sop_class), sop_uid, calling_ae, step.status)
    if given:
        return SUCCESS, None
    reply = Dataset()
    reply.AffectedSOPInstanceUID = sop_uid
    return SUCCESS, reply


def handle_n_set(event: Event, archive: Archive) -> tuple[int | Dataset, Dataset | None]:
    """N-SET of an MPPS or GP-PPS (PS3.4 F.7.2.2): merge it while the step is IN PROGRESS.

    Failures: 0118H (another SOP class), 0112H (unknown step), 0119H (the step is of the other
    PPS class), 0106H (a status other than IN PROGRESS, COMPLETED, DISCONTINUED), 0110H with Error
    Comment "Performed Procedure Step Object may no longer be updated" and Error ID A710H (the
    step is COMPLETED or DISCONTINUED: PS3.4 F.7.2.2.3-4), 0110H (cannot decode or store).
    """
    request = cast(N_SET, event.request)
    sop_class = str(request.RequestedSOPClassUID or "")
    if sop_class not in PPS_CLASSES:
        return status_dataset(N_NO_SUCH_SOP_CLASS, f"N-SET not supported for {sop_class}"), None
    sop_uid = str(request.RequestedSOPInstanceUID or "")
    calling_ae = str(event.assoc.requestor.ae_title).strip()
    try:
        modifications = event.modification_list
        step = mpps.update(archive, sop_class, sop_uid, modifications, calling_ae)
    except mpps.NoLongerUpdatable as exc:
        log.warning("N-SET %s from %s refused: %s", sop_uid, calling_ae, exc)
        status = status_dataset(N_PROCESSING_FAILURE, mpps.NO_LONGER_UPDATABLE)
        status.ErrorID = PPS_NO_LONGER_UPDATABLE_ERROR_ID
        return status, None
    except errors.PergamonError as exc:
        log.warning("N-SET %s from %s refused: %s", sop_uid, calling_ae, exc)
        return status_dataset(status_for(exc, PPS_ERRORS, N_PROCESSING_FAILURE), str(exc)), None
    except Exception as exc:
        log.exception("N-SET %s from %s failed", sop_uid, calling_ae)
        return status_dataset(N_PROCESSING_FAILURE, f"{type(exc).__name__}: {exc}"), None
    log.info("%s %s set by %s: %s", _name(sop_class), sop_uid, calling_ae, step.status)
    return SUCCESS, None


def job_handlers(archive: Archive) -> dict[str, JobHandler]:
    """The job kinds this module runs, for the JobRunner."""
    return {
        mpps.FORWARD_JOB: lambda job: run_forward(archive, job),
        ian.IAN_JOB: lambda job: run_ian(archive, job),
    }


def run_forward(archive: Archive, job: Job) -> JobResult:
    """Replay the MPPS messages the destination has not acknowledged, in order, on one association."""
    sop_uid, destination = job.payload["sop_uid"], job.payload["destination"]
    try:
        sop_class, pending = mpps.undelivered(archive, sop_uid, destination)
    except mpps.NoSuchStep:
        return Failed(f"MPPS {sop_uid} no longer exists")
    if not pending:
        return Done()  # an earlier job for this step delivered this message too
    opened = _associate(archive, destination, sop_class, "MPPS forwarding")
    if isinstance(opened, Retry):
        return opened
    assoc, where = opened
    try:
        for message in pending:
            what = f"{message.operation} #{message.seq} of MPPS {sop_uid}"
            if message.operation == mpps.N_CREATE:
                status, _reply = assoc.send_n_create(message.dataset(), sop_class, sop_uid)
            else:
                status, _reply = assoc.send_n_set(message.dataset(), sop_class, sop_uid)
            outcome = _outcome(status, where, what, created=message.operation == mpps.N_CREATE)
            if outcome is not None:
                return outcome
            mpps.mark_delivered(archive, sop_uid, destination, message.seq)
            log.info("forwarded %s to %s", what, where)
    finally:
        if assoc.is_established:
            assoc.release()
    return Done()


def run_ian(archive: Archive, job: Job) -> JobResult:
    """Send one Instance Availability Notification N-CREATE (PS3.4 R.2; IHE RAD-49)."""
    payload = job.payload
    opened = _associate(archive, payload["destination"], ian.IAN_CLASS, "Instance Availability Notification")
    if isinstance(opened, Retry):
        return opened
    assoc, where = opened
    what = f"IAN {payload['sop_uid']} (MPPS {payload['pps_uid']})"
    try:
        status, _reply = assoc.send_n_create(Dataset.from_json(payload["attrs"]), ian.IAN_CLASS, payload["sop_uid"])
        outcome = _outcome(status, where, what, created=True)
    finally:
        if assoc.is_established:
            assoc.release()
    if outcome is not None:
        return outcome
    log.info("sent %s to %s", what, where)
    return Done()


def _outcome(status: Dataset, where: str, what: str, *, created: bool) -> JobResult | None:
    """None when the peer accepted the message, else the job's result."""
    code = getattr(status, "Status", None)
    if code is None:
        return Retry(f"{where} did not answer {what} (timeout or association lost)")
    code = int(code)
    if code_to_category(code) in ("Success", "Warning"):
        return None
    if created and code == N_DUPLICATE_SOP_INSTANCE:
        log.info("%s already holds %s (an earlier answer was lost)", where, what)
        return None
    comment = str(status.get("ErrorComment", "") or "")
    return Failed(f"{where} refused {what} with status 0x{code:04X} {comment}".strip())


def _associate(archive: Archive, destination: str, sop_class: str, purpose: str) -> tuple[Association, str] | Retry:
    """A new association to a configured peer offering `sop_class`, or a Retry saying why not."""
    remote = archive.settings.remote_ae(destination)
    if remote is None:
        return Retry(f"{purpose}: no [[dicom.remote]] with AE title {destination!r}")
    where = f"{remote.ae_title}@{remote.host}:{remote.port}"
    ae = network.outbound_ae(archive)
    ae.add_requested_context(sop_class, _TRANSFER_SYNTAXES)
    assoc = ae.associate(
        remote.host,
        remote.port,
        ae_title=remote.ae_title,
        evt_handlers=network.CONNECTION_HANDLERS,
        tls_args=network.tls_args(archive, remote),
    )
    if not assoc.is_established:
        return Retry(f"{purpose}: {where} {network.why_not_established(assoc, remote)}")
    if not any(cx.abstract_syntax == sop_class for cx in assoc.accepted_contexts):
        assoc.release()
        return Retry(f"{purpose}: {where} refused the {_name(sop_class)} presentation context")
    return assoc, where


def _name(sop_class: str) -> str:
    return {mpps.MPPS_CLASS: "MPPS", mpps.GPPPS_CLASS: "GP-PPS", ian.IAN_CLASS: "IAN"}.get(sop_class, sop_class)
