"""PIX Consumer over real MLLP: ITI-9 queries to a PIX Manager, ITI-10 A31s from it, and C-FIND across domains.

The PIX Manager is `pix_manager.PixManager` (built from ITI TF-2 3.9 / 3.10: no real one installs
here). The query is triggered through the REST view (`POST /api/pix/query`); each response case
of ITI TF-2 3.9.4.2.2.6 is checked for what Pergamon does with it. Images are sent with dcmtk
storescu and found with pynetdicom as the C-FIND SCU.
"""

from __future__ import annotations

import dataclasses
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import dcmtk_env, make_settings, require_tool
from pix_manager import Ident, PixManager
from pydicom import Dataset
from pydicom.uid import CTImageStorage
from pynetdicom import AE
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind
from samples import make_instance, write

from pergamon.config import Settings
from pergamon.runtime import Pergamon

pytestmark = pytest.mark.interop

LOCAL_OID = "1.2.826.0.1.3680043.10.1234.1"
LOCAL = Ident("L100", "PERGAMON", LOCAL_OID)
HOSP_A = Ident("A100", "HOSP_A", "1.2.826.0.1.3680043.10.1234.2")
HOSP_B = Ident("B100", "HOSP_B", "1.2.826.0.1.3680043.10.1234.3")
HOSP_B2 = Ident("B101", "HOSP_B", "1.2.826.0.1.3680043.10.1234.3")


@pytest.fixture
def manager() -> Iterator[PixManager]:
    pix_manager = PixManager(patients=[[LOCAL, HOSP_A, HOSP_B, HOSP_B2], [Ident("L200", "PERGAMON", LOCAL_OID)]])
    pix_manager.start()
    yield pix_manager
    pix_manager.stop()


@pytest.fixture
def settings(tmp_path: Path, database_url: str, manager: PixManager) -> Settings:
    base = make_settings(tmp_path / "data", database_url)
    pix = dataclasses.replace(
        base.pix, manager_host="127.0.0.1", manager_port=manager.port, assigning_authority_uid=LOCAL_OID
    )
    return dataclasses.replace(base, pix=pix)


def query(app: Pergamon, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(f"http://127.0.0.1:{app.settings.http.port}/api/pix/query", json=body, timeout=30)


def xrefs(app: Pergamon, pid: str, issuer: str) -> list[tuple[str, str]]:
    url = f"http://127.0.0.1:{app.settings.http.port}/api/pix/xrefs"
    response = httpx.get(url, params={"pid": pid, "issuer": issuer}, timeout=30)
    response.raise_for_status()
    return sorted((x["patient_id"], x["issuer"]) for x in response.json()["xrefs"])


def test_the_query_sent_is_an_iti9_qbp(server: Pergamon, manager: PixManager) -> None:
    assert query(server, {"pid": "L100"}).status_code == 200
    (sent,) = manager.queries
    assert str(sent.segment("MSH")[9]) == "QBP^Q23^QBP_Q21"
    assert str(sent.segment("MSH")[12]) == "2.5"
    qpd = sent.segment("QPD")
    assert str(qpd[1]) == "IHE PIX Query"
    assert str(qpd[3]) == f"L100^^^PERGAMON&{LOCAL_OID}&ISO"
    assert str(sent.segment("RCP")[1]) == "I"


def test_case_1_and_6_aliases_are_stored_and_used(server: Pergamon) -> None:
    response = query(server, {"pid": "L100"})
    assert response.status_code == 200
    assert sorted((a["patient_id"], a["issuer"]) for a in response.json()["aliases"]) == [
        ("A100", "HOSP_A"),
        ("B100", "HOSP_B"),
        ("B101", "HOSP_B"),
    ]
    assert xrefs(server, "A100", "HOSP_A") == [
        ("B100", "HOSP_B"),
        ("B101", "HOSP_B"),
        ("L100", ""),
        ("L100", "PERGAMON"),
    ]


def test_query_restricted_to_a_domain(server: Pergamon) -> None:
    response = query(server, {"pid": "A100", "issuer": "HOSP_A", "domains": ["HOSP_B"]})
    assert response.status_code == 200
    assert [a["patient_id"] for a in response.json()["aliases"]] == ["B100", "B101"]


def test_case_2_not_found_removes_stale_cross_references(server: Pergamon, manager: PixManager) -> None:
    ack = manager.notify("127.0.0.1", server.hl7.port, [Ident("L200", "PERGAMON", LOCAL_OID), HOSP_A])
    assert str(ack.segment("MSA")[1]) == "AA"
    assert xrefs(server, "L200", "PERGAMON") == [("A100", "HOSP_A"), ("L200", "")]
    response = query(server, {"pid": "L200"})  # the manager knows L200 without any alias
    assert response.status_code == 200
    assert response.json()["aliases"] == []
    assert xrefs(server, "L200", "PERGAMON") == []


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ({"pid": "NOBODY"}, "QPD-3: the patient identifier 'NOBODY' is unknown"),  # case 3
        ({"pid": "A100", "issuer": "NO_SUCH_DOMAIN"}, "QPD-3: the domain 'NO_SUCH_DOMAIN'"),  # case 4
        ({"pid": "L100", "domains": ["HOSP_A", "ELSEWHERE"]}, "QPD-4: the domain 'ELSEWHERE'"),  # case 5
    ],
)
def test_refusals_name_the_query_field(server: Pergamon, body: dict[str, Any], problem: str) -> None:
    response = query(server, body)
    assert response.status_code == 404
    assert problem in response.text
    assert query(server, {"pid": "L100"}).status_code == 200  # the next query still works


