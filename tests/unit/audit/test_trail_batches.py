"""Stored instances are audited per transfer: one 110104 per peer, action, patient and study."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import samples
from audit_schema import assert_valid
from lxml import etree
from pydicom.uid import generate_uid

from pergamon.archive.events import PatientUpdated
from pergamon.archive.origin import Origin
from pergamon.audit import trail as trail_module
from pergamon.audit.trail import AuditTrail

CT = "1.2.840.10008.5.1.4.1.1.2"
MR = "1.2.840.10008.5.1.4.1.1.4"
MODALITY = Origin.from_dimse("MODALITY1", "PERGAMON", "10.1.2.3:40001")
OTHER = Origin.from_dimse("MODALITY2", "PERGAMON", "10.1.2.4:40001")


@pytest.fixture
def batched(archive: Any) -> Any:
    """(archive, trail, captured) with a batch period long enough that only `flush` sends."""
    captured: list[bytes] = []
    trail = AuditTrail(archive, captured.append)
    trail.batch_seconds = 60.0
    archive.bus.subscribe(trail.handle)
    yield archive, trail, captured
    trail.close()


def put(archive: Any, folder: Path, origin: Origin, sop_class: str = CT, **kwargs: Any) -> None:
    ds = samples.make_instance(sop_class, **kwargs)
    sample = samples.write(ds, folder / f"{ds.SOPInstanceUID}.dcm")
    archive.store_file(sample.path, origin)


def parse(message: bytes) -> Any:
    assert_valid(message)
    return etree.fromstring(message)


def summary(message: bytes) -> tuple[str, str, str, dict[str, str]]:
    """(action, requesting AE, study UID, instance count per SOP class) of a 110104 message."""
    root = parse(message)
    assert root.find("EventIdentification/EventID").get("csd-code") == "110104"
    action = root.find("EventIdentification").get("EventActionCode")
    requestor = next(p.get("UserID") for p in root.iter("ActiveParticipant") if p.get("UserIsRequestor") == "true")
    study = next(o.get("ParticipantObjectID") for o in root.iter("ParticipantObjectIdentification")
                 if o.find("ParticipantObjectIDTypeCode").get("csd-code") == "110180")  # fmt: skip
    counts = {s.get("UID"): s.get("NumberOfInstances") for s in root.iter("SOPClass")}
    return action, requestor, study, counts


def test_one_message_per_peer_and_study(batched: Any, tmp_path: Path) -> None:
    archive, trail, captured = batched
    study, other_study = generate_uid(), generate_uid()
    for sop_class in (CT, CT, MR, CT):
        put(archive, tmp_path, MODALITY, sop_class, patient_id="P1", study_uid=study)
    put(archive, tmp_path, MODALITY, CT, patient_id="P1", study_uid=other_study)
    put(archive, tmp_path, OTHER, CT, patient_id="P1", study_uid=study)
    assert captured == []  # still collecting
    trail.flush()
    got = sorted(summary(m) for m in captured)
    assert got == sorted([
        ("C", "MODALITY1", study, {CT: "3", MR: "1"}),
        ("C", "MODALITY1", other_study, {CT: "1"}),
        ("C", "MODALITY2", study, {CT: "1"}),
    ])  # fmt: skip


def test_a_replaced_instance_is_its_own_update_message(batched: Any, tmp_path: Path) -> None:
    archive, trail, captured = batched
    ds = samples.make_instance(CT, patient_id="P2")
    sample = samples.write(ds, tmp_path / "a.dcm")
    archive.store_file(sample.path, MODALITY)
    archive.store_file(sample.path, MODALITY)
    trail.flush()
    assert sorted(summary(m)[0] for m in captured) == ["C", "U"]


def test_sent_once_the_peer_pauses(archive: Any, tmp_path: Path) -> None:
    captured: list[bytes] = []
    trail = AuditTrail(archive, captured.append)
    trail.batch_seconds = 0.3
    archive.bus.subscribe(trail.handle)
    try:
        study = generate_uid()
        for _ in range(2):
            put(archive, tmp_path, MODALITY, patient_id="P3", study_uid=study)
        assert captured == []
        deadline = time.monotonic() + 5
        while not captured and time.monotonic() < deadline:
            time.sleep(0.05)
        assert [summary(m)[3] for m in captured] == [{CT: "2"}]
    finally:
        trail.close()


def test_a_full_transfer_is_sent_at_once(batched: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(trail_module, "_TRANSFER_MAX_INSTANCES", 2)
    archive, _trail, captured = batched
    study = generate_uid()
    for _ in range(3):
        put(archive, tmp_path, MODALITY, patient_id="P4", study_uid=study)
    assert [summary(m)[3] for m in captured] == [{CT: "2"}]  # the third waits for the next


def test_a_patient_event_comes_after_the_stores_before_it(batched: Any, tmp_path: Path) -> None:
    archive, _trail, captured = batched
    put(archive, tmp_path, MODALITY, patient_id="P5")
    archive.bus.emit(PatientUpdated("P5", "", "NEW^NAME", False, "MSG1", None))
    events = [parse(m).find("EventIdentification/EventID").get("csd-code") for m in captured]
    assert events == ["110104", "110110"]


def test_close_sends_what_is_left(archive: Any, tmp_path: Path) -> None:
    captured: list[bytes] = []
    trail = AuditTrail(archive, captured.append)
    trail.batch_seconds = 60.0
    archive.bus.subscribe(trail.handle)
    put(archive, tmp_path, MODALITY, patient_id="P6")
    trail.close()
    assert [summary(m)[3] for m in captured] == [{CT: "1"}]
    put(archive, tmp_path, MODALITY, patient_id="P6")  # a late store (stop in progress) is sent at once
    assert [summary(m)[3] for m in captured] == [{CT: "1"}, {CT: "1"}]
