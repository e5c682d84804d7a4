"""`AuditTrail`: every domain event mapped to its PS3.15 A.5.3 message(s), on the index backend of
PERGAMON_TEST_DB (the `archive` fixture); and auditing never raises into the core."""

from __future__ import annotations

import base64
import logging
from pathlib import Path
from typing import Any

import pytest
import samples
from audit_schema import assert_valid
from lxml import etree
from pydicom.uid import generate_uid

from pergamon.archive.events import (
    ApplicationStarted,
    ApplicationStopped,
    ClockOffsetExceeded,
    CommitmentReported,
    InstanceRejectedOnIngest,
    InstancesSent,
    NodeAuthenticationFailed,
    QueryPerformed,
)
from pergamon.archive.origin import Origin
from pergamon.audit.trail import STUDY_ROOT_FIND, AuditTrail

CT = "1.2.840.10008.5.1.4.1.1.2"
MR = "1.2.840.10008.5.1.4.1.1.4"
MODALITY = Origin.from_dimse("MODALITY1", "PERGAMON", "10.1.2.3:40001")
WEB = Origin.from_http("", "10.4.5.6:50000")


@pytest.fixture
def audited(archive: Any) -> tuple[Any, list[bytes]]:
    """Messages as each event is handled: stores audited one by one (batching: test_trail_batches.py)."""
    captured: list[bytes] = []
    trail = AuditTrail(archive, captured.append)
    trail.batch_seconds = 0
    archive.bus.subscribe(trail.handle)
    return archive, captured


def parse(message: bytes) -> Any:
    assert_valid(message)
    return etree.fromstring(message)


def event_of(root: Any) -> tuple[str, str, str]:
    event = root.find("EventIdentification")
    return event.find("EventID").get("csd-code"), event.get("EventActionCode"), event.get("EventOutcomeIndicator")


def users(root: Any) -> dict[str, tuple[str | None, str]]:
    """UserID -> (RoleIDCode, UserIsRequestor)."""
    out = {}
    for p in root.findall("ActiveParticipant"):
        role = p.find("RoleIDCode")
        out[p.get("UserID")] = (role.get("csd-code") if role is not None else None, p.get("UserIsRequestor"))
    return out


def objects(root: Any) -> dict[str, str]:
    """ParticipantObjectIDTypeCode -> ParticipantObjectID."""
    return {
        o.find("ParticipantObjectIDTypeCode").get("csd-code"): o.get("ParticipantObjectID")
        for o in root.findall("ParticipantObjectIdentification")
    }


def put(archive: Any, folder: Path, origin: Origin, sop_class: str = CT, **kwargs: Any) -> samples.Sample:
    ds = samples.make_instance(sop_class, **kwargs)
    sample = samples.write(ds, folder / f"{ds.SOPInstanceUID}.dcm")
    archive.store_file(sample.path, origin)
    return sample


def test_application_start_stop(audited: Any) -> None:
    archive, captured = audited
    archive.bus.emit(ApplicationStarted("PERGAMON"))
    archive.bus.emit(ApplicationStopped("PERGAMON"))
    types = [parse(x).find("EventIdentification/EventTypeCode").get("csd-code") for x in captured]
    assert [event_of(parse(x)) for x in captured] == [("110100", "E", "0")] * 2
    assert types == ["110120", "110121"]
    assert users(parse(captured[0]))["PERGAMON"] == ("110150", "false")


def test_dimse_store_is_instances_transferred(audited: Any, tmp_path: Path) -> None:
    archive, captured = audited
    sample = put(archive, tmp_path, MODALITY, patient_id="PAT-1")
    (message,) = captured
    root = parse(message)
    assert event_of(root) == ("110104", "C", "0")
    assert users(root) == {"MODALITY1": ("110153", "true"), "PERGAMON": ("110152", "false")}
    source = root.find("ActiveParticipant")
    assert source.get("AlternativeUserID") == "AETITLES=MODALITY1"
    assert source.get("NetworkAccessPointID") == "10.1.2.3"
    assert objects(root) == {"2": "PAT-1", "110180": sample.study_uid}
    sop = root.find(".//SOPClass")
    assert (sop.get("UID"), sop.get("NumberOfInstances")) == (CT, "1")
    audit_source = root.find("AuditSourceIdentification")
    assert audit_source.get("AuditSourceID") == archive.settings.dicom.ae_title


def test_replaced_store_is_an_update(audited: Any, tmp_path: Path) -> None:
    archive, captured = audited
    sample = put(archive, tmp_path, MODALITY)
    archive.store_file(sample.path, MODALITY)
    assert [event_of(parse(x))[1] for x in captured] == ["C", "U"]


def test_import_is_import(audited: Any, tmp_path: Path) -> None:
    archive, captured = audited
    ds = samples.make_instance(MR, patient_id="PAT-2")
    sample = samples.write(ds, tmp_path / "in" / "a.dcm")
    archive.store_file(sample.path, Origin.from_import(str(sample.path)))
    root = parse(captured[0])
    assert event_of(root) == ("110107", "C", "0")
    roles = users(root)
    assert roles[str(sample.path)] == ("110155", "false")
    assert roles["PERGAMON"] == ("110152", "false")
    assert objects(root) == {"2": "PAT-2", "110180": sample.study_uid}


def test_rejected_on_ingest_is_a_failed_transfer(audited: Any) -> None:
    archive, captured = audited
    archive.bus.emit(InstanceRejectedOnIngest("1.2.3", "not a DICOM file", MODALITY))
    archive.bus.emit(InstanceRejectedOnIngest("1.2.4", "truncated", Origin.from_import("/x/y.dcm")))
    first, second = (parse(x) for x in captured)
    assert event_of(first) == ("110104", "C", "8")
    assert "not a DICOM file" in first.findtext("EventIdentification/EventOutcomeDescription")
    assert event_of(second) == ("110107", "C", "8")


