"""Patient Information Reconciliation end to end (IHE PIR, RAD-12; ihe-radiology.md 3.2 and 5.2).

ADT messages go over MLLP with python-hl7's client to a running Pergamon; the result is checked
with real peers: dcmtk findscu (C-FIND), QIDO-RS over HTTP, movescu to a dcmtk storescp (C-MOVE),
getscu (C-GET), WADO-RS and WADO-URI. The objects that leave carry the reconciled values while
the stored files keep their bytes (sha256 before and after).

1. A08 rename (MESA 103): the new name in C-FIND, QIDO-RS and every retrieved object; the old
   name finds nothing.
2. A40 merge (MESA 133): the old Patient ID finds nothing, its study is under the survivor, and
   retrieved objects carry the survivor's ID, issuer and name.
3. A47: the patient answers to its new identifier only.
4. Issuer: one Patient ID under two issuers is two patients; an update touches one.
"""

from __future__ import annotations

import hashlib
import io
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import samples
from conftest import dcmtk_env, free_port, make_settings, require_tool, wait_for_port
from hl7.client import MLLPClient
from pydicom import Dataset, dcmread
from pydicom.uid import ExplicitVRLittleEndian, RLELossless, generate_uid

from pergamon.archive.origin import Origin
from pergamon.config import RemoteAE
from pergamon.runtime import Pergamon

pytestmark = pytest.mark.interop

MR = "1.2.840.10008.5.1.4.1.1.4"
MSH = "MSH|^~\\&|ORDER_FILLER|HOSP|PERGAMON|RAD|20261127100000||ADT^{event}|{control}|P|2.5"


# --- peers ---------------------------------------------------------------------------------------


class StoreSCP:
    """dcmtk storescp as the C-MOVE destination, writing what it receives bit for bit (+B)."""

    def __init__(self, root: Path) -> None:
        self.port = free_port()
        self.out = root / "storescp"
        self.out.mkdir(parents=True)
        self._log = open(root / "storescp.log", "ab")  # noqa: SIM115 - closed in stop()
        command = [require_tool("storescp"), "-aet", "DEST", "-od", str(self.out), "+B", "+xa", str(self.port)]
        self.proc = subprocess.Popen(command, env=dcmtk_env(), stdout=self._log, stderr=subprocess.STDOUT)
        wait_for_port(self.port)

    def received(self) -> dict[str, Dataset]:
        """SOP Instance UID -> received object (the folder is emptied)."""
        found = {}
        for path in list(self.out.iterdir()):
            ds = dcmread(path)
            found[str(ds.SOPInstanceUID)] = ds
            path.unlink()
        return found

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)
        self._log.close()


@pytest.fixture
def pacs(tmp_path: Path, database_url: str) -> Iterator[tuple[Pergamon, StoreSCP]]:
    """A running Pergamon (DICOM, HTTP, MLLP) that knows a storescp as move destination DEST."""
    scp = StoreSCP(tmp_path)
    app = Pergamon(make_settings(tmp_path / "data", database_url, remotes=(RemoteAE("DEST", "127.0.0.1", scp.port),)))
    app.start()
    yield app, scp
    app.stop()
    scp.stop()


# --- the doors, driven by real clients -----------------------------------------------------------


def adt(app: Pergamon, event: str, *segments: str, control: str = "") -> str:
    """Send one ADT message over MLLP and return its ACK code (MSA-1)."""
    control = control or f"PIR-{generate_uid()[-12:]}"
    text = "\r".join([MSH.format(event=event, control=control), f"EVN|{event}", *segments]) + "\r"
    with MLLPClient("127.0.0.1", app.settings.hl7.port) as client:
        ack = client.send_message(text.encode("utf-8"))
    match = re.search(rb"MSA\|(\w\w)\|" + re.escape(control.encode()), ack)
    assert match is not None, ack
    return match.group(1).decode()


def findscu(app: Pergamon, out: Path, *keys: str) -> list[Dataset]:
    """Study Root C-FIND at STUDY level with dcmtk findscu; the responses it wrote (-X)."""
    out.mkdir(parents=True, exist_ok=True)
    args = [require_tool("findscu"), "-S", "-aec", "PERGAMON", "-X", "-od", str(out), "-k", "QueryRetrieveLevel=STUDY"]
    for key in ("PatientName", "PatientID", "IssuerOfPatientID", "StudyInstanceUID", *keys):
        args += ["-k", key]
    result = subprocess.run([*args, "127.0.0.1", str(app.settings.dicom.port)], env=dcmtk_env(),
                            capture_output=True, text=True, timeout=60)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    found = [dcmread(p) for p in sorted(out.iterdir())]
    for path in out.iterdir():
        path.unlink()
    return found


