"""Audit message builders (`pergamon.audit.messages`): one test per PS3.15 A.5.3 event.

Each checks the EventID, EventActionCode, EventOutcomeIndicator, the active participants (roles,
requestor flags, AE titles, network access points), the participant objects, and that the message
validates against the DICOM audit schema (dicom2017c.xsd).
"""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from typing import Any

import pytest
from audit_schema import assert_valid
from lxml import etree

from pergamon.audit import codes as c
from pergamon.audit import messages as m

SOURCE = m.AuditSource("PERGAMON-AUDIT", "HOSPITAL")
CT = "1.2.840.10008.5.1.4.1.1.2"
MR = "1.2.840.10008.5.1.4.1.1.4"
PERGAMON = m.Participant.application("PERGAMON", "pacs.example.org", requestor=False)
MODALITY = m.Participant.application("MODALITY1", "10.1.2.3:40000", requestor=True)
PATIENT = m.Patient("P123", "HOSP")


def study() -> m.Study:
    s = m.Study("1.2.3.4", accessions=("ACC1",))
    s.add(CT, "1.2.3.4.1")
    s.add(CT, "1.2.3.4.2")
    s.add(MR, "1.2.3.4.3")
    return s


class Parsed:
    """The parts of a message a test checks."""

    def __init__(self, message: bytes) -> None:
        assert_valid(message)
        self.root = etree.fromstring(message)
        event = self.root.find("EventIdentification")
        assert event is not None
        self.action = event.get("EventActionCode")
        self.outcome = event.get("EventOutcomeIndicator")
        self.event_id = event.find("EventID").get("csd-code")  # type: ignore[union-attr]
        self.event_types = [e.get("csd-code") for e in event.findall("EventTypeCode")]
        self.description = event.findtext("EventOutcomeDescription")
        self.participants = self.root.findall("ActiveParticipant")
        self.objects = self.root.findall("ParticipantObjectIdentification")
        self.source = self.root.find("AuditSourceIdentification")

    def participant(self, user_id: str) -> Any:
        (found,) = [p for p in self.participants if p.get("UserID") == user_id]
        return found

    def role(self, user_id: str) -> str | None:
        code = self.participant(user_id).find("RoleIDCode")
        return None if code is None else code.get("csd-code")

    def requestor(self, user_id: str) -> bool:
        return self.participant(user_id).get("UserIsRequestor") == "true"

    def object_of(self, id_type: str) -> Any:
        (found,) = [o for o in self.objects if o.find("ParticipantObjectIDTypeCode").get("csd-code") == id_type]
        return found


def check_source(msg: Parsed) -> None:
    assert msg.source is not None
    assert msg.source.get("AuditSourceID") == "PERGAMON-AUDIT"
    assert msg.source.get("AuditEnterpriseSiteID") == "HOSPITAL"


def check_patient_and_study(msg: Parsed) -> None:
    patient = msg.object_of("2")
    assert patient.get("ParticipantObjectID") == "P123^^^HOSP"
    assert (patient.get("ParticipantObjectTypeCode"), patient.get("ParticipantObjectTypeCodeRole")) == ("1", "1")
    assert patient.find("ParticipantObjectIDTypeCode").get("codeSystemName") == "RFC-3881"
    s = msg.object_of("110180")
    assert s.get("ParticipantObjectID") == "1.2.3.4"
    assert (s.get("ParticipantObjectTypeCode"), s.get("ParticipantObjectTypeCodeRole")) == ("2", "3")
    classes = {c.get("UID"): c.get("NumberOfInstances") for c in s.iter("SOPClass")}
    assert classes == {CT: "2", MR: "1"}
    assert [a.get("Number") for a in s.iter("Accession")] == ["ACC1"]


