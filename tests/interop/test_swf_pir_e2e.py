"""Scheduled Workflow and PIR checks that span orders, images and patient updates (ihe-radiology.md 3.1, 3.2, 5.2).

Real peers only: python-hl7's MLLP client sends the HL7 (RAD-4 ORM^O01 v2.3.1 / OMI^O23 v2.5.1,
RAD-12 ADT), dcmtk storescu the images, findscu the C-FIND, movescu the C-MOVE to a dcmtk storescp.

1. SWF check 1 (MESA 131): order, then images with its Study Instance UID and Accession Number; a
   Study-level C-FIND by Accession Number returns the study with the ordered patient's demographics.
2. PIR check 3 (MESA 105, images acquired before the order): images under a temporary ID, then the
   order for the real patient and the A40 that merges the temporary ID into it. The study is linked
   to the order, C-FIND by Accession Number answers with the real patient, and C-MOVEd objects carry
   it; the temporary ID finds nothing.
3. PIR check 5: an A40 whose MRG patient is unknown is accepted and corrupts nothing.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hl7
import hl7.client
import httpx
import pytest
from conftest import dcmtk_env, free_port, make_settings, require_tool, wait_for_port
from order_messages import omi, orm
from pydicom import Dataset, dcmread
from pydicom.uid import CTImageStorage, generate_uid
from samples import make_instance, write

from pergamon.config import RemoteAE
from pergamon.runtime import Pergamon

pytestmark = pytest.mark.interop

EB, CR = b"\x1c", b"\r"


@pytest.fixture
def pacs(tmp_path: Path, database_url: str) -> Iterator[tuple[Pergamon, Path]]:
    """A running Pergamon that knows a dcmtk storescp (writing into the returned folder) as DEST."""
    port = free_port()
    out = tmp_path / "moved"
    out.mkdir()
    scp = subprocess.Popen(
        [require_tool("storescp"), "-aet", "DEST", "-od", str(out), str(port)],
        env=dcmtk_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_for_port(port)
    app = Pergamon(make_settings(tmp_path / "data", database_url, remotes=(RemoteAE("DEST", "127.0.0.1", port),)))
    app.start()
    try:
        yield app, out
    finally:
        app.stop()
        scp.terminate()
        scp.wait(timeout=10)


def send(app: Pergamon, text: str) -> str:
    """One HL7 message over MLLP (python-hl7's client); its MSA-1."""
    with hl7.client.MLLPClient("127.0.0.1", app.hl7.port, encoding="ascii") as client:
        answer = client.send_message(text)
        while not answer.endswith(EB + CR):
            answer += client.socket.recv(65536)
    return str(hl7.parse(answer[1:-2].decode("ascii")).segment("MSA")[1])


def adt(event: str, *segments: str) -> str:
    msh = f"MSH|^~\\&|OF|HOSP|PERGAMON|RAD|20261127100000||ADT^{event}|{generate_uid()[-16:]}|P|2.3.1"
    return "\r".join([msh, f"EVN|{event}", *segments]) + "\r"


def storescu(app: Pergamon, folder: Path, count: int = 2, **attrs: Any) -> list[str]:
    """Store `count` CT images with the given attributes through dcmtk storescu; their SOP Instance UIDs."""
    paths, uids = [], []
    for number in range(1, count + 1):
        ds = make_instance(CTImageStorage, rows=8, cols=8, instance_number=number, **attrs)
        paths.append(str(write(ds, folder / f"{ds.SOPInstanceUID}.dcm").path))
        uids.append(str(ds.SOPInstanceUID))
    command = [require_tool("storescu"), "-aec", app.settings.dicom.ae_title, "127.0.0.1", str(app.settings.dicom.port)]
    subprocess.run([*command, *paths], check=True, env=dcmtk_env(), capture_output=True, timeout=60)
    return uids


def findscu(app: Pergamon, out: Path, *keys: str) -> list[Dataset]:
    """Study Root, STUDY level C-FIND with dcmtk findscu; the responses it wrote (-X)."""
    out.mkdir(parents=True, exist_ok=True)
    args = [require_tool("findscu"), "-S", "-aec", app.settings.dicom.ae_title, "-X", "-od", str(out)]
    for key in ("QueryRetrieveLevel=STUDY", "PatientName", "PatientID", "IssuerOfPatientID", "StudyInstanceUID",
                "AccessionNumber", "NumberOfStudyRelatedInstances", *keys):  # fmt: skip
        args += ["-k", key]
    result = subprocess.run([*args, "127.0.0.1", str(app.settings.dicom.port)], env=dcmtk_env(),
                            capture_output=True, text=True, timeout=60)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    found = [dcmread(p) for p in sorted(out.iterdir())]
    for path in out.iterdir():
        path.unlink()
    return found


def movescu(app: Pergamon, moved: Path, study_uid: str) -> list[Dataset]:
    """C-MOVE of one study to DEST with dcmtk movescu; what the storescp received."""
    args = [require_tool("movescu"), "-S", "-aec", app.settings.dicom.ae_title, "-aem", "DEST"]
    args += ["-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study_uid}"]
    result = subprocess.run([*args, "127.0.0.1", str(app.settings.dicom.port)], env=dcmtk_env(),
                            capture_output=True, text=True, timeout=120)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    return [dcmread(p) for p in sorted(moved.iterdir())]


def order_of(app: Pergamon, placer: str) -> dict[str, Any]:
    base = f"http://127.0.0.1:{app.settings.http.port}/api/orders"
    (summary,) = [o for o in httpx.get(base, timeout=30).json()["orders"] if o["placer_order_number"] == placer]
    result: dict[str, Any] = httpx.get(f"{base}/{summary['pk']}", timeout=30).json()
    return result


@pytest.mark.parametrize("message", [orm, omi], ids=["ORM^O01 v2.3.1", "OMI^O23 v2.5.1"])
def test_swf_order_then_images_then_c_find_by_accession(
    pacs: tuple[Pergamon, Path], tmp_path: Path, message: Any
) -> None:
    app, _moved = pacs
    study_uid = generate_uid()
    new = message("NW", "PL-131", accession="ACC-131", study_uid=study_uid, patient_id="P-131", name="MOORE^CHIP")
    assert send(app, new) == "AA"
    storescu(app, tmp_path, study_uid=study_uid, accession_number="ACC-131", patient_id="P-131",
             patient_name="MOORE^CHIP", extra={"IssuerOfPatientID": "HOSP"})  # fmt: skip
    (found,) = findscu(app, tmp_path / "find", "AccessionNumber=ACC-131")
    assert (found.StudyInstanceUID, found.AccessionNumber) == (study_uid, "ACC-131")
    assert (str(found.PatientName), found.PatientID, found.IssuerOfPatientID) == ("MOORE^CHIP", "P-131", "HOSP")
    assert int(found.NumberOfStudyRelatedInstances) == 2
    (link,) = order_of(app, "PL-131")["studies"]
    assert (link["study_uid"], link["matched_by"], link["instances"]) == (study_uid, "study-uid", 2)


def test_pir_images_before_the_order_then_merge(pacs: tuple[Pergamon, Path], tmp_path: Path) -> None:
    app, moved = pacs
    study_uid = generate_uid()
    sent = storescu(app, tmp_path, study_uid=study_uid, accession_number="ACC-105", patient_id="TMP-105",
                    patient_name="TRAUMA^ONE")  # fmt: skip
    assert send(app, orm("NW", "PL-105", accession="ACC-105", patient_id="REAL-105", name="WHITE^CHARLES")) == "AA"
    (link,) = order_of(app, "PL-105")["studies"]  # linked when the order came (MESA 105)
    assert (link["study_uid"], link["matched_by"]) == (study_uid, "accession")

    merge = adt("A40", "PID|||REAL-105^^^HOSP||WHITE^CHARLES||19500505|M", "MRG|TMP-105")
    assert send(app, merge) == "AA"
    (found,) = findscu(app, tmp_path / "find", "AccessionNumber=ACC-105")
    assert (found.StudyInstanceUID, found.PatientID, found.IssuerOfPatientID) == (study_uid, "REAL-105", "HOSP")
    assert str(found.PatientName) == "WHITE^CHARLES"
    assert findscu(app, tmp_path / "find", "PatientID=TMP-105") == []
    objects = movescu(app, moved, study_uid)
    assert sorted(str(ds.SOPInstanceUID) for ds in objects) == sorted(sent)
    for ds in objects:
        assert (ds.PatientID, ds.IssuerOfPatientID, str(ds.PatientName)) == ("REAL-105", "HOSP", "WHITE^CHARLES")
    assert order_of(app, "PL-105")["studies"][0]["study_uid"] == study_uid  # the link survives the merge


def test_pir_merge_of_an_unknown_patient_corrupts_nothing(pacs: tuple[Pergamon, Path], tmp_path: Path) -> None:
    """PIR check 5: AA, the survivor is updated, no study moves, and the next message still works."""
    app, _moved = pacs
    study_uid = generate_uid()
    storescu(app, tmp_path, count=1, study_uid=study_uid, patient_id="KEEP-1", patient_name="KEEP^ME",
             extra={"IssuerOfPatientID": "HOSP"})  # fmt: skip
    assert send(app, adt("A40", "PID|||KEEP-1^^^HOSP||KEEP^RENAMED", "MRG|NEVER-SEEN^^^HOSP")) == "AA"
    (found,) = findscu(app, tmp_path / "find", "PatientID=KEEP-1")
    assert (found.StudyInstanceUID, str(found.PatientName), int(found.NumberOfStudyRelatedInstances)) == (
        study_uid,
        "KEEP^RENAMED",
        1,
    )
    assert findscu(app, tmp_path / "find", "PatientID=NEVER-SEEN") == []
    assert send(app, adt("A08", "PID|||KEEP-1^^^HOSP||KEEP^AGAIN")) == "AA"
    (found,) = findscu(app, tmp_path / "find", "PatientID=KEEP-1")
    assert str(found.PatientName) == "KEEP^AGAIN"
