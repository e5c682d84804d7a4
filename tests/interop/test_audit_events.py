"""Audit messages of each transaction, from a running Pergamon talking to real peers (ITI TF-2 §3.20,
DICOM PS3.15 A.5.3): C-STORE (dcmtk storescu), C-FIND (findscu), C-MOVE (movescu to storescp), QIDO-RS
and WADO-RS (httpx), `pergamon import`, start and stop.

The messages are captured at the audit trail's sink (what goes to the syslog sender) and checked for
EventID, EventActionCode, EventOutcomeIndicator, participants and participant objects; every one is
also validated against dicom2017c.xsd (here and by the suite-wide check in conftest). Runs on the
backend of PERGAMON_TEST_DB.
"""

from __future__ import annotations

import base64
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import samples
from audit_schema import assert_valid
from conftest import dcmtk_env, free_port, make_settings, require_tool, wait_for_port
from lxml import etree
from pydicom.uid import generate_uid

from pergamon import importer
from pergamon.config import RemoteAE
from pergamon.runtime import Pergamon

pytestmark = pytest.mark.interop

CT = "1.2.840.10008.5.1.4.1.1.2"
MR = "1.2.840.10008.5.1.4.1.1.4"
STUDY_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.2.1"
PATIENT = "AUDIT-PAT-1"


class Captured:
    """Audit messages handed to the sink, parsed, with a wait for those emitted asynchronously."""

    def __init__(self) -> None:
        self.raw: list[bytes] = []

    def __call__(self, message: bytes) -> None:
        self.raw.append(message)

    def take(self, event_id: str, count: int = 1, timeout: float = 10.0) -> list[Any]:
        """Wait for `count` messages with this EventID, return them and forget every message so far."""
        deadline = time.monotonic() + timeout
        while True:
            found = [etree.fromstring(m) for m in self.raw if _event_id(etree.fromstring(m)) == event_id]
            if len(found) >= count or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        for message in self.raw:
            assert_valid(message)
        got = [_event_id(etree.fromstring(m)) for m in self.raw]
        assert len(found) == count, f"expected {count} message(s) {event_id}, got {got}"
        self.raw.clear()
        return found


def _event_id(root: Any) -> str:
    return str(root.find("EventIdentification/EventID").get("csd-code"))


def outcome(root: Any) -> tuple[str, str]:
    event = root.find("EventIdentification")
    return event.get("EventActionCode"), event.get("EventOutcomeIndicator")


def participants(root: Any) -> dict[str, dict[str, str | None]]:
    """UserID -> requestor, role, AlternativeUserID, NetworkAccessPointID."""
    out = {}
    for p in root.findall("ActiveParticipant"):
        role = p.find("RoleIDCode")
        out[p.get("UserID")] = {
            "requestor": p.get("UserIsRequestor"),
            "role": role.get("csd-code") if role is not None else None,
            "alt": p.get("AlternativeUserID"),
            "nap": p.get("NetworkAccessPointID"),
        }
    return out


def objects(root: Any) -> dict[str, Any]:
    """ParticipantObjectIDTypeCode -> the ParticipantObjectIdentification element."""
    return {
        o.find("ParticipantObjectIDTypeCode").get("csd-code"): o
        for o in root.findall("ParticipantObjectIdentification")
    }


