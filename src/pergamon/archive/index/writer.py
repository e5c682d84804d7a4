"""Adding and removing instances in the index, keeping counts and study summaries current.

Each function runs inside the caller's transaction. Rows are created with INSERT ... ON CONFLICT
DO NOTHING and then read back, so concurrent stores of the same study on PostgreSQL neither fail
nor double-count; counters are bumped before summaries are recomputed, which takes the parent
row's lock first and makes the recomputation see every committed sibling.
"""

from __future__ import annotations

import functools
import json
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    BindParameter,
    Column,
    Connection,
    Executable,
    Integer,
    Table,
    bindparam,
    delete,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite

from pergamon.archive.index.driver import DriverStatement
from pergamon.archive.index.schema import instance, patient, series, study
from pergamon.archive.model import ObjectRecord


@dataclass(frozen=True)
class BlobInfo:
    """Where and how the object's bytes were stored."""

    key: str
    size: int
    sha256: str
    transfer_syntax: str


@dataclass(frozen=True)
class ExistingInstance:
    """What the index holds for a SOP Instance UID before a store."""

    pk: int
    blob_key: str
    series_fk: int


def find_instance(conn: Connection, sop_uid: str) -> ExistingInstance | None:
    """The index row of a SOP Instance UID, if any."""
    row = conn.execute(
        select(instance.c.pk, instance.c.blob_key, instance.c.series_fk).where(instance.c.sop_uid == sop_uid)
    ).first()
    return ExistingInstance(row.pk, row.blob_key, row.series_fk) if row else None


def add_instance(conn: Connection, record: ObjectRecord, blob: BlobInfo, origin: dict[str, Any]) -> str | None:
    """Index one stored object; a row already holding its SOP Instance UID is replaced.

    Returns the blob key of the replaced object (for the caller to delete after commit), or None.
    """
    now = time.time()
    known = _known_series(conn, record)
    if known is not None:
        return _add_to_known_series(conn, record, blob, origin, known, now)
    _file_under_current_patient(conn, record)
    patient_pk = _ensure_row(
        conn,
        patient,
        {"patient_id": record.patient.columns["patient_id"], "issuer": record.patient.columns["issuer"]},
        {**record.patient.columns, "attrs": json.dumps(record.patient.attrs), "num_studies": 0},
        now,
    )
    study_uid = record.study.columns["study_uid"]
    study_pk, new_study = _ensure_row_flag(
        conn,
        study,
        {"study_uid": study_uid},
        {
            **record.study.columns,
            "patient_fk": patient_pk,
            "attrs": json.dumps(record.study.attrs),
            "num_series": 0,
            "num_instances": 0,
        },
        now,
    )
    if new_study:
        conn.execute(_BUMP_PATIENT, {"row_pk": patient_pk})
    series_pk, new_series = _ensure_row_flag(
        conn,
        series,
        {"series_uid": record.series.columns["series_uid"]},
        {**record.series.columns, "study_fk": study_pk, "attrs": json.dumps(record.series.attrs), "num_instances": 0},
        now,
    )

    replaced = find_instance(conn, record.instance.columns["sop_uid"])
    if replaced is not None:
        _remove_instance_row(conn, replaced)

    _insert_instance(conn, record, blob, origin, series_pk, now)
    _BUMP_SERIES.execute(conn, {"row_pk": series_pk, "row_now": now})
    conn.execute(_BUMP_STUDY_AND_SERIES, {"row_pk": study_pk, "row_now": now, "row_new_series": int(new_series)})
    _refresh_study_summary(conn, study_pk, record.instance.columns["sop_class_uid"], new_series)
    if replaced is not None:
        _drop_empty_parents(conn, replaced.series_fk)
    return replaced.blob_key if replaced else None


def _file_under_current_patient(conn: Connection, record: ObjectRecord) -> None:
    """Point `record` at the patient its ID became through merges or ID changes (IHE PIR), if any.

    A late object still carrying a merged-away Patient ID is filed under the survivor, so the old
    ID keeps matching nothing; the object leaves with the survivor's values (coercion on retrieve).
    Only a series' first object gets here: later ones find their series under the current patient.
    """
    from pergamon.archive.patients import PatientKey, current_key  # patients builds on this module's callers

    columns = record.patient.columns
    key = PatientKey(columns["patient_id"], columns["issuer"])
    current = current_key(conn, key)
    if current != key:
        record.patient.columns = {**columns, "patient_id": current.patient_id, "issuer": current.issuer}


