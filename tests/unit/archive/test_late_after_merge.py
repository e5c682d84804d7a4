"""Objects that arrive after their patient was merged away or renumbered are filed under the patient
it became (IHE PIR, ihe-radiology.md 3.2): the old Patient ID keeps matching nothing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import samples
from pydicom.uid import MRImageStorage, generate_uid
from test_patients import as_sent, leaving, put, studies

from pergamon.archive.origin import Origin
from pergamon.archive.patients import PatientKey, change_identifier, merge


def test_late_object_of_a_merged_patient_goes_to_the_survivor(archive: Any, tmp_path: Path) -> None:
    first = put(archive, tmp_path, patient_id="TRAUMA7", patient_name="UNKNOWN^TRAUMA")
    put(archive, tmp_path, patient_id="REAL7", patient_name="DOE^JANE")
    merge(archive, PatientKey("REAL7"), PatientKey("TRAUMA7"))

    same_study = put(archive, tmp_path, patient_id="TRAUMA7", patient_name="UNKNOWN^TRAUMA", study_uid=first.study_uid)
    new_study = put(archive, tmp_path, patient_id="TRAUMA7", patient_name="UNKNOWN^TRAUMA")

    assert studies(archive, PatientID="TRAUMA7") == []
    assert {d.StudyInstanceUID for d in studies(archive, PatientID="REAL7")} >= {first.study_uid, new_study.study_uid}
    assert archive.counts()["patients"] == 1
    for late in (same_study, new_study):
        sent = as_sent(leaving(archive, late.sop_instance_uid))
        assert (sent.PatientID, str(sent.PatientName)) == ("REAL7", "DOE^JANE")


def test_late_object_with_a_changed_identifier_goes_to_the_new_one(archive: Any, tmp_path: Path) -> None:
    put(archive, tmp_path, patient_id="OLD8", patient_name="ROE^RICHARD")
    change_identifier(archive, PatientKey("OLD8"), PatientKey("NEW8"))

    late = put(archive, tmp_path, patient_id="OLD8", patient_name="ROE^RICHARD")

    assert studies(archive, PatientID="OLD8") == []
    assert late.study_uid in {d.StudyInstanceUID for d in studies(archive, PatientID="NEW8")}
    assert as_sent(leaving(archive, late.sop_instance_uid)).PatientID == "NEW8"


def test_an_unrelated_patient_is_filed_as_it_comes(archive: Any, tmp_path: Path) -> None:
    ds = samples.make_instance(MRImageStorage, patient_id="OTHER9", study_uid=generate_uid())
    sample = samples.write(ds, tmp_path / "other.dcm")
    archive.store_file(sample.path, Origin.from_import(str(sample.path)))
    assert [d.PatientID for d in studies(archive, PatientID="OTHER9")] == ["OTHER9"]
