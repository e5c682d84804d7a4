"""QIDO-RS (`web/dicomweb/qido.py`, PS3.18 10.6) with dicomweb-client and raw httpx.

A small corpus (three patients, four studies of CT and MR series, one with a Request Attributes
Sequence, plus the character-set samples of `samples.charset_samples`) is stored once per module
in a Pergamon running in this process; every level and nested resource, the matching of
`archive.query`, includefield, fuzzymatching, paging, the DICOM JSON and XML models, character
sets and bad input are checked against it. A study sent with dcmtk `storescu` is then found by
QIDO-RS with the values C-FIND returns. Runs on the backend PERGAMON_TEST_DB selects.
"""

from __future__ import annotations

import dataclasses
import re
import subprocess
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import samples
from conftest import dcmtk_env, index_database, make_settings, require_tool
from dicomweb_client.api import DICOMwebClient
from pydicom import Dataset
from pydicom.datadict import tag_for_keyword
from pydicom.sequence import Sequence
from pydicom.uid import generate_uid
from pynetdicom import AE
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind

from pergamon.archive.origin import Origin
from pergamon.runtime import Pergamon
from pergamon.web.dicomweb import media

pytestmark = pytest.mark.interop

CT, MR = "1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.5.1.4.1.1.4"
# name: (Patient ID, Patient's Name)
PATIENTS = {"P1": ("QD-P1", "SMITH^JOHN"), "P2": ("QD-P2", "Smithson^Anna"), "P3": ("QD-P3", "Doe^Jane")}
# name: (patient, Study Date, description)
STUDIES = {
    "S1": ("P1", "20200115", "CT chest"),
    "S2": ("P1", "20210620", "MR brain"),
    "S3": ("P2", "20220301", "MR knee"),
    "S4": ("P3", "20190101", "CT abdomen"),
}
# name: (study, SOP class, instances)
SERIES = {
    "S1-CT": ("S1", CT, 3),
    "S1-MR": ("S1", MR, 1),
    "S2-MR": ("S2", MR, 2),
    "S3-MR": ("S3", MR, 1),
    "S4-CT": ("S4", CT, 1),
}
CHARSET = {case[0]: case[2] for case in samples.CHARSET_CASES}
MORE = '"The number of results exceeded the maximum supported by the server. Additional results can be requested."'


@dataclasses.dataclass
class Corpus:
    app: Pergamon
    base: str
    uids: dict[str, str]  # name -> UID
    names: dict[str, str]  # UID -> name
    charset: dict[str, samples.Sample]

    @property
    def client(self) -> DICOMwebClient:
        return DICOMwebClient(url=self.base)

    def found(self, results: list[dict[str, Any]], tag: str = "0020000D") -> list[str]:
        return [self.names.get(r[tag]["Value"][0], r[tag]["Value"][0]) for r in results]


def build_corpus(dest: Path) -> tuple[list[Path], dict[str, str]]:
    uids = {name: generate_uid() for name in [*STUDIES, *SERIES]}
    files = []
    for series_name, (study_name, sop_class, count) in SERIES.items():
        patient, date, description = STUDIES[study_name]
        patient_id, patient_name = PATIENTS[patient]
        extra: dict[str, Any] = {"StudyDate": date, "AccessionNumber": f"ACC-{study_name}"}
        if study_name == "S3":
            request = Dataset()
            request.RequestedProcedureID = "RP-1"
            request.ScheduledProcedureStepID = "SPS-1"
            extra["RequestAttributesSequence"] = Sequence([request])
        for number in range(1, count + 1):
            name = f"{series_name}-{number}"
            uids[name] = generate_uid()
            ds = samples.make_instance(
                sop_class,
                patient_id=patient_id,
                patient_name=patient_name,
                study_uid=uids[study_name],
                series_uid=uids[series_name],
                sop_instance_uid=uids[name],
                rows=16,
                cols=16,
                series_number=list(SERIES).index(series_name) + 1,
                instance_number=number,
                study_description=description,
                extra=extra,
            )
            files.append(samples.write(ds, dest / f"{name}.dcm").path)
    return files, uids


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Corpus]:
    root = tmp_path_factory.mktemp("qido")
    files, uids = build_corpus(root / "corpus")
    charset = dict(zip(CHARSET, samples.charset_samples(root / "charset"), strict=True))
    for key, sample in charset.items():
        uids[f"CS-{key}"] = sample.study_uid
        files.append(sample.path)
    with index_database(root) as url:
        settings = make_settings(root / "data", url)
        app = Pergamon(settings)
        app.start()
        try:
            for path in files:
                app.archive.store_file(path, Origin.from_import(str(path)))
            base = f"http://127.0.0.1:{settings.http.port}{settings.http.base_path}"
            yield Corpus(app, base, uids, {uid: name for name, uid in uids.items()}, charset)
        finally:
            app.stop()


