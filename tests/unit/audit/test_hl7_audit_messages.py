"""Audit messages of the HL7 workflow events (`audit.trail`): orders, ITI-10 and ITI-9, checked against the schema."""

from __future__ import annotations

import base64
from typing import Any

from audit_schema import assert_valid
from lxml import etree

from pergamon.archive.events import OrderReceived, PixQuerySent, PixUpdateReceived
from pergamon.archive.origin import Origin
from pergamon.audit.trail import AuditTrail

ORIGIN = Origin.from_hl7("RIS", "HOSP", "PERGAMON", "127.0.0.1:40000")
QBP = (
    "MSH|^~\\&|PERGAMON|PERGAMON|PIX_MANAGER||20261127||QBP^Q23^QBP_Q21|Q1|P|2.5\r"
    "QPD|IHE PIX Query|T1|P1^^^PERGAMON\rRCP|I\r"
)


def only(trail: AuditTrail, event: Any) -> Any:
    (message,) = trail.messages_for(event)
    assert_valid(message)
    return etree.fromstring(message)


def test_origin_from_hl7_names_the_sender_as_facility_and_application() -> None:
    assert (ORIGIN.door, ORIGIN.calling_ae, ORIGIN.called_ae, ORIGIN.user) == ("hl7", "RIS", "PERGAMON", "HOSP|RIS")
    assert Origin.from_hl7("RIS", "", "PERGAMON", "").user == "RIS"


def test_order_events_are_procedure_records(archive: Any) -> None:
    trail = AuditTrail(archive, lambda _m: None)
    for action, transaction in (("C", "RAD-4"), ("U", "RAD-13"), ("D", "RAD-13")):
        event = OrderReceived(action, transaction, "PL1", "", "ACC1", "P1", "HOSP", "DOE^JANE", "M1", ORIGIN)
        root = only(trail, event)
        identification = root.find("EventIdentification")
        assert identification.find("EventID").get("csd-code") == "110111"
        assert identification.get("EventActionCode") == action
        assert identification.find("EventTypeCode").get("csd-code") == transaction
        sender = root.find("ActiveParticipant")
        assert (sender.get("UserID"), sender.find("RoleIDCode").get("csd-code")) == ("HOSP|RIS", "110153")
        patient = root.find("ParticipantObjectIdentification")
        assert patient.get("ParticipantObjectID") == "P1^^^HOSP"


def test_pix_update_is_one_patient_record_with_every_identifier(archive: Any) -> None:
    trail = AuditTrail(archive, lambda _m: None)
    root = only(trail, PixUpdateReceived((("P1", "HOSP_A"), ("L1", "PERGAMON")), "A31-1", ORIGIN))
    assert root.find("EventIdentification/EventID").get("csd-code") == "110110"
    assert root.find("EventIdentification").get("EventActionCode") == "U"
    assert root.find("EventIdentification/EventTypeCode").get("csd-code") == "ITI-10"
    objects = root.findall("ParticipantObjectIdentification")
    assert [o.get("ParticipantObjectID") for o in objects] == ["P1^^^HOSP_A", "L1^^^PERGAMON"]
    assert all(o.get("ParticipantObjectTypeCode") == "1" for o in objects)


def test_pix_query_carries_the_qbp(archive: Any) -> None:
    trail = AuditTrail(archive, lambda _m: None)
    event = PixQuerySent("P1", "PERGAMON", QBP.encode(), "Q1", "127.0.0.1:3600", "PERGAMON|PERGAMON", "PIX_MANAGER", "")
    root = only(trail, event)
    assert root.find("EventIdentification/EventID").get("csd-code") == "110112"
    assert root.find("EventIdentification").get("EventOutcomeIndicator") == "0"
    patient, parameters = root.findall("ParticipantObjectIdentification")
    assert patient.get("ParticipantObjectID") == "P1^^^PERGAMON"
    assert (parameters.get("ParticipantObjectTypeCode"), parameters.get("ParticipantObjectTypeCodeRole")) == ("2", "24")
    assert base64.b64decode(parameters.find("ParticipantObjectQuery").text).decode() == QBP
    refused = only(trail, PixQuerySent("P1", "PERGAMON", QBP.encode(), "Q1", "127.0.0.1:3600", "A", "B", "refused"))
    assert refused.find("EventIdentification").get("EventOutcomeIndicator") == "4"
