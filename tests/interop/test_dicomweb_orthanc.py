"""Pergamon and Orthanc 1.10's DICOMweb plugin (Debian orthanc-dicomweb 1.7) talking PS3.18.

One private Orthanc runs for the module with the DICOMweb plugin loaded, its own DICOMweb root
at /dicom-web/ and Pergamon as DICOMweb server "pergamon" (on an HTTP port reserved for every
test's Pergamon). Its REST API drives the plugin's client side:

- `POST /dicom-web/servers/pergamon/get` {"Uri", "Arguments"}: a GET (QIDO-RS here) passed through,
  the answer body returned as is; Orthanc refuses a "?" in Uri (arguments go in "Arguments") and
  sends `Accept: */*`;
- `.../retrieve` {"Resources": [{"Study": uid}]}: WADO-RS with `Accept: multipart/related;
  type="application/dicom"; transfer-syntax=*` (as stored), synchronous, answers
  {"ReceivedInstancesCount", "NetworkUsageMB"}; the parts are stored as by POST /instances, so
  the bytes Orthanc keeps are exactly the bytes Pergamon sent;
- `.../stow` {"Resources": [Orthanc ids]}: STOW-RS `POST {root}studies`, `Content-Type:
  multipart/related; type="application/dicom"; boundary=...`, `Transfer-Encoding: chunked` (no
  Content-Length), `Accept: application/dicom+json`; synchronous, answers {"InstancesCount"}.
  Orthanc sends its stored files, and files uploaded by POST /instances are kept byte for byte,
  so Pergamon must store exactly the original bytes.

Each test is skipped while the Pergamon service it needs is still a stub (its module declares no
route); never on failure. The corpus is test_orthanc's (six studies, five transfer syntaxes).
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import free_port, make_settings, require_tool
from interop.orthanc import OrthancError, OrthancServer, dicomweb_plugin
from interop.test_orthanc import (
    MULTI_PATIENT_ID,
    MULTI_PATIENT_NAME,
    MULTI_STUDY_UID,
    PYDICOM_FILES,
    Item,
    _derive,
    _item,
    in_study,
    orthanc_datasets,
    pergamon_datasets,
    seed,
)
from pydicom.data import get_testdata_file

from pergamon.runtime import Pergamon
from pergamon.web import dicomweb

pytestmark = pytest.mark.interop

SERVER = "pergamon"  # Pergamon's name in Orthanc's DicomWeb.Servers

# QIDO-RS study-level attributes every origin server returns (PS3.18 Table 10.6.3-3)
STUDY_REQUIRED = {
    "00080020": "StudyDate",
    "00080030": "StudyTime",
    "00080050": "AccessionNumber",
    "00080061": "ModalitiesInStudy",
    "00080090": "ReferringPhysicianName",
    "00100010": "PatientName",
    "00100020": "PatientID",
    "00100030": "PatientBirthDate",
    "00100040": "PatientSex",
    "0020000D": "StudyInstanceUID",
    "00200010": "StudyID",
    "00201206": "NumberOfStudyRelatedSeries",
    "00201208": "NumberOfStudyRelatedInstances",
}
RETRIEVE_URL = "00081190"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> list[Item]:
    """test_orthanc's corpus: five pydicom files and one study of three instances in two series."""
    folder = tmp_path_factory.mktemp("corpus")
    items = [_item(name, Path(get_testdata_file(name))) for name in PYDICOM_FILES]
    items.append(_item("multi_ct_1.dcm", _derive("CT_small.dcm", folder / "multi_ct_1.dcm", series=1, number=1)))
    items.append(_item("multi_ct_2.dcm", _derive("CT_small.dcm", folder / "multi_ct_2.dcm", series=1, number=2)))
    items.append(_item("multi_sc_1.dcm", _derive("SC_rgb_rle.dcm", folder / "multi_sc_1.dcm", series=2, number=1)))
    return items


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OrthancServer]:
    """Orthanc with the DICOMweb plugin, knowing Pergamon's DICOMweb root on a reserved HTTP port."""
    binary = require_tool("Orthanc")
    if dicomweb_plugin() is None:
        require_tool("no-orthanc-dicomweb-plugin")  # skips (or fails on CI) with the install hint
    pergamon_http = free_port()
    server = OrthancServer(
        binary,
        tmp_path_factory.mktemp("orthanc-dicomweb"),
        dicom_port=free_port(),
        http_port=free_port(),
        modalities={},
        dicomweb_servers={SERVER: f"http://127.0.0.1:{pergamon_http}/dicom-web/"},
    )
    server.pergamon_http_port = pergamon_http  # type: ignore[attr-defined]
    with server:
        yield server


