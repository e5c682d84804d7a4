"""Reading what an Audit Record Repository receives: syslog header plus DICOM audit message.

The ARR must accept any RFC 5424 syslog message (ITI TF-2 3.20.4.1.3), so nothing here ever
raises: every received message becomes a `ParsedRecord`, whose `flags` say what was wrong with it
(`syslog-header`, `invalid-xml`, `truncated-xml`, `not-audit-message`, `nonconforming`,
`oversize`, `incomplete-frame`). What could be read is still indexed, best effort: a message
truncated by UDP (RFC 5426 3.2, ITI TF-2 3.20.4.1.2.1.2) keeps the elements parsed before the cut.

The syslog header is RFC 5424 section 6 (`<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID SD [MSG]`),
read by `audit.syslog.parse_message`; the audit message is DICOM PS3.15 A.5.1 (`AuditMessage`), also
read in its older RFC 3881 spelling (`code`/`displayName`, not `csd-code`/`originalText`), flagged
`nonconforming`.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone

from pergamon.audit import syslog

IHE_MSGID = "IHE+RFC-3881"
DCM_SYSTEM = "http://dicom.nema.org/resources/ontology/DCM"
FLAG_SYSTEM = "urn:pergamon:audit-flag"

_CODE_SYSTEMS = {
    "DCM": DCM_SYSTEM,
    "IHE Transactions": "urn:ihe:event-type-code",
    "IHE": "urn:ihe:event-type-code",
    "RFC-3881": "urn:ietf:rfc:3881",
}
_OID = re.compile(r"[0-2](\.(0|[1-9][0-9]*))+")
_URI = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:\S+")
_RFC3339 = re.compile(r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})?", re.IGNORECASE)
_TRUNCATION_ERRORS = {3, 5, 6}  # expat: no element found, unclosed token, partial character


@dataclass(frozen=True)
class Coded:
    """A DICOM coded value (`csd-code`, `codeSystemName`, `originalText`; RFC 3881 `code`/`displayName`)."""

    code: str
    system_name: str
    display: str

    @property
    def system(self) -> str | None:
        """The FHIR Coding.system for the DICOM codeSystemName (None when it names no URI)."""
        return code_system(self.system_name)


@dataclass
class Participant:
    """An ActiveParticipant (PS3.15 A.5.1)."""

    user_id: str = ""
    alt_user_id: str = ""
    user_name: str = ""
    requestor: bool = False
    address: str = ""
    address_type: str = ""
    roles: list[Coded] = field(default_factory=list)


@dataclass
class ParticipantObject:
    """A ParticipantObjectIdentification (PS3.15 A.5.1)."""

    object_id: str = ""
    type_code: str = ""
    role: str = ""
    lifecycle: str = ""
    sensitivity: str = ""
    id_type: Coded | None = None
    name: str = ""
    query: str = ""
    details: list[tuple[str, str]] = field(default_factory=list)
    studies: list[str] = field(default_factory=list)
    description: str = ""

    @property
    def is_patient(self) -> bool:
        return (self.type_code == "1" and self.role == "1") or (self.id_type is not None and self.id_type.code == "2")

    @property
    def is_study(self) -> bool:
        return self.id_type is not None and self.id_type.code == "110180"


@dataclass
class AuditMessage:
    """The parts of a DICOM PS3.15 A.5.1 AuditMessage that the repository indexes and maps to FHIR."""

    action: str = ""
    date_time: str = ""
    outcome: str = ""
    outcome_description: str = ""
    event_id: Coded | None = None
    event_types: list[Coded] = field(default_factory=list)
    purposes: list[Coded] = field(default_factory=list)
    participants: list[Participant] = field(default_factory=list)
    source_id: str = ""
    site_id: str = ""
    source_types: list[Coded] = field(default_factory=list)
    objects: list[ParticipantObject] = field(default_factory=list)


@dataclass
class ParsedRecord:
    """One received message as far as it could be read, with what was wrong with it."""

    header: syslog.SyslogMessage | None
    audit: AuditMessage | None
    flags: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def flag(self, name: str, problem: str) -> None:
        if name not in self.flags:
            self.flags.append(name)
        self.problems.append(problem)


def code_system(name: str) -> str | None:
    """FHIR Coding.system for a DICOM codeSystemName: known names, OIDs as urn:oid:, URIs as they are."""
    if name in _CODE_SYSTEMS:
        return _CODE_SYSTEMS[name]
    if _OID.fullmatch(name):
        return f"urn:oid:{name}"
    if _URI.fullmatch(name):
        return name
    return None


def parse_time(value: str) -> datetime | None:
    """An RFC 3339 / xs:dateTime as an aware datetime (no offset: UTC); None when it is not one."""
    m = _RFC3339.fullmatch(value.strip())
    if m is None:
        return None
    year, month, day, hour, minute, second = (int(g) for g in m.groups()[:6])
    micro = int((m.group(7) or ".0")[1:7].ljust(6, "0"))
    offset = m.group(8) or "Z"
    tz = UTC
    if offset.upper() != "Z":
        sign = -1 if offset[0] == "-" else 1
        tz = timezone(sign * timedelta(hours=int(offset[1:3]), minutes=int(offset[4:6])))
    try:
        return datetime(year, month, day, hour, minute, min(second, 59), micro, tzinfo=tz)
    except ValueError:
        return None


def parse(data: bytes, *, oversize: bool = False, incomplete: bool = False) -> ParsedRecord:
    """Read one received syslog message; never raises (see the module docstring for the flags)."""
    record = ParsedRecord(header=None, audit=None)
    if oversize:
        record.flag("oversize", "longer than audit_repository.max_message_bytes: kept truncated")
    if incomplete:
        record.flag("incomplete-frame", "the connection ended inside the frame")
    body = data.rstrip(b"\r\n\x00")
    header = syslog.parse_message(body)
    record.header = header
    msg = header.msg
    header_problems = [p for p in header.problems if p != "MSG is not UTF-8"]
    if len(header_problems) < len(header.problems):
        record.flag("nonconforming", "MSG is not UTF-8 (RFC 5424 6.4)")
    if header_problems:
        record.flag("syslog-header", f"not an RFC 5424 syslog message: {'; '.join(header_problems)}")
        if not msg.lstrip().startswith((b"<?xml", b"<AuditMessage")):  # e.g. a comment before the XML
            start = msg.find(b"<?xml")
            start = msg.find(b"<AuditMessage") if start < 0 else start
            msg = msg[start:] if start >= 0 else msg
    elif header.msgid != IHE_MSGID:
        record.flag("nonconforming", f"MSGID {header.msgid!r}, not {IHE_MSGID!r} (ITI TF-2 3.20.4.1.2)")
    root = _parse_xml(msg.strip(), record)
    if root is None:
        return record
    namespace, _, local = root.tag.rpartition("}")
    if local != "AuditMessage":
        record.flag("not-audit-message", f"root element <{local}>, not <AuditMessage>")
        return record
    if namespace:
        record.flag("nonconforming", f"AuditMessage in namespace {namespace.lstrip('{')!r}")
    record.audit = _read_audit(root, record)
    _check(record.audit, record)
    return record


def _parse_xml(msg: bytes, record: ParsedRecord) -> ET.Element | None:
    """The document element, possibly repaired after truncation; None (flagged) when none could be read."""
    if not msg:
        record.flag("not-audit-message", "no XML in the message")
        return None
    if not msg.startswith(b"<"):
        record.flag("not-audit-message", "the message is not XML")
        return None
    if b"<!DOCTYPE" in msg or b"<!ENTITY" in msg:
        record.flag("invalid-xml", "document type declarations are refused")
        return None
    parser: ET.XMLPullParser[ET.Element] = ET.XMLPullParser(events=("start",))
    root: ET.Element | None = None
    error: ET.ParseError | None = None
    parser.feed(msg)  # a syntax error is queued and raised by read_events
    for closing in (False, True):
        try:
            if closing and error is None:
                parser.close()
            for _event, element in parser.read_events():  # type: ignore[misc]
                if root is None and isinstance(element, ET.Element):
                    root = element
        except ET.ParseError as exc:
            error = error or exc
    if error is None:
        return root
    if root is not None and error.code in _TRUNCATION_ERRORS:
        record.flag("truncated-xml", f"XML cut short ({error}); open elements closed")
    else:
        record.flag("invalid-xml", f"not well-formed XML: {error}")
    return root


def _local(element: ET.Element) -> str:
    return element.tag.rpartition("}")[2] if isinstance(element.tag, str) else ""


def _coded(element: ET.Element, record: ParsedRecord) -> Coded:
    code = element.get("csd-code")
    if code is None:
        code = element.get("code", "")
        if code:
            record.flag("nonconforming", f"<{_local(element)}> coded in RFC 3881 form (code=, not csd-code=)")
    display = element.get("originalText") or element.get("displayName") or ""
    return Coded(code=code, system_name=element.get("codeSystemName", ""), display=display)


def _read_audit(root: ET.Element, record: ParsedRecord) -> AuditMessage:
    audit = AuditMessage()
    for child in root:
        name = _local(child)
        if name == "EventIdentification":
            audit.action = child.get("EventActionCode", "")
            audit.date_time = child.get("EventDateTime", "")
            audit.outcome = child.get("EventOutcomeIndicator", "")
            for part in child:
                part_name = _local(part)
                if part_name == "EventID":
                    audit.event_id = _coded(part, record)
                elif part_name == "EventTypeCode":
                    audit.event_types.append(_coded(part, record))
                elif part_name == "PurposeOfUse":
                    audit.purposes.append(_coded(part, record))
                elif part_name == "EventOutcomeDescription":
                    audit.outcome_description = (part.text or "").strip()
        elif name == "ActiveParticipant":
            audit.participants.append(
                Participant(
                    user_id=child.get("UserID", ""),
                    alt_user_id=child.get("AlternativeUserID", ""),
                    user_name=child.get("UserName", ""),
                    requestor=child.get("UserIsRequestor", "").strip().lower() in ("true", "1"),
                    address=child.get("NetworkAccessPointID", ""),
                    address_type=child.get("NetworkAccessPointTypeCode", ""),
                    roles=[_coded(r, record) for r in child if _local(r) == "RoleIDCode"],
                )
            )
        elif name == "AuditSourceIdentification":
            audit.source_id = child.get("AuditSourceID", "")
            audit.site_id = child.get("AuditEnterpriseSiteID", "")
            audit.source_types = [_coded(t, record) for t in child if _local(t) == "AuditSourceTypeCode"]
        elif name == "ParticipantObjectIdentification":
            audit.objects.append(_read_object(child, record))
    return audit


def _read_object(element: ET.Element, record: ParsedRecord) -> ParticipantObject:
    obj = ParticipantObject(
        object_id=element.get("ParticipantObjectID", ""),
        type_code=element.get("ParticipantObjectTypeCode", ""),
        role=element.get("ParticipantObjectTypeCodeRole", ""),
        lifecycle=element.get("ParticipantObjectDataLifeCycle", ""),
        sensitivity=element.get("ParticipantObjectSensitivity", ""),
    )
    for part in element.iter():
        name = _local(part)
        if name == "ParticipantObjectIDTypeCode":
            obj.id_type = _coded(part, record)
        elif name == "ParticipantObjectName":
            obj.name = (part.text or "").strip()
        elif name == "ParticipantObjectQuery":
            obj.query = "".join((part.text or "").split())
        elif name == "ParticipantObjectDetail":
            obj.details.append((part.get("type", ""), part.get("value", "")))
        elif name == "ParticipantObjectDescription":
            obj.description = (part.text or "").strip()
        elif name == "StudyIDs" and part.get("UID"):
            obj.studies.append(part.get("UID", ""))
    return obj


def _check(audit: AuditMessage, record: ParsedRecord) -> None:
    """The PS3.15 A.5.1 requirements the index relies on; a failure flags the record `nonconforming`."""
    if audit.event_id is None or not audit.event_id.code:
        record.flag("nonconforming", "no EventIdentification/EventID")
    if parse_time(audit.date_time) is None:
        record.flag("nonconforming", f"EventDateTime {audit.date_time[:40]!r} is not an xs:dateTime")
    if audit.outcome not in ("0", "4", "8", "12"):
        record.flag("nonconforming", f"EventOutcomeIndicator {audit.outcome[:8]!r} not 0, 4, 8 or 12")
    if not audit.participants:
        record.flag("nonconforming", "no ActiveParticipant")
    if not audit.source_id:
        record.flag("nonconforming", "no AuditSourceIdentification/@AuditSourceID")


def split_cx(value: str) -> tuple[str, str]:
    """(ID, FHIR system) of an HL7 v2 CX patient identifier `ID^^^&OID&ISO`; system "" when none."""
    parts = value.split("^")
    if len(parts) < 4:
        return value, ""
    authority = parts[3].split("&")
    if len(authority) >= 3 and authority[2].upper() == "ISO" and _OID.fullmatch(authority[1]):
        return parts[0], f"urn:oid:{authority[1]}"
    return parts[0], ""


def index_keys(record: ParsedRecord) -> list[tuple[str, str, str]]:
    """(kind, system, value) rows of the multi-valued search keys of one record (FHIR search semantics:
    token values as they are, string values case-folded for prefix matching)."""
    keys: set[tuple[str, str, str]] = {("flag", FLAG_SYSTEM, f) for f in record.flags}
    audit = record.audit
    if audit is None:
        return sorted(keys)
    for coded in audit.event_types:
        keys.add(("subtype", coded.system or "", coded.code))
    for p in audit.participants:
        for user in (p.user_id, p.alt_user_id):
            if user:
                keys.add(("agent", "", user))
        if p.alt_user_id:
            keys.add(("altid", "", p.alt_user_id))
        for name in (p.user_name, p.user_id):
            if name:
                keys.add(("agent-name", "", name.casefold()))
        if p.address:
            keys.add(("address", "", p.address.casefold()))
        for role in p.roles:
            keys.add(("agent-role", role.system or "", role.code))
    if audit.site_id:
        keys.add(("site", "", audit.site_id))
    for obj in audit.objects:
        if obj.object_id:
            keys.add(("entity-id", "", obj.object_id))
        for study in obj.studies:
            keys.add(("entity-id", "", study))
        if obj.type_code:
            keys.add(("entity-type", "http://terminology.hl7.org/CodeSystem/audit-entity-type", obj.type_code))
        if obj.role:
            keys.add(("entity-role", "http://terminology.hl7.org/CodeSystem/object-role", obj.role))
        if obj.is_patient and obj.object_id:
            keys.add(("patient", "", obj.object_id))
            ident, system = split_cx(obj.object_id)
            keys.add(("patient", system, ident))
    return sorted(keys)