ALL_STUDIES = {*STUDIES, *(f"CS-{k}" for k in CHARSET)}


def get(corpus: Corpus, path: str, **kwargs: Any) -> httpx.Response:
    return httpx.get(corpus.base + path, timeout=30, **kwargs)


# --- resources and default attributes (PS3.18 10.6.1, 10.6.3.3) ---------------------------------


def test_every_level_and_nested_resource(corpus: Corpus) -> None:
    client, uid = corpus.client, corpus.uids
    assert set(corpus.found(client.search_for_studies())) == ALL_STUDIES
    series = client.search_for_series()
    assert {n for n in corpus.found(series, "0020000E") if not n.startswith("1.")} == set(SERIES)
    assert corpus.found(client.search_for_series(uid["S1"]), "0020000E") == ["S1-CT", "S1-MR"]
    instances = corpus.found(client.search_for_instances(uid["S1"]), "00080018")
    assert instances == ["S1-CT-1", "S1-CT-2", "S1-CT-3", "S1-MR-1"]
    assert corpus.found(client.search_for_instances(uid["S2"], uid["S2-MR"]), "00080018") == ["S2-MR-1", "S2-MR-2"]
    assert len(client.search_for_instances()) == 8 + len(CHARSET)


def test_default_attributes_and_retrieve_url(corpus: Corpus) -> None:
    client, uid, base = corpus.client, corpus.uids, corpus.base
    study = client.search_for_studies(search_filters={"StudyInstanceUID": uid["S1"]})[0]
    for tag in (
        "00080020",
        "00080030",
        "00080050",
        "00080056",
        "00080061",
        "00080090",
        "00100010",
        "00100020",
        "00100030",
        "00100040",
        "0020000D",
        "00200010",
        "00201206",
        "00201208",
        "00081190",
    ):
        assert tag in study, tag
    assert study["00081190"] == {"vr": "UR", "Value": [f"{base}/studies/{uid['S1']}"]}
    assert sorted(study["00080061"]["Value"]) == ["CT", "MR"]
    assert study["00201206"]["Value"] == [2] and study["00201208"]["Value"] == [4]
    assert "0008103E" not in study  # a series attribute is not a study default

    nested = client.search_for_series(uid["S1"])[0]
    for tag in ("00080060", "0008103E", "0020000E", "00200011", "00201209", "00400244", "00400275", "00081190"):
        assert tag in nested, tag
    assert "00100010" not in nested  # study attributes only for the relational /series
    assert nested["00081190"]["Value"] == [f"{base}/studies/{uid['S1']}/series/{uid['S1-CT']}"]
    relational = client.search_for_series(search_filters={"SeriesInstanceUID": uid["S1-CT"]})[0]
    assert relational["00100010"]["Value"] == [{"Alphabetic": "SMITH^JOHN"}]
    assert relational["00201206"]["Value"] == [2]

    instance = client.search_for_instances(uid["S1"], uid["S1-CT"])[0]
    for tag in ("00080016", "00080018", "00080056", "00200013", "00280010", "00280011", "00280100", "00081190"):
        assert tag in instance, tag
    assert instance["00081190"]["Value"] == [
        f"{base}/studies/{uid['S1']}/series/{uid['S1-CT']}/instances/{uid['S1-CT-1']}"
    ]
    assert "00080060" not in instance and "00100010" not in instance
    in_study = client.search_for_instances(uid["S1"])[0]
    assert "00080060" in in_study and "00100010" not in in_study  # series level too (10.6.3.3.3)
    everywhere = client.search_for_instances(search_filters={"SOPInstanceUID": uid["S1-CT-1"]})[0]
    assert everywhere["00100010"]["Value"] == [{"Alphabetic": "SMITH^JOHN"}] and "00080060" in everywhere


