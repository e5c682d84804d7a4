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
    # Patient reconciliation (PIR): bumped by every applied update, merge or identifier change; 0 means
    # the row holds what the stored objects carry, so retrieve sends them without looking inside.
    Column("revision", Integer, nullable=False, default=0, server_default="0"),
    UniqueConstraint("patient_id", "issuer"),
)
# Name and accession prefixes (`LIKE 'ROBE%'`) are matched against these indexes. PostgreSQL uses a
# btree for LIKE only under the C collation or with the pattern operator class (which also serves
# `=`); SQLite ignores `postgresql_ops` (its LIKE is case-sensitive by `PRAGMA case_sensitive_like`).
Index(None, patient.c.patient_name, postgresql_ops={"patient_name": "text_pattern_ops"})

study = Table(
    "study",
    metadata,
    Column("pk", Integer, primary_key=True),
    Column("patient_fk", Integer, ForeignKey("patient.pk"), nullable=False, index=True),
    Column("study_uid", UID, nullable=False, unique=True),
    Column("study_date", String(8), index=True),
    Column("study_time", String(13)),
    Column("accession_number", String(64)),
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
Index(None, study.c.accession_number, postgresql_ops={"accession_number": "varchar_pattern_ops"})

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

# Orders and PIX cross-references (RAD-4/RAD-13 requested procedures, ITI-9/ITI-10 identifier sets).
# A requested procedure is linked to studies by Study Instance UID (not a foreign key to `study`, so
# that removing a study never depends on its orders); its scheduled procedure steps are child rows.
requested_procedure = Table(
    "requested_procedure",
    metadata,
    Column("pk", Integer, primary_key=True),
    Column("placer_order_number", String(64), nullable=False, default="", index=True),
    Column("filler_order_number", String(64), nullable=False, default="", index=True),
    Column("accession_number", String(64), nullable=False, default="", index=True),
    Column("accession_issuer", String(64), nullable=False, default=""),
    Column("requested_procedure_id", String(64), nullable=False, default=""),
    Column("study_uid", UID, nullable=False, default="", index=True),
    Column("patient_id", String(64), nullable=False, default="", index=True),
    Column("patient_issuer", String(64), nullable=False, default=""),
    Column("patient_name", Text),
    Column("procedure_code", Text),  # JSON {"value", "scheme", "meaning"} of the Requested Procedure Code
    Column("procedure_description", Text),
    Column("status", String(16), nullable=False, default="SC", index=True),
    Column("message_type", String(16), nullable=False, default=""),  # ORM^O01 or OMI^O23 that set it last
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
)

scheduled_procedure_step = Table(
    "scheduled_procedure_step",
    metadata,
    Column("pk", Integer, primary_key=True),
    Column("procedure_fk", Integer, ForeignKey("requested_procedure.pk"), nullable=False, index=True),
    Column("sps_id", String(64), nullable=False, default=""),
    Column("modality", String(16)),
    Column("station_ae", String(16)),
    Column("start_datetime", String(26)),
    Column("protocol_codes", Text, nullable=False, default="[]"),  # JSON list of {"value", "scheme", "meaning"}
    Column("status", String(16), nullable=False, default="SC"),
    UniqueConstraint("procedure_fk", "sps_id"),
)

procedure_study = Table(
    "procedure_study",
    metadata,
    Column("pk", Integer, primary_key=True),
    Column("procedure_fk", Integer, ForeignKey("requested_procedure.pk"), nullable=False, index=True),
    Column("study_uid", UID, nullable=False, index=True),
    Column("matched_by", String(16), nullable=False),  # "study-uid" or "accession"
    Column("linked_at", Float, nullable=False),
    UniqueConstraint("procedure_fk", "study_uid"),
)

# One row per patient identifier known to be the same patient as the other rows of its `set_key`.
pix_xref = Table(
    "pix_xref",
    metadata,
    Column("pk", Integer, primary_key=True),
    Column("set_key", String(36), nullable=False, index=True),
    Column("patient_id", String(64), nullable=False),
    Column("issuer", String(64), nullable=False),  # namespace ID of the assigning authority, else its universal ID
    Column("issuer_uid", String(128), nullable=False, default=""),
    Column("source", String(16), nullable=False),  # "ITI-10" (A31), "ITI-9" (query answer) or "local"
    Column("updated_at", Float, nullable=False),
    UniqueConstraint("patient_id", "issuer"),
)


# MPPS, GP-PPS and IAN (PS3.4 F.7, F.10 (GP-PPS, retired), R; IHE RAD-6/7/20/21, RAD-42, RAD-49).
# `performed_procedure_step` holds the current attributes of each PPS as DICOM JSON; every
# N-CREATE/N-SET received is also kept in `pps_message`, in order, so forwarding replays exactly what
# the modality sent (`pps_forward` records how far each destination got). `pps_reference` lists the
# instances of the Performed Series Sequence, for Instance Availability Notification.
performed_procedure_step = Table(
    "performed_procedure_step",
    metadata,
    Column("pk", Integer, primary_key=True),
    Column("sop_uid", UID, nullable=False, unique=True),
    Column("sop_class_uid", UID, nullable=False),
    Column("status", String(16), nullable=False, index=True),
    Column("patient_id", String(64)),
    Column("issuer", String(64)),  # Issuer of Patient ID; with patient_id, follows merges and ID changes (PIR)
    Column("study_uid", UID),
    Column("calling_ae", String(16), nullable=False, default=""),
    Column("attrs", Text, nullable=False, default="{}"),
    Column("last_seq", Integer, nullable=False, default=1),
    Column("created_at", Float, nullable=False, index=True),
    Column("updated_at", Float, nullable=False),
    Column("ian_queued_at", Float),
)

pps_message = Table(
    "pps_message",
    metadata,
    Column("pk", Integer, primary_key=True),
    Column("pps_fk", Integer, ForeignKey("performed_procedure_step.pk"), nullable=False),
    Column("seq", Integer, nullable=False),
    Column("operation", String(8), nullable=False),
    Column("attrs", Text, nullable=False, default="{}"),
    Column("calling_ae", String(16), nullable=False, default=""),
    Column("received_at", Float, nullable=False),
    UniqueConstraint("pps_fk", "seq"),
)

pps_reference = Table(
    "pps_reference",
    metadata,
    Column("pk", Integer, primary_key=True),
    Column("pps_fk", Integer, ForeignKey("performed_procedure_step.pk"), nullable=False, index=True),
    Column("series_uid", UID, nullable=False),
    Column("sop_class_uid", UID, nullable=False),
    Column("sop_uid", UID, nullable=False, index=True),
)

pps_forward = Table(
    "pps_forward",
    metadata,
    Column("pk", Integer, primary_key=True),
    Column("pps_fk", Integer, ForeignKey("performed_procedure_step.pk"), nullable=False),
    Column("destination", String(16), nullable=False),
    Column("delivered_seq", Integer, nullable=False, default=0),
    Column("updated_at", Float, nullable=False),
    UniqueConstraint("pps_fk", "destination"),
)


# HL7 v2 message log: every message received over MLLP (or replayed), with the ACK sent for it.
hl7_message = Table(
    "hl7_message",
    metadata,
    Column("pk", Integer, primary_key=True),
    Column("received_at", Float, nullable=False, index=True),
    Column("transport", String(16), nullable=False),  # mllp, mllp-tls, replay
    Column("peer", String(128), nullable=False),
    Column("replay_of", Integer, ForeignKey("hl7_message.pk")),
    Column("size", Integer, nullable=False),  # bytes received, before any cut to hl7.max_message_bytes
    Column("raw", LargeBinary, nullable=False),  # the bytes between the MLLP start and end blocks
    Column("charset", String(64)),  # MSH-18 as written
    Column("sending_application", String(255)),
    Column("sending_facility", String(255)),
    Column("message_type", String(16), index=True),  # MSH-9.1
    Column("trigger_event", String(16)),  # MSH-9.2
    Column("control_id", String(255), index=True),  # MSH-10
    Column("version", String(16)),  # MSH-12
    Column("status", String(8), nullable=False, index=True),  # received (being processed), AA, AE, AR
    Column("error_code", String(8)),  # HL7 table 0357
    Column("error_text", Text),
    Column("detail", Text),  # traceback of an unexpected handler failure
    Column("ack", Text),  # the ACK sent (none for a frame cut off by the end of the connection)
    Column("processed_at", Float),
)


# Patient reconciliation (PIR, IHE RAD-12): one row per applied ADT update, merge or identifier change.
# Patients are named by ID and issuer, not by row, because a merge deletes the obsolete row.
patient_history = Table(
    "patient_history",
    metadata,
    Column("pk", Integer, primary_key=True),
    Column("action", String(16), nullable=False),  # create / update / merge / change-id
    Column("patient_id", String(64), nullable=False),  # the patient after the change (merge: the survivor)
    Column("issuer", String(64), nullable=False, default=""),
    Column("prior_patient_id", String(64)),  # merge: the obsolete patient; change-id: the former ID
    Column("prior_issuer", String(64)),
    Column("before", Text, nullable=False, default="{}"),  # DICOM JSON of the patient-level attributes
    Column("after", Text, nullable=False, default="{}"),
    Column("studies", Integer, nullable=False, default=0),  # studies moved by a merge
    Column("message_id", String(64), nullable=False, default=""),  # HL7 MSH-10 of the message applied
    Column("origin", Text, nullable=False, default="{}"),
    Column("recorded_at", Float, nullable=False, index=True),
)
Index(None, patient_history.c.patient_id, patient_history.c.issuer)
Index(None, patient_history.c.prior_patient_id, patient_history.c.prior_issuer)
