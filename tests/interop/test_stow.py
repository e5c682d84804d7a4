"""STOW-RS (PS3.18 §10.5) against a running Pergamon: dicomweb-client, raw httpx, dcmtk and pynetdicom.

What is checked: a corpus stored with dicomweb-client's `store_instances` is all referenced and
found by C-FIND; a series stored by STOW-RS leaves by C-MOVE (to dcmtk storescp) bit for bit;
mixed bodies give 202 with exact Referenced / Failed SOP Sequences (Failure Reasons of PS3.18
Table I.2-2) and none stored gives 409; malformed bodies give 400 and wrong media types 415, with
nothing stored, no temporary file left and the server still serving; the XML response; a 300 MB
body does not grow the server's memory; and WIC (JSON metadata + JPEG / MP4 / PDF bulk data)
creates VL Photographic, Video Photographic and Encapsulated PDF instances that C-GET returns
with the bulk data encapsulated unchanged.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import httpx
import pytest
import samples
import wic_media
from conftest import make_settings
from dicomweb_client.api import DICOMwebClient
from interop.test_retrieve import StoreSCP, dataset_bytes, study_key
from pydicom import Dataset, dcmread
from pydicom.encaps import generate_fragments
from pydicom.uid import JPEGBaseline8Bit, generate_uid
from pynetdicom import AE, build_role, evt
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    EncapsulatedPDFStorage,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
    VideoPhotographicImageStorage,
    VLPhotographicImageStorage,
)
from store_checks import unfinished_transfers

from pergamon.archive import wic
from pergamon.config import Settings
from pergamon.runtime import Pergamon

pytestmark = pytest.mark.interop

CT = "1.2.840.10008.5.1.4.1.1.2"


# --- helpers -------------------------------------------------------------------------------------


def base_url(app: Pergamon) -> str:
    return f"http://127.0.0.1:{app.settings.http.port}{app.settings.http.base_path}"


def multipart(parts: list[tuple[str, bytes, dict[str, str]]], boundary: str = "") -> tuple[bytes, str]:
    """A multipart/related body and its boundary; parts are (content type, body, extra headers)."""
    boundary = boundary or uuid.uuid4().hex
    out = b""
    for content_type, body, headers in parts:
        head = f"--{boundary}\r\nContent-Type: {content_type}\r\n"
        head += "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        out += head.encode() + b"\r\n" + body + b"\r\n"
    return out + f"--{boundary}--\r\n".encode(), boundary


def post(app: Pergamon, body: bytes, boundary: str, *, study: str = "", kind: str = "application/dicom",
         accept: str = "application/dicom+json") -> httpx.Response:  # fmt: skip
    url = f"{base_url(app)}/studies" + (f"/{study}" if study else "")
    content_type = f'multipart/related; type="{kind}"; boundary={boundary}'
    return httpx.post(url, content=body, headers={"Content-Type": content_type, "Accept": accept}, timeout=120)


def referenced(response: httpx.Response) -> list[str]:
    items = response.json().get("00081199", {}).get("Value", [])
    return [item["00081155"]["Value"][0] for item in items]


def failures(response: httpx.Response) -> list[tuple[str, int]]:
    items = response.json().get("00081198", {}).get("Value", [])
    return [(item.get("00081155", {}).get("Value", [""])[0], item["00081197"]["Value"][0]) for item in items]


def leftovers(app: Pergamon) -> list[str]:
    """Files of parts not stored: in the temporary folder, or blobs no index row points at."""
    return unfinished_transfers(app.settings)


def c_find_instances(app: Pergamon, study: str) -> set[str]:
    ae = AE(ae_title="FINDSCU")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    assoc = ae.associate("127.0.0.1", app.settings.dicom.port, ae_title=app.settings.dicom.ae_title)
    assert assoc.is_established
    query = Dataset()
    query.QueryRetrieveLevel = "IMAGE"
    query.StudyInstanceUID = study
    query.SeriesInstanceUID = ""
    query.SOPInstanceUID = ""
    try:
        found = {
            str(identifier.SOPInstanceUID)
            for status, identifier in assoc.send_c_find(query, StudyRootQueryRetrieveInformationModelFind)
            if status and status.Status in (0xFF00, 0xFF01) and identifier is not None
        }
    finally:
        assoc.release()
    return found


def c_get(app: Pergamon, study: str, contexts: list[tuple[str, str]]) -> dict[str, tuple[str, Dataset]]:
    """SOP Instance UID -> (transfer syntax, dataset) of what one C-GET of the study returns."""
    got: dict[str, tuple[str, Dataset]] = {}

    def on_store(event: Any) -> int:
        got[str(event.dataset.SOPInstanceUID)] = (str(event.context.transfer_syntax), event.dataset)
        return 0x0000

    ae = AE(ae_title="GETTER")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
    for sop_class, syntax in contexts:
        ae.add_requested_context(sop_class, [syntax])
    assoc = ae.associate(
        "127.0.0.1",
        app.settings.dicom.port,
        ae_title=app.settings.dicom.ae_title,
        ext_neg=[build_role(sop_class, scp_role=True) for sop_class in {c for c, _ in contexts}],
        evt_handlers=[(evt.EVT_C_STORE, on_store)],
    )
    assert assoc.is_established
    try:
        responses = list(assoc.send_c_get(study_key(study), StudyRootQueryRetrieveInformationModelGet))
    finally:
        assoc.release()
    assert responses[-1][0].Status == 0x0000
    return got


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    """Every STOW-RS store runs in a store worker, as in production (refusals cross the process boundary)."""
    return make_settings(tmp_path / "data", database_url, store_workers=1)


@pytest.fixture
def storescp_peer(tmp_path: Path) -> Iterator[StoreSCP]:
    scp = StoreSCP(tmp_path / "peers")
    yield scp
    scp.stop()


@pytest.fixture
def app_with_peer(tmp_path: Path, database_url: str, storescp_peer: StoreSCP) -> Iterator[Pergamon]:
    app = Pergamon(make_settings(tmp_path / "data", database_url, remotes=(storescp_peer.remote,), store_workers=1))
    app.start()
    yield app
    app.stop()


# --- Part-10 form -------------------------------------------------------------------------------


def test_corpus_stored_with_dicomweb_client_is_found_by_c_find(server: Pergamon, tmp_path: Path) -> None:
    corpus = samples.storage_corpus(tmp_path / "corpus")
    study = corpus[0].study_uid
    client = DICOMwebClient(base_url(server))
    response = client.store_instances([dcmread(s.path) for s in corpus])
    stored = {str(item.ReferencedSOPInstanceUID) for item in response.ReferencedSOPSequence}
    assert stored == {s.sop_instance_uid for s in corpus}
    assert "FailedSOPSequence" not in response
    # dicomweb-client sends `Host: 127.0.0.1` without the port; URLs follow the Host header
    base_path = server.settings.http.base_path
    assert response.RetrieveURL.endswith(f"{base_path}/studies/{study}")
    assert f"{base_path}/studies/{study}/series/" in response.ReferencedSOPSequence[0].RetrieveURL
    assert c_find_instances(server, study) == stored
    assert leftovers(server) == []


def test_stow_series_is_moved_bit_for_bit(app_with_peer: Pergamon, storescp_peer: StoreSCP, tmp_path: Path) -> None:
    series = samples.ct_series(tmp_path / "ct", 5, size=128)
    study = series[0].study_uid
    body, boundary = multipart([("application/dicom", s.path.read_bytes(), {}) for s in series])
    response = post(app_with_peer, body, boundary, study=study)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/dicom+json")
    assert sorted(referenced(response)) == sorted(s.sop_instance_uid for s in series)
    assert c_find_instances(app_with_peer, study) == {s.sop_instance_uid for s in series}

    ae = AE(ae_title="MOVESCU")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelMove)
    assoc = ae.associate("127.0.0.1", app_with_peer.settings.dicom.port, ae_title=app_with_peer.settings.dicom.ae_title)
    assert assoc.is_established
    try:
        responses = list(assoc.send_c_move(study_key(study), "DEST", StudyRootQueryRetrieveInformationModelMove))
    finally:
        assoc.release()
    assert responses[-1][0].Status == 0x0000
    received = storescp_peer.received()
    assert set(received) == {s.sop_instance_uid for s in series}
    for sample in series:
        assert dataset_bytes(received[sample.sop_instance_uid]) == dataset_bytes(sample.path)


def test_mixed_body_stores_the_good_part_only(server: Pergamon, tmp_path: Path) -> None:
    study = generate_uid()
    good, other = (
        samples.ct_series(tmp_path / "a", 1, size=64, study_uid=study)[0],
        samples.ct_series(tmp_path / "b", 1, size=64)[0],
    )
    body, boundary = multipart([
        ("application/dicom", good.path.read_bytes(), {}),
        ("application/dicom", b"this is not DICOM at all" * 10, {}),
        ("application/dicom", other.path.read_bytes(), {}),
        ("application/dicom", good.path.read_bytes()[:-300], {}),  # truncated object
        ("text/plain", b"hello", {}),
    ])  # fmt: skip
    response = post(server, body, boundary, study=study)
    assert response.status_code == 202, response.text
    assert referenced(response) == [good.sop_instance_uid]
    assert failures(response) == [
        ("", 0xC000),
        (other.sop_instance_uid, 0xC409),
        (good.sop_instance_uid, 0xC000),
        ("", 0xC000),
    ]
    assert response.json()["00081190"]["Value"] == [f"{base_url(server)}/studies/{study}"]
    counts = server.archive.counts()
    assert counts["instances"] == 1
    assert leftovers(server) == []
    blobs = [p for p in server.settings.blob_path.rglob("*") if p.is_file()]
    assert len(blobs) == 1  # nothing half-stored


def test_parts_stored_side_by_side_are_answered_in_their_order(server: Pergamon, tmp_path: Path) -> None:
    """Parts go to the store workers concurrently (`stow.STORE_THREADS`); the response keeps the body's order."""
    series = samples.ct_series(tmp_path, 9, size=64)
    order = [series[i] for i in (4, 0, 8, 2, 6, 1, 7, 3, 5)]
    parts = [("application/dicom", s.path.read_bytes(), {}) for s in order]
    parts.insert(3, ("application/dicom", b"not DICOM" * 20, {}))
    body, boundary = multipart(parts)
    response = post(server, body, boundary)
    assert response.status_code == 202, response.text
    assert referenced(response) == [s.sop_instance_uid for s in order], response.text
    assert failures(response) == [("", 0xC000)]
    assert server.archive.counts()["instances"] == 9
    assert leftovers(server) == []


