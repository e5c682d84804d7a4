"""Patient reconciliation in the core (`archive/patients.py`): update, merge, identifier change, coercion on retrieve.

Each test stores real Part-10 objects in an archive on SQLite or PostgreSQL (PERGAMON_TEST_DB),
changes the patient through the core and checks what C-FIND/QIDO would match (the search back end),
what a retrieve would send (`prepare_outgoing`) and that the stored bytes never change.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
from pathlib import Path
from typing import Any

import pytest
import samples
from pydicom import Dataset, dcmread, dcmwrite
from pydicom.uid import generate_uid

from pergamon.archive import errors
from pergamon.archive.events import PatientIdentifierChanged, PatientMerged, PatientUpdated
from pergamon.archive.index.schema import Level
from pergamon.archive.origin import Origin
from pergamon.archive.patients import (
    MergeOutcome,
    PatientKey,
    UpdateOutcome,
    change_identifier,
    history,
    merge,
    reconciliations,
    update_demographics,
)
from pergamon.archive.query import Constraint
from pergamon.archive.retrieve import RetrieveRequest, locate, prepare_outgoing
from pergamon.archive.search import Search, run_search
from pergamon.audit.trail import AuditTrail

MR = "1.2.840.10008.5.1.4.1.1.4"
VR = {"PatientID": "LO", "PatientName": "PN", "IssuerOfPatientID": "LO", "StudyInstanceUID": "UI"}


def put(archive: Any, folder: Path, **kwargs: Any) -> samples.Sample:
    ds = samples.make_instance(MR, **kwargs)
    sample = samples.write(ds, folder / f"{ds.SOPInstanceUID}.dcm")
    archive.store_file(sample.path, Origin.from_import(str(sample.path)))
    return sample


def studies(archive: Any, **keys: str) -> list[Dataset]:
    """Study-level matches (Study Root, as C-FIND and QIDO-RS run them) for the given keys."""
    constraints = [Constraint.parse(k, VR[k], v) for k, v in keys.items()]
    search = Search(Level.STUDY, constraints, ["PatientName", "PatientID", "IssuerOfPatientID", "PatientBirthDate"])
    with archive.db.read() as conn:
        return [m.dataset for m in run_search(conn, search)]


def leaving(archive: Any, sop_uid: str) -> Path | Dataset:
    (stored,) = locate(archive, RetrieveRequest(Level.IMAGE, {"SOPInstanceUID": (sop_uid,)}))
    return prepare_outgoing(archive, stored)


def as_sent(content: Path | Dataset) -> Dataset:
    """The object as a receiver reads it after it was written out."""
    if isinstance(content, Path):
        return dcmread(content)
    buffer = io.BytesIO()
    dcmwrite(buffer, content, enforce_file_format=True)
    buffer.seek(0)
    return dcmread(buffer)


def blob_sha256(archive: Any, sop_uid: str) -> str:
    (stored,) = locate(archive, RetrieveRequest(Level.IMAGE, {"SOPInstanceUID": (sop_uid,)}))
    path = archive.blobs.path(stored.blob_key)
    return hashlib.sha256(path.read_bytes()).hexdigest()


def pn(name: str) -> dict[str, Any]:
    return {"vr": "PN", "Value": [{"Alphabetic": name}]}


@pytest.fixture
def events(archive: Any) -> list[Any]:
    seen: list[Any] = []
    archive.bus.subscribe(seen.append)
    return seen


def test_update_renames_in_queries_and_in_what_leaves(archive: Any, tmp_path: Path, events: list[Any]) -> None:
    sample = put(archive, tmp_path, patient_id="P1", patient_name="DOE^J1")
    sha = blob_sha256(archive, sample.sop_instance_uid)
    assert isinstance(leaving(archive, sample.sop_instance_uid), Path)  # never reconciled: the file itself

    outcome = update_demographics(archive, PatientKey("P1"), {"00100010": pn("SILVERHEELS^JAY")}, message_id="M1")

    assert outcome is UpdateOutcome.UPDATED
    assert [str(d.PatientName) for d in studies(archive, PatientName="SILVERHEELS*")] == ["SILVERHEELS^JAY"]
    assert studies(archive, PatientName="DOE*") == []
    sent = as_sent(leaving(archive, sample.sop_instance_uid))
    assert str(sent.PatientName) == "SILVERHEELS^JAY"
    assert sent.PatientID == "P1"
    assert sent.PixelData == dcmread(sample.path).PixelData
    assert blob_sha256(archive, sample.sop_instance_uid) == sha  # the stored original is untouched
    assert [type(e) for e in events if isinstance(e, PatientUpdated)] == [PatientUpdated]
    (row,) = history(archive, PatientKey("P1"))
    assert row["action"] == "update" and row["message_id"] == "M1"
    assert row["before"]["00100010"] == pn("DOE^J1") and row["after"]["00100010"] == pn("SILVERHEELS^JAY")


def test_a_retrieve_sends_the_patient_as_it_was_when_it_began(archive: Any, tmp_path: Path) -> None:
    """`locate` notes the patient's revision: objects of a retrieve that began before an update leave as
    they were (and need no query each); the next retrieve leaves with the update; an instance the
    index did not describe (no revision noted) is looked up."""
    sample = put(archive, tmp_path, patient_id="P1", patient_name="DOE^J1")
    (begun,) = locate(archive, RetrieveRequest(Level.IMAGE, {"SOPInstanceUID": (sample.sop_instance_uid,)}))
    assert begun.patient_revision == 0

    update_demographics(archive, PatientKey("P1"), {"00100010": pn("SILVERHEELS^JAY")}, message_id="M1")

    assert prepare_outgoing(archive, begun) == archive.blobs.path(begun.blob_key)
    assert str(as_sent(leaving(archive, sample.sop_instance_uid)).PatientName) == "SILVERHEELS^JAY"
    unknown = dataclasses.replace(begun, patient_revision=None)
    assert str(as_sent(prepare_outgoing(archive, unknown)).PatientName) == "SILVERHEELS^JAY"


def test_update_creates_an_unknown_patient_and_later_objects_get_its_values(archive: Any, tmp_path: Path) -> None:
    attrs = {"00100010": pn("ROE^JANE"), "00100030": {"vr": "DA", "Value": ["19700102"]}}
    assert update_demographics(archive, PatientKey("P2", "HOSP"), attrs) is UpdateOutcome.CREATED
    assert update_demographics(archive, PatientKey("P2", "HOSP"), attrs) is UpdateOutcome.UNCHANGED
    same = put(archive, tmp_path, patient_id="P2", patient_name="ROE^JANE",
               extra={"IssuerOfPatientID": "HOSP", "PatientBirthDate": "19700102"})  # fmt: skip
    other = put(archive, tmp_path, patient_id="P2", patient_name="ROE^J",
                extra={"IssuerOfPatientID": "HOSP", "PatientBirthDate": "19700102"})  # fmt: skip

    assert isinstance(leaving(archive, same.sop_instance_uid), Path)  # already carries the patient's values
    assert str(as_sent(leaving(archive, other.sop_instance_uid)).PatientName) == "ROE^JANE"
    assert [h["action"] for h in history(archive, PatientKey("P2", "HOSP"))] == ["create", "update"]


def test_issuer_makes_two_patients(archive: Any, tmp_path: Path) -> None:
    a = put(archive, tmp_path, patient_id="SAME", patient_name="A^A", extra={"IssuerOfPatientID": "HOSP_A"})
    b = put(archive, tmp_path, patient_id="SAME", patient_name="B^B", extra={"IssuerOfPatientID": "HOSP_B"})

    update_demographics(archive, PatientKey("SAME", "HOSP_A"), {"00100010": pn("RENAMED^A")})

    assert str(as_sent(leaving(archive, a.sop_instance_uid)).PatientName) == "RENAMED^A"
    assert isinstance(leaving(archive, b.sop_instance_uid), Path)
    names = sorted(str(d.PatientName) for d in studies(archive, PatientID="SAME"))
    assert names == ["B^B", "RENAMED^A"]


def test_empty_value_empties_the_attribute(archive: Any, tmp_path: Path) -> None:
    sample = put(archive, tmp_path, patient_id="P3", extra={"PatientBirthDate": "19800101", "PatientSex": "M"})
    update_demographics(archive, PatientKey("P3"), {"00100030": {"vr": "DA"}})
    sent = as_sent(leaving(archive, sample.sop_instance_uid))
    assert "PatientBirthDate" in sent and sent.PatientBirthDate == ""
    assert sent.PatientSex == "M"  # not in the update: kept
    assert studies(archive, PatientID="P3")[0].PatientBirthDate == ""


def test_merge_moves_studies_and_the_old_id_matches_nothing(archive: Any, tmp_path: Path, events: list[Any]) -> None:
    trauma = put(archive, tmp_path, patient_id="TRAUMA1", patient_name="UNKNOWN^TRAUMA")
    known = put(archive, tmp_path, patient_id="REAL1", patient_name="SMITH^JOHN", extra={"IssuerOfPatientID": "HOSP"})
    sha = blob_sha256(archive, trauma.sop_instance_uid)

    result = merge(archive, PatientKey("REAL1", "HOSP"), PatientKey("TRAUMA1"), {"00100010": pn("SMITH^JOHN")},
                   message_id="M40")  # fmt: skip

    assert result.outcome is MergeOutcome.MERGED and result.studies == 1
    assert studies(archive, PatientID="TRAUMA1") == []
    assert locate(archive, RetrieveRequest(Level.PATIENT, {"PatientID": ("TRAUMA1",)}, patient_root=True)) == []
    found = studies(archive, PatientID="REAL1")
    assert sorted(d.StudyInstanceUID for d in found) == sorted([trauma.study_uid, known.study_uid])
    sent = as_sent(leaving(archive, trauma.sop_instance_uid))
    assert (sent.PatientID, sent.IssuerOfPatientID, str(sent.PatientName)) == ("REAL1", "HOSP", "SMITH^JOHN")
    assert blob_sha256(archive, trauma.sop_instance_uid) == sha
    assert archive.counts()["patients"] == 1
    with archive.db.read() as conn:
        (survivor,) = run_search(conn, Search(Level.PATIENT, [Constraint.parse("PatientID", "LO", "REAL1")],
                                              ["NumberOfPatientRelatedStudies"], patient_root=True))  # fmt: skip
    assert int(survivor.dataset.NumberOfPatientRelatedStudies) == 2
    assert any(isinstance(e, PatientMerged) and e.studies == 1 for e in events)
    (row,) = history(archive, PatientKey("TRAUMA1"))
    assert row["action"] == "merge" and row["prior"] == {"id": "TRAUMA1", "issuer": ""} and row["studies"] == 1


def test_merge_into_an_unknown_survivor_creates_it(archive: Any, tmp_path: Path) -> None:
    temp = put(archive, tmp_path, patient_id="TEMP", patient_name="TEMP^NAME", extra={"PatientSex": "F"})
    merge(archive, PatientKey("REAL2", "HOSP"), PatientKey("TEMP"), {"00100010": pn("REAL^NAME")})
    sent = as_sent(leaving(archive, temp.sop_instance_uid))
    assert (sent.PatientID, str(sent.PatientName), sent.PatientSex) == ("REAL2", "REAL^NAME", "F")
    assert studies(archive, PatientID="TEMP") == []


def test_merge_of_an_unknown_obsolete_patient_changes_nothing_else(archive: Any, tmp_path: Path) -> None:
    sample = put(archive, tmp_path, patient_id="KEEP", patient_name="KEEP^ME")
    result = merge(archive, PatientKey("KEEP"), PatientKey("NOBODY"))
    assert (result.outcome, result.studies) == (MergeOutcome.NOTHING_TO_MERGE, 0)
    assert isinstance(leaving(archive, sample.sop_instance_uid), Path)
    assert archive.counts()["patients"] == 1
    with pytest.raises(errors.Invalid):
        merge(archive, PatientKey("KEEP"), PatientKey("KEEP"))


def test_change_identifier(archive: Any, tmp_path: Path, events: list[Any]) -> None:
    sample = put(archive, tmp_path, patient_id="OLD1", patient_name="MOVE^ME")
    put(archive, tmp_path, patient_id="TAKEN", patient_name="OTHER^ONE")

    change_identifier(archive, PatientKey("OLD1"), PatientKey("NEW1", "HOSP"), message_id="M47")

    assert studies(archive, PatientID="OLD1") == []
    (found,) = studies(archive, PatientID="NEW1")
    assert (found.IssuerOfPatientID, str(found.PatientName)) == ("HOSP", "MOVE^ME")
    sent = as_sent(leaving(archive, sample.sop_instance_uid))
    assert (sent.PatientID, sent.IssuerOfPatientID) == ("NEW1", "HOSP")
    assert any(isinstance(e, PatientIdentifierChanged) and e.old_id == "OLD1" for e in events)
    with pytest.raises(errors.NotFound):
        change_identifier(archive, PatientKey("OLD1"), PatientKey("NEW2"))
    with pytest.raises(errors.Conflict):
        change_identifier(archive, PatientKey("NEW1", "HOSP"), PatientKey("TAKEN"))
    assert [h["action"] for h in history(archive, PatientKey("NEW1", "HOSP"))] == ["change-id"]


def test_non_ascii_name_switches_the_object_to_utf8(archive: Any, tmp_path: Path) -> None:
    sample = put(archive, tmp_path, patient_id="P4", patient_name="MULLER^JORG",
                 extra={"StudyDescription": "Kopf"})  # fmt: skip
    assert "SpecificCharacterSet" not in dcmread(sample.path, stop_before_pixels=True)
    update_demographics(archive, PatientKey("P4"), {"00100010": pn("MÜLLER^JÖRG")})
    sent = as_sent(leaving(archive, sample.sop_instance_uid))
    assert sent.SpecificCharacterSet == "ISO_IR 192"
    assert str(sent.PatientName) == "MÜLLER^JÖRG" and sent.StudyDescription == "Kopf"
    assert [str(d.PatientName) for d in studies(archive, PatientName="MÜLLER*")] == ["MÜLLER^JÖRG"]


def test_bad_input_changes_nothing(archive: Any, tmp_path: Path) -> None:
    put(archive, tmp_path, patient_id="P5", patient_name="SAFE^NAME")
    with pytest.raises(errors.Invalid):
        update_demographics(archive, PatientKey(""), {"00100010": pn("X")})
    with pytest.raises(errors.Invalid):
        update_demographics(archive, PatientKey("P5"), {"nonsense": pn("X")})
    with pytest.raises(errors.Invalid):
        update_demographics(archive, PatientKey("P5"), {"00100010": "not json"})
    assert [str(d.PatientName) for d in studies(archive, PatientID="P5")] == ["SAFE^NAME"]
    assert history(archive, PatientKey("P5")) == []


def test_non_patient_attributes_are_ignored(archive: Any, tmp_path: Path) -> None:
    sample = put(archive, tmp_path, patient_id="P6")
    ds = Dataset()
    ds.PatientName = "NEW^NAME"
    ds.StudyDescription = "not a patient attribute"
    update_demographics(archive, PatientKey("P6"), ds)
    sent = as_sent(leaving(archive, sample.sop_instance_uid))
    assert str(sent.PatientName) == "NEW^NAME" and sent.StudyDescription != "not a patient attribute"


def test_reconciliations_page_newest_first(archive: Any) -> None:
    for n in range(5):
        update_demographics(archive, PatientKey(f"PG{n}"), {"00100010": pn(f"PAGE^{n}")}, message_id=f"M{n}")
    total, page = reconciliations(archive, limit=2, offset=1)
    assert total == 5
    assert [r["message_id"] for r in page] == ["M3", "M2"]


def test_audit_patient_record_messages(archive: Any, tmp_path: Path, events: list[Any]) -> None:
    origin = Origin("hl7", peer="127.0.0.1:40000", user="OF|HOSP")
    put(archive, tmp_path, patient_id="TMP9")
    update_demographics(archive, PatientKey("A9", "HOSP"), {"00100010": pn("AUDIT^ME")}, message_id="C1", origin=origin)
    merge(archive, PatientKey("A9", "HOSP"), PatientKey("TMP9"), message_id="C2", origin=origin)
    change_identifier(archive, PatientKey("A9", "HOSP"), PatientKey("B9", "HOSP"), message_id="C3", origin=origin)
    trail = AuditTrail(archive, lambda _m: None)
    reconciled = [e for e in events if isinstance(e, (PatientUpdated, PatientMerged, PatientIdentifierChanged))]
    messages = [m for e in reconciled for m in trail.messages_for(e)]
    text = [m.decode() for m in messages]
    assert len(messages) == 4  # create; merge: survivor U + obsolete D; identifier change U
    assert all('csd-code="110110"' in t for t in text)
    assert ['EventActionCode="C"' in t for t in text] == [True, False, False, False]
    assert 'EventActionCode="D"' in text[2] and "TMP9" in text[2]
    assert all('csd-code="RAD-12"' in t for t in text)
    assert "B9^^^HOSP" in text[3] and "A9^^^HOSP" in text[1]


def test_a_reconciled_object_is_read_once_per_retrieve_not_per_patient_row(archive: Any, tmp_path: Path) -> None:
    """Objects of other patients keep the fast path after a reconciliation elsewhere."""
    touched = put(archive, tmp_path, patient_id="T1")
    untouched = put(archive, tmp_path, patient_id="U1", study_uid=generate_uid())
    update_demographics(archive, PatientKey("T1"), {"00100010": pn("CHANGED^NAME")})
    assert isinstance(leaving(archive, touched.sop_instance_uid), Dataset)
    assert isinstance(leaving(archive, untouched.sop_instance_uid), Path)


def test_orders_follow_their_patient(archive: Any) -> None:
    """Worklist entries (requested procedures) move with a merge and take the new name (ihe-radiology.md 2.7)."""
    from sqlalchemy import select

    from pergamon.archive.index.schema import requested_procedure

    with archive.db.write() as conn:
        conn.execute(
            requested_procedure.insert().values(
                accession_number="ACC-1", patient_id="TMP-O", patient_name="TEMP^ORDER", created_at=0.0, updated_at=0.0
            )
        )
    merge(archive, PatientKey("REAL-O", "HOSP"), PatientKey("TMP-O"), {"00100010": pn("REAL^ORDER")})
    with archive.db.read() as conn:
        row = conn.execute(select(requested_procedure).where(requested_procedure.c.accession_number == "ACC-1")).one()
    assert (row.patient_id, row.patient_issuer, row.patient_name) == ("REAL-O", "HOSP", "REAL^ORDER")


@pytest.mark.parametrize("syntax", ["1.2.840.10008.1.2.1.99", "1.2.840.10008.1.2.5", "1.2.840.10008.1.2"])
def test_coercion_keeps_the_transfer_syntax_and_pixels(archive: Any, tmp_path: Path, syntax: str) -> None:
    sample = put(archive, tmp_path, patient_id="TS1", transfer_syntax=syntax)
    update_demographics(archive, PatientKey("TS1"), {"00100010": pn("SYNTAX^KEPT")})
    content = leaving(archive, sample.sop_instance_uid)
    assert isinstance(content, Dataset)
    sent = as_sent(content)
    original = dcmread(sample.path)
    assert str(sent.file_meta.TransferSyntaxUID) == syntax
    assert str(sent.PatientName) == "SYNTAX^KEPT"
    assert sent.PixelData == original.PixelData


def test_current_key_follows_merges_and_identifier_changes(archive: Any, tmp_path: Path) -> None:
    from pergamon.archive.patients import current_key

    put(archive, tmp_path, patient_id="T-1")
    merge(archive, PatientKey("R-1", "HOSP"), PatientKey("T-1"))
    change_identifier(archive, PatientKey("R-1", "HOSP"), PatientKey("R-2", "HOSP"))
    with archive.db.read() as conn:
        assert current_key(conn, PatientKey("T-1")) == PatientKey("R-2", "HOSP")
        assert current_key(conn, PatientKey("R-1", "HOSP")) == PatientKey("R-2", "HOSP")
        assert current_key(conn, PatientKey("R-2", "HOSP")) == PatientKey("R-2", "HOSP")
        assert current_key(conn, PatientKey("T-1", "OTHER")) == PatientKey("T-1", "OTHER")
    update_demographics(archive, PatientKey("T-1"), {"00100010": pn("REGISTERED^AGAIN")})
    with archive.db.read() as conn:
        assert current_key(conn, PatientKey("T-1")) == PatientKey("T-1")
