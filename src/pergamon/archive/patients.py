"""Patient Information Reconciliation in the index (IHE RAD-12, PIR): update, merge, change of identifier.

Protocol-free back end of ADT A01/A04/A05/A08 (`update_demographics`), A40 (`merge`) and A47
(`change_identifier`); IHE RAD TF-2 4.12 and RAD TF-1 PIR. A patient is named by its ID *and* the
Issuer of Patient ID (0010,0021): the same ID under two issuers is two patients.

Stored objects are never rewritten (the VNA promise, ARCHITECTURE.md): each operation changes the
patient row in one transaction, bumps its `revision`, writes a `patient_history` row (before and
after as DICOM JSON, the HL7 message control ID) and, after the commit, emits an event for audit.
Every object then leaves the archive with the patient's current values, applied by
`outgoing_patch` / `apply_patch` from `archive.retrieve.prepare_outgoing` (coercion on retrieve).

Values follow the index's conventions: the patient row's `attrs` holds DICOM JSON (PS3.18 F.2) of the
patient-level attributes (`archive.model.PATIENT_KEYWORDS`); an element without a value means the
attribute was explicitly emptied (HL7 `""`), and leaves the archive empty.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Any

from pydicom import Dataset
from pydicom.datadict import keyword_for_tag
from pydicom.dataelem import DataElement
from sqlalchemy import Connection, Row, and_, bindparam, delete, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite

from pergamon.archive import errors
from pergamon.archive.events import PatientIdentifierChanged, PatientMerged, PatientUpdated
from pergamon.archive.index.schema import (
    Level,
    instance,
    patient,
    patient_history,
    performed_procedure_step,
    requested_procedure,
    series,
    study,
)
from pergamon.archive.model import element_json, level_of, split_levels
from pergamon.archive.origin import Origin

if TYPE_CHECKING:
    from pergamon.archive.service import Archive

log = logging.getLogger(__name__)

PATIENT_ID = "00100020"
ISSUER = "00100021"
_IDENTITY = (PATIENT_ID, ISSUER)
Attributes = Mapping[str, Any] | Dataset
"""Patient-level attributes: DICOM JSON (PS3.18 F.2) keyed by tag, or a Dataset."""


@dataclass(frozen=True)
class PatientKey:
    """A patient's identity in the index: Patient ID and Issuer of Patient ID ("" when none)."""

    patient_id: str
    issuer: str = ""

    def __str__(self) -> str:
        return f"{self.patient_id}^^^{self.issuer}" if self.issuer else self.patient_id


class UpdateOutcome(Enum):
    CREATED = "created"
    UPDATED = "updated"
    UNCHANGED = "unchanged"


class MergeOutcome(Enum):
    MERGED = "merged"
    NOTHING_TO_MERGE = "nothing-to-merge"  # the obsolete patient is unknown here: only the survivor is updated


@dataclass(frozen=True)
class MergeResult:
    outcome: MergeOutcome
    studies: int


# --- attribute sets ------------------------------------------------------------------------------


def patient_json(attrs: Attributes) -> dict[str, Any]:
    """The patient-level elements of `attrs` as DICOM JSON keyed by 8-hex-digit tag; others are ignored.

    Raises:
        errors.Invalid: a key is not a tag or a value is not a DICOM JSON element.
    """
    if isinstance(attrs, Dataset):
        out: dict[str, Any] = {}
        for elem in attrs:
            if keyword_for_tag(elem.tag) and level_of(keyword_for_tag(elem.tag)) is Level.PATIENT:
                out[f"{int(elem.tag):08X}"] = element_json(elem) or {"vr": elem.VR}
        return out
    out = {}
    for key, value in attrs.items():
        tag = str(key).replace(",", "").upper()
        if len(tag) != 8 or any(c not in "0123456789ABCDEF" for c in tag):
            raise errors.Invalid(f"{key!r} is not a DICOM tag")
        if not isinstance(value, Mapping) or not isinstance(value.get("vr"), str):
            raise errors.Invalid(f"{tag}: not a DICOM JSON element (no vr)")
        keyword = keyword_for_tag(int(tag, 16))
        if keyword and level_of(keyword) is Level.PATIENT:
            out[tag] = dict(value)
    return out