def qido(app: Pergamon, **params: str) -> list[dict[str, Any]]:
    response = httpx.get(f"http://127.0.0.1:{app.settings.http.port}/dicom-web/studies", params=params, timeout=30)
    assert response.status_code in (200, 204), response.text
    return response.json() if response.status_code == 200 else []


def qido_value(study: dict[str, Any], tag: str) -> Any:
    value = study.get(tag, {}).get("Value", [None])[0]
    return value.get("Alphabetic") if isinstance(value, dict) else value


def movescu(app: Pergamon, *keys: str, root: str = "-S") -> None:
    args = [require_tool("movescu"), root, "-aec", "PERGAMON", "-aem", "DEST"]
    for key in keys:
        args += ["-k", key]
    result = subprocess.run([*args, "127.0.0.1", str(app.settings.dicom.port)], env=dcmtk_env(),
                            capture_output=True, text=True, timeout=120)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


def getscu(app: Pergamon, out: Path, study_uid: str) -> dict[str, Dataset]:
    out.mkdir(parents=True)
    args = [require_tool("getscu"), "-S", "-aec", "PERGAMON", "-od", str(out), "+B"]
    args += ["-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study_uid}"]
    result = subprocess.run([*args, "127.0.0.1", str(app.settings.dicom.port)], env=dcmtk_env(),
                            capture_output=True, text=True, timeout=120)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    return {str(ds.SOPInstanceUID): ds for ds in (dcmread(p) for p in out.iterdir())}


def wado_rs(app: Pergamon, sample: samples.Sample) -> Dataset:
    """One instance over WADO-RS, as stored (transfer-syntax=*)."""
    url = (f"http://127.0.0.1:{app.settings.http.port}/dicom-web/studies/{sample.study_uid}/series/"
           f"{sample.series_uid}/instances/{sample.sop_instance_uid}")  # fmt: skip
    accept = 'multipart/related; type="application/dicom"; transfer-syntax=*'
    response = httpx.get(url, headers={"Accept": accept}, timeout=30)
    assert response.status_code == 200, response.text
    boundary = re.search(r"boundary=\"?([^\";]+)", response.headers["content-type"]).group(1)  # type: ignore[union-attr]
    (part,) = response.content.split(b"--" + boundary.encode())[1:-1]
    body = part[2:].partition(b"\r\n\r\n")[2][:-2]
    return dcmread(io.BytesIO(body))


def wado_rs_metadata(app: Pergamon, study_uid: str) -> list[dict[str, Any]]:
    url = f"http://127.0.0.1:{app.settings.http.port}/dicom-web/studies/{study_uid}/metadata"
    response = httpx.get(url, timeout=30)
    assert response.status_code == 200, response.text
    result: list[dict[str, Any]] = response.json()
    return result


def wado_uri(app: Pergamon, sample: samples.Sample) -> Dataset:
    params = {"requestType": "WADO", "studyUID": sample.study_uid, "seriesUID": sample.series_uid,
              "objectUID": sample.sop_instance_uid, "contentType": "application/dicom"}  # fmt: skip
    response = httpx.get(f"http://127.0.0.1:{app.settings.http.port}/dicom-web/", params=params, timeout=30)
    assert response.status_code == 200, response.text
    return dcmread(io.BytesIO(response.content))


def api(app: Pergamon, path: str, **params: str) -> Any:
    response = httpx.get(f"http://127.0.0.1:{app.settings.http.port}/api{path}", params=params, timeout=30)
    assert response.status_code == 200, response.text
    return response.json()


def put(app: Pergamon, folder: Path, **kwargs: Any) -> samples.Sample:
    ds = samples.make_instance(MR, **kwargs)
    sample = samples.write(ds, folder / f"{ds.SOPInstanceUID}.dcm")
    app.archive.store_file(sample.path, Origin.from_import(str(sample.path)))
    return sample