def test_application_start_and_stop() -> None:
    for started, type_code in ((True, "110120"), (False, "110121")):
        msg = Parsed(m.application_activity(SOURCE, PERGAMON, started=started, launcher=m.Participant("alice", True)))
        assert (msg.event_id, msg.action, msg.outcome, msg.event_types) == ("110100", "E", "0", [type_code])
        assert msg.role("PERGAMON") == "110150" and not msg.requestor("PERGAMON")
        assert msg.participant("PERGAMON").get("AlternativeUserID") == "AETITLES=PERGAMON"
        assert msg.participant("PERGAMON").get("NetworkAccessPointTypeCode") == "1"
        assert msg.role("alice") == "110151" and msg.requestor("alice")
        assert msg.objects == []
        check_source(msg)


def test_audit_log_used() -> None:
    msg = Parsed(m.audit_log_used(SOURCE, m.Participant("auditor", True, host="10.0.0.9"), "http://h/fhir/AuditEvent"))
    assert (msg.event_id, msg.action, msg.outcome) == ("110101", "R", "0")
    log_object = msg.object_of("12")
    assert log_object.get("ParticipantObjectID") == "http://h/fhir/AuditEvent"
    assert log_object.findtext("ParticipantObjectName") == "Security Audit Log"


def test_begin_transferring() -> None:
    msg = Parsed(m.begin_transferring(SOURCE, PERGAMON, m.Participant.application("DEST", "10.0.0.2",
                                      requestor=False), PATIENT, [study()], others=[MODALITY]))  # fmt: skip
    assert (msg.event_id, msg.action, msg.outcome) == ("110102", "E", "0")
    assert msg.role("PERGAMON") == "110153" and msg.role("DEST") == "110152"
    assert msg.requestor("MODALITY1")
    check_patient_and_study(msg)


def test_instances_accessed() -> None:
    msg = Parsed(m.instances_accessed(SOURCE, "R", [m.Participant("bob", True)], PATIENT, [study()]))
    assert (msg.event_id, msg.action, msg.outcome) == ("110103", "R", "0")
    check_patient_and_study(msg)


def test_instances_transferred_on_store() -> None:
    msg = Parsed(m.instances_transferred(SOURCE, "C", MODALITY, PERGAMON, PATIENT, [study()]))
    assert (msg.event_id, msg.action, msg.outcome) == ("110104", "C", "0")
    assert msg.role("MODALITY1") == "110153" and msg.requestor("MODALITY1")
    assert msg.role("PERGAMON") == "110152" and not msg.requestor("PERGAMON")
    sender = msg.participant("MODALITY1")
    assert sender.get("AlternativeUserID") == "AETITLES=MODALITY1"
    assert (sender.get("NetworkAccessPointID"), sender.get("NetworkAccessPointTypeCode")) == ("10.1.2.3", "2")
    check_patient_and_study(msg)
    check_source(msg)


def test_instances_transferred_partial_failure_and_instances() -> None:
    message = m.instances_transferred(SOURCE, "R", PERGAMON, MODALITY, PATIENT, [study()], outcome=c.MINOR_FAILURE,
                                      description="2 sent, 1 failed")  # fmt: skip
    msg = Parsed(message)
    assert (msg.action, msg.outcome, msg.description) == ("R", "4", "2 sent, 1 failed")
    listed = Parsed(m.build(c.INSTANCES_TRANSFERRED, "R", 0, [PERGAMON], SOURCE, studies=[study()],
                            with_instances=True))  # fmt: skip
    assert len(list(listed.root.iter("Instance"))) == 3


def test_study_deleted() -> None:
    msg = Parsed(m.study_deleted(SOURCE, [m.Participant("admin", True, host="192.168.1.5")], PATIENT, [study()]))
    assert (msg.event_id, msg.action, msg.outcome) == ("110105", "D", "0")
    check_patient_and_study(msg)