def test_a_manager_that_does_not_answer_is_503(server: Pergamon, manager: PixManager) -> None:
    manager.stop()
    response = query(server, {"pid": "L100"})
    assert response.status_code == 503
    assert "did not answer" in response.text


def store(app: Pergamon, tmp_path: Path, patient_id: str) -> str:
    ds = make_instance(CTImageStorage, patient_id=patient_id, rows=8, cols=8)
    path = write(ds, tmp_path / f"{ds.SOPInstanceUID}.dcm").path
    cmd = [require_tool("storescu"), "-aec", app.settings.dicom.ae_title, "127.0.0.1", str(app.settings.dicom.port)]
    subprocess.run([*cmd, str(path)], check=True, env=dcmtk_env(), capture_output=True, timeout=60)
    return str(ds.StudyInstanceUID)


def find_studies(app: Pergamon, patient_id: str, issuer: str) -> list[str]:
    ae = AE(ae_title="FINDSCU")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    assoc = ae.associate("127.0.0.1", app.settings.dicom.port, ae_title=app.settings.dicom.ae_title)
    assert assoc.is_established
    identifier = Dataset()
    identifier.QueryRetrieveLevel = "STUDY"
    identifier.PatientID = patient_id
    identifier.IssuerOfPatientID = issuer
    identifier.StudyInstanceUID = ""
    found = []
    try:
        for status, ds in assoc.send_c_find(identifier, StudyRootQueryRetrieveInformationModelFind):
            if status is not None and status.Status == 0xFF00 and ds is not None:
                found.append(str(ds.StudyInstanceUID))
    finally:
        assoc.release()
    return sorted(found)


def test_a31_cross_reference_lets_c_find_by_the_other_domain_find_the_study(
    server: Pergamon, manager: PixManager, tmp_path: Path
) -> None:
    study_uid = store(server, tmp_path, "L100")  # filed without issuer: Pergamon's own domain
    assert find_studies(server, "A100", "HOSP_A") == []
    ack = manager.notify("127.0.0.1", server.hl7.port, [LOCAL, HOSP_A])
    assert str(ack.segment("MSA")[1]) == "AA"
    assert find_studies(server, "A100", "HOSP_A") == [study_uid]
    manager.notify("127.0.0.1", server.hl7.port, [HOSP_A])  # unlinked: A100 stands alone again
    manager.notify("127.0.0.1", server.hl7.port, [LOCAL])
    assert find_studies(server, "A100", "HOSP_A") == []


def test_a31_ack_echoes_msh10_and_a_malformed_a31_is_refused(server: Pergamon, tmp_path: Path) -> None:
    """ihe-iti.md 3.7: ACK AA with MSA-2 = the A31's MSH-10; an A31 without identifiers gets AE, the next works."""
    import hl7.client

    def a31(control: str, pid3: str) -> str:
        msh = f"MSH|^~\\&|PIX_MGR|PIX_FAC|PERGAMON|PERGAMON|20261127||ADT^A31^ADT_A05|{control}|P|2.5"
        return "\r".join([msh, "EVN|A31|20261127", f"PID|||{pid3}|| ", "PV1||N"]) + "\r"

    def send(text: str) -> tuple[str, str]:
        with hl7.client.MLLPClient("127.0.0.1", server.hl7.port, encoding="ascii") as client:
            msa = hl7.parse(client.send_message(text)[1:-2].decode("ascii")).segment("MSA")
        return str(msa[1]), str(msa[2])

    assert send(a31("A31-BAD", "")) == ("AE", "A31-BAD")
    assert send(a31("A31-OK", "~".join(i.cx() for i in (LOCAL, HOSP_A)))) == ("AA", "A31-OK")
    assert xrefs(server, "A100", "HOSP_A") == [("L100", ""), ("L100", "PERGAMON")]
    study_uid = store(server, tmp_path, "L100")
    url = f"http://127.0.0.1:{server.settings.http.port}/dicom-web/studies"
    found = httpx.get(url, params={"PatientID": "A100", "IssuerOfPatientID": "HOSP_A"}, timeout=30).json()
    assert [s["0020000D"]["Value"][0] for s in found] == [study_uid]  # QIDO-RS follows the cross-reference too
