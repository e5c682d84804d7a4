"""SQL tables of the index: patient / study / series / instance, the durable job queue, the audit records.

SQLAlchemy Core, one schema for SQLite and PostgreSQL; Alembic migrations under `migrations/`
are generated from this module. Matchable attributes have their own column holding the value in
the normalised form of `archive.query.normalize` (PN upper-cased, TM/DT fixed width), so one
SQL comparison implements PS3.4 C.2.2.2 matching. Every other attribute of a level lives in the
level's `attrs` column as DICOM JSON (PS3.18 F.2) and is returned from there, and matched in
memory when a query uses it.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from sqlalchemy import (
    BigInteger,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s",
        "pk": "pk_%(table_name)s",
    }
)

UID = String(64)

patient = Table(
    "patient",
    metadata,
    Column("pk", Integer, primary_key=True),
    Column("patient_id", String(64), nullable=False, default=""),
    Column("issuer", String(64), nullable=False, default=""),
    Column("patient_name", Text),
    Column("patient_birth_date", String(8)),
    Column("patient_sex", String(16)),
    Column("num_studies", Integer, nullable=False, default=0),
    Column("attrs", Text, nullable=False, default="{}"),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    UniqueConstraint("patient_id", "issuer"),
)
Index(None, patient.c.patient_name)

study = Table(
    "study",
    metadata,
    Column("pk", Integer, primary_key=True),
    Column("patient_fk", Integer, ForeignKey("patient.pk"), nullable=False, index=True),
    Column("study_uid", UID, nullable=False, unique=True),
    Column("study_date", String(8), index=True),
    Column("study_time", String(13)),
    Column("accession_number", String(64), index=True),
    Column("study_id", String(16)),
    Column("referring_physician_name", Text),
    Column("study_description", Text),
    Column("modalities", String(256)),
    Column("sop_classes", Text),
    Column("num_series", Integer, nullable=False, default=0),
    Column("num_instances", Integer, nullable=False, default=0),
    Column("attrs", Text, nullable=False, default="{}"),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
)

series = Table(
    "series",
    metadata,
    Column("pk", Integer, primary_key=True),
    Column("study_fk", Integer, ForeignKey("study.pk"), nullable=False, index=True),
    Column("series_uid", UID, nullable=False, unique=True),
    Column("modality", String(16), index=True),
    Column("series_number", String(12)),
    Column("series_description", Text),
    Column("series_date", String(8)),
    Column("series_time", String(13)),
    Column("body_part_examined", String(16)),
    Column("pps_start_date", String(8)),
    Column("pps_start_time", String(13)),
    Column("num_instances", Integer, nullable=False, default=0),
    Column("attrs", Text, nullable=False, default="{}"),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
)

instance = Table(
    "instance",
    metadata,
    Column("pk", Integer, primary_key=True),
    Column("series_fk", Integer, ForeignKey("series.pk"), nullable=False, index=True),
    Column("sop_uid", UID, nullable=False, unique=True),
    Column("sop_class_uid", UID, nullable=False),
    Column("instance_number", String(12)),
    Column("content_date", String(8)),
    Column("content_time", String(13)),
    Column("transfer_syntax", UID, nullable=False),
    Column("blob_key", String(128), nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("attrs", Text, nullable=False, default="{}"),
    Column("origin", Text, nullable=False, default="{}"),
    Column("created_at", Float, nullable=False),
)

job = Table(
    "job",
    metadata,
    Column("pk", Integer, primary_key=True),
    Column("kind", String(64), nullable=False),
    Column("state", String(16), nullable=False, default="pending"),
    Column("payload", Text, nullable=False, default="{}"),
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_run_at", Float, nullable=False),
    Column("last_error", Text),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
)
Index(None, job.c.state, job.c.next_run_at)

# Audit Record Repository (ITI TF-2 3.20.4.1.3, 3.81): every received syslog message, raw and byte-exact,
# with the ITI-81 search parameters that have one value per message as columns; the multi-valued ones
# (users, addresses, patients, entities, subtypes, flags) are rows of `audit_record_key`.
audit_record = Table(
    "audit_record",
    metadata,
    Column("pk", Integer, primary_key=True),
    Column("received_at", Float, nullable=False, index=True),
    Column("transport", String(8), nullable=False),
    Column("peer", String(128), nullable=False, default=""),
    Column("flag", String(256), index=True),  # comma-separated problems; NULL when the message is clean
    Column("detail", Text),
    Column("hostname", String(255)),
    Column("app_name", String(48)),
    Column("msgid", String(32)),
    Column("recorded", Float, nullable=False, index=True),  # EventDateTime, else syslog TIMESTAMP, else arrival
    Column("event_system", String(255)),
    Column("event_id", String(64), index=True),
    Column("action", String(4)),
    Column("outcome", String(4)),
    Column("source_id", String(255), index=True),
    Column("size", Integer, nullable=False),  # bytes received, before any truncation
    Column("raw", LargeBinary, nullable=False),
)

audit_record_key = Table(
    "audit_record_key",
    metadata,
    Column("pk", Integer, primary_key=True),
    Column("record_fk", Integer, ForeignKey("audit_record.pk"), nullable=False, index=True),
    Column("kind", String(16), nullable=False),
    Column("system", String(255), nullable=False, default=""),
    Column("value", String(512), nullable=False),
)
Index(None, audit_record_key.c.kind, audit_record_key.c.value)


class Level(Enum):
    """Query/Retrieve levels of PS3.4 C.3 (values as they appear in QueryRetrieveLevel)."""

    PATIENT = "PATIENT"
    STUDY = "STUDY"
    SERIES = "SERIES"
    IMAGE = "IMAGE"


@dataclass(frozen=True)
class IndexedKey:
    """An attribute with its own column: which level's table and column, its VR, multi-valued or not."""

    keyword: str
    level: Level
    column: str
    vr: str
    multi_valued: bool = False