def _with_key(attrs: Mapping[str, Any], key: PatientKey) -> dict[str, Any]:
    """`attrs` with Patient ID and Issuer from `key`, normalised through pydicom (as the index stores them)."""
    merged = {k: v for k, v in attrs.items() if k not in _IDENTITY}
    merged[PATIENT_ID] = {"vr": "LO", "Value": [key.patient_id]}
    if key.issuer:
        merged[ISSUER] = {"vr": "LO", "Value": [key.issuer]}
    elif ISSUER in attrs:  # the patient had an issuer (A47 to an ID without one): its objects leave without
        merged[ISSUER] = {"vr": "LO"}
    try:
        ds = Dataset.from_json(merged)
    except Exception as exc:  # pydicom raises many kinds on bad JSON values
        raise errors.Invalid(f"patient attributes are not valid DICOM JSON: {exc}") from exc
    return {f"{int(elem.tag):08X}": element_json(elem) or {"vr": elem.VR} for elem in ds}


def _columns(attrs: Mapping[str, Any], key: PatientKey) -> dict[str, Any]:
    """The patient row's matchable columns for `attrs`, normalised exactly as ingest does it."""
    columns = split_levels(Dataset.from_json(dict(attrs))).patient.columns
    return {
        "patient_id": key.patient_id,
        "issuer": key.issuer,
        "patient_name": columns.get("patient_name"),
        "patient_birth_date": columns.get("patient_birth_date"),
        "patient_sex": columns.get("patient_sex"),
        "attrs": json.dumps(dict(sorted(attrs.items()))),
    }


def _name_of(attrs: Mapping[str, Any]) -> str:
    values = attrs.get("00100010", {}).get("Value") or [{}]
    first = values[0]
    return str(first.get("Alphabetic", "")) if isinstance(first, Mapping) else str(first)


# --- the three operations ------------------------------------------------------------------------


def update_demographics(
    archive: Archive,
    key: PatientKey,
    attrs: Attributes,
    *,
    message_id: str = "",
    origin: Origin | None = None,
) -> UpdateOutcome:
    """Create the patient or update its demographics (ADT A01/A04/A05/A08; RAD TF-2 4.12).

    Attributes present in `attrs` replace the stored ones (an element without a value empties the
    attribute); attributes absent are kept. Patient ID and Issuer come from `key`.

    Raises:
        errors.Invalid: `key` has no Patient ID, or `attrs` is not valid DICOM JSON.
    """
    _check_key(key)
    changes = patient_json(attrs)
    now = time.time()
    with archive.db.write() as conn:
        current = _lock(conn, key).get(key)
        if current is None and _insert(conn, key, _with_key(changes, key), now) is None:
            current = _lock(conn, key)[key]  # a concurrent store or message created it first
        if current is None:
            after = _with_key(changes, key)
            before: dict[str, Any] = {}
            outcome = UpdateOutcome.CREATED
        else:
            before = json.loads(current.attrs)
            after = _with_key({**before, **changes}, key)
            outcome = UpdateOutcome.UNCHANGED if after == before else UpdateOutcome.UPDATED
            if outcome is UpdateOutcome.UPDATED:
                _rewrite(conn, current.pk, key, after, now)
        _follow_orders(conn, key, key, after, now)
        _history(conn, "create" if current is None else "update", key, None, before, after, 0, message_id, origin, now)
    log.info("patient %s %s (message %s)", key, outcome.value, message_id or "-")
    archive.bus.emit(PatientUpdated(key.patient_id, key.issuer, _name_of(after),
                                    outcome is UpdateOutcome.CREATED, message_id, origin))  # fmt: skip
    return outcome


