"""The Instances Transferred audit of a study's later instances reuses the index answer of its first one."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import samples
from audit_schema import assert_valid
from lxml import etree
from pydicom.uid import generate_uid

from pergamon.archive.events import PatientUpdated
from pergamon.archive.origin import Origin
from pergamon.audit.trail import AuditTrail

CT = "1.2.840.10008.5.1.4.1.1.2"
MODALITY = Origin.from_dimse("MODALITY1", "PERGAMON", "10.1.2.3:40001")


@pytest.fixture
def trail(archive: Any) -> tuple[Any, AuditTrail, list[bytes], list[int]]:
    captured: list[bytes] = []
    audit = AuditTrail(archive, captured.append)
    audit.batch_seconds = 0  # one message per store, as it is handled
    lookups: list[int] = []
    real_lookup = audit.lookup

    def counted(sop_uids: Any) -> Any:
        lookups.append(len(sop_uids))
        return real_lookup(sop_uids)

    audit.lookup = counted  # type: ignore[method-assign]
    archive.bus.subscribe(audit.handle)
    return archive, audit, captured, lookups


def store(archive: Any, folder: Path, **kwargs: Any) -> samples.Sample:
    ds = samples.make_instance(CT, **kwargs)
    sample = samples.write(ds, folder / f"{ds.SOPInstanceUID}.dcm")
    archive.store_file(sample.path, MODALITY)
    return sample


def audited_objects(message: bytes) -> tuple[str, str, str, tuple[tuple[str, str], ...]]:
    """(event ID, patient ID, study UID, (SOP class, number of instances)) of an Instances Transferred message."""
    assert_valid(message)
    root = etree.fromstring(message)
    ids = {
        o.find("ParticipantObjectIDTypeCode").get("csd-code"): o.get("ParticipantObjectID")
        for o in root.findall("ParticipantObjectIdentification")
    }
    instances = tuple((c.get("UID"), c.get("NumberOfInstances")) for c in root.findall(".//SOPClass"))
    return root.find("EventIdentification/EventID").get("csd-code"), ids["2"], ids["110180"], instances


def test_later_instances_of_a_study_are_audited_without_an_index_lookup(trail: Any, tmp_path: Path) -> None:
    archive, _, captured, lookups = trail
    study_uid = generate_uid()
    for _ in range(3):
        store(archive, tmp_path, patient_id="PAT-1", study_uid=study_uid)
    assert len(lookups) == 1
    assert [audited_objects(m)[:3] for m in captured] == [("110104", "PAT-1", study_uid)] * 3
    assert [audited_objects(m)[3] for m in captured] == [((CT, "1"),)] * 3


def test_the_study_patient_of_the_index_is_audited_even_when_a_header_differs(trail: Any, tmp_path: Path) -> None:
    archive, _, captured, lookups = trail
    study_uid = generate_uid()
    store(archive, tmp_path, patient_id="PAT-1", study_uid=study_uid)
    store(archive, tmp_path, patient_id="PAT-OTHER", study_uid=study_uid)
    store(archive, tmp_path, patient_id="PAT-OTHER", study_uid=study_uid)
    assert [audited_objects(m)[1] for m in captured] == ["PAT-1", "PAT-1", "PAT-1"]
    assert len(lookups) == 2


def test_a_patient_event_makes_the_next_store_look_the_study_up_again(trail: Any, tmp_path: Path) -> None:
    archive, _, captured, lookups = trail
    study_uid = generate_uid()
    store(archive, tmp_path, patient_id="PAT-1", study_uid=study_uid)
    archive.bus.emit(PatientUpdated("PAT-1", "", "DOE^JOHN", created=False, message_id="M1", origin=None))
    store(archive, tmp_path, patient_id="PAT-1", study_uid=study_uid)
    assert len(lookups) == 2
    assert [audited_objects(m)[1] for m in captured if b"110104" in m] == ["PAT-1", "PAT-1"]