INDEXED_KEYS: dict[str, IndexedKey] = {
    k.keyword: k
    for k in (
        IndexedKey("PatientID", Level.PATIENT, "patient_id", "LO"),
        IndexedKey("IssuerOfPatientID", Level.PATIENT, "issuer", "LO"),
        IndexedKey("PatientName", Level.PATIENT, "patient_name", "PN"),
        IndexedKey("PatientBirthDate", Level.PATIENT, "patient_birth_date", "DA"),
        IndexedKey("PatientSex", Level.PATIENT, "patient_sex", "CS"),
        IndexedKey("StudyInstanceUID", Level.STUDY, "study_uid", "UI"),
        IndexedKey("StudyDate", Level.STUDY, "study_date", "DA"),
        IndexedKey("StudyTime", Level.STUDY, "study_time", "TM"),
        IndexedKey("AccessionNumber", Level.STUDY, "accession_number", "SH"),
        IndexedKey("StudyID", Level.STUDY, "study_id", "SH"),
        IndexedKey("ReferringPhysicianName", Level.STUDY, "referring_physician_name", "PN"),
        IndexedKey("StudyDescription", Level.STUDY, "study_description", "LO"),
        IndexedKey("ModalitiesInStudy", Level.STUDY, "modalities", "CS", multi_valued=True),
        IndexedKey("SOPClassesInStudy", Level.STUDY, "sop_classes", "UI", multi_valued=True),
        IndexedKey("SeriesInstanceUID", Level.SERIES, "series_uid", "UI"),
        IndexedKey("Modality", Level.SERIES, "modality", "CS"),
        IndexedKey("SeriesNumber", Level.SERIES, "series_number", "IS"),
        IndexedKey("SeriesDescription", Level.SERIES, "series_description", "LO"),
        IndexedKey("SeriesDate", Level.SERIES, "series_date", "DA"),
        IndexedKey("SeriesTime", Level.SERIES, "series_time", "TM"),
        IndexedKey("BodyPartExamined", Level.SERIES, "body_part_examined", "CS"),
        IndexedKey("PerformedProcedureStepStartDate", Level.SERIES, "pps_start_date", "DA"),
        IndexedKey("PerformedProcedureStepStartTime", Level.SERIES, "pps_start_time", "TM"),
        IndexedKey("SOPInstanceUID", Level.IMAGE, "sop_uid", "UI"),
        IndexedKey("SOPClassUID", Level.IMAGE, "sop_class_uid", "UI"),
        IndexedKey("InstanceNumber", Level.IMAGE, "instance_number", "IS"),
        IndexedKey("ContentDate", Level.IMAGE, "content_date", "DA"),
        IndexedKey("ContentTime", Level.IMAGE, "content_time", "TM"),
    )
}

TABLES = {Level.PATIENT: patient, Level.STUDY: study, Level.SERIES: series, Level.IMAGE: instance}