def merge(
    archive: Archive,
    surviving: PatientKey,
    obsolete: PatientKey,
    attrs: Attributes | None = None,
    *,
    message_id: str = "",
    origin: Origin | None = None,
) -> MergeResult:
    """Move every study of `obsolete` to `surviving` and delete `obsolete` (ADT A40; RAD TF-2 4.12.4.1.2).

    Afterwards the obsolete Patient ID matches nothing and the survivor's values leave with every
    object that was filed under it. `attrs` (the A40's PID) updates the survivor, which is created
    when unknown (from the obsolete patient's demographics). An unknown obsolete patient leaves
    nothing to merge: the survivor is still updated, and the result says so.

    Raises:
        errors.Invalid: the two keys are the same patient, or a key has no Patient ID.
    """
    _check_key(surviving)
    _check_key(obsolete)
    if surviving == obsolete:
        raise errors.Invalid(f"cannot merge patient {surviving} into itself")
    changes = patient_json(attrs) if attrs is not None else {}
    now = time.time()
    with archive.db.write() as conn:
        rows = _lock(conn, surviving, obsolete)
        survivor, old = rows.get(surviving), rows.get(obsolete)
        before = json.loads(survivor.attrs) if survivor is not None else {}
        base = before if survivor is not None else (json.loads(old.attrs) if old is not None else {})
        after = _with_key({**base, **changes}, surviving)
        created = _insert(conn, surviving, after, now) if survivor is None else None
        if survivor is None and created is None:
            survivor = _lock(conn, surviving)[surviving]  # a concurrent store or message created it first
            before = json.loads(survivor.attrs)
            after = _with_key({**before, **changes}, surviving)
        if survivor is not None:
            survivor_pk = survivor.pk
            if after != before:
                _rewrite(conn, survivor_pk, surviving, after, now)
        elif created is not None:
            survivor_pk = created
        moved = 0
        if old is not None:
            moved = conn.execute(select(func.count()).where(study.c.patient_fk == old.pk)).scalar_one()
            conn.execute(update(study).where(study.c.patient_fk == old.pk).values(patient_fk=survivor_pk))
            conn.execute(
                update(patient)
                .where(patient.c.pk == survivor_pk)
                .values(num_studies=patient.c.num_studies + moved, revision=patient.c.revision + 1, updated_at=now)
            )
            conn.execute(delete(patient).where(patient.c.pk == old.pk))
        _follow_orders(conn, obsolete, surviving, after, now)
        _follow_orders(conn, surviving, surviving, after, now)
        merged_before = {"surviving": before, "obsolete": json.loads(old.attrs) if old is not None else None}
        _history(conn, "merge", surviving, obsolete, merged_before, after, moved, message_id, origin, now)
    outcome = MergeOutcome.MERGED if old is not None else MergeOutcome.NOTHING_TO_MERGE
    log.info("patient %s merged into %s: %s, %d study(ies) moved (message %s)", obsolete, surviving,
             outcome.value, moved, message_id or "-")  # fmt: skip
    if old is not None:
        archive.bus.emit(PatientMerged(surviving.patient_id, surviving.issuer, _name_of(after), obsolete.patient_id,
                                       obsolete.issuer, moved, message_id, origin))  # fmt: skip
    else:
        archive.bus.emit(PatientUpdated(surviving.patient_id, surviving.issuer, _name_of(after), created is not None,
                                        message_id, origin))  # fmt: skip
    return MergeResult(outcome, moved)