@pytest.fixture
def pergamon(tmp_path: Path, database_url: str, orthanc: OrthancServer) -> Iterator[Pergamon]:
    """A fresh Pergamon whose DICOMweb root is the one Orthanc knows; Orthanc emptied."""
    orthanc.reset()
    settings = make_settings(tmp_path / "pergamon", database_url)
    http = dataclasses.replace(settings.http, port=orthanc.pergamon_http_port, base_path="/dicom-web")  # type: ignore[attr-defined]
    app = Pergamon(dataclasses.replace(settings, http=http))
    app.start()
    yield app
    app.stop()


def require_service(app: Pergamon, *names: str) -> None:
    """Skip while a DICOMweb service module is still a stub (declares no route)."""
    for name in names:
        if not getattr(dicomweb, name).routes(app.archive):
            pytest.skip(f"DICOMweb {name} not implemented yet (web/dicomweb/{name}.py declares no route)")


def value(dataset: dict[str, Any], tag: str) -> Any:
    """The first value of an attribute in DICOM JSON (None if absent or empty); PN as its Alphabetic group."""
    values = dataset.get(tag, {}).get("Value") or [None]
    first = values[0]
    return first.get("Alphabetic") if isinstance(first, dict) else first


def plugin(orthanc: OrthancServer, call: str, payload: dict[str, Any]) -> Any:
    """POST /dicom-web/servers/pergamon/{call}; on an error, Orthanc's log says what Pergamon answered."""
    try:
        return orthanc.post(f"/dicom-web/servers/{SERVER}/{call}", payload, timeout=120)
    except OrthancError as exc:
        raise AssertionError(f"{exc}\n--- Orthanc log:\n{orthanc.log_tail(25)}") from None


def qido_through_orthanc(orthanc: OrthancServer, uri: str, **arguments: str) -> list[dict[str, Any]]:
    answer = plugin(orthanc, "get", {"Uri": uri, "Arguments": arguments})
    assert isinstance(answer, list), answer
    return answer


# -- a. Orthanc queries Pergamon (QIDO-RS) -----------------------------------------------------------


def test_orthanc_searches_pergamon_for_studies(orthanc: OrthancServer, pergamon: Pergamon, corpus: list[Item]) -> None:
    require_service(pergamon, "qido")
    seed(pergamon, corpus)

    every = qido_through_orthanc(orthanc, "/studies")
    mine = qido_through_orthanc(orthanc, "/studies", PatientID=MULTI_PATIENT_ID)

    assert sorted(value(d, "0020000D") for d in every) == sorted({i.study_uid for i in corpus})
    assert len(mine) == 1
    study = mine[0]
    multi = in_study(corpus, MULTI_STUDY_UID)
    assert value(study, "0020000D") == MULTI_STUDY_UID
    assert value(study, "00100010") == MULTI_PATIENT_NAME  # Latin-1 in the file, UTF-8 in JSON
    assert value(study, "00100020") == MULTI_PATIENT_ID
    assert value(study, "00080020") == "20240315"
    assert value(study, "00080050") == "PGM-ACC-1"
    assert sorted(study["00080061"]["Value"]) == sorted({i.modality for i in multi})
    assert value(study, "00201206") == 2
    assert value(study, "00201208") == 3
    assert set(STUDY_REQUIRED) <= set(study), set(STUDY_REQUIRED) - set(study)
    assert study[RETRIEVE_URL]["Value"][0].endswith(f"/dicom-web/studies/{MULTI_STUDY_UID}")