def test_none_stored_is_409(server: Pergamon, tmp_path: Path) -> None:
    sample = samples.ct_series(tmp_path, 1, size=64)[0]
    body, boundary = multipart([("application/dicom", sample.path.read_bytes(), {})])
    response = post(server, body, boundary, study=generate_uid())
    assert response.status_code == 409
    assert failures(response) == [(sample.sop_instance_uid, 0xC409)]
    assert server.archive.counts()["instances"] == 0


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("multipart/related; type=\"application/dicom\"", b"--x\r\n\r\nabc\r\n--x--\r\n"),  # no boundary
        ("multipart/related; type=\"application/dicom\"; boundary=x", b"no delimiter anywhere"),
        ("multipart/related; type=\"application/dicom\"; boundary=x", b"--x\r\nContent-Type: a\r\n\r\nabc"),
        ("multipart/related; type=\"application/dicom\"; boundary=x", b"--x\r\nContent-Type: a\r\n\r\nabc\r\n--xZ"),
        ("multipart/related; type=\"application/dicom\"; boundary=x", b"--x--\r\n"),  # no parts
        ("multipart/related; type=\"application/dicom+json\"; boundary=x",
         b"--x\r\nContent-Type: application/dicom+json\r\n\r\n[{not json\r\n--x--\r\n"),
    ],
)  # fmt: skip
def test_malformed_body_is_400(server: Pergamon, tmp_path: Path, content_type: str, body: bytes) -> None:
    response = httpx.post(f"{base_url(server)}/studies", content=body, headers={"Content-Type": content_type})
    assert response.status_code == 400, response.text
    assert response.text.strip()
    assert server.archive.counts()["instances"] == 0
    assert leftovers(server) == []
    sample = samples.ct_series(tmp_path, 1, size=64)[0]  # still serving
    good, boundary = multipart([("application/dicom", sample.path.read_bytes(), {})])
    assert post(server, good, boundary).status_code == 200


