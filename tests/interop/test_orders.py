"""Orders over real MLLP (RAD-4 / RAD-13): python-hl7's client sends ORM^O01 and OMI^O23, dcmtk storescu the images.

Checks, against a running Pergamon: an order then its images are linked (by Study Instance UID
or Accession Number), images then their order are linked when it comes (MESA 105), change and
cancel show in the REST view, and a bad ORC-1 gets an AE with an ERR naming ORC-1 while the next
message still works.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import hl7
import hl7.client
import httpx
import pytest
from conftest import dcmtk_env, require_tool
from order_messages import omi, orm
from pydicom.uid import CTImageStorage, generate_uid
from samples import make_instance, write

from pergamon.runtime import Pergamon

pytestmark = pytest.mark.interop

EB, CR = b"\x1c", b"\r"


def send(app: Pergamon, text: str) -> hl7.Message:
    """python-hl7's blocking MLLP client; reads until the end block (its `send` returns one recv)."""
    with hl7.client.MLLPClient("127.0.0.1", app.hl7.port, encoding="ascii") as client:
        answer = client.send_message(text)
        while not answer.endswith(EB + CR):
            answer += client.socket.recv(65536)
    return hl7.parse(answer[1:-2].decode("ascii"))


def ack_code(ack: hl7.Message) -> str:
    return str(ack.segment("MSA")[1])


def storescu(app: Pergamon, tmp_path: Path, *, study_uid: str, accession: str = "", count: int = 2) -> None:
    exe = require_tool("storescu")
    files = []
    for number in range(1, count + 1):
        ds = make_instance(
            CTImageStorage, study_uid=study_uid, accession_number=accession, rows=8, cols=8, instance_number=number
        )
        files.append(str(write(ds, tmp_path / f"{ds.SOPInstanceUID}.dcm").path))
    port = str(app.settings.dicom.port)
    subprocess.run(
        [exe, "-aec", app.settings.dicom.ae_title, "127.0.0.1", port, *files],
        check=True,
        env=dcmtk_env(),
        capture_output=True,
        timeout=60,
    )


def api(app: Pergamon, path: str, **params: Any) -> Any:
    response = httpx.get(f"http://127.0.0.1:{app.settings.http.port}/api{path}", params=params, timeout=30)
    response.raise_for_status()
    return response.json()


def the_order(app: Pergamon, placer: str) -> dict[str, Any]:
    matching = [o for o in api(app, "/orders")["orders"] if o["placer_order_number"] == placer]
    assert len(matching) == 1, matching
    return dict(api(app, f"/orders/{matching[0]['pk']}"))


def test_order_then_images_are_linked_by_study_uid(server: Pergamon, tmp_path: Path) -> None:
    study_uid = generate_uid()
    assert ack_code(send(server, orm("NW", "PL1", accession="ACC1", study_uid=study_uid))) == "AA"
    storescu(server, tmp_path, study_uid=study_uid)
    order = the_order(server, "PL1")
    assert [(s["study_uid"], s["matched_by"], s["instances"]) for s in order["studies"]] == [
        (study_uid, "study-uid", 2)
    ]


def test_omi_order_then_images_are_linked_by_accession(server: Pergamon, tmp_path: Path) -> None:
    assert ack_code(send(server, omi("NW", "PL2", accession="ACC2"))) == "AA"
    study_uid = generate_uid()
    storescu(server, tmp_path, study_uid=study_uid, accession="ACC2")
    storescu(server, tmp_path, study_uid=generate_uid(), accession="OTHER")
    order = the_order(server, "PL2")
    assert [(s["study_uid"], s["matched_by"]) for s in order["studies"]] == [(study_uid, "accession")]
    assert api(server, "/orders", accession="ACC2")["orders"][0]["linked_studies"] == 1


def test_images_then_order_are_linked_when_it_comes(server: Pergamon, tmp_path: Path) -> None:
    study_uid = generate_uid()
    storescu(server, tmp_path, study_uid=study_uid, accession="ACC3")
    assert ack_code(send(server, orm("NW", "PL3", accession="ACC3"))) == "AA"
    assert [s["study_uid"] for s in the_order(server, "PL3")["studies"]] == [study_uid]


def test_change_then_cancel(server: Pergamon, tmp_path: Path) -> None:
    send(server, omi("NW", "PL4", accession="ACC4"))
    assert ack_code(send(server, omi("XO", "PL4", accession="ACC4", steps=(("SPS9", "MR", "MR_ROOM"),)))) == "AA"
    order = the_order(server, "PL4")
    assert [(s["sps_id"], s["modality"], s["station_ae"]) for s in order["steps"]] == [("SPS9", "MR", "MR_ROOM")]
    assert ack_code(send(server, omi("CA", "PL4", status="CA"))) == "AA"
    assert the_order(server, "PL4")["status"] == "CA"
    assert [o["placer_order_number"] for o in api(server, "/orders", status="CA")["orders"]] == ["PL4"]


def test_bad_order_control_is_an_error_naming_orc1_and_the_next_message_works(server: Pergamon) -> None:
    ack = send(server, omi("ZZ", "PL5"))
    assert ack_code(ack) == "AE"
    err = ack.segment("ERR")
    assert str(err[2]) == "ORC^1^1"  # v2.5 ERR-2 error location
    assert str(err[3]).startswith("103")  # table value not found
    assert api(server, "/orders")["orders"] == []
    assert ack_code(send(server, omi("NW", "PL5"))) == "AA"
    assert the_order(server, "PL5")["status"] == "SC"


def test_cancel_of_an_unknown_order_is_an_error(server: Pergamon) -> None:
    ack = send(server, orm("CA", "NOPE"))
    assert ack_code(ack) == "AE"
    assert "unknown order NOPE" in str(ack.segment("MSA")[3])


def test_rest_view_errors(server: Pergamon) -> None:
    base = f"http://127.0.0.1:{server.settings.http.port}/api"
    assert httpx.get(f"{base}/orders/999999", timeout=30).status_code == 404
    assert httpx.get(f"{base}/orders", params={"status": "XX"}, timeout=30).status_code == 400