def test_sequence_matching_and_request_attributes(corpus: Corpus) -> None:
    client = corpus.client
    found = client.search_for_series(search_filters={"00400275.00401001": "RP-1"})
    assert corpus.found(found, "0020000E") == ["S3-MR"]
    item = found[0]["00400275"]["Value"][0]
    assert item["00401001"]["Value"] == ["RP-1"] and item["00400009"]["Value"] == ["SPS-1"]
    assert client.search_for_series(search_filters={"RequestAttributesSequence.RequestedProcedureID": "RP-9"}) == []


# --- matching (PS3.4 C.2.2.2 through archive.query) ---------------------------------------------


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        ({"PatientName": "smith*"}, {"S1", "S2", "S3"}),
        ({"PatientName": "SMITH^JOHN"}, {"S1", "S2"}),
        ({"PatientName": "doe^jane"}, {"S4"}),
        ({"00100010": "?oe*"}, {"S4"}),
        ({"PatientID": "QD-P1"}, {"S1", "S2"}),
        ({"StudyDate": "20200101-20211231"}, {"S1", "S2"}),
        ({"StudyDate": "-20191231"}, {"S4"}),
        ({"StudyDate": "20220301"}, {"S3"}),
        ({"StudyDescription": "MR*"}, {"S2", "S3"}),
        ({"AccessionNumber": "ACC-S4"}, {"S4"}),
        ({"ModalitiesInStudy": "CT"}, {"S1", "S4"}),
        ({"ModalitiesInStudy": "CT,MR", "PatientID": "QD-*"}, {"S1", "S2", "S3", "S4"}),
        ({"ModalitiesInStudy": "MR", "PatientName": "smith*"}, {"S1", "S2", "S3"}),
        ({"PatientName": "nobody"}, set()),
    ],
)
def test_study_matching(corpus: Corpus, filters: dict[str, str], expected: set[str]) -> None:
    assert set(corpus.found(corpus.client.search_for_studies(search_filters=filters))) == expected


def test_uid_lists_comma_and_backslash(corpus: Corpus) -> None:
    uid = corpus.uids
    for separator in (",", "\\"):
        value = separator.join([uid["S1"], uid["S4"]])
        found = corpus.client.search_for_studies(search_filters={"StudyInstanceUID": value})
        assert corpus.found(found) == ["S1", "S4"]
    repeated = get(corpus, "/studies", params=[("StudyInstanceUID", uid["S2"]), ("StudyInstanceUID", uid["S3"])])
    assert corpus.found(repeated.json()) == ["S2", "S3"]


def test_series_and_instance_matching(corpus: Corpus) -> None:
    client, uid = corpus.client, corpus.uids
    assert set(
        corpus.found(client.search_for_series(search_filters={"Modality": "MR", "PatientName": "SMITH*"}), "0020000E")
    ) == {"S1-MR", "S2-MR", "S3-MR"}
    assert corpus.found(client.search_for_instances(uid["S1"], search_filters={"InstanceNumber": "2"}), "00080018") == [
        "S1-CT-2"
    ]
    in_2021 = client.search_for_instances(search_filters={"SOPClassUID": MR, "StudyDate": "20210101-20211231"})
    assert corpus.found(in_2021, "00080018") == ["S2-MR-1", "S2-MR-2"]


