"""ADT door (`hl7/adt.py`, RAD-12): messages through the real receiver and router, ACKs and their ERR segments.

Transport-free: `Hl7Receiver.receive` is what the MLLP listener calls for each framed message;
the end-to-end tests over MLLP with python-hl7's client are in tests/interop/test_pir.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import hl7
import hl7_samples
import pytest
import samples
from pydicom import Dataset

from pergamon.archive.index.schema import Level
from pergamon.archive.origin import Origin
from pergamon.archive.patients import PatientKey, history
from pergamon.archive.query import Constraint
from pergamon.archive.search import Search, run_search
from pergamon.hl7.mllp import Block
from pergamon.hl7.receiver import Hl7Receiver, build_router

MR = "1.2.840.10008.5.1.4.1.1.4"
MSH = "MSH|^~\\&|OF|HOSP|PERGAMON|RAD|20261127100000||ADT^{event}|{control}|P|2.5"


def message(event: str, *segments: str, control: str = "C1") -> bytes:
    return ("\r".join([MSH.format(event=event, control=control), f"EVN|{event}", *segments]) + "\r").encode("utf-8")


@pytest.fixture
def receiver(archive: Any) -> Hl7Receiver:
    return Hl7Receiver(archive, build_router(archive))


def send(receiver: Hl7Receiver, data: bytes) -> hl7.Message:
    receipt = receiver.receive(Block(data, len(data)), peer="127.0.0.1:5000", transport="mllp")
    assert receipt.ack is not None
    return hl7.parse(receipt.ack.decode("utf-8"))


def ack_code(ack: hl7.Message) -> str:
    return str(ack.segment("MSA")(1))


def err(ack: hl7.Message) -> tuple[str, str]:
    """ERR-2 (location: segment^sequence^field) and ERR-3 (HL7 table 0357 code)."""
    segment = ack.segment("ERR")
    return str(segment(2)), str(segment(3)).split("^")[0]


def patient(archive: Any, patient_id: str, issuer: str = "") -> Dataset | None:
    keys = [Constraint.parse("PatientID", "LO", patient_id), Constraint.parse("IssuerOfPatientID", "LO", issuer)]
    search = Search(Level.PATIENT, keys, ["PatientName", "PatientBirthDate", "PatientSex", "IssuerOfPatientID",
                                          "NumberOfPatientRelatedStudies"], patient_root=True)  # fmt: skip
    with archive.db.read() as conn:
        found = [m.dataset for m in run_search(conn, search) if m.dataset.get("IssuerOfPatientID", "") == issuer]
    return found[0] if found else None


def put(archive: Any, folder: Path, **kwargs: Any) -> samples.Sample:
    ds = samples.make_instance(MR, **kwargs)
    sample = samples.write(ds, folder / f"{ds.SOPInstanceUID}.dcm")
    archive.store_file(sample.path, Origin.from_import(str(sample.path)))
    return sample


@pytest.mark.parametrize("event", ["A01", "A04", "A05", "A08"])
def test_registration_and_update_events_create_or_update(receiver: Hl7Receiver, archive: Any, event: str) -> None:
    ack = send(receiver, message(event, "PID|||PAT-1^^^HOSP&1.2.3&ISO||DOE^JOHN^Q^JR^DR||19700101|M"))
    assert ack_code(ack) == "AA"
    found = patient(archive, "PAT-1", "HOSP")
    assert found is not None
    assert (str(found.PatientName), found.PatientBirthDate, found.PatientSex) == ("DOE^JOHN^Q^DR^JR", "19700101", "M")


def test_sample_messages_of_the_shared_corpus(receiver: Hl7Receiver, archive: Any) -> None:
    assert ack_code(send(receiver, hl7_samples.ADT_A01_231.encode("ascii"))) == "AA"
    assert ack_code(send(receiver, hl7_samples.ADT_A08_25.encode("ascii"))) == "AA"
    found = patient(archive, "PAT-1001", "HOSPITAL")
    assert found is not None and str(found.PatientName) == "DOE&SMITH^JOHN^Q"  # \T\ is a literal '&'
    assert ack_code(send(receiver, hl7_samples.encoded(hl7_samples.ADT_A08_LATIN1))) == "AA"
    latin = patient(archive, "PAT-2001", "HOSPITAL")
    assert latin is not None and str(latin.PatientName) == "MÜLLER^RENÉE"


def test_a08_renames_and_null_empties(receiver: Hl7Receiver, archive: Any, tmp_path: Path) -> None:
    put(archive, tmp_path, patient_id="P1", patient_name="DOE^J1", extra={"PatientBirthDate": "19700101"})
    ack = send(receiver, message("A08", 'PID|||P1||SILVERHEELS^JAY||""', control="RENAME-1"))
    assert ack_code(ack) == "AA"
    found = patient(archive, "P1")
    assert found is not None and str(found.PatientName) == "SILVERHEELS^JAY" and found.PatientBirthDate == ""
    (change,) = history(archive, PatientKey("P1"))
    assert change["message_id"] == "RENAME-1" and change["origin"]["door"] == "hl7"


def test_a40_merges_and_the_old_id_is_gone(receiver: Hl7Receiver, archive: Any, tmp_path: Path) -> None:
    put(archive, tmp_path, patient_id="TRAUMA-7", patient_name="TRAUMA^SEVEN", extra={"IssuerOfPatientID": "HOSP"})
    put(archive, tmp_path, patient_id="REAL-7", patient_name="REAL^SEVEN", extra={"IssuerOfPatientID": "HOSP"})
    ack = send(receiver, message("A40", "PID|||REAL-7^^^HOSP||REAL^SEVEN", "MRG|TRAUMA-7^^^HOSP"))
    assert ack_code(ack) == "AA"
    assert patient(archive, "TRAUMA-7", "HOSP") is None
    survivor = patient(archive, "REAL-7", "HOSP")
    assert survivor is not None and int(survivor.NumberOfPatientRelatedStudies) == 2


def test_a40_issuer_decides_which_patient_is_merged(receiver: Hl7Receiver, archive: Any, tmp_path: Path) -> None:
    put(archive, tmp_path, patient_id="T8", extra={"IssuerOfPatientID": "OTHER"})
    ack = send(receiver, message("A40", "PID|||R8^^^HOSP||REAL^EIGHT", "MRG|T8^^^HOSP"))
    assert ack_code(ack) == "AA"  # T8 of HOSP is unknown: nothing to merge (logged), the survivor is registered
    assert patient(archive, "T8", "OTHER") is not None
    assert patient(archive, "R8", "HOSP") is not None


def test_a47_changes_the_identifier(receiver: Hl7Receiver, archive: Any, tmp_path: Path) -> None:
    put(archive, tmp_path, patient_id="OLD-9", patient_name="CHANGE^ME")
    assert ack_code(send(receiver, message("A47", "PID|||NEW-9^^^HOSP||CHANGE^ME", "MRG|OLD-9"))) == "AA"
    assert patient(archive, "OLD-9") is None
    assert patient(archive, "NEW-9", "HOSP") is not None
    ack = send(receiver, message("A47", "PID|||NEW-10||X^Y", "MRG|OLD-9", control="C2"))
    assert (ack_code(ack), err(ack)) == ("AE", ("MRG^1^1", "204"))
    ack = send(receiver, message("A47", "PID|||NEW-9^^^HOSP||X^Y", "MRG|NEW-10", control="C3"))
    assert ack_code(ack) == "AE"


@pytest.mark.parametrize(
    ("event", "segments", "code", "where", "expected"),
    [
        ("A40", ["PID|||R1||A^B"], "AR", "MRG^1", "100"),
        ("A40", ["PID|||R1||A^B", "MRG|"], "AR", "MRG^1^1", "101"),
        ("A47", ["PID|||R1||A^B"], "AR", "MRG^1", "100"),
        ("A08", ["PID|||||A^B"], "AR", "PID^1^3", "101"),
        ("A08", [], "AR", "PID", "100"),
        ("A08", ["PID|||R1||A^B||1970-13-01"], "AE", "PID^1^7", "102"),
        ("A08", ["PID|||R1||A^B||19701301"], "AE", "PID^1^7", "102"),
        ("A08", ["PID|||R1||A^B|||X"], "AE", "PID^1^8", "103"),
        ("A08", ["PID|||" + "9" * 65 + "||A^B"], "AE", "PID^1^3", "102"),
        ("A40", ["PID|||SAME||A^B", "MRG|SAME"], "AE", "PID^1^3", "102"),
    ],
)
def test_bad_content_is_refused_with_its_place(
    receiver: Hl7Receiver, archive: Any, event: str, segments: list[str], code: str, where: str, expected: str
) -> None:
    ack = send(receiver, message(event, *segments))
    assert ack_code(ack) == code
    location, error = err(ack)
    assert location.startswith(where) and error == expected
    assert archive.counts()["patients"] == 0
    assert ack_code(send(receiver, message("A08", "PID|||OK-1||STILL^WORKS", control="C9"))) == "AA"


def test_own_domain_is_the_patient_without_issuer(receiver: Hl7Receiver, archive: Any, tmp_path: Path) -> None:
    """`[pix] assigning_authority` (PERGAMON by default): objects stored without Issuer of Patient ID belong to it."""
    put(archive, tmp_path, patient_id="LOCAL-1", patient_name="BEFORE^NAME")
    ack = send(receiver, message("A08", "PID|||LOCAL-1^^^PERGAMON&1.2.999&ISO||AFTER^NAME"))
    assert ack_code(ack) == "AA"
    found = patient(archive, "LOCAL-1")
    assert found is not None and str(found.PatientName) == "AFTER^NAME"
    assert archive.counts()["patients"] == 1