@pytest.fixture
def storescp(tmp_path: Path) -> Iterator[RemoteAE]:
    port = free_port()
    out = tmp_path / "dest"
    out.mkdir()
    proc = subprocess.Popen(
        [require_tool("storescp"), "-aet", "DEST", "-od", str(out), str(port)],
        env=dcmtk_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_for_port(port)
    yield RemoteAE("DEST", "127.0.0.1", port)
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture
def audited(tmp_path: Path, database_url: str, storescp: RemoteAE) -> Iterator[tuple[Pergamon, Captured]]:
    """A running Pergamon whose audit sink also hands every message to a `Captured`."""
    app = Pergamon(make_settings(tmp_path / "data", database_url, remotes=(storescp,)))
    captured = Captured()
    forward: Callable[[bytes], None] = app.audit_trail.sink
    app.audit_trail.sink = lambda message: (captured(message), forward(message))  # type: ignore[method-assign]
    app.start()
    try:
        yield app, captured
    finally:
        app.stop()


def dcmtk(*args: str) -> None:
    result = subprocess.run(list(args), env=dcmtk_env(), capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def test_every_transaction_is_audited(audited: tuple[Pergamon, Captured], tmp_path: Path) -> None:
    app, captured = audited
    port = str(app.settings.dicom.port)
    ae = app.settings.dicom.ae_title

    (start,) = captured.take("110100")
    assert outcome(start) == ("E", "0")
    assert start.find("EventIdentification/EventTypeCode").get("csd-code") == "110120"
    assert participants(start)[ae]["role"] == "110150"

    # C-STORE: 110104 DICOM Instances Transferred, action C, storescu the requesting source; the
    # association's two instances of one study are one transfer, one message.
    study = generate_uid()
    files = [
        samples.write(samples.make_instance(CT, patient_id=PATIENT, study_uid=study), tmp_path / "ct.dcm"),
        samples.write(samples.make_instance(MR, patient_id=PATIENT, study_uid=study), tmp_path / "mr.dcm"),
    ]
    dcmtk(require_tool("storescu"), "-aet", "MODALITY1", "-aec", ae, "127.0.0.1", port, *(str(f.path) for f in files))
    stored = captured.take("110104")
    for message in stored:
        assert outcome(message) == ("C", "0")
        who = participants(message)
        assert who["MODALITY1"] == {"requestor": "true", "role": "110153", "alt": "AETITLES=MODALITY1",
                                    "nap": "127.0.0.1"}  # fmt: skip
        assert who[ae]["requestor"] == "false" and who[ae]["role"] == "110152"
        assert objects(message)["2"].get("ParticipantObjectID") == PATIENT
        assert objects(message)["110180"].get("ParticipantObjectID") == study
    counts = {s.get("UID"): s.get("NumberOfInstances") for s in stored[0].iter("SOPClass")}
    assert counts == {CT: "1", MR: "1"}

    # C-FIND: 110112 Query with the Study Root FIND SOP class and the identifier.
    dcmtk(require_tool("findscu"), "-S", "-aet", "FINDER", "-aec", ae, "-k", "QueryRetrieveLevel=STUDY",
          "-k", f"PatientID={PATIENT}", "-k", "StudyInstanceUID", "127.0.0.1", port)  # fmt: skip
    (query,) = captured.take("110112")
    assert outcome(query) == ("E", "0")
    who = participants(query)
    assert who["FINDER"]["requestor"] == "true" and who["FINDER"]["role"] == "110153"
    assert who[ae]["role"] == "110152"
    found = objects(query)
    assert found["110181"].get("ParticipantObjectID") == STUDY_ROOT_FIND
    assert PATIENT.encode() in base64.b64decode(found["110181"].findtext("ParticipantObjectQuery"))
    assert found["2"].get("ParticipantObjectID") == PATIENT

    # C-MOVE to DEST asked by MOVER: 110104 action R, Pergamon source, DEST destination, MOVER requestor.
    dcmtk(require_tool("movescu"), "-S", "-aet", "MOVER", "-aec", ae, "-aem", "DEST", "-k", "QueryRetrieveLevel=STUDY",
          "-k", f"StudyInstanceUID={study}", "127.0.0.1", port)  # fmt: skip
    (moved,) = captured.take("110104")
    assert outcome(moved) == ("R", "0")
    who = participants(moved)
    assert who[ae]["role"] == "110153" and who[ae]["requestor"] == "false"
    assert who["DEST"] == {"requestor": "false", "role": "110152", "alt": "AETITLES=DEST", "nap": "127.0.0.1"}
    assert who["MOVER"]["requestor"] == "true" and who["MOVER"]["alt"] == "AETITLES=MOVER"
    counts = {s.get("UID"): s.get("NumberOfInstances") for s in moved.iter("SOPClass")}
    assert counts == {CT: "1", MR: "1"}

    base = f"http://127.0.0.1:{app.settings.http.port}{app.settings.http.base_path}"
    with httpx.Client(timeout=30) as client:
        # QIDO-RS: 110112 Query identified by its URI, the query string as ParticipantObjectQuery.
        response = client.get(f"{base}/studies", params={"PatientID": PATIENT})
        assert response.status_code == 200
        (qido,) = captured.take("110112")
        assert outcome(qido) == ("E", "0")
        web_query = objects(qido)["12"]
        assert web_query.get("ParticipantObjectID") == f"{app.settings.http.base_path}/studies"
        assert base64.b64decode(web_query.findtext("ParticipantObjectQuery")) == f"PatientID={PATIENT}".encode()
        client_side = [p for p in participants(qido).values() if p["requestor"] == "true"]
        assert client_side == [{"requestor": "true", "role": "110153", "alt": None, "nap": "127.0.0.1"}]

        # WADO-RS: 110104 action R to the HTTP client, which requested it.
        response = client.get(
            f"{base}/studies/{study}", headers={"Accept": "multipart/related; type=application/dicom"}
        )
        assert response.status_code == 200
        (wado,) = captured.take("110104")
        assert outcome(wado) == ("R", "0")
        who = participants(wado)
        assert who[ae]["role"] == "110153"
        (receiver,) = [p for p in who.values() if p["role"] == "110152"]
        assert receiver["requestor"] == "true" and receiver["nap"] == "127.0.0.1"
        assert objects(wado)["110180"].get("ParticipantObjectID") == study


def test_import_is_audited(audited: tuple[Pergamon, Captured], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`pergamon import` (run_import, as the command runs it) emits 110107 Import per instance."""
    app, captured = audited
    captured.take("110100")

    class CapturingSender:
        def __init__(self, _archive: Any) -> None:
            pass

        send = staticmethod(captured)

        def start(self) -> None:
            pass

        def stop(self) -> None:
            pass

    monkeypatch.setattr(importer, "AuditSender", CapturingSender)
    folder = tmp_path / "media"
    study = generate_uid()
    sample = samples.write(samples.make_instance(CT, patient_id=PATIENT, study_uid=study), folder / "IM0001")
    assert importer.run_import(app.settings, [folder], progress=False) == 0
    (imported,) = captured.take("110107")
    assert outcome(imported) == ("C", "0")
    who = participants(imported)
    assert who[str(sample.path)]["role"] == "110155"
    media = imported.find("ActiveParticipant/MediaIdentifier/MediaType")
    assert media is not None and media.get("csd-code") == "110037"
    assert who[app.settings.dicom.ae_title]["role"] == "110152"
    assert [p for p in who.values() if p["requestor"] == "true"]
    assert objects(imported)["2"].get("ParticipantObjectID") == PATIENT
    assert objects(imported)["110180"].get("ParticipantObjectID") == study


def test_stop_is_audited(tmp_path: Path, database_url: str) -> None:
    app = Pergamon(make_settings(tmp_path / "data", database_url))
    captured = Captured()
    app.audit_trail.sink = captured  # type: ignore[method-assign]
    app.start()
    captured.take("110100")
    app.stop()
    (stop,) = captured.take("110100")
    assert stop.find("EventIdentification/EventTypeCode").get("csd-code") == "110121"


def test_refused_store_is_audited_as_a_failure(audited: tuple[Pergamon, Captured], tmp_path: Path) -> None:
    """A C-STORE the archive refuses (no Series Instance UID) is audited: 110104 with outcome 8."""
    app, captured = audited
    captured.take("110100")
    ds = samples.make_instance(CT, patient_id=PATIENT)
    del ds.SeriesInstanceUID
    broken = tmp_path / "no-series.dcm"
    ds.save_as(broken, enforce_file_format=True)
    subprocess.run(
        [require_tool("storescu"), "-aet", "MODALITY1", "-aec", app.settings.dicom.ae_title, "127.0.0.1",
         str(app.settings.dicom.port), str(broken)],
        env=dcmtk_env(), capture_output=True, timeout=60,
    )  # fmt: skip
    (refused,) = captured.take("110104")
    assert outcome(refused) == ("C", "8")
    assert participants(refused)["MODALITY1"]["requestor"] == "true"
    description = refused.findtext("EventIdentification/EventOutcomeDescription") or ""
    assert "SeriesInstanceUID" in description and ds.SOPInstanceUID in description


def test_stow_part_of_another_study_is_audited_as_a_failure(audited: tuple[Pergamon, Captured], tmp_path: Path) -> None:
    """STOW-RS into /studies/{study}: the core refuses a part of another study (C409), audited as 110104 outcome 8."""
    app, captured = audited
    captured.take("110100")
    sample = samples.ct_series(tmp_path / "ct", 1, size=64)[0]
    target = generate_uid()
    boundary = "b0undary"
    body = (
        f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
        + sample.path.read_bytes()
        + f"\r\n--{boundary}--\r\n".encode()
    )
    response = httpx.post(
        f"http://127.0.0.1:{app.settings.http.port}/dicom-web/studies/{target}",
        content=body,
        headers={"Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}'},
        timeout=60,
    )
    assert response.status_code == 409
    (refused,) = captured.take("110104")
    assert outcome(refused) == ("C", "8")
    description = refused.findtext("EventIdentification/EventOutcomeDescription") or ""
    assert sample.sop_instance_uid in description and target in description
