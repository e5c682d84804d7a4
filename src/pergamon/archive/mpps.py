"""Performed Procedure Steps, protocol-free: MPPS (PS3.4 F.7) and GP-PPS (PS3.4 F.10, retired) state.

The state machine of PS3.4 F.7.2.1.3 and F.7.2.2.3 (the same rules are applied to GP-PPS, whose
General Purpose Performed Procedure Step Status takes the same values):

* a step is created (N-CREATE) only with the status IN PROGRESS; another value is refused
  (`InvalidStatus`, 0106H "Invalid attribute value"), an existing SOP Instance UID too
  (`DuplicateStep`, 0111H);
* it is updated (N-SET) only while IN PROGRESS (else `NoLongerUpdatable`, 0110H "Processing
  failure" with the specific Error Comment of F.7.2.2.4), to IN PROGRESS, COMPLETED or
  DISCONTINUED, which are final. Each attribute of the Modification List replaces the current
  one, a sequence as a whole (PS3.7 10.1.3); the Specific Character Set is combined, not replaced
  (F.7.2.2.3): values are kept decoded, as DICOM JSON, and ISO_IR 192 is recorded when they differ.

Every N-CREATE/N-SET received is also kept as it came, numbered, so that forwarding to the
`workflow.mpps_forward` destinations (IHE PPS Manager, RAD-6/7/20/21) replays exactly what the
modality sent, with the same SOP Instance UID, in order: one `FORWARD_JOB` per message and
destination is queued in the transaction that stores the message, and any of them delivers
everything the destination has not acknowledged yet (`undelivered` / `mark_delivered`).

A refused request changes nothing. `ProcedureStepReceived` is emitted after each commit (IAN,
`archive.ian`, waits for it).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydicom import Dataset
from sqlalchemy import Connection, delete, func, insert, select
from sqlalchemy import update as sql_update
from sqlalchemy.exc import IntegrityError

from pergamon.archive import errors
from pergamon.archive.index.schema import performed_procedure_step as pps
from pergamon.archive.index.schema import pps_forward, pps_message, pps_reference

if TYPE_CHECKING:
    from pergamon.archive.service import Archive

MPPS_CLASS = "1.2.840.10008.3.1.2.3.3"
"""Modality Performed Procedure Step SOP Class (PS3.4 F.7)."""
GPPPS_CLASS = "1.2.840.10008.5.1.4.32.3"
"""General Purpose Performed Procedure Step SOP Class (PS3.4 F.10, retired; IHE RAD-42)."""

STATUS_KEYWORDS = {
    MPPS_CLASS: "PerformedProcedureStepStatus",  # (0040,0252)
    GPPPS_CLASS: "GeneralPurposePerformedProcedureStepStatus",  # (0040,4002)
}

IN_PROGRESS = "IN PROGRESS"
COMPLETED = "COMPLETED"
DISCONTINUED = "DISCONTINUED"
FINAL_STATES = (COMPLETED, DISCONTINUED)
STATES = (IN_PROGRESS, *FINAL_STATES)

N_CREATE = "N-CREATE"
N_SET = "N-SET"

FORWARD_JOB = "mpps-forward"
"""Job kind: bring one destination up to date with one MPPS (payload: sop_uid, destination)."""

NO_LONGER_UPDATABLE = "Performed Procedure Step Object may no longer be updated"
"""The specific Error Comment of PS3.4 F.7.2.2.4 for an N-SET on a step that is not IN PROGRESS."""


class MissingStatus(errors.Invalid):
    """The N-CREATE has no Performed Procedure Step Status (0120H "Missing attribute")."""

    code = "missing-attribute"


class InvalidStatus(errors.Invalid):
    """The status is not one a create or update allows (0106H "Invalid attribute value")."""

    code = "invalid-attribute-value"


class DuplicateStep(errors.Conflict):
    """A step with this SOP Instance UID exists (0111H "Duplicate SOP Instance")."""

    code = "duplicate-sop-instance"


class NoSuchStep(errors.NotFound):
    """No step has this SOP Instance UID (0112H "No such object instance")."""

    code = "no-such-object-instance"


class ClassInstanceConflict(errors.Conflict):
    """The step exists under the other PPS SOP class (0119H "Class-instance conflict")."""

    code = "class-instance-conflict"


class NoLongerUpdatable(errors.Conflict):
    """The step is COMPLETED or DISCONTINUED (0110H with `NO_LONGER_UPDATABLE`, PS3.4 F.7.2.2.3)."""

    code = "no-longer-updatable"


@dataclass(frozen=True)
class ProcedureStepReceived:
    """An N-CREATE or N-SET of a performed procedure step was committed."""

    name = "procedure-step-received"
    sop_uid: str
    sop_class_uid: str
    operation: str
    status: str
    calling_ae: str


@dataclass(frozen=True)
class ProcedureStep:
    """One performed procedure step: its current attributes (DICOM JSON) and bookkeeping."""

    pk: int
    sop_uid: str
    sop_class_uid: str
    status: str
    patient_id: str | None
    issuer: str | None
    study_uid: str | None
    calling_ae: str
    attrs: dict[str, Any]
    last_seq: int
    created_at: float
    updated_at: float
    ian_queued_at: float | None

    @property
    def is_final(self) -> bool:
        return self.status in FINAL_STATES

    def dataset(self) -> Dataset:
        return Dataset.from_json(self.attrs)


@dataclass(frozen=True)
class Message:
    """One N-CREATE or N-SET as received: its number, operation and attribute / modification list."""

    seq: int
    operation: str
    attrs: dict[str, Any]

    def dataset(self) -> Dataset:
        return Dataset.from_json(self.attrs)


def create(
    archive: Archive, sop_class_uid: str, sop_uid: str, attributes: Dataset, calling_ae: str = ""
) -> ProcedureStep:
    """N-CREATE: record a new step IN PROGRESS and queue its forwarding (PS3.4 F.7.2.1.3).

    Raises:
        ValueError: `sop_class_uid` is neither MPPS nor GP-PPS (a door bug).
        MissingStatus, InvalidStatus, DuplicateStep: the request is refused; nothing is stored.
    """
    keyword = _status_keyword(sop_class_uid)
    if keyword not in attributes:
        raise MissingStatus(f"{keyword} is required in the N-CREATE")
    status = str(attributes.get(keyword) or "").strip()
    if status != IN_PROGRESS:
        raise InvalidStatus(f"{keyword} must be {IN_PROGRESS!r} in the N-CREATE, not {status!r}")
    attrs = _to_json(attributes)
    now = time.time()
    destinations = _destinations(archive, sop_class_uid)
    try:
        with archive.db.write() as conn:
            if conn.execute(select(pps.c.pk).where(pps.c.sop_uid == sop_uid)).first() is not None:
                raise DuplicateStep(f"performed procedure step {sop_uid} exists already")
            pk = int(
                conn.execute(
                    insert(pps).values(
                        sop_uid=sop_uid,
                        sop_class_uid=sop_class_uid,
                        status=status,
                        patient_id=_text(attributes, "PatientID"),
                        issuer=_text(attributes, "IssuerOfPatientID"),
                        study_uid=_study_uid(attributes),
                        calling_ae=calling_ae,
                        attrs=json.dumps(attrs),
                        last_seq=1,
                        created_at=now,
                        updated_at=now,
                    )
                ).inserted_primary_key[0]
            )
            _record_message(conn, archive, pk, 1, N_CREATE, attrs, calling_ae, now, sop_uid, destinations)
            if sop_class_uid == MPPS_CLASS:
                _replace_references(conn, pk, attributes)
    except IntegrityError:  # created concurrently by another request or node
        raise DuplicateStep(f"performed procedure step {sop_uid} exists already") from None
    if destinations:
        archive.jobs.wake()
    archive.bus.emit(ProcedureStepReceived(sop_uid, sop_class_uid, N_CREATE, status, calling_ae))
    return get(archive, sop_uid)


def update(
    archive: Archive, sop_class_uid: str, sop_uid: str, modifications: Dataset, calling_ae: str = ""
) -> ProcedureStep:
    """N-SET: merge the Modification List into a step that is IN PROGRESS (PS3.4 F.7.2.2.3).

    Raises:
        ValueError: `sop_class_uid` is neither MPPS nor GP-PPS (a door bug).
        NoSuchStep, ClassInstanceConflict, NoLongerUpdatable, InvalidStatus: the request is
            refused; nothing changes.
    """
    keyword = _status_keyword(sop_class_uid)
    new_status: str | None = None
    if keyword in modifications:
        new_status = str(modifications.get(keyword) or "").strip()
        if new_status not in STATES:
            raise InvalidStatus(f"{keyword} must be one of {', '.join(STATES)}, not {new_status!r}")
    changes = _to_json(modifications)
    now = time.time()
    destinations = _destinations(archive, sop_class_uid)
    with archive.db.write() as conn:
        query = select(pps).where(pps.c.sop_uid == sop_uid)
        if not archive.db.is_sqlite:
            query = query.with_for_update()
        row = conn.execute(query).first()
        if row is None:
            raise NoSuchStep(f"no performed procedure step {sop_uid}")
        if row.sop_class_uid != sop_class_uid:
            raise ClassInstanceConflict(f"{sop_uid} is a step of SOP class {row.sop_class_uid}, not {sop_class_uid}")
        if row.status != IN_PROGRESS:
            raise NoLongerUpdatable(f"{NO_LONGER_UPDATABLE}: {sop_uid} is {row.status}")
        merged = merge(json.loads(row.attrs), changes)
        dataset = Dataset.from_json(merged)
        status = new_status or row.status
        seq = int(row.last_seq) + 1
        # The patient columns follow reconciliation (archive.patients); only a new Patient ID replaces them.
        patient_values = (
            {"patient_id": _text(dataset, "PatientID"), "issuer": _text(dataset, "IssuerOfPatientID")}
            if "PatientID" in modifications or "IssuerOfPatientID" in modifications
            else {}
        )
        conn.execute(
            sql_update(pps)
            .where(pps.c.pk == row.pk)
            .values(
                status=status,
                **patient_values,
                study_uid=_study_uid(dataset),
                attrs=json.dumps(merged),
                last_seq=seq,
                updated_at=now,
            )
        )
        _record_message(conn, archive, row.pk, seq, N_SET, changes, calling_ae, now, sop_uid, destinations)
        if sop_class_uid == MPPS_CLASS:
            _replace_references(conn, row.pk, dataset)
    if destinations:
        archive.jobs.wake()
    archive.bus.emit(ProcedureStepReceived(sop_uid, sop_class_uid, N_SET, status, calling_ae))
    return get(archive, sop_uid)


def merge(current: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """The attributes after an N-SET: each changed attribute replaced whole (DICOM JSON in, out).

    Specific Character Set (0008,0005) is combined rather than replaced (PS3.4 F.7.2.2.3): the
    values here are decoded text, so when the two differ the result is declared as UTF-8.
    """
    merged = {**current, **changes}
    charset = "00080005"
    if charset in current and charset in changes and current[charset] != changes[charset]:
        merged[charset] = {"vr": "CS", "Value": ["ISO_IR 192"]}
    return dict(sorted(merged.items()))


def get(archive: Archive, sop_uid: str) -> ProcedureStep:
    """The step with this SOP Instance UID.

    Raises:
        NoSuchStep: there is none.
    """
    with archive.db.read() as conn:
        row = conn.execute(select(pps).where(pps.c.sop_uid == sop_uid)).first()
    if row is None:
        raise NoSuchStep(f"no performed procedure step {sop_uid}")
    return _step(row)


def search(
    archive: Archive, *, status: str | None = None, sop_class_uid: str | None = None, limit: int = 100, offset: int = 0
) -> tuple[list[ProcedureStep], int]:
    """Steps, newest first, optionally of one status and SOP class; and how many match in all."""
    query = select(pps)
    counting = select(func.count()).select_from(pps)
    if status:
        query, counting = query.where(pps.c.status == status), counting.where(pps.c.status == status)
    if sop_class_uid:
        query = query.where(pps.c.sop_class_uid == sop_class_uid)
        counting = counting.where(pps.c.sop_class_uid == sop_class_uid)
    with archive.db.read() as conn:
        total = int(conn.execute(counting).scalar_one())
        rows = conn.execute(query.order_by(pps.c.created_at.desc(), pps.c.pk.desc()).limit(limit).offset(offset))
        return [_step(row) for row in rows], total


def forwarding(archive: Archive, sop_uid: str) -> dict[str, int]:
    """How many messages of the step each forwarding destination has acknowledged."""
    with archive.db.read() as conn:
        rows = conn.execute(
            select(pps_forward.c.destination, pps_forward.c.delivered_seq)
            .join(pps, pps.c.pk == pps_forward.c.pps_fk)
            .where(pps.c.sop_uid == sop_uid)
            .order_by(pps_forward.c.destination)
        )
        return {row.destination: int(row.delivered_seq) for row in rows}


def references(archive: Archive, sop_uid: str) -> list[tuple[str, str, str]]:
    """(Series Instance UID, SOP Class UID, SOP Instance UID) of the instances the step references."""
    with archive.db.read() as conn:
        rows = conn.execute(
            select(pps_reference.c.series_uid, pps_reference.c.sop_class_uid, pps_reference.c.sop_uid)
            .join(pps, pps.c.pk == pps_reference.c.pps_fk)
            .where(pps.c.sop_uid == sop_uid)
            .order_by(pps_reference.c.pk)
        )
        return [(row.series_uid, row.sop_class_uid, row.sop_uid) for row in rows]


def undelivered(archive: Archive, sop_uid: str, destination: str) -> tuple[str, list[Message]]:
    """The step's SOP class and the messages `destination` has not acknowledged yet, in order.

    Raises:
        NoSuchStep: the step is gone.
    """
    with archive.db.read() as conn:
        row = conn.execute(select(pps.c.pk, pps.c.sop_class_uid).where(pps.c.sop_uid == sop_uid)).first()
        if row is None:
            raise NoSuchStep(f"no performed procedure step {sop_uid}")
        delivered = conn.execute(
            select(pps_forward.c.delivered_seq).where(
                pps_forward.c.pps_fk == row.pk, pps_forward.c.destination == destination
            )
        ).scalar()
        messages = conn.execute(
            select(pps_message.c.seq, pps_message.c.operation, pps_message.c.attrs)
            .where(pps_message.c.pps_fk == row.pk, pps_message.c.seq > int(delivered or 0))
            .order_by(pps_message.c.seq)
        )
        return row.sop_class_uid, [Message(int(m.seq), m.operation, json.loads(m.attrs)) for m in messages]


def mark_delivered(archive: Archive, sop_uid: str, destination: str, seq: int) -> None:
    """Record that `destination` acknowledged the step's messages up to `seq`."""
    with archive.db.write() as conn:
        pk = conn.execute(select(pps.c.pk).where(pps.c.sop_uid == sop_uid)).scalar_one()
        conn.execute(
            sql_update(pps_forward)
            .where(
                pps_forward.c.pps_fk == pk,
                pps_forward.c.destination == destination,
                pps_forward.c.delivered_seq < seq,
            )
            .values(delivered_seq=seq, updated_at=time.time())
        )