def stored_sha256(app: Pergamon) -> dict[str, str]:
    """sha256 of every stored blob, by blob key: what must never change."""
    root = app.settings.blob_path
    files = (p for p in root.rglob("*") if p.is_file())
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


# --- PIR checks ----------------------------------------------------------------------------------


def test_a08_rename_reaches_every_door(pacs: tuple[Pergamon, StoreSCP], tmp_path: Path) -> None:
    app, scp = pacs
    study = generate_uid()
    stored = [put(app, tmp_path, patient_id="PIR-103", patient_name="DOE^J1", study_uid=study, transfer_syntax=ts,
                  extra={"IssuerOfPatientID": "HOSP"}) for ts in (ExplicitVRLittleEndian, RLELossless)]  # fmt: skip
    before = stored_sha256(app)

    assert adt(app, "A08", "PID|||PIR-103^^^HOSP||SILVERHEELS^JAY||19700102|M") == "AA"

    (found,) = findscu(app, tmp_path / "find", "PatientName=SILVERHEELS*")
    assert (str(found.PatientName), found.PatientID, found.StudyInstanceUID) == ("SILVERHEELS^JAY", "PIR-103", study)
    assert findscu(app, tmp_path / "find", "PatientName=DOE*") == []
    (study_json,) = qido(app, PatientName="SILVERHEELS*")
    assert qido_value(study_json, "00100010") == "SILVERHEELS^JAY"
    assert qido(app, PatientName="DOE*") == []

    movescu(app, "QueryRetrieveLevel=STUDY", f"StudyInstanceUID={study}")
    moved = scp.received()
    assert set(moved) == {s.sop_instance_uid for s in stored}
    for ds in moved.values():
        assert (str(ds.PatientName), ds.PatientID, ds.PatientBirthDate) == ("SILVERHEELS^JAY", "PIR-103", "19700102")
    for sample in stored:  # sent in the stored transfer syntax (storescp +xa accepts it), pixels unchanged
        original = dcmread(sample.path)
        received = moved[sample.sop_instance_uid]
        assert received.file_meta.TransferSyntaxUID == original.file_meta.TransferSyntaxUID
        assert received.PixelData == original.PixelData

    got = getscu(app, tmp_path / "get", study)
    assert {str(ds.PatientName) for ds in got.values()} == {"SILVERHEELS^JAY"}
    assert str(wado_rs(app, stored[0]).PatientName) == "SILVERHEELS^JAY"
    assert str(wado_uri(app, stored[1]).PatientName) == "SILVERHEELS^JAY"
    names = {m["00100010"]["Value"][0]["Alphabetic"] for m in wado_rs_metadata(app, study)}
    assert names == {"SILVERHEELS^JAY"}
    instance = f"studies/{study}/series/{stored[0].series_uid}/instances/{stored[0].sop_instance_uid}"
    rendered = httpx.get(f"http://127.0.0.1:{app.settings.http.port}/dicom-web/{instance}/rendered", timeout=30)
    assert rendered.status_code == 200

    assert stored_sha256(app) == before  # the stored originals are untouched
    (change,) = api(app, "/patients/PIR-103/history", issuer="HOSP")["history"]
    assert change["action"] == "update" and change["after"]["00100010"]["Value"][0]["Alphabetic"] == "SILVERHEELS^JAY"


