"""DICOM PS3.15 A.5 audit messages: one builder per audit event of PS3.15 A.5.3.

Each builder returns the UTF-8 bytes of one `<AuditMessage>` (PS3.15 A.5.1, schema 2017c with the
IHE relaxations, `shared/schemas/atna/schema/dicom2017c.xsd`), ready to be the MSG part of an
ITI-20 Record Audit Event syslog message (ITI TF-2 §3.20.4.1.2). Only the standard library is
used, so building a message cannot fail for lack of a dependency.

Conventions taken from ITI TF-2 §3.20.7.1 and PS3.15 A.5.2:
- one patient per message: callers split events that touch several patients;
- RFC 3881 integer codes (e.g. ParticipantObjectIDTypeCode 2, Patient Number) carry
  `codeSystemName="RFC-3881"`, DICOM codes (CID 400-405) `codeSystemName="DCM"`;
- a DICOM application's AlternativeUserID is `AETITLES=AE1;AE2` (PS3.15 A.5.2.1);
- patients are identified in the HL7 CX form `id^^^issuer` (ITI TF-2 §3.20.7.1).

The event-specific rules (EventActionCode, participants, objects) are in each builder's docstring
with the PS3.15 A.5.3.x section it implements.
"""

from __future__ import annotations

import base64
import ipaddress
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from pergamon.audit import codes as c


def aetitles(*ae_titles: str) -> str:
    """AlternativeUserID of a DICOM application (PS3.15 A.5.2.1): `AETITLES=AE1;AE2`."""
    return "AETITLES=" + ";".join(t.strip() for t in ae_titles if t.strip())


def network_access_point(host: str) -> tuple[str, str]:
    """NetworkAccessPointID and its TypeCode (1 machine name, 2 IP address) for a host or `host:port`."""
    host = host.strip()
    if not host:
        return "", ""
    candidates = [host]
    if host.startswith("[") and "]" in host:
        candidates.insert(0, host[1 : host.index("]")])
    elif host.count(":") >= 1:
        candidates.append(host.rsplit(":", 1)[0])
    for candidate in candidates:
        try:
            return str(ipaddress.ip_address(candidate)), "2"
        except ValueError:
            continue
    return (host.rsplit(":", 1)[0] if host.count(":") == 1 else host), "1"


@dataclass(frozen=True)
class Participant:
    """An ActiveParticipant (PS3.15 A.5.2.1): a person, process or node taking part in the event."""

    user_id: str
    requestor: bool
    role: c.Code | None = None
    alternative_user_id: str = ""
    user_name: str = ""
    host: str = ""
    media: c.Code | None = None

    @classmethod
    def application(cls, ae_title: str, host: str = "", *, requestor: bool, role: c.Code | None = None) -> Participant:
        """A DICOM application known by its AE title (UserID and `AETITLES=` AlternativeUserID)."""
        return cls(ae_title, requestor, role, aetitles(ae_title), host=host)


@dataclass(frozen=True)
class AuditSource:
    """AuditSourceIdentification (PS3.15 A.5.1): who reports the event."""

    source_id: str
    site_id: str = ""
    type_code: c.Code = c.SOURCE_APPLICATION_SERVER


@dataclass(frozen=True)
class Patient:
    """A patient participant object: ID, issuer (CX `id^^^issuer`) and optional name."""

    id: str
    issuer: str = ""
    name: str = ""

    @property
    def cx(self) -> str:
        return f"{self.id}^^^{self.issuer}" if self.issuer else self.id


@dataclass
class Study:
    """A study participant object (PS3.15 A.5.3.x "Studies"): UID, SOP classes with counts, accessions."""

    uid: str
    sop_classes: dict[str, int] = field(default_factory=dict)
    accessions: tuple[str, ...] = ()
    instances: dict[str, list[str]] = field(default_factory=dict)

    def add(self, sop_class_uid: str, sop_instance_uid: str = "") -> None:
        self.sop_classes[sop_class_uid] = self.sop_classes.get(sop_class_uid, 0) + 1
        if sop_instance_uid:
            self.instances.setdefault(sop_class_uid, []).append(sop_instance_uid)


@dataclass(frozen=True)
class ParticipantObject:
    """A ParticipantObjectIdentification (PS3.15 A.5.2.2) not covered by Patient / Study."""

    id: str
    id_type: c.Code
    type_code: str = "2"
    role: str = ""
    name: str = ""
    query: bytes | None = None
    details: tuple[tuple[str, bytes], ...] = ()
    lifecycle: str = ""