def test_fuzzy_matching_of_person_names(corpus: Corpus) -> None:
    client = corpus.client
    assert client.search_for_studies(search_filters={"PatientName": "joh"}) == []
    fuzzy = client.search_for_studies(search_filters={"PatientName": "joh"}, fuzzymatching=True)
    assert set(corpus.found(fuzzy)) == {"S1", "S2"}
    assert set(
        corpus.found(client.search_for_studies(search_filters={"PatientName": "ann smiths"}, fuzzymatching=True))
    ) == {"S3"}


def test_unknown_uid_in_path_is_an_empty_result(corpus: Corpus) -> None:
    response = get(corpus, "/studies/1.2.3.4.5.6/series")
    assert response.status_code == 200 and response.json() == []
    assert get(corpus, f"/studies/{corpus.uids['S1']}/series/1.2.3/instances").json() == []
    assert corpus.client.search_for_studies(search_filters={"PatientID": "none"}) == []


# --- includefield (PS3.18 8.3.4.2, 10.6.3.3) ----------------------------------------------------


def test_includefield(corpus: Corpus) -> None:
    client, uid = corpus.client, corpus.uids
    study = client.search_for_studies(
        search_filters={"StudyInstanceUID": uid["S1"]}, fields=["StudyDescription", "00100021", "Modality"]
    )[0]
    assert study["00081030"]["Value"] == ["CT chest"]
    assert study["00100021"] == {"vr": "LO"}  # asked for, absent: zero length
    assert "00080060" not in study  # a series attribute is not returned at study level
    listed = get(
        corpus,
        "/studies",
        params={"StudyInstanceUID": uid["S1"], "includefield": "StudyDescription,00081030,InstitutionName"},
    ).json()[0]
    assert listed["00081030"]["Value"] == ["CT chest"] and "00080080" not in listed
    everything = get(corpus, "/studies", params={"StudyInstanceUID": uid["S1"], "includefield": "all"}).json()[0]
    assert everything["00081030"]["Value"] == ["CT chest"]
    assert sorted(everything["00080062"]["Value"]) == sorted([CT, MR])  # SOP Classes in Study
    assert "00101010" not in everything  # Patient's Age: absent, and only asked for by "all"
    series = get(corpus, "/series", params={"SeriesInstanceUID": uid["S1-CT"], "includefield": "all"}).json()[0]
    assert series["00080080"]["Value"] == ["Pergamon Hospital"] and series["00081030"]["Value"] == ["CT chest"]
    instance = get(
        corpus, f"/studies/{uid['S1']}/series/{uid['S1-CT']}/instances", params={"includefield": "all"}
    ).json()[0]
    assert instance["00080023"]["Value"] == [samples.STUDY_DATE]  # Content Date


# --- paging (PS3.18 8.3.4.4) --------------------------------------------------------------------


def test_limit_offset_pages_every_result_once_in_a_stable_order(corpus: Corpus) -> None:
    everything = corpus.found(get(corpus, "/instances").json(), "00080018")
    assert len(everything) == len(set(everything)) == 8 + len(CHARSET)
    pages: list[str] = []
    offset = 0
    while True:
        response = get(corpus, "/instances", params={"limit": 3, "offset": offset})
        assert response.status_code == 200
        page = corpus.found(response.json(), "00080018")
        pages += page
        offset += len(page)
        if offset < len(everything):
            assert response.headers["warning"].startswith("299 ") and response.headers["warning"].endswith(MORE)
        else:
            assert "warning" not in response.headers
            break
    assert pages == everything
    client_pages = corpus.client.search_for_instances(limit=5, get_remaining=True)
    assert corpus.found(client_pages, "00080018") == everything
    past_end = get(corpus, "/instances", params={"offset": 1000})
    assert past_end.status_code == 200 and past_end.json() == []