def change_identifier(
    archive: Archive,
    old: PatientKey,
    new: PatientKey,
    attrs: Attributes | None = None,
    *,
    message_id: str = "",
    origin: Origin | None = None,
) -> None:
    """Give the patient `old` the identifier `new` (ADT A47), with its studies; `attrs` updates it too.

    Raises:
        errors.NotFound: no patient `old`.
        errors.Conflict: a patient `new` exists already (joining two patients is a merge, A40).
        errors.Invalid: the keys are equal or one has no Patient ID.
    """
    _check_key(old)
    _check_key(new)
    if old == new:
        raise errors.Invalid(f"patient {old}: the new identifier is the old one")
    changes = patient_json(attrs) if attrs is not None else {}
    now = time.time()
    with archive.db.write() as conn:
        rows = _lock(conn, old, new)
        current = rows.get(old)
        if current is None:
            raise errors.NotFound(f"no patient {old} in this archive")
        if new in rows:
            raise errors.Conflict(f"patient {new} exists already; merging two patients is an A40")
        before = json.loads(current.attrs)
        after = _with_key({**before, **changes}, new)
        _rewrite(conn, current.pk, new, after, now)
        _follow_orders(conn, old, new, after, now)
        _history(conn, "change-id", new, old, before, after, 0, message_id, origin, now)
    log.info("patient %s is now %s (message %s)", old, new, message_id or "-")
    archive.bus.emit(PatientIdentifierChanged(new.patient_id, new.issuer, _name_of(after), old.patient_id, old.issuer,
                                              message_id, origin))  # fmt: skip


def _check_key(key: PatientKey) -> None:
    if not key.patient_id.strip():
        raise errors.Invalid("a patient needs a Patient ID")
    if len(key.patient_id) > 64 or len(key.issuer) > 64:
        raise errors.Invalid(f"patient {key}: Patient ID and Issuer are at most 64 characters (LO)")


def _lock(conn: Connection, *keys: PatientKey) -> dict[PatientKey, Row[Any]]:
    """The rows of `keys` that exist, locked for update (PostgreSQL) in primary-key order."""
    wanted = or_(*(and_(patient.c.patient_id == k.patient_id, patient.c.issuer == k.issuer) for k in keys))
    query = select(patient.c.pk, patient.c.patient_id, patient.c.issuer, patient.c.attrs).where(wanted)
    rows = conn.execute(query.order_by(patient.c.pk).with_for_update()).all()
    return {PatientKey(r.patient_id, r.issuer): r for r in rows}


def _insert(conn: Connection, key: PatientKey, attrs: Mapping[str, Any], now: float) -> int | None:
    """A new patient row without studies, or None when one exists already (inserted concurrently).

    Revision 1: objects that arrive later are checked against the row on retrieve.
    """
    values = {**_columns(attrs, key), "num_studies": 0, "created_at": now, "updated_at": now, "revision": 1}
    insert_fn = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    statement = insert_fn(patient).values(**values).on_conflict_do_nothing(index_elements=["patient_id", "issuer"])
    pk = conn.execute(statement.returning(patient.c.pk)).scalar_one_or_none()
    return None if pk is None else int(pk)


def _rewrite(conn: Connection, pk: int, key: PatientKey, attrs: Mapping[str, Any], now: float) -> None:
    conn.execute(
        update(patient)
        .where(patient.c.pk == pk)
        .values(**_columns(attrs, key), updated_at=now, revision=patient.c.revision + 1)
    )


def _follow_orders(conn: Connection, old: PatientKey, new: PatientKey, attrs: Mapping[str, Any], now: float) -> None:
    """Orders (RAD-4 requested procedures, the worklist) and performed steps follow their patient's identifier.

    ihe-radiology.md 2.7: on a merge the MRG patient's worklist entries and MPPS move to the PID patient too.
    """
    rp = requested_procedure.c
    conn.execute(
        update(requested_procedure)
        .where(rp.patient_id == old.patient_id, rp.patient_issuer == old.issuer)
        .values(
            patient_id=new.patient_id, patient_issuer=new.issuer, patient_name=_name_of(attrs) or None, updated_at=now
        )
    )
    if old != new:
        _follow_procedure_steps(conn, old, new)