# Every instance of a series after its first finds its series, study and patient rows in place:
# one joined SELECT replaces the three insert-or-select pairs and also finds the row of the SOP
# Instance UID, if any, which the store replaces (statements prebuilt, see below).
_KNOWN_SERIES = DriverStatement(
    select(series.c.pk, series.c.study_fk, instance.c.pk, instance.c.blob_key, instance.c.series_fk)
    .select_from(
        series.join(study, study.c.pk == series.c.study_fk)
        .join(patient, patient.c.pk == study.c.patient_fk)
        .outerjoin(instance, instance.c.sop_uid == bindparam("sop_uid"))
    )
    .where(
        series.c.series_uid == bindparam("series_uid"),
        study.c.study_uid == bindparam("study_uid"),
        patient.c.patient_id == bindparam("patient_id"),
        patient.c.issuer == bindparam("issuer"),
    )
)
_INSERT_INSTANCE = DriverStatement(instance.insert())
_BUMP_PATIENT = update(patient).where(patient.c.pk == bindparam("row_pk")).values(num_studies=patient.c.num_studies + 1)
_BUMP_STUDY_AND_SERIES = (
    update(study)
    .where(study.c.pk == bindparam("row_pk"))
    .values(
        num_instances=study.c.num_instances + 1,
        num_series=study.c.num_series + bindparam("row_new_series", type_=Integer),
        updated_at=bindparam("row_now"),
    )
)
_BUMP_SERIES = DriverStatement(
    update(series)
    .where(series.c.pk == bindparam("row_pk"))
    .values(num_instances=series.c.num_instances + 1, updated_at=bindparam("row_now"))
)
# RETURNING reads SOP Classes in Study under the row lock the counter update takes (PostgreSQL
# re-reads the newest committed row after waiting), as the separate SELECT after it did.
_BUMP_STUDY = DriverStatement(
    update(study)
    .where(study.c.pk == bindparam("row_pk"))
    .values(num_instances=study.c.num_instances + 1, updated_at=bindparam("row_now"))
    .returning(study.c.sop_classes)
)


def _instance_value(column: Column[Any]) -> BindParameter[Any]:
    """The combined insert's parameter for `column`; if not given, what the plain insert would store."""
    default = column.default
    assert column.server_default is None and (default is None or default.is_scalar), column  # else: prefetch
    value = default.arg if default is not None else None  # type: ignore[attr-defined]
    return bindparam(f"instance_{column.key}", value, type_=column.type)


# PostgreSQL: the insert and both counter updates in one statement (one round trip instead of
# three). Each step reads the previous one's RETURNING, which makes it run after it: the rows
# are written and locked in the order of the three statements above, so this path takes row
# locks in the same order as every other writer (instance, then series, then study) and the
# study's RETURNING reads under its row lock as above. The insert's values are named
# `instance_<column>`, as the updates' own columns must not take them.
_INSERTED = (
    insert(instance)
    .values({c.key: _instance_value(c) for c in instance.c if not c.primary_key})
    .returning(instance.c.series_fk)
    .cte("inserted")
)
_SERIES_BUMPED = (
    update(series)
    .where(series.c.pk == select(_INSERTED.c.series_fk).scalar_subquery())
    .values(num_instances=series.c.num_instances + 1, updated_at=bindparam("row_now"))
    .returning(series.c.study_fk)
    .cte("series_bumped")
)
_INSERT_AND_BUMP = DriverStatement(
    update(study)
    .where(study.c.pk == select(_SERIES_BUMPED.c.study_fk).scalar_subquery())
    .values(num_instances=study.c.num_instances + 1, updated_at=bindparam("row_now"))
    .returning(study.c.sop_classes)
)


@dataclass(frozen=True)
class _KnownSeries:
    """The rows a store into an existing series touches: its series and study, and the instance it replaces."""

    series_pk: int
    study_pk: int
    replaced: ExistingInstance | None