def test_server_maximum_cuts_with_warning(corpus: Corpus, monkeypatch: pytest.MonkeyPatch) -> None:
    archive = corpus.app.archive
    query = dataclasses.replace(archive.settings.query, max_results=2)
    monkeypatch.setattr(archive, "settings", dataclasses.replace(archive.settings, query=query))
    response = get(corpus, "/studies", params={"limit": 10})
    assert len(response.json()) == 2 and response.headers["warning"].endswith(MORE)
    assert "warning" not in get(corpus, "/studies", params={"PatientID": "QD-P1"}).headers


# --- DICOM JSON model (PS3.18 F.2) and character sets --------------------------------------------

_NUMBER_VRS = {"IS", "DS", "FL", "FD", "SL", "SS", "SV", "UL", "US", "UV"}
_STRING_VRS = {"AE", "AS", "CS", "DA", "DT", "LO", "LT", "SH", "ST", "TM", "UC", "UI", "UR", "UT", "AT"}


def check_json_model(dataset: dict[str, Any]) -> None:
    """Structure of one PS3.18 F.2 object (F.2.2 to F.2.7)."""
    assert isinstance(dataset, dict)
    for key, entry in dataset.items():
        assert re.fullmatch(r"[0-9A-F]{8}", key), key
        vr = entry["vr"]
        assert re.fullmatch(r"[A-Z]{2}", vr), (key, vr)
        assert set(entry) <= {"vr", "Value", "InlineBinary", "BulkDataURI"}, (key, entry)
        if "Value" not in entry:
            continue
        values = entry["Value"]
        assert isinstance(values, list) and values, (key, entry)
        for value in values:
            if value is None:
                continue
            if vr == "PN":
                assert isinstance(value, dict) and set(value) <= {"Alphabetic", "Ideographic", "Phonetic"}, value
            elif vr == "SQ":
                check_json_model(value)
            elif vr in _NUMBER_VRS:
                assert isinstance(value, (int, float)) or (vr in ("IS", "DS") and isinstance(value, str)), (key, value)
            elif vr in _STRING_VRS:
                assert isinstance(value, str), (key, value)


def test_responses_follow_the_dicom_json_model(corpus: Corpus) -> None:
    for path in ("/studies", "/series", "/instances"):
        response = get(corpus, path, params={"includefield": "all"})
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/dicom+json"
        results = response.json()
        assert isinstance(results, list) and results
        for result in results:
            check_json_model(result)
    json_alias = get(corpus, "/studies", headers={"Accept": "application/json"})
    assert json_alias.headers["content-type"] == "application/json" and json_alias.json()


@pytest.mark.parametrize("key", list(CHARSET))
def test_names_leave_as_utf8_with_their_groups(corpus: Corpus, key: str) -> None:
    response = get(corpus, "/studies", params={"PatientID": f"PGM-CS-{key}"})
    assert response.status_code == 200
    result = response.content.decode("utf-8")  # always UTF-8 (PS3.18 F.2)
    expected = CHARSET[key]
    study = response.json()[0]
    groups = dict(zip(("Alphabetic", "Ideographic", "Phonetic"), expected.split("="), strict=False))
    assert study["00100010"]["Value"] == [{k: v for k, v in groups.items() if v}]
    assert groups["Alphabetic"] in result and "\\u" not in result  # raw UTF-8, not \u escapes
    if not expected.isascii():
        assert study["00080005"]["Value"] == ["ISO_IR 192"]


def test_japanese_and_korean_names_are_matched_by_any_group(corpus: Corpus) -> None:
    client = corpus.client
    assert set(corpus.found(client.search_for_studies(search_filters={"PatientName": "山田^太郎"}))) == {
        "CS-ISO2022_IR87",
        "CS-ISO2022_IR13_IR87",
    }
    assert corpus.found(client.search_for_studies(search_filters={"PatientName": "홍*"})) == ["CS-ISO2022_IR149"]
    assert corpus.found(client.search_for_studies(search_filters={"PatientName": "παπαδόπουλος*"})) == ["CS-ISO_IR126"]