def test_orthanc_searches_pergamon_for_series_and_instances(
    orthanc: OrthancServer, pergamon: Pergamon, corpus: list[Item]
) -> None:
    require_service(pergamon, "qido")
    seed(pergamon, corpus)
    multi = in_study(corpus, MULTI_STUDY_UID)

    series = qido_through_orthanc(orthanc, f"/studies/{MULTI_STUDY_UID}/series")
    instances = qido_through_orthanc(orthanc, f"/studies/{MULTI_STUDY_UID}/instances")
    ct = qido_through_orthanc(orthanc, "/series", Modality="CT", StudyInstanceUID=MULTI_STUDY_UID)

    expected_series = sorted(
        (s, next(i.modality for i in multi if i.series_uid == s), sum(i.series_uid == s for i in multi))
        for s in {i.series_uid for i in multi}
    )
    assert sorted((value(d, "0020000E"), value(d, "00080060"), value(d, "00201209")) for d in series) == expected_series
    assert sorted(value(d, "00080018") for d in instances) == sorted(i.sop_uid for i in multi)
    assert [value(d, "00080060") for d in ct] == ["CT"]


def test_orthanc_qido_of_unknown_study_is_empty(orthanc: OrthancServer, pergamon: Pergamon) -> None:
    require_service(pergamon, "qido")
    assert qido_through_orthanc(orthanc, "/studies", StudyInstanceUID="1.2.3.4.5.6.7.8.9") == []


# -- b. Orthanc pulls from Pergamon (WADO-RS) --------------------------------------------------------


def test_orthanc_retrieves_studies_from_pergamon(
    orthanc: OrthancServer, pergamon: Pergamon, corpus: list[Item]
) -> None:
    """WADO-RS with transfer-syntax=*: every instance in its stored syntax, dataset bytes identical."""
    require_service(pergamon, "wado")
    seed(pergamon, corpus)
    studies = sorted({i.study_uid for i in corpus})

    answer = plugin(orthanc, "retrieve", {"Resources": [{"Study": s} for s in studies]})

    assert int(answer["ReceivedInstancesCount"]) == len(corpus)
    found = orthanc_datasets(orthanc)
    assert sorted(found) == sorted(i.sop_uid for i in corpus)
    for item in corpus:
        transfer_syntax, dataset = found[item.sop_uid]
        assert transfer_syntax == item.transfer_syntax, item.name
        assert dataset == item.dataset, f"{item.name}: dataset bytes differ"


def test_orthanc_retrieves_one_series_and_one_instance(
    orthanc: OrthancServer, pergamon: Pergamon, corpus: list[Item]
) -> None:
    require_service(pergamon, "wado")
    seed(pergamon, corpus)
    multi = in_study(corpus, MULTI_STUDY_UID)
    ct = [i for i in multi if i.modality == "CT"]
    other = next(i for i in multi if i.modality != "CT")

    plugin(
        orthanc,
        "retrieve",
        {
            "Resources": [
                {"Study": MULTI_STUDY_UID, "Series": ct[0].series_uid},
                {"Study": MULTI_STUDY_UID, "Series": other.series_uid, "Instance": other.sop_uid},
            ]
        },
    )

    found = orthanc_datasets(orthanc)
    assert sorted(found) == sorted(i.sop_uid for i in multi)
    for item in multi:
        assert found[item.sop_uid] == (item.transfer_syntax, item.dataset), item.name


# -- c. Orthanc pushes to Pergamon (STOW-RS) ---------------------------------------------------------


def test_orthanc_stores_studies_in_pergamon(orthanc: OrthancServer, pergamon: Pergamon, corpus: list[Item]) -> None:
    """STOW-RS (chunked multipart): every instance stored, original bytes, found by QIDO afterwards."""
    require_service(pergamon, "stow")
    uploaded = [orthanc.upload(item.path) for item in corpus]
    studies = sorted({answer["ParentStudy"] for answer in uploaded})

    answer = plugin(orthanc, "stow", {"Resources": studies})

    assert int(answer["InstancesCount"]) == len(corpus)
    assert pergamon.archive.counts() == {"patients": 6, "studies": 6, "series": 7, "instances": 8}
    found = pergamon_datasets(pergamon)
    assert sorted(found) == sorted(i.sop_uid for i in corpus)
    for item in corpus:
        assert found[item.sop_uid] == (item.transfer_syntax, item.dataset), item.name