def _known_series(conn: Connection, record: ObjectRecord) -> _KnownSeries | None:
    """The series' rows when it exists under this study and patient, else None."""
    row = _KNOWN_SERIES.fetchone(
        conn,
        {
            "series_uid": record.series.columns["series_uid"],
            "study_uid": record.study.columns["study_uid"],
            "patient_id": record.patient.columns["patient_id"],
            "issuer": record.patient.columns["issuer"],
            "sop_uid": record.instance.columns["sop_uid"],
        },
    )
    if row is None:
        return None
    replaced = ExistingInstance(int(row[2]), row[3], int(row[4])) if row[2] is not None else None
    return _KnownSeries(int(row[0]), int(row[1]), replaced)


def _add_to_known_series(
    conn: Connection,
    record: ObjectRecord,
    blob: BlobInfo,
    origin: dict[str, Any],
    known: _KnownSeries,
    now: float,
) -> str | None:
    """`add_instance` when patient, study and series rows exist: the same rows, in fewer statements.

    Four on SQLite and two on PostgreSQL, plus one for a SOP Class new to the study and a few to
    take out an instance being replaced.
    """
    series_pk, study_pk, replaced = known.series_pk, known.study_pk, known.replaced
    if replaced is not None:
        _remove_instance_row(conn, replaced)
    if conn.dialect.name == "postgresql":
        row = _instance_row(record, blob, origin, series_pk, now)
        bumped = _INSERT_AND_BUMP.fetchone(conn, {**{f"instance_{k}": v for k, v in row.items()}, "row_now": now})
    else:
        _insert_instance(conn, record, blob, origin, series_pk, now)
        _BUMP_SERIES.execute(conn, {"row_pk": series_pk, "row_now": now})
        bumped = _BUMP_STUDY.fetchone(conn, {"row_pk": study_pk, "row_now": now})
    assert bumped is not None  # the study row was found above, in this transaction
    current = bumped[0]
    sop_class = record.instance.columns["sop_class_uid"]
    classes = set(current.split("\\")) if current else set()
    if sop_class not in classes:
        conn.execute(
            update(study).where(study.c.pk == study_pk).values(sop_classes="\\".join(sorted(classes | {sop_class})))
        )
    if replaced is not None:
        _drop_empty_parents(conn, replaced.series_fk)
    return replaced.blob_key if replaced else None


def _insert_instance(
    conn: Connection, record: ObjectRecord, blob: BlobInfo, origin: dict[str, Any], series_pk: int, now: float
) -> None:
    _INSERT_INSTANCE.execute(conn, _instance_row(record, blob, origin, series_pk, now))


def _instance_row(
    record: ObjectRecord, blob: BlobInfo, origin: dict[str, Any], series_pk: int, now: float
) -> dict[str, Any]:
    """The instance table's values for one stored object."""
    return {
        **record.instance.columns,
        "series_fk": series_pk,
        "transfer_syntax": blob.transfer_syntax,
        "blob_key": blob.key,
        "size": blob.size,
        "sha256": blob.sha256,
        "attrs": json.dumps(record.instance.attrs),
        "origin": json.dumps(origin),
        "created_at": now,
    }


def remove_instance(conn: Connection, sop_uid: str) -> str | None:
    """Remove an instance from the index; returns its blob key for deletion after commit."""
    existing = find_instance(conn, sop_uid)
    if existing is None:
        return None
    _remove_instance_row(conn, existing)
    _drop_empty_parents(conn, existing.series_fk)
    return existing.blob_key


def _remove_instance_row(conn: Connection, existing: ExistingInstance) -> None:
    conn.execute(delete(instance).where(instance.c.pk == existing.pk))
    study_fk = conn.execute(select(series.c.study_fk).where(series.c.pk == existing.series_fk)).scalar_one()
    conn.execute(
        update(series).where(series.c.pk == existing.series_fk).values(num_instances=series.c.num_instances - 1)
    )
    conn.execute(update(study).where(study.c.pk == study_fk).values(num_instances=study.c.num_instances - 1))