# --- DICOM XML (PS3.18 8.7.3.2, PS3.19 A.1) -----------------------------------------------------

XML_ACCEPT = 'multipart/related; type="application/dicom+xml"'
NS = {"d": media.NATIVE_DICOM_NS}


def xml_parts(response: httpx.Response) -> list[ET.Element]:
    content_type = response.headers["content-type"]
    assert content_type.startswith('multipart/related; type="application/dicom+xml"'), content_type
    boundary = re.search(r"boundary=\"?([^\";]+)", content_type).group(1)  # type: ignore[union-attr]
    roots = []
    for chunk in response.content.split(b"--" + boundary.encode())[1:]:
        if chunk.startswith(b"--"):
            break
        head, _, body = chunk.partition(b"\r\n\r\n")
        assert b"Content-Type: application/dicom+xml" in head
        roots.append(ET.fromstring(body.rstrip(b"\r\n")))
    return roots


def test_xml_is_multipart_native_dicom_model(corpus: Corpus) -> None:
    response = get(corpus, "/studies", params={"PatientName": "yamada*"}, headers={"Accept": XML_ACCEPT})
    assert response.status_code == 200
    roots = xml_parts(response)
    assert len(roots) == 1
    root = roots[0]
    assert root.tag == f"{{{media.NATIVE_DICOM_NS}}}NativeDicomModel"
    for attribute in root.iter(f"{{{media.NATIVE_DICOM_NS}}}DicomAttribute"):
        assert re.fullmatch(r"[0-9A-F]{8}", attribute.get("tag", "")) and attribute.get("vr")
    name = root.find("d:DicomAttribute[@keyword='PatientName']/d:PersonName", NS)
    assert name is not None
    assert name.findtext("d:Alphabetic/d:FamilyName", namespaces=NS) == "Yamada"
    assert name.findtext("d:Ideographic/d:FamilyName", namespaces=NS) == "山田"
    assert name.findtext("d:Phonetic/d:GivenName", namespaces=NS) == "たろう"
    uid = root.findtext("d:DicomAttribute[@tag='0020000D']/d:Value", namespaces=NS)
    assert uid == corpus.uids["CS-ISO2022_IR87"]
    several = xml_parts(get(corpus, "/series", headers={"Accept": XML_ACCEPT}))
    assert len(several) == len(get(corpus, "/series").json())
    empty = get(corpus, "/studies", params={"PatientID": "none"}, headers={"Accept": XML_ACCEPT})
    assert empty.status_code == 200 and empty.content == b""


# --- bad input (PS3.18 8.5, 10.6.3) -------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "params", "says"),
    [
        ("/studies", {"PatientNme": "x"}, "PatientNme"),
        ("/studies", {"00191099": "x"}, "00191099"),
        ("/studies", {"StudyDate": "2020-13-01"}, "StudyDate"),
        ("/studies", {"StudyDate": "20201231-20200101"}, "ends before it starts"),
        ("/studies", {"StudyDate": "yesterday"}, "StudyDate"),
        ("/studies", {"limit": "-1"}, "limit"),
        ("/studies", {"limit": "ten"}, "limit"),
        ("/studies", {"limit": "\u00b2"}, "limit"),  # a Unicode digit str.isdigit() accepts and int() refuses
        ("/studies", {"offset": "1.5"}, "offset"),
        ("/studies", {"fuzzymatching": "maybe"}, "fuzzymatching"),
        ("/studies", {"includefield": "Nonsense"}, "Nonsense"),
        ("/studies", {"includefield": "StudyDate,"}, "includefield"),
        ("/series", {"SeriesNumber": "one"}, "SeriesNumber"),
        ("/series", {"PatientName.FamilyName": "x"}, "not a sequence"),
        ("/series", {"00400275.00400275.00401001": "x"}, "one level"),
        ("/studies", {"StudyInstanceUID": "1.2.*"}, "wild card"),
    ],
)
def test_bad_requests_are_400_with_a_message(corpus: Corpus, path: str, params: dict[str, str], says: str) -> None:
    response = get(corpus, path, params=params)
    assert response.status_code == 400, response.text
    assert says in response.text
    assert get(corpus, "/studies", params={"PatientID": "QD-P3"}).status_code == 200  # still serving