def test_move_sends_one_message_per_patient(audited: Any, tmp_path: Path) -> None:
    archive, captured = audited
    a = [put(archive, tmp_path, MODALITY, patient_id="PA", study_uid=s) for s in (generate_uid(), generate_uid())]
    b = put(archive, tmp_path, MODALITY, MR, patient_id="PB")
    captured.clear()
    sent = (a[0].sop_instance_uid, a[1].sop_instance_uid, b.sop_instance_uid)
    archive.bus.emit(InstancesSent("DEST", sent, 1, MODALITY))
    roots = [parse(x) for x in captured]
    assert [event_of(r) for r in roots] == [("110104", "R", "4")] * 2
    by_patient = {objects(r)["2"]: r for r in roots}
    assert set(by_patient) == {"PA", "PB"}
    studies = [o.get("ParticipantObjectID") for o in by_patient["PA"].findall("ParticipantObjectIdentification")][1:]
    assert sorted(studies) == sorted([a[0].study_uid, a[1].study_uid])
    assert users(by_patient["PB"]) == {
        "PERGAMON": ("110153", "false"),
        "DEST": ("110152", "false"),
        "MODALITY1": (None, "true"),
    }


def test_get_and_wado_destination_is_the_requestor(audited: Any, tmp_path: Path) -> None:
    archive, captured = audited
    sample = put(archive, tmp_path, MODALITY)
    captured.clear()
    archive.bus.emit(InstancesSent("MODALITY1", (sample.sop_instance_uid,), 0, MODALITY))
    archive.bus.emit(InstancesSent("10.4.5.6:50000", (sample.sop_instance_uid,), 0, WEB))
    get, wado = (parse(x) for x in captured)
    assert users(get) == {"PERGAMON": ("110153", "false"), "MODALITY1": ("110152", "true")}
    assert users(wado) == {"PERGAMON": ("110153", "false"), "10.4.5.6": ("110152", "true")}
    assert event_of(wado) == ("110104", "R", "0")


def test_nothing_sent_nothing_audited_all_failed_serious(audited: Any) -> None:
    archive, captured = audited
    archive.bus.emit(InstancesSent("DEST", (), 0, MODALITY))
    assert captured == []
    archive.bus.emit(InstancesSent("DEST", (), 3, MODALITY))
    assert event_of(parse(captured[0])) == ("110104", "R", "8")


def test_c_find_query(audited: Any) -> None:
    archive, captured = audited
    archive.bus.emit(QueryPerformed("STUDY", {"PatientID": "PAT-1", "StudyDate": "20240101-"}, 2, MODALITY))
    root = parse(captured[0])
    assert event_of(root) == ("110112", "E", "0")
    assert users(root) == {"MODALITY1": ("110153", "true"), "PERGAMON": ("110152", "false")}
    assert objects(root) == {"110181": STUDY_ROOT_FIND, "2": "PAT-1"}
    query = base64.b64decode(root.findtext(".//ParticipantObjectQuery"))
    assert b"STUDY" in query and b"PAT-1" in query and b"20240101-" in query


def test_qido_query(audited: Any) -> None:
    archive, captured = audited
    archive.bus.emit(QueryPerformed("STUDY", {"PatientID": "PAT*"}, 0, WEB))
    root = parse(captured[0])
    assert objects(root) == {"12": "/dicom-web/studies"}
    assert base64.b64decode(root.findtext(".//ParticipantObjectQuery")) == b"PatientID=PAT%2A"
    assert users(root)["10.4.5.6"] == ("110153", "true")


def test_node_authentication_failure(audited: Any) -> None:
    archive, captured = audited
    archive.bus.emit(NodeAuthenticationFailed("10.9.9.9:4444", "no client certificate", "dicom"))
    root = parse(captured[0])
    assert event_of(root) == ("110113", "E", "4")
    assert root.find("EventIdentification/EventTypeCode").get("csd-code") == "110126"
    assert users(root)["10.9.9.9"] == (None, "true")


def test_clock_offset_exceeded(audited: Any) -> None:
    archive, captured = audited
    archive.bus.emit(ClockOffsetExceeded(2.5, "ntp.example.org:123", 1.0))
    root = parse(captured[0])
    assert event_of(root) == ("110113", "E", "4")
    assert "2.500" in root.findtext("EventIdentification/EventOutcomeDescription")


def test_commitment_is_not_audited(audited: Any) -> None:
    archive, captured = audited
    archive.bus.emit(CommitmentReported("1.2.3", 1, 0, "MODALITY1"))
    assert captured == []


def test_never_raises_into_the_core(archive: Any, caplog: pytest.LogCaptureFixture) -> None:
    def broken_sink(message: bytes) -> None:
        raise OSError("disk full")

    trail = AuditTrail(archive, broken_sink)
    with caplog.at_level(logging.ERROR):
        trail.handle(ApplicationStarted("PERGAMON"))
    assert "audit sink failed" in caplog.text
    caplog.clear()

    def broken_builder(event: Any) -> Any:
        raise RuntimeError("bug")

    trail2 = AuditTrail(archive, lambda _m: None)
    trail2.messages_for = broken_builder  # type: ignore[method-assign]  # (bypasses the suite-wide check)
    with caplog.at_level(logging.ERROR):
        trail2.handle(ApplicationStopped("PERGAMON"))
    assert "cannot build" in caplog.text
    AuditTrail(archive, lambda _m: None).handle(object())  # unknown events are ignored