def test_orthanc_stores_one_study_twice(orthanc: OrthancServer, pergamon: Pergamon, corpus: list[Item]) -> None:
    """The same study sent again: stored once (duplicate policy), no failure reported to Orthanc."""
    require_service(pergamon, "stow")
    multi = in_study(corpus, MULTI_STUDY_UID)
    [study] = {orthanc.upload(item.path)["ParentStudy"] for item in multi}

    plugin(orthanc, "stow", {"Resources": [study]})
    plugin(orthanc, "stow", {"Resources": [study]})

    assert pergamon.archive.counts()["instances"] == len(multi)
    found = pergamon_datasets(pergamon)
    for item in multi:
        assert found[item.sop_uid] == (item.transfer_syntax, item.dataset), item.name


def test_stow_in_orthancs_request_form(pergamon: Pergamon, corpus: list[Item]) -> None:
    """Orthanc's STOW-RS request replayed: a 73-character boundary (two UUIDs joined by "-", over
    RFC 2046's 70), chunked with no Content-Length, `Accept: application/dicom+json`.

    This says in Pergamon's words what the plugin only logs as "HTTP status 400".
    """
    require_service(pergamon, "stow")
    boundary = f"{uuid.uuid4()}-{uuid.uuid4()}"
    assert len(boundary) == 73
    item = in_study(corpus, MULTI_STUDY_UID)[0]
    data = item.path.read_bytes()
    head = f"--{boundary}\r\nContent-Type: application/dicom\r\nContent-Length: {len(data)}\r\n\r\n"
    body = head.encode() + data + f"\r\n--{boundary}--\r\n".encode()

    def chunked() -> Iterator[bytes]:
        for start in range(0, len(body), 16384):
            yield body[start : start + 16384]

    response = httpx.post(
        f"http://127.0.0.1:{pergamon.settings.http.port}/dicom-web/studies",
        content=chunked(),
        headers={
            "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
            "Accept": "application/dicom+json",
        },
    )

    assert response.status_code == 200, response.text
    assert pergamon_datasets(pergamon) == {item.sop_uid: (item.transfer_syntax, item.dataset)}


# -- d. the same study seen through both DICOMweb services (dicomweb-client) --------------------------


def test_qido_json_matches_orthancs(orthanc: OrthancServer, pergamon: Pergamon, corpus: list[Item]) -> None:
    """Pergamon's QIDO-RS study answer against Orthanc's own, for the same files: same values."""
    require_service(pergamon, "qido")
    client_module = pytest.importorskip("dicomweb_client.api")
    seed(pergamon, corpus)
    for item in corpus:
        orthanc.upload(item.path)
    ours = client_module.DICOMwebClient(f"http://127.0.0.1:{pergamon.settings.http.port}/dicom-web")
    theirs = client_module.DICOMwebClient(f"{orthanc.base_url}/dicom-web")

    for study_uid in sorted({i.study_uid for i in corpus}):
        filters = {"StudyInstanceUID": study_uid}
        [mine] = ours.search_for_studies(search_filters=filters)
        [other] = theirs.search_for_studies(search_filters=filters)
        if study_uid == MULTI_STUDY_UID:  # its instances differ in the other study attributes
            assert comparable(mine, MULTI_CONSISTENT) == comparable(other, MULTI_CONSISTENT)
        else:
            assert comparable(mine) == comparable(other), study_uid


# what the derived instances of the multi-instance study agree on (plus what is computed)
MULTI_CONSISTENT = {
    "StudyDate",
    "AccessionNumber",
    "ModalitiesInStudy",
    "PatientName",
    "PatientID",
    "StudyInstanceUID",
    "NumberOfStudyRelatedSeries",
    "NumberOfStudyRelatedInstances",
}


def comparable(study: dict[str, Any], keywords: set[str] | None = None) -> dict[str, Any]:
    """The PS3.18 study-level required attributes, normalised where PS3.18 leaves freedom.

    Absent and empty are the same (Orthanc writes {"vr": "PN"} for an empty name); the order of
    ModalitiesInStudy is free (PS3.4); Retrieve URL is compared by its path under the root.
    """
    found: dict[str, Any] = {}
    for tag in STUDY_REQUIRED:
        if keywords is not None and STUDY_REQUIRED[tag] not in keywords:
            continue
        element = study.get(tag, {})
        values = element.get("Value") or []
        if tag == "00080061":
            values = sorted(values)
        found[STUDY_REQUIRED[tag]] = (element.get("vr"), values) if values else None
    url = (study.get(RETRIEVE_URL, {}).get("Value") or [""])[0]
    found["RetrieveURL"] = url.split("/dicom-web", 1)[-1]
    return found