def test_unservable_accept_is_406(corpus: Corpus) -> None:
    response = get(corpus, "/studies", headers={"Accept": "text/html"})
    assert response.status_code == 406 and "application/dicom+json" in response.text


def test_keys_of_lower_levels_are_ignored_with_a_warning(corpus: Corpus) -> None:
    response = get(corpus, "/studies", params={"Modality": "CT", "PatientID": "QD-P3"})
    assert response.status_code == 200 and corpus.found(response.json()) == ["S4"]
    assert "Modality" in response.headers["warning"]


# --- a study stored by C-STORE is found as C-FIND finds it ---------------------------------------

STUDY_KEYS = [
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyDate",
    "StudyTime",
    "AccessionNumber",
    "ReferringPhysicianName",
    "StudyID",
    "ModalitiesInStudy",
    "NumberOfStudyRelatedSeries",
    "NumberOfStudyRelatedInstances",
    "StudyInstanceUID",
]


def test_cstore_study_found_with_cfind_values(server: Any, tmp_path: Path) -> None:
    storescu = require_tool("storescu")
    settings = server.settings
    study_uid = generate_uid()
    paths = [
        samples.write(
            samples.make_instance(
                CT,
                patient_id="QD-CSTORE",
                patient_name="Müller^Jürgen",
                study_uid=study_uid,
                series_uid=series,
                rows=16,
                cols=16,
                instance_number=n,
                accession_number="ACC-C",
            ),
            tmp_path / f"{i}-{n}.dcm",
        ).path
        for i, series in enumerate([generate_uid(), generate_uid()])
        for n in (1, 2)
    ]
    sent = subprocess.run(
        [storescu, "-aec", settings.dicom.ae_title, "127.0.0.1", str(settings.dicom.port), *map(str, paths)],
        capture_output=True,
        env=dcmtk_env(),
        timeout=60,
    )
    assert sent.returncode == 0, sent.stderr.decode(errors="replace")

    base = f"http://127.0.0.1:{settings.http.port}{settings.http.base_path}"
    qido = DICOMwebClient(url=base).search_for_studies(search_filters={"PatientID": "QD-CSTORE"})
    assert len(qido) == 1

    ae = AE(ae_title="QIDOTEST")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    assoc = ae.associate("127.0.0.1", settings.dicom.port, ae_title=settings.dicom.ae_title)
    assert assoc.is_established
    identifier = Dataset()
    identifier.QueryRetrieveLevel = "STUDY"
    for keyword in STUDY_KEYS:
        setattr(identifier, keyword, "")
    identifier.PatientID = "QD-CSTORE"
    try:
        found = [
            ds
            for status, ds in assoc.send_c_find(identifier, StudyRootQueryRetrieveInformationModelFind)
            if status and status.Status in (0xFF00, 0xFF01)
        ]
    finally:
        assoc.release()
    assert len(found) == 1
    cfind = media.to_json(found[0])
    for keyword in STUDY_KEYS:
        tag = f"{tag_for_keyword(keyword):08X}"
        assert qido[0][tag] == cfind[tag], keyword
    assert qido[0]["00100010"]["Value"] == [{"Alphabetic": "Müller^Jürgen"}]
    assert qido[0]["00201208"]["Value"] == [4] and qido[0]["00201206"]["Value"] == [2]