def _follow_procedure_steps(conn: Connection, old: PatientKey, new: PatientKey) -> None:
    """Performed procedure steps (MPPS, GP-PPS) follow their patient's identifier too (ihe-radiology.md 2.7).

    Only the index columns change: the step's attributes stay what the modality sent (and forwarded).
    A step recorded without an issuer belongs to whichever patient has its ID and no issuer.
    """
    ps = performed_procedure_step.c
    same_issuer = ps.issuer == old.issuer if old.issuer else or_(ps.issuer.is_(None), ps.issuer == "")
    conn.execute(
        update(performed_procedure_step)
        .where(ps.patient_id == old.patient_id, same_issuer)
        .values(patient_id=new.patient_id, issuer=new.issuer or None)
    )


def _history(
    conn: Connection,
    action: str,
    key: PatientKey,
    prior: PatientKey | None,
    before: Any,
    after: Any,
    studies: int,
    message_id: str,
    origin: Origin | None,
    now: float,
) -> None:
    conn.execute(
        patient_history.insert().values(
            action=action,
            patient_id=key.patient_id,
            issuer=key.issuer,
            prior_patient_id=prior.patient_id if prior else None,
            prior_issuer=prior.issuer if prior else None,
            before=json.dumps(before),
            after=json.dumps(after),
            studies=studies,
            message_id=message_id[:64],
            origin=json.dumps(origin.as_dict() if origin else {}),
            recorded_at=now,
        )
    )


# --- reading the history -------------------------------------------------------------------------


# The newest history row naming a key as itself or as the prior key; built once (ingest asks for every new series).
_LAST_HISTORY_OF = (
    select(
        patient_history.c.patient_id,
        patient_history.c.issuer,
        patient_history.c.prior_patient_id,
        patient_history.c.prior_issuer,
    )
    .where(
        or_(
            and_(
                patient_history.c.patient_id == bindparam("key_id"), patient_history.c.issuer == bindparam("key_issuer")
            ),
            and_(
                patient_history.c.prior_patient_id == bindparam("key_id"),
                patient_history.c.prior_issuer == bindparam("key_issuer"),
            ),
        )
    )
    .order_by(patient_history.c.pk.desc())
    .limit(1)
)


def current_key(conn: Connection, key: PatientKey, *, max_hops: int = 16) -> PatientKey:
    """The patient `key` became through merges and identifier changes; `key` itself when it did not.

    For ingest to file a late object that still carries a merged-away ID under the survivor
    (ihe-radiology.md 3.2 check 4, dcm4chee's behaviour). A key that was created or updated
    again after it was merged away stands for itself.
    """
    for _ in range(max_hops):
        last = conn.execute(_LAST_HISTORY_OF, {"key_id": key.patient_id, "key_issuer": key.issuer}).first()
        if last is None or (last.prior_patient_id, last.prior_issuer) != (key.patient_id, key.issuer):
            return key
        if (last.patient_id, last.issuer) == (key.patient_id, key.issuer):
            return key
        key = PatientKey(last.patient_id, last.issuer)
    return key


def _history_dict(row: Row[Any]) -> dict[str, Any]:
    return {
        "id": row.pk,
        "action": row.action,
        "patient": {"id": row.patient_id, "issuer": row.issuer},
        "prior": {"id": row.prior_patient_id, "issuer": row.prior_issuer} if row.prior_patient_id else None,
        "before": json.loads(row.before),
        "after": json.loads(row.after),
        "studies": row.studies,
        "message_id": row.message_id,
        "origin": json.loads(row.origin),
        "recorded_at": row.recorded_at,
    }


def history(archive: Archive, key: PatientKey) -> list[dict[str, Any]]:
    """Every change that named the patient (as it is now, or as the obsolete / former one), oldest first."""
    h = patient_history.c
    named = or_(and_(h.patient_id == key.patient_id, h.issuer == key.issuer),
                and_(h.prior_patient_id == key.patient_id, h.prior_issuer == key.issuer))  # fmt: skip
    with archive.db.read() as conn:
        rows = conn.execute(select(patient_history).where(named).order_by(h.pk)).all()
    return [_history_dict(r) for r in rows]