def test_truncated_large_body_stores_nothing(server: Pergamon, tmp_path: Path) -> None:
    series = samples.ct_series(tmp_path, 3, size=256)
    body, boundary = multipart([("application/dicom", s.path.read_bytes(), {}) for s in series])
    response = post(server, body[: len(body) - 1000], boundary)
    assert response.status_code == 400
    assert server.archive.counts()["instances"] == 0
    assert leftovers(server) == []


@pytest.mark.parametrize(
    "content_type",
    [
        "application/dicom",
        "application/json",
        "multipart/form-data; boundary=x",
        'multipart/related; type="application/json"; boundary=x',
        'multipart/related; type="application/dicom+xml"; boundary=x',
    ],
)
def test_unsupported_media_type_is_415(server: Pergamon, content_type: str) -> None:
    response = httpx.post(f"{base_url(server)}/studies", content=b"--x--\r\n", headers={"Content-Type": content_type})
    assert response.status_code == 415, response.text
    assert leftovers(server) == []


def test_xml_response_on_request(server: Pergamon, tmp_path: Path) -> None:
    sample = samples.ct_series(tmp_path, 1, size=64)[0]
    body, boundary = multipart([("application/dicom", sample.path.read_bytes(), {}), ("application/dicom", b"x", {})])
    response = post(server, body, boundary, accept="application/dicom+xml")
    assert response.status_code == 202
    assert response.headers["content-type"].startswith("application/dicom+xml")
    root = ElementTree.fromstring(response.content)
    ns = {"d": "http://dicom.nema.org/PS3.19/models/NativeDICOM"}
    sop = root.find("d:DicomAttribute[@keyword='ReferencedSOPSequence']/d:Item/d:DicomAttribute[@tag='00081155']", ns)
    assert sop is not None and sop.findtext("d:Value", namespaces=ns) == sample.sop_instance_uid
    reason = root.find("d:DicomAttribute[@tag='00081198']/d:Item/d:DicomAttribute[@tag='00081197']", ns)
    assert reason is not None and reason.findtext("d:Value", namespaces=ns) == str(0xC000)