def referenced_instances(attributes: Dataset) -> Iterator[tuple[str, str, str]]:
    """(series, SOP class, SOP instance) of each Performed Series Sequence reference (PS3.3 C.4.17).

    Both Referenced Image Sequence (0008,1140) and Referenced Non-Image Composite SOP Instance
    Sequence (0040,0220) items count; items without UIDs are skipped.
    """
    for series in attributes.get("PerformedSeriesSequence") or []:
        series_uid = _text(series, "SeriesInstanceUID")
        for keyword in ("ReferencedImageSequence", "ReferencedNonImageCompositeSOPInstanceSequence"):
            for item in series.get(keyword) or []:
                sop_class, sop_uid = _text(item, "ReferencedSOPClassUID"), _text(item, "ReferencedSOPInstanceUID")
                if series_uid and sop_class and sop_uid:
                    yield series_uid, sop_class, sop_uid


def _record_message(
    conn: Connection,
    archive: Archive,
    pps_pk: int,
    seq: int,
    operation: str,
    attrs: dict[str, Any],
    calling_ae: str,
    now: float,
    sop_uid: str,
    destinations: tuple[str, ...],
) -> None:
    """Keep the message and queue its forwarding to every destination, in the caller's transaction."""
    conn.execute(
        insert(pps_message).values(
            pps_fk=pps_pk, seq=seq, operation=operation, attrs=json.dumps(attrs), calling_ae=calling_ae, received_at=now
        )
    )
    known = set(conn.execute(select(pps_forward.c.destination).where(pps_forward.c.pps_fk == pps_pk)).scalars())
    for destination in destinations:
        if destination not in known:  # new step, or a destination configured since: it gets every message
            conn.execute(
                insert(pps_forward).values(pps_fk=pps_pk, destination=destination, delivered_seq=0, updated_at=now)
            )
        archive.jobs.enqueue(FORWARD_JOB, {"sop_uid": sop_uid, "destination": destination, "seq": seq}, conn=conn)