def reconciliations(archive: Archive, *, limit: int = 100, offset: int = 0) -> tuple[int, list[dict[str, Any]]]:
    """The total number of history rows and one page of them, newest first."""
    with archive.db.read() as conn:
        total = conn.execute(select(func.count()).select_from(patient_history)).scalar_one()
        rows = conn.execute(
            select(patient_history).order_by(patient_history.c.pk.desc()).limit(limit).offset(offset)
        ).all()
    return int(total), [_history_dict(r) for r in rows]


# --- coercion on retrieve ------------------------------------------------------------------------


def outgoing_patch(archive: Archive, sop_instance_uid: str) -> dict[str, Any] | None:
    """The patient-level values an instance must leave with, or None when its patient was never reconciled.

    One indexed query; `revision` 0 means the row holds what the stored objects carry (the fast path:
    the file is not even opened).
    """
    query = (
        select(patient.c.revision, patient.c.attrs, patient.c.patient_id, patient.c.issuer)
        .select_from(instance)
        .join(series, instance.c.series_fk == series.c.pk)
        .join(study, series.c.study_fk == study.c.pk)
        .join(patient, study.c.patient_fk == patient.c.pk)
        .where(instance.c.sop_uid == sop_instance_uid)
    )
    with archive.db.read() as conn:
        row = conn.execute(query).first()
    if row is None or not row.revision:
        return None
    attrs = json.loads(row.attrs)
    attrs[PATIENT_ID] = {"vr": "LO", "Value": [row.patient_id]}
    attrs[ISSUER] = {"vr": "LO", "Value": [row.issuer]} if row.issuer else {"vr": "LO"}
    return dict(attrs)


def differs(ds: Dataset, patch: Mapping[str, Any]) -> bool:
    """Whether the object's patient-level values differ from `patch` (absent and empty count as equal)."""
    for tag_text, wanted in patch.items():
        tag = int(tag_text, 16)
        elem = ds.get(tag)
        have = element_json(elem) if isinstance(elem, DataElement) else None
        if _value_of(have) != _value_of(wanted):
            return True
    return False


def _value_of(element: Mapping[str, Any] | None) -> Any:
    if not element:
        return None
    return element.get("Value") or element.get("InlineBinary") or None


def apply_patch(ds: Dataset, patch: Mapping[str, Any]) -> None:
    """Put the patch's values into `ds` (in place), switching it to UTF-8 when its character set cannot hold them.

    PS3.5 6.1: text the Specific Character Set cannot encode would be lost, so every text value
    is decoded with the old set first and the object leaves as ISO_IR 192.
    """
    values = Dataset.from_json(dict(patch))
    if _needs_utf8(ds, values):
        for _elem in ds.iterall():  # decode every raw text element with the old character set first
            pass
        ds.SpecificCharacterSet = "ISO_IR 192"
    for elem in values:
        if elem.value in (None, "", []) and elem.tag not in ds:
            continue
        ds[elem.tag] = elem


def apply_patch_json(model: dict[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
    """`apply_patch` for an object's DICOM JSON (WADO-RS metadata): the same values, the same character set rule."""
    for tag_text, wanted in patch.items():
        if _value_of(wanted) is None and tag_text not in model:
            continue
        model[tag_text] = wanted
    if not json.dumps(dict(patch), ensure_ascii=False).isascii():
        charset = model.get("00080005", {}).get("Value", [])
        if "ISO_IR 192" not in charset:
            model["00080005"] = {"vr": "CS", "Value": ["ISO_IR 192"]}
    return dict(sorted(model.items()))


def _needs_utf8(ds: Dataset, values: Dataset) -> bool:
    text = json.dumps([element_json(e) for e in values], ensure_ascii=False)
    if text.isascii():
        return False
    charset = ds.get("SpecificCharacterSet", "")
    current = (
        [str(c) for c in charset]
        if isinstance(charset, list) or type(charset).__name__ == "MultiValue"
        else [str(charset)]
    )
    return "ISO_IR 192" not in current