def test_export() -> None:
    media = m.Participant("file:///media/cdrom", False, media=c.MEDIA_CD)
    msg = Parsed(m.export(SOURCE, m.Participant("alice", True), media, PATIENT, [study()]))
    assert (msg.event_id, msg.action, msg.outcome) == ("110106", "R", "0")
    assert msg.role("alice") == "110153" and msg.role("file:///media/cdrom") == "110154"
    assert msg.participant("file:///media/cdrom").find("MediaIdentifier/MediaType").get("csd-code") == "110032"
    check_patient_and_study(msg)


def test_import() -> None:
    media = m.Participant("/mnt/usb/DICOM", False, media=c.MEDIA_URI)
    message = m.import_(SOURCE, PERGAMON, media, PATIENT, [study()], others=[m.Participant("alice", True)])
    msg = Parsed(message)
    assert (msg.event_id, msg.action, msg.outcome) == ("110107", "C", "0")
    assert msg.role("PERGAMON") == "110152" and msg.role("/mnt/usb/DICOM") == "110155"
    assert msg.participant("/mnt/usb/DICOM").find("MediaIdentifier/MediaType").get("csd-code") == "110037"
    assert msg.requestor("alice")
    check_patient_and_study(msg)


@pytest.mark.parametrize("action", ["C", "U", "D"])
def test_order_record(action: str) -> None:
    message = m.order_record(SOURCE, action, [MODALITY, PERGAMON], PATIENT, message_id="MSG0001",
                             event_types=[c.Code("RAD-4", "IHE Transactions", "Procedure Scheduled")])  # fmt: skip
    msg = Parsed(message)
    assert (msg.event_id, msg.action, msg.outcome, msg.event_types) == ("110109", action, "0", ["RAD-4"])
    detail = msg.object_of("2").find("ParticipantObjectDetail")
    assert detail.get("type") == "MSH-10" and base64.b64decode(detail.get("value")) == b"MSG0001"


def test_patient_record() -> None:
    iti10 = c.Code("ITI-10", "IHE Transactions", "PIX Update Notification")
    message = m.patient_record(SOURCE, "U", [MODALITY, PERGAMON], m.Patient("P9", "HOSP&1.2.3&ISO", "DOE^JOHN"),
                               event_types=[iti10], message_id="42")  # fmt: skip
    msg = Parsed(message)
    assert (msg.event_id, msg.action, msg.event_types) == ("110110", "U", ["ITI-10"])
    patient = msg.object_of("2")
    assert patient.get("ParticipantObjectID") == "P9^^^HOSP&1.2.3&ISO"
    assert patient.findtext("ParticipantObjectName") == "DOE^JOHN"


def test_query_dimse() -> None:
    query_bytes = b"\x08\x00\x52\x00CS\x06\x00STUDY "
    message = m.query(SOURCE, MODALITY, PERGAMON, query_bytes, sop_class_uid="1.2.840.10008.5.1.4.1.2.2.1",
                      transfer_syntax="1.2.840.10008.1.2.1", patient=PATIENT)  # fmt: skip
    msg = Parsed(message)
    assert (msg.event_id, msg.action, msg.outcome) == ("110112", "E", "0")
    assert msg.role("MODALITY1") == "110153" and msg.requestor("MODALITY1")
    assert msg.role("PERGAMON") == "110152"
    q = msg.object_of("110181")
    assert q.get("ParticipantObjectID") == "1.2.840.10008.5.1.4.1.2.2.1"
    assert base64.b64decode(q.findtext("ParticipantObjectQuery")) == query_bytes
    detail = q.find("ParticipantObjectDetail")
    assert detail.get("type") == "TransferSyntax"
    assert base64.b64decode(detail.get("value")) == b"1.2.840.10008.1.2.1"
    assert msg.object_of("2").get("ParticipantObjectID") == "P123^^^HOSP"