def _now() -> datetime:
    return datetime.now(UTC)


def _timestamp(when: datetime | None) -> str:
    when = (when or _now()).astimezone(UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


def _code(parent: ET.Element, tag: str, code: c.Code) -> ET.Element:
    return ET.SubElement(parent, tag, {"csd-code": code.code, "codeSystemName": code.system, "originalText": code.text})


def _participant(root: ET.Element, p: Participant) -> None:
    attrs = {"UserID": p.user_id}
    if p.alternative_user_id:
        attrs["AlternativeUserID"] = p.alternative_user_id
    if p.user_name:
        attrs["UserName"] = p.user_name
    attrs["UserIsRequestor"] = "true" if p.requestor else "false"
    nap_id, nap_type = network_access_point(p.host)
    if nap_id:
        attrs["NetworkAccessPointID"] = nap_id
        attrs["NetworkAccessPointTypeCode"] = nap_type
    element = ET.SubElement(root, "ActiveParticipant", attrs)
    if p.role is not None:
        _code(element, "RoleIDCode", p.role)
    if p.media is not None:
        _code(ET.SubElement(element, "MediaIdentifier"), "MediaType", p.media)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _object(root: ET.Element, o: ParticipantObject) -> None:
    attrs = {"ParticipantObjectID": o.id, "ParticipantObjectTypeCode": o.type_code}
    if o.role:
        attrs["ParticipantObjectTypeCodeRole"] = o.role
    if o.lifecycle:
        attrs["ParticipantObjectDataLifeCycle"] = o.lifecycle
    element = ET.SubElement(root, "ParticipantObjectIdentification", attrs)
    _code(element, "ParticipantObjectIDTypeCode", o.id_type)
    if o.query is not None:
        ET.SubElement(element, "ParticipantObjectQuery").text = _b64(o.query)
    elif o.name:
        ET.SubElement(element, "ParticipantObjectName").text = o.name
    for kind, value in o.details:
        ET.SubElement(element, "ParticipantObjectDetail", {"type": kind, "value": _b64(value)})


def _patient(root: ET.Element, patient: Patient, details: tuple[tuple[str, bytes], ...] = ()) -> None:
    """Patient (PS3.15 A.5.2.2): TypeCode 1 person, role 1 patient, ID type RFC 3881 2 Patient Number."""
    _object(root, ParticipantObject(patient.cx, c.ID_PATIENT_NUMBER, "1", "1", name=patient.name, details=details))


def _study(root: ET.Element, study: Study, *, with_instances: bool = False) -> None:
    """Study (PS3.15 A.5.2.2): TypeCode 2 system object, role 3 report, ID type 110180; the
    ParticipantObjectDescription lists accession numbers and SOP classes with instance counts."""
    element = ET.SubElement(
        root,
        "ParticipantObjectIdentification",
        {"ParticipantObjectID": study.uid, "ParticipantObjectTypeCode": "2", "ParticipantObjectTypeCodeRole": "3"},
    )
    _code(element, "ParticipantObjectIDTypeCode", c.ID_STUDY_INSTANCE_UID)
    if not study.sop_classes and not study.accessions:
        return
    description = ET.SubElement(element, "ParticipantObjectDescription")
    for accession in study.accessions:
        if accession:
            ET.SubElement(description, "Accession", {"Number": accession})
    for uid, count in sorted(study.sop_classes.items()):
        sop = ET.SubElement(description, "SOPClass", {"UID": uid, "NumberOfInstances": str(count)})
        if with_instances:
            for instance_uid in study.instances.get(uid, []):
                ET.SubElement(sop, "Instance", {"UID": instance_uid})


def build(
    event_id: c.Code,
    action: str,
    outcome: int,
    participants: Sequence[Participant],
    source: AuditSource,
    *,
    event_types: Iterable[c.Code] = (),
    description: str = "",
    patient: Patient | None = None,
    patient_details: tuple[tuple[str, bytes], ...] = (),
    studies: Iterable[Study] = (),
    objects: Iterable[ParticipantObject] = (),
    with_instances: bool = False,
    when: datetime | None = None,
) -> bytes:
    """One AuditMessage (PS3.15 A.5.1): EventIdentification, ActiveParticipant+, AuditSourceIdentification,
    ParticipantObjectIdentification* (patient first, then studies, then other objects)."""
    if action not in c.ACTIONS:
        raise ValueError(f"EventActionCode must be one of {c.ACTIONS}, not {action!r}")
    if outcome not in c.OUTCOMES:
        raise ValueError(f"EventOutcomeIndicator must be one of {c.OUTCOMES}, not {outcome!r}")
    if not participants:
        raise ValueError("an audit message needs at least one ActiveParticipant")
    root = ET.Element("AuditMessage")
    event = ET.SubElement(
        root,
        "EventIdentification",
        {"EventActionCode": action, "EventDateTime": _timestamp(when), "EventOutcomeIndicator": str(outcome)},
    )
    _code(event, "EventID", event_id)
    for event_type in event_types:
        _code(event, "EventTypeCode", event_type)
    if description:
        ET.SubElement(event, "EventOutcomeDescription").text = description
    for participant in participants:
        _participant(root, participant)
    source_attrs = {"AuditSourceID": source.source_id}
    if source.site_id:
        source_attrs["AuditEnterpriseSiteID"] = source.site_id
    _code(ET.SubElement(root, "AuditSourceIdentification", source_attrs), "AuditSourceTypeCode", source.type_code)
    if patient is not None:
        _patient(root, patient, patient_details)
    for study in studies:
        _study(root, study, with_instances=with_instances)
    for obj in objects:
        _object(root, obj)
    return ET.tostring(root, encoding="utf-8", xml_declaration=False)


# --- one builder per PS3.15 A.5.3 event ------------------------------------------------------------


def application_activity(
    source: AuditSource,
    application: Participant,
    *,
    started: bool,
    launcher: Participant | None = None,
    outcome: int = c.SUCCESS,
    description: str = "",
    when: datetime | None = None,
) -> bytes:
    """Application Activity, PS3.15 A.5.3.1 (ITI TF-2 Table 3.20.4.1.1.1-1 "Actor-start-stop").

    EventID 110100, action E, EventTypeCode 110120 Application Start / 110121 Application Stop.
    The application is a non-requestor with RoleIDCode 110150; who started it (if known) is the
    requestor with RoleIDCode 110151 Application Launcher.
    """
    app = Participant(
        application.user_id, False, c.ROLE_APPLICATION, application.alternative_user_id, host=application.host
    )
    participants = [app]
    if launcher is not None:
        participants.append(Participant(launcher.user_id, True, c.ROLE_APPLICATION_LAUNCHER, host=launcher.host))
    event_type = c.APPLICATION_START if started else c.APPLICATION_STOP
    return build(c.APPLICATION_ACTIVITY, "E", outcome, participants, source, event_types=[event_type],
                 description=description, when=when)  # fmt: skip


def audit_log_used(
    source: AuditSource, accessor: Participant, log_uri: str, *, outcome: int = c.SUCCESS, when: datetime | None = None
) -> bytes:
    """Audit Log Used, PS3.15 A.5.3.2 (ITI TF-2 "Audit-Log-Used", emitted by the ARR).

    EventID 110101, action R; the accessing user/process is the requestor; the audit log is a
    system object (role 13 Security Resource) identified by URI.
    """
    log_object = ParticipantObject(log_uri, c.ID_URI, "2", "13", name="Security Audit Log")
    return build(c.AUDIT_LOG_USED, "R", outcome, [accessor], source, objects=[log_object], when=when)


def begin_transferring(
    source: AuditSource,
    sender: Participant,
    receiver: Participant,
    patient: Patient,
    studies: Sequence[Study],
    *,
    others: Sequence[Participant] = (),
    outcome: int = c.SUCCESS,
    when: datetime | None = None,
) -> bytes:
    """Begin Transferring DICOM Instances, PS3.15 A.5.3.3 (ITI TF-2 "Begin-storing-instances").

    EventID 110102, action E; the sending process has RoleIDCode 110153, the receiving one 110152;
    other participants (e.g. the C-MOVE requestor) follow. One patient, its studies.
    """
    participants = [_with_role(sender, c.ROLE_SOURCE), _with_role(receiver, c.ROLE_DESTINATION), *others]
    return build(c.BEGIN_TRANSFERRING, "E", outcome, participants, source, patient=patient, studies=studies,
                 when=when)  # fmt: skip


def instances_accessed(
    source: AuditSource,
    action: str,
    participants: Sequence[Participant],
    patient: Patient,
    studies: Sequence[Study],
    *,
    outcome: int = c.SUCCESS,
    description: str = "",
    when: datetime | None = None,
) -> bytes:
    """DICOM Instances Accessed, PS3.15 A.5.3.4 (ITI TF-2 "Study-Object-Event", "Instances-deleted").

    EventID 110103, action C (created), R (read), U (modified) or D (deleted); the participants
    (at least the person or process that accessed) are given; one patient, its studies.
    """
    return build(c.INSTANCES_ACCESSED, action, outcome, participants, source, patient=patient, studies=studies,
                 description=description, when=when)  # fmt: skip


def instances_transferred(
    source: AuditSource,
    action: str,
    sender: Participant,
    receiver: Participant,
    patient: Patient | None,
    studies: Sequence[Study],
    *,
    others: Sequence[Participant] = (),
    outcome: int = c.SUCCESS,
    description: str = "",
    when: datetime | None = None,
) -> bytes:
    """DICOM Instances Transferred, PS3.15 A.5.3.5 (ITI TF-2 "Instances-Stored").

    EventID 110104. Action C when the receiver did not hold the instances, U when it replaced
    them, R when the reporter is the one that read and sent them (C-MOVE, C-GET, WADO).
    The sending process has RoleIDCode 110153 Source, the receiving one 110152 Destination; a third
    party that asked for the transfer (C-MOVE requestor) is an extra participant. One patient per
    message; each study lists its SOP classes with instance counts.
    """
    participants = [_with_role(sender, c.ROLE_SOURCE), _with_role(receiver, c.ROLE_DESTINATION), *others]
    return build(c.INSTANCES_TRANSFERRED, action, outcome, participants, source, patient=patient, studies=studies,
                 description=description, when=when)  # fmt: skip


def study_deleted(
    source: AuditSource,
    participants: Sequence[Participant],
    patient: Patient,
    studies: Sequence[Study],
    *,
    outcome: int = c.SUCCESS,
    description: str = "",
    when: datetime | None = None,
) -> bytes:
    """DICOM Study Deleted, PS3.15 A.5.3.6 (ITI TF-2 "Instances-deleted"; also rejection by IOCM).

    EventID 110105, action D; the person or process that deleted is the requestor; one patient,
    the deleted studies (whole study or the listed SOP classes and counts).
    """
    return build(c.STUDY_DELETED, "D", outcome, participants, source, patient=patient, studies=studies,
                 description=description, when=when)  # fmt: skip


def export(
    source: AuditSource,
    exporter: Participant,
    media: Participant,
    patient: Patient,
    studies: Sequence[Study],
    *,
    others: Sequence[Participant] = (),
    outcome: int = c.SUCCESS,
    event_types: Sequence[c.Code] = (),
    when: datetime | None = None,
) -> bytes:
    """Export, PS3.15 A.5.3.7 (ITI TF-2 "PHI-export"; XDS-I.b RAD-68 as EventTypeCode).

    EventID 110106, action R; the exporting process/person is the requestor with RoleIDCode 110153
    Source; the destination media (or the receiving node) has RoleIDCode 110154 Destination Media
    and a MediaIdentifier.
    """
    participants = [_with_role(exporter, c.ROLE_SOURCE), _with_role(media, c.ROLE_DESTINATION_MEDIA), *others]
    return build(c.EXPORT, "R", outcome, participants, source, event_types=event_types, patient=patient,
                 studies=studies, when=when)  # fmt: skip


def import_(
    source: AuditSource,
    importer: Participant,
    media: Participant,
    patient: Patient | None,
    studies: Sequence[Study],
    *,
    others: Sequence[Participant] = (),
    outcome: int = c.SUCCESS,
    description: str = "",
    event_types: Sequence[c.Code] = (),
    when: datetime | None = None,
) -> bytes:
    """Import, PS3.15 A.5.3.8 (ITI TF-2 "PHI-import", e.g. `pergamon import` from a folder or CD).

    EventID 110107, action C; the importing process has RoleIDCode 110152 Destination, the source
    media RoleIDCode 110155 Source Media with a MediaIdentifier (CID 405, e.g. 110037 URI for a
    folder); the person who ran the import is a requestor.
    """
    participants = [_with_role(importer, c.ROLE_DESTINATION), _with_role(media, c.ROLE_SOURCE_MEDIA), *others]
    return build(c.IMPORT, "C", outcome, participants, source, event_types=event_types, patient=patient,
                 studies=studies, description=description, when=when)  # fmt: skip


def order_record(
    source: AuditSource,
    action: str,
    participants: Sequence[Participant],
    patient: Patient,
    *,
    event_types: Sequence[c.Code] = (),
    message_id: str = "",
    outcome: int = c.SUCCESS,
    when: datetime | None = None,
) -> bytes:
    """Order Record, PS3.15 A.5.3.9 (orders received over HL7 ORM/OMI, RAD-2/RAD-4).

    EventID 110109, action C/R/U/D; the participants are the HL7 sender (110153) and receiver
    (110152); the patient object carries the HL7 message control ID (MSH-10) as a detail.
    """
    return _hl7_record(c.ORDER_RECORD, source, action, participants, patient, event_types, message_id, outcome, when)


def procedure_record(
    source: AuditSource,
    action: str,
    participants: Sequence[Participant],
    patient: Patient,
    *,
    event_types: Sequence[c.Code] = (),
    message_id: str = "",
    outcome: int = c.SUCCESS,
    when: datetime | None = None,
) -> bytes:
    """Procedure Record, PS3.15 A.5.3 (requested procedures received over HL7 ORM/OMI, RAD-4 / RAD-13).

    EventID 110111, action C (scheduled), U (changed), D (cancelled, discontinued); participants,
    patient and the MSH-10 detail as in the Order Record.
    """
    return _hl7_record(c.PROCEDURE_RECORD, source, action, participants, patient, event_types, message_id, outcome,
                       when)  # fmt: skip


def patient_record(
    source: AuditSource,
    action: str,
    participants: Sequence[Participant],
    patient: Patient,
    *,
    event_types: Sequence[c.Code] = (),
    message_id: str = "",
    outcome: int = c.SUCCESS,
    when: datetime | None = None,
) -> bytes:
    """Patient Record, PS3.15 A.5.3.10 (ITI TF-2 "Patient-record-event"; ITI-8 / ITI-10 §3.10.5.1.2).

    EventID 110110, action C (create), U (update, merge: one message per patient), D (delete);
    EventTypeCode the IHE transaction (e.g. `c.Code("ITI-10", "IHE Transactions", "PIX Update
    Notification")`); the patient object carries MSH-10 as a ParticipantObjectDetail.
    """
    return _hl7_record(c.PATIENT_RECORD, source, action, participants, patient, event_types, message_id, outcome, when)


def _hl7_record(
    event_id: c.Code,
    source: AuditSource,
    action: str,
    participants: Sequence[Participant],
    patient: Patient,
    event_types: Sequence[c.Code],
    message_id: str,
    outcome: int,
    when: datetime | None,
) -> bytes:
    """The body shared by the Order and Patient Record messages: MSH-10 as the patient's detail."""
    details = (("MSH-10", message_id.encode()),) if message_id else ()
    return build(event_id, action, outcome, participants, source, event_types=event_types, patient=patient,
                 patient_details=details, when=when)  # fmt: skip


def query(
    source: AuditSource,
    requestor: Participant,
    responder: Participant,
    query_bytes: bytes,
    *,
    sop_class_uid: str = "",
    uri: str = "",
    transfer_syntax: str = "",
    patient: Patient | None = None,
    event_types: Sequence[c.Code] = (),
    outcome: int = c.SUCCESS,
    when: datetime | None = None,
) -> bytes:
    """Query, PS3.15 A.5.3.11 (ITI TF-2 "Query Information"; C-FIND, QIDO-RS).

    EventID 110112, action E. The querying process is the requestor with RoleIDCode 110153 Source,
    the queried one 110152 Destination. The query object (TypeCode 2, role 3 Report) is identified
    by the SOP Class UID of the C-FIND (ID type 110181) or, for a web query, by its URI (RFC 3881
    12); ParticipantObjectQuery holds the query (the identifier dataset, or the query string),
    base64; a "TransferSyntax" detail names the identifier's encoding. A patient object follows
    when the query names one patient.
    """
    if sop_class_uid:
        details = (("TransferSyntax", transfer_syntax.encode()),) if transfer_syntax else ()
        obj = ParticipantObject(sop_class_uid, c.ID_SOP_CLASS_UID, "2", "3", query=query_bytes, details=details)
    else:
        obj = ParticipantObject(uri or "query", c.ID_URI, "2", "24", query=query_bytes)
    participants = [_with_role(requestor, c.ROLE_SOURCE), _with_role(responder, c.ROLE_DESTINATION)]
    return build(c.QUERY, "E", outcome, participants, source, event_types=event_types, patient=patient,
                 objects=[obj], when=when)  # fmt: skip


def hl7_query(
    source: AuditSource,
    participants: Sequence[Participant],
    query_bytes: bytes,
    transaction: c.Code,
    *,
    message_id: str = "",
    patients: Sequence[Patient] = (),
    outcome: int = c.SUCCESS,
    description: str = "",
    when: datetime | None = None,
) -> bytes:
    """Query over HL7 v2 (e.g. ITI-9 PIX Query, ITI TF-2 3.9.5.1.1), PS3.15 A.5.3 "Query".

    EventID 110112, action E, EventTypeCode the transaction. The participants are the querying
    application (110153 Source) and the queried one (110152 Destination), each known as
    `facility|application`. Patients (one per queried identifier) come first; the Query Parameters
    object (TypeCode 2, role 24, ID type the transaction) holds the whole query message, base64, in
    ParticipantObjectQuery and MSH-10 as a detail.
    """
    details = (("MSH-10", message_id.encode()),) if message_id else ()
    query_object = ParticipantObject(message_id or transaction.code, transaction, "2", "24", query=query_bytes,
                                     details=details)  # fmt: skip
    patient_objects = [ParticipantObject(p.cx, c.ID_PATIENT_NUMBER, "1", "1", name=p.name) for p in patients]
    return build(c.QUERY, "E", outcome, participants, source, event_types=[transaction], description=description,
                 objects=[*patient_objects, query_object], when=when)  # fmt: skip


def security_alert(
    source: AuditSource,
    alert_type: c.Code,
    reporter: Participant,
    *,
    performers: Sequence[Participant] = (),
    subject: str = "",
    subject_type: c.Code = c.ID_URI,
    alert_description: str = "",
    outcome: int = c.MINOR_FAILURE,
    when: datetime | None = None,
) -> bytes:
    """Security Alert, PS3.15 A.5.3.12 (ITI TF-2 "Security Alert", "Node-Authentication-failure").

    EventID 110113, action E, EventTypeCode from CID 403 (e.g. 110126 Node Authentication, 110129
    Security Configuration, 110132 Use of Restricted Function). EventOutcomeIndicator 0 marks an
    informative alert, 4/8/12 the severity of a failure. The reporting process comes first; the
    performing persons or processes (e.g. the refused peer) follow. The alert subject (TypeCode 2,
    role 13 Security Resource) carries the "Alert Description" as a detail.
    """
    objects = []
    if subject:
        details = (("Alert Description", alert_description.encode()),) if alert_description else ()
        objects.append(ParticipantObject(subject, subject_type, "2", "13", details=details))
    return build(c.SECURITY_ALERT, "E", outcome, [reporter, *performers], source, event_types=[alert_type],
                 description=alert_description, objects=objects, when=when)  # fmt: skip


def node_authentication_failure(
    source: AuditSource, reporter: Participant, peer: Participant, reason: str, *, when: datetime | None = None
) -> bytes:
    """Security Alert 110113 with EventTypeCode 110126 Node Authentication (ITI TF-2 Table
    3.20.4.1.1.1-1 "Node-Authentication-failure", ITI-19 §3.19.6): a peer refused at the TLS
    handshake. Outcome 4 (minor failure: refused, nothing exposed); the peer is the requestor."""
    subject = peer.host or peer.user_id
    return security_alert(source, c.NODE_AUTHENTICATION, reporter, performers=[peer], subject=subject,
                          subject_type=c.ID_NODE, alert_description=reason, when=when)  # fmt: skip


def user_authentication(
    source: AuditSource,
    user: Participant,
    node: Participant,
    *,
    login: bool = True,
    outcome: int = c.SUCCESS,
    description: str = "",
    when: datetime | None = None,
) -> bytes:
    """User Authentication, PS3.15 A.5.3.13 (ITI TF-2 "User Authentication", ITI-2 login/logout).

    EventID 110114, action E, EventTypeCode 110122 Login / 110123 Logout; outcome 0 for success,
    4 for a refused login. The user is the requestor; the authenticating node follows.
    """
    user = Participant(user.user_id, True, user.role, user.alternative_user_id, user.user_name, user.host)
    node = Participant(node.user_id, False, node.role, node.alternative_user_id, node.user_name, node.host)
    event_type = c.LOGIN if login else c.LOGOUT
    return build(c.USER_AUTHENTICATION, "E", outcome, [user, node], source, event_types=[event_type],
                 description=description, when=when)  # fmt: skip


def _with_role(participant: Participant, role: c.Code) -> Participant:
    if participant.role == role:
        return participant
    return Participant(
        participant.user_id,
        participant.requestor,
        role,
        participant.alternative_user_id,
        participant.user_name,
        participant.host,
        participant.media,
    )