def _replace_references(conn: Connection, pps_pk: int, attributes: Dataset) -> None:
    conn.execute(delete(pps_reference).where(pps_reference.c.pps_fk == pps_pk))
    rows = [
        {"pps_fk": pps_pk, "series_uid": series, "sop_class_uid": sop_class, "sop_uid": sop_uid}
        for series, sop_class, sop_uid in dict.fromkeys(referenced_instances(attributes))
    ]
    if rows:
        conn.execute(insert(pps_reference), rows)


def _destinations(archive: Archive, sop_class_uid: str) -> tuple[str, ...]:
    """Where steps of this class are forwarded: MPPS only (IHE PPS Manager), never GP-PPS."""
    if sop_class_uid != MPPS_CLASS:
        return ()
    return tuple(dict.fromkeys(title.strip() for title in archive.settings.workflow.mpps_forward))


def _status_keyword(sop_class_uid: str) -> str:
    try:
        return STATUS_KEYWORDS[sop_class_uid]
    except KeyError:
        raise ValueError(f"{sop_class_uid} is not a performed procedure step SOP class") from None


def _to_json(ds: Dataset) -> dict[str, Any]:
    """DICOM JSON (PS3.18 F.2) of a dataset, binary values inline."""
    return dict(sorted(ds.to_json_dict(bulk_data_threshold=1 << 30).items()))


def _text(ds: Dataset, keyword: str) -> str | None:
    value = ds.get(keyword)
    if value is None or value == "":
        return None
    return str(value).strip() or None


def _study_uid(ds: Dataset) -> str | None:
    """The Study Instance UID of the first Scheduled Step Attributes Sequence item (PS3.3 C.4.13)."""
    for keyword in ("ScheduledStepAttributesSequence", "ReferencedRequestSequence"):
        for item in ds.get(keyword) or []:
            uid = _text(item, "StudyInstanceUID")
            if uid:
                return uid
    return None


def _step(row: Any) -> ProcedureStep:
    return ProcedureStep(
        pk=int(row.pk),
        sop_uid=row.sop_uid,
        sop_class_uid=row.sop_class_uid,
        status=row.status,
        patient_id=row.patient_id,
        issuer=row.issuer,
        study_uid=row.study_uid,
        calling_ae=row.calling_ae,
        attrs=json.loads(row.attrs),
        last_seq=int(row.last_seq),
        created_at=float(row.created_at),
        updated_at=float(row.updated_at),
        ian_queued_at=None if row.ian_queued_at is None else float(row.ian_queued_at),
    )