def test_a40_merge_old_id_finds_nothing_and_objects_carry_the_survivor(
    pacs: tuple[Pergamon, StoreSCP], tmp_path: Path
) -> None:
    app, scp = pacs
    trauma = put(app, tmp_path, patient_id="TRAUMA-133", patient_name="TRAUMA^UNKNOWN", study_uid=generate_uid())
    known = put(app, tmp_path, patient_id="REAL-133", patient_name="WHITE^CHARLES", study_uid=generate_uid(),
                extra={"IssuerOfPatientID": "HOSP"})  # fmt: skip
    assert len(findscu(app, tmp_path / "find", "PatientID=REAL-133")) == 1
    before = stored_sha256(app)

    assert adt(app, "A40", "PID|||REAL-133^^^HOSP||WHITE^CHARLES||19500505|M", "MRG|TRAUMA-133") == "AA"

    assert findscu(app, tmp_path / "find", "PatientID=TRAUMA-133") == []
    assert qido(app, PatientID="TRAUMA-133") == []
    merged = findscu(app, tmp_path / "find", "PatientID=REAL-133")
    assert sorted(ds.StudyInstanceUID for ds in merged) == sorted([trauma.study_uid, known.study_uid])  # MESA 133: +1
    assert {ds.IssuerOfPatientID for ds in merged} == {"HOSP"}
    assert {s["0020000D"]["Value"][0] for s in qido(app, PatientID="REAL-133")} == {trauma.study_uid, known.study_uid}

    movescu(app, "QueryRetrieveLevel=PATIENT", "PatientID=REAL-133", "IssuerOfPatientID=HOSP", root="-P")
    moved = scp.received()
    assert set(moved) == {trauma.sop_instance_uid, known.sop_instance_uid}
    for ds in moved.values():
        assert (ds.PatientID, ds.IssuerOfPatientID, str(ds.PatientName)) == ("REAL-133", "HOSP", "WHITE^CHARLES")
    movescu(app, "QueryRetrieveLevel=PATIENT", "PatientID=TRAUMA-133", root="-P")
    assert scp.received() == {}
    assert stored_sha256(app) == before
    (change,) = api(app, "/patients/TRAUMA-133/history")["history"]
    assert (change["action"], change["patient"]["id"], change["studies"]) == ("merge", "REAL-133", 1)


def test_a47_changes_the_identifier(pacs: tuple[Pergamon, StoreSCP], tmp_path: Path) -> None:
    app, _scp = pacs
    sample = put(app, tmp_path, patient_id="TEMP-47", patient_name="CHANGE^ID")
    assert adt(app, "A47", "PID|||MRN-47^^^HOSP||CHANGE^ID", "MRG|TEMP-47") == "AA"
    assert findscu(app, tmp_path / "find", "PatientID=TEMP-47") == []
    (found,) = findscu(app, tmp_path / "find", "PatientID=MRN-47")
    assert (found.IssuerOfPatientID, found.StudyInstanceUID) == ("HOSP", sample.study_uid)
    sent = wado_rs(app, sample)
    assert (sent.PatientID, sent.IssuerOfPatientID) == ("MRN-47", "HOSP")
    assert adt(app, "A47", "PID|||MRN-48||X^Y", "MRG|TEMP-47") == "AE"  # the old ID is gone


def test_issuer_keeps_same_ids_apart(pacs: tuple[Pergamon, StoreSCP], tmp_path: Path) -> None:
    app, scp = pacs
    a = put(app, tmp_path, patient_id="SHARED-1", patient_name="FIRST^A", extra={"IssuerOfPatientID": "SITE_A"})
    b = put(app, tmp_path, patient_id="SHARED-1", patient_name="SECOND^B", extra={"IssuerOfPatientID": "SITE_B"})
    assert adt(app, "A08", "PID|||SHARED-1^^^SITE_A||RENAMED^A") == "AA"
    found = {ds.IssuerOfPatientID: str(ds.PatientName) for ds in findscu(app, tmp_path / "find", "PatientID=SHARED-1")}
    assert found == {"SITE_A": "RENAMED^A", "SITE_B": "SECOND^B"}
    movescu(app, "QueryRetrieveLevel=STUDY", f"StudyInstanceUID={a.study_uid}\\{b.study_uid}")
    moved = scp.received()
    assert str(moved[a.sop_instance_uid].PatientName) == "RENAMED^A"
    assert str(moved[b.sop_instance_uid].PatientName) == "SECOND^B"
    page = api(app, "/reconciliations", limit="10")
    assert page["total"] == 1 and page["reconciliations"][0]["patient"] == {"id": "SHARED-1", "issuer": "SITE_A"}


def test_a40_without_mrg_is_refused_and_changes_nothing(pacs: tuple[Pergamon, StoreSCP], tmp_path: Path) -> None:
    app, _scp = pacs
    put(app, tmp_path, patient_id="STAY-1", patient_name="STAY^HERE")
    assert adt(app, "A40", "PID|||OTHER-1||OTHER^ONE") == "AR"
    (found,) = findscu(app, tmp_path / "find", "PatientID=STAY-1")
    assert str(found.PatientName) == "STAY^HERE"
    assert api(app, "/reconciliations")["total"] == 0
    assert adt(app, "A08", "PID|||STAY-1||STILL^HERE") == "AA"  # the next message still works