def _peak_rss_reset() -> None:
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM (Linux >= 4.0)


def _peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


@pytest.mark.slow
def test_300_mb_body_streams(server: Pergamon, tmp_path: Path) -> None:
    """The server runs in this process: its peak RSS over the request stays within 100 MB."""
    big = samples.big_multiframe(tmp_path, 300 * 1024 * 1024)
    boundary = uuid.uuid4().hex
    head = f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
    tail = f"\r\n--{boundary}--\r\n".encode()

    def body() -> Iterator[bytes]:
        yield head
        with open(big.path, "rb") as f:
            while chunk := f.read(1 << 20):
                yield chunk
        yield tail

    _peak_rss_reset()
    before = _peak_rss_mb()
    response = httpx.post(
        f"{base_url(server)}/studies",
        content=body(),
        headers={"Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}'},
        timeout=300,
    )
    grown = _peak_rss_mb() - before
    assert response.status_code == 200, response.text
    assert referenced(response) == [big.sop_instance_uid]
    assert grown < 100, f"peak RSS grew by {grown:.0f} MB"
    assert leftovers(server) == []


# --- metadata + bulk data (WIC) -----------------------------------------------------------------


def wic_item(study: str, bulk_tag: str, uri: str, **extra: Any) -> dict[str, Any]:
    item = {
        "00100010": {"vr": "PN", "Value": [{"Alphabetic": "Doe^Jane"}]},
        "00100020": {"vr": "LO", "Value": ["WIC-42"]},
        "0020000D": {"vr": "UI", "Value": [study]},
        "00080050": {"vr": "SH", "Value": ["ACC-1"]},
        bulk_tag: {"vr": "OB", "BulkDataURI": uri},
    }
    item.update(extra)
    return item


def test_wic_jpeg_mp4_pdf_become_dicom_instances(server: Pergamon) -> None:
    study = generate_uid()
    jpeg, video, pdf = wic_media.jpeg(80, 60), wic_media.mp4(320, 240, frames=25), wic_media.pdf()
    base = base_url(server)
    metadata = [
        wic_item(study, "7FE00010", f"{base}/bulk/photo"),
        wic_item(study, "7FE00010", "video.mp4"),
        wic_item(study, "00420011", "cid:doc@example"),
    ]
    body, boundary = multipart([
        ("application/dicom+json", json.dumps(metadata).encode(), {}),
        ("image/jpeg", jpeg, {"Content-Location": f"{base}/bulk/photo"}),
        ("video/mp4", video, {"Content-Location": "video.mp4"}),
        ("application/pdf", pdf, {"Content-ID": "<doc@example>"}),
    ])  # fmt: skip
    response = post(server, body, boundary, kind="application/dicom+json")
    assert response.status_code == 200, response.text
    assert len(referenced(response)) == 3
    assert response.json()["00081190"]["Value"] == [f"{base}/studies/{study}"]
    assert c_find_instances(server, study) == set(referenced(response))
    assert leftovers(server) == []  # (the C-GET below receives into the same folder, in this process)

    got = c_get(server, study, [
        (VLPhotographicImageStorage, JPEGBaseline8Bit),
        (VideoPhotographicImageStorage, wic.MPEG4HP41),
        (EncapsulatedPDFStorage, "1.2.840.10008.1.2.1"),
    ])  # fmt: skip
    by_class = {str(ds.SOPClassUID): (syntax, ds) for syntax, ds in got.values()}
    syntax, photo = by_class[VLPhotographicImageStorage]
    assert syntax == JPEGBaseline8Bit and str(photo.PatientName) == "Doe^Jane" and photo.PatientID == "WIC-42"
    assert photo.StudyInstanceUID == study and photo.AccessionNumber == "ACC-1"
    assert list(generate_fragments(photo.PixelData))[1][: len(jpeg)] == jpeg
    syntax, movie = by_class[VideoPhotographicImageStorage]
    assert syntax == wic.MPEG4HP41 and movie.NumberOfFrames == 25
    assert list(generate_fragments(movie.PixelData))[1][: len(video)] == video
    _syntax, document = by_class[EncapsulatedPDFStorage]
    assert document.EncapsulatedDocument[: len(pdf)] == pdf


def test_wic_failures_fail_alone(server: Pergamon) -> None:
    """Into /studies/{study}: another study's metadata (C409), a missing bulk part and a GIF fail alone."""
    study = generate_uid()
    metadata = [
        wic_item(study, "7FE00010", "a"),
        wic_item(generate_uid(), "7FE00010", "a"),
        wic_item(study, "7FE00010", "missing"),
        wic_item(study, "7FE00010", "gif", **{"00080018": {"vr": "UI", "Value": ["1.2.3.99"]}}),
    ]
    del metadata[0]["0020000D"]  # taken from the URL
    body, boundary = multipart([
        ("application/dicom+json", json.dumps(metadata).encode(), {}),
        ("image/jpeg", wic_media.jpeg(), {"Content-Location": "a"}),
        ("image/gif", b"GIF89a" + bytes(100), {"Content-Location": "gif"}),
    ])  # fmt: skip
    started = time.monotonic()
    response = post(server, body, boundary, study=study, kind="application/dicom+json")
    assert time.monotonic() - started < 30
    assert response.status_code == 202, response.text
    assert len(referenced(response)) == 1
    reasons = [reason for _uid, reason in failures(response)]
    assert reasons == [0xC409, 0xC000, 0xC122]
    assert failures(response)[2][0] == "1.2.3.99"
    assert server.archive.counts()["instances"] == 1
    assert leftovers(server) == []