def _drop_empty_parents(conn: Connection, series_pk: int) -> None:
    """Delete a series left without instances, then its study and patient if they became empty."""
    row = conn.execute(select(series.c.num_instances, series.c.study_fk).where(series.c.pk == series_pk)).first()
    if row is None or row.num_instances > 0:
        return
    conn.execute(delete(series).where(series.c.pk == series_pk))
    conn.execute(update(study).where(study.c.pk == row.study_fk).values(num_series=study.c.num_series - 1))
    _refresh_study_summary(conn, row.study_fk, None, True)
    study_row = conn.execute(select(study.c.num_series, study.c.patient_fk).where(study.c.pk == row.study_fk)).first()
    if study_row is None or study_row.num_series > 0:
        return
    conn.execute(delete(study).where(study.c.pk == row.study_fk))
    conn.execute(
        update(patient).where(patient.c.pk == study_row.patient_fk).values(num_studies=patient.c.num_studies - 1)
    )
    left = conn.execute(select(patient.c.num_studies).where(patient.c.pk == study_row.patient_fk)).scalar_one()
    if left <= 0:
        conn.execute(delete(patient).where(patient.c.pk == study_row.patient_fk))


_MODALITIES_IN_STUDY = (
    select(series.c.modality).where(series.c.study_fk == bindparam("row_pk"), series.c.modality.is_not(None)).distinct()
)
_SOP_CLASSES_IN_STUDY = select(study.c.sop_classes).where(study.c.pk == bindparam("row_pk"))


def _refresh_study_summary(conn: Connection, study_pk: int, sop_class: str | None, series_changed: bool) -> None:
    """Keep Modalities in Study and SOP Classes in Study (PS3.4 C.6.2.1.2) current."""
    values: dict[str, Any] = {}
    if series_changed:
        modalities = conn.execute(_MODALITIES_IN_STUDY, {"row_pk": study_pk}).scalars()
        values["modalities"] = "\\".join(sorted(m for m in modalities if m)) or None
    current = conn.execute(_SOP_CLASSES_IN_STUDY, {"row_pk": study_pk}).scalar_one_or_none()
    known = set(current.split("\\")) if current else set()
    if sop_class is None:
        classes = conn.execute(
            select(instance.c.sop_class_uid)
            .join(series, series.c.pk == instance.c.series_fk)
            .where(series.c.study_fk == study_pk)
            .distinct()
        ).scalars()
        values["sop_classes"] = "\\".join(sorted(classes)) or None
    elif sop_class not in known:
        values["sop_classes"] = "\\".join(sorted(known | {sop_class}))
    if values:
        conn.execute(update(study).where(study.c.pk == study_pk).values(**values))


def _ensure_row(conn: Connection, table: Table, key: dict[str, Any], values: dict[str, Any], now: float) -> int:
    return _ensure_row_flag(conn, table, key, values, now)[0]


def _ensure_row_flag(
    conn: Connection, table: Table, key: dict[str, Any], values: dict[str, Any], now: float
) -> tuple[int, bool]:
    """Insert the row unless one with `key` exists; return its pk and whether it was created."""
    names = tuple(key)
    row = {**values, **key, "created_at": now, "updated_at": now}
    # RETURNING yields a row only when the insert happened (rowcount is -1 with psycopg here).
    inserted = conn.execute(_insert_if_absent(conn.dialect.name, table, names), row).scalar_one_or_none()
    if inserted is not None:
        return int(inserted), True
    return int(conn.execute(_pk_by(table, names), key).scalar_one()), False


# Built once per table (and dialect) and reused: SQLAlchemy then finds its compiled form without
# recomputing the statement's cache key, a good part of a statement's cost on this path.
@functools.cache
def _insert_if_absent(dialect: str, table: Table, key: tuple[str, ...]) -> Executable:
    """INSERT of the parameters' columns, doing nothing when a row with the same `key` exists; RETURNING its pk."""
    insert_fn = postgresql.insert if dialect == "postgresql" else sqlite.insert
    return insert_fn(table).on_conflict_do_nothing(index_elements=list(key)).returning(table.c.pk)


@functools.cache
def _pk_by(table: Table, key: tuple[str, ...]) -> Executable:
    """SELECT of the pk of the row whose `key` columns equal the same-named parameters."""
    return select(table.c.pk).where(*(table.c[name] == bindparam(name) for name in key))


def counts(conn: Connection) -> dict[str, int]:
    """Numbers of patients, studies, series and instances (for health and tests)."""
    return {
        name: conn.execute(select(func.count()).select_from(table)).scalar_one()
        for name, table in (("patients", patient), ("studies", study), ("series", series), ("instances", instance))
    }