def test_query_web() -> None:
    client = m.Participant("127.0.0.1", True, host="127.0.0.1:5000")
    msg = Parsed(m.query(SOURCE, client, PERGAMON, b"PatientID=P1", uri="/dicom-web/studies"))
    q = msg.object_of("12")
    assert q.get("ParticipantObjectID") == "/dicom-web/studies"
    assert base64.b64decode(q.findtext("ParticipantObjectQuery")) == b"PatientID=P1"


def test_security_alert_configuration_change() -> None:
    message = m.security_alert(SOURCE, c.SECURITY_CONFIGURATION, m.Participant("admin", True), subject="tls.ciphers",
                               alert_description="cipher list changed", outcome=c.SUCCESS)  # fmt: skip
    msg = Parsed(message)
    assert (msg.event_id, msg.action, msg.outcome, msg.event_types) == ("110113", "E", "0", ["110129"])
    subject = msg.object_of("12")
    assert subject.get("ParticipantObjectTypeCodeRole") == "13"
    assert base64.b64decode(subject.find("ParticipantObjectDetail").get("value")) == b"cipher list changed"


def test_node_authentication_failure() -> None:
    peer = m.Participant("10.9.9.9", True, host="10.9.9.9:51234")
    msg = Parsed(m.node_authentication_failure(SOURCE, PERGAMON, peer, "certificate not trusted"))
    assert (msg.event_id, msg.action, msg.outcome, msg.event_types) == ("110113", "E", "4", ["110126"])
    assert msg.requestor("10.9.9.9") and not msg.requestor("PERGAMON")
    assert msg.participant("10.9.9.9").get("NetworkAccessPointID") == "10.9.9.9"
    assert msg.object_of("110182").get("ParticipantObjectID") == "10.9.9.9:51234"
    assert msg.description == "certificate not trusted"


@pytest.mark.parametrize(("login", "outcome", "type_code"), [(True, 0, "110122"), (True, 4, "110122"),
                                                             (False, 0, "110123")])  # fmt: skip
def test_user_authentication(login: bool, outcome: int, type_code: str) -> None:
    message = m.user_authentication(SOURCE, m.Participant("alice", False, host="10.0.0.7"), PERGAMON, login=login,
                                    outcome=outcome)  # fmt: skip
    msg = Parsed(message)
    assert (msg.event_id, msg.action, msg.outcome, msg.event_types) == ("110114", "E", str(outcome), [type_code])
    assert msg.requestor("alice") and not msg.requestor("PERGAMON")


def test_timestamp_is_utc_with_milliseconds() -> None:
    when = datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)
    msg = Parsed(m.application_activity(SOURCE, PERGAMON, started=True, when=when))
    assert msg.root.find("EventIdentification").get("EventDateTime") == "2024-05-06T07:08:09.123Z"


def test_special_characters_are_escaped_and_utf8() -> None:
    message = m.patient_record(SOURCE, "C", [PERGAMON], m.Patient("<P&1>", "", "MÜLLER^JÖRG"))
    msg = Parsed(message)
    assert msg.object_of("2").get("ParticipantObjectID") == "<P&1>"
    assert "MÜLLER".encode() in message


@pytest.mark.parametrize(("host", "expected"), [
    ("10.0.0.1:104", ("10.0.0.1", "2")), ("[::1]:8080", ("::1", "2")), ("::1", ("::1", "2")),
    ("pacs.example.org", ("pacs.example.org", "1")), ("pacs:104", ("pacs", "1")), ("", ("", "")),
])  # fmt: skip
def test_network_access_point(host: str, expected: tuple[str, str]) -> None:
    assert m.network_access_point(host) == expected


def test_invalid_codes_are_refused() -> None:
    with pytest.raises(ValueError):
        m.build(c.QUERY, "X", 0, [PERGAMON], SOURCE)
    with pytest.raises(ValueError):
        m.build(c.QUERY, "E", 3, [PERGAMON], SOURCE)
    with pytest.raises(ValueError):
        m.build(c.QUERY, "E", 0, [], SOURCE)
