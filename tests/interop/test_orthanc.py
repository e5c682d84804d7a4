"""Pergamon and a real Orthanc 1.10 talking DICOM to each other, in both directions.

One private Orthanc runs for the module (`interop/orthanc.py`); each test gets a fresh Pergamon
(on the port Orthanc knows as modality "pergamon", with Orthanc as its [[dicom.remote]] ORTHANC)
and an emptied Orthanc. The corpus is five pydicom test files as shipped (Explicit VR LE,
JPEG-LS, RLE, JPEG 2000, JPEG lossless; five patients and studies) plus one study of three
instances in two series (CT + RLE secondary capture) derived from them, with a Latin-1 name.

Bytes: Pergamon must keep and send exactly what it received. Orthanc keeps an uploaded file
exactly, but its dcmtk re-writes a dataset it sends or receives over DICOM: trailing padding,
group lengths and an OW encapsulated Pixel Data change (`orthanc.dcmtk_form`). So "identical"
means: the dataset bytes (after the File Meta group) equal the original's, passed through that
exact, documented transformation where Orthanc's DICOM side was involved; for the files dcmtk
leaves alone (asserted below) that is plain byte equality with the original.
"""

from __future__ import annotations

import dataclasses
import io
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from conftest import dcmtk_env, free_port, make_settings, require_tool
from interop.orthanc import ORTHANC_AET, OrthancServer, dcmtk_form, split_part10
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid
from sqlalchemy import select

from pergamon.archive.index.schema import instance
from pergamon.archive.origin import Origin
from pergamon.config import RemoteAE
from pergamon.runtime import Pergamon

pytestmark = pytest.mark.interop

PERGAMON_AET = "PERGAMON"
# pydicom's files: distinct patients, studies and SOP instances (MR_small.dcm, JPEG-LL.dcm,
# JPEG2000.dcm... share UIDs with these under other Patient IDs, so they are left out)
PYDICOM_FILES = (
    "CT_small.dcm",  # Explicit VR LE, ends with Dataset Trailing Padding
    "MR_small_jpeg_ls_lossless.dcm",  # JPEG-LS lossless, encapsulated Pixel Data written as OW
    "SC_rgb_rle.dcm",  # RLE lossless, ISO_IR 192
    "693_J2KR.dcm",  # JPEG 2000 lossless, wrong (7FE0,0000) group length, no Study Date
    "JPGLosslessP14SV1_1s_1f_8b.dcm",  # JPEG lossless SV1, empty Patient ID
)
# the files whose bytes dcmtk changes (see the module docstring); the others must stay identical
CHANGED_BY_ORTHANC_SCU = {
    "CT_small.dcm",
    "MR_small_jpeg_ls_lossless.dcm",
    "693_J2KR.dcm",
    "multi_ct_1.dcm",
    "multi_ct_2.dcm",
}
CHANGED_BY_ORTHANC_SCP = {"MR_small_jpeg_ls_lossless.dcm", "693_J2KR.dcm"}

MULTI_PATIENT_ID = "PGM-ORTHANC"
MULTI_PATIENT_NAME = "Müller^Jürgen"
MULTI_STUDY_UID = generate_uid(entropy_srcs=["pergamon", "interop", "orthanc", "study"])


@dataclasses.dataclass(frozen=True)
class Item:
    """One corpus file and the values Pergamon must report for it."""

    name: str
    path: Path
    dataset: bytes  # the bytes after the File Meta group
    transfer_syntax: str
    sop_uid: str
    series_uid: str
    study_uid: str
    patient_id: str
    patient_name: str
    study_date: str
    accession: str
    modality: str
    series_number: str

    def expected(self, *, drop_padding: bool) -> bytes:
        """The dataset bytes after one pass through Orthanc's DICOM side."""
        return dcmtk_form(self.dataset, drop_padding=drop_padding)


def _item(name: str, path: Path) -> Item:
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    return Item(
        name=name,
        path=path,
        dataset=split_part10(path.read_bytes())[1],
        transfer_syntax=str(ds.file_meta.TransferSyntaxUID),
        sop_uid=str(ds.SOPInstanceUID),
        series_uid=str(ds.SeriesInstanceUID),
        study_uid=str(ds.StudyInstanceUID),
        patient_id=str(ds.get("PatientID", "") or ""),
        patient_name=str(ds.get("PatientName", "") or ""),
        study_date=str(ds.get("StudyDate", "") or ""),
        accession=str(ds.get("AccessionNumber", "") or ""),
        modality=str(ds.Modality),
        series_number=str(ds.get("SeriesNumber", "") or ""),
    )


def _derive(source: str, dest: Path, *, series: int, number: int) -> Path:
    """A copy of a pydicom file moved into the multi-instance study (pixel data untouched)."""
    ds = pydicom.dcmread(get_testdata_file(source))
    uid = generate_uid(entropy_srcs=["pergamon", "interop", "orthanc", dest.name])
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.PatientName = MULTI_PATIENT_NAME
    ds.PatientID = MULTI_PATIENT_ID
    ds.StudyInstanceUID = MULTI_STUDY_UID
    ds.StudyDate = "20240315"
    ds.AccessionNumber = "PGM-ACC-1"
    ds.SeriesInstanceUID = generate_uid(entropy_srcs=["pergamon", "interop", "orthanc", f"series{series}"])
    ds.SeriesNumber = series
    ds.InstanceNumber = number
    ds.SOPInstanceUID = uid
    ds.file_meta.MediaStorageSOPInstanceUID = uid
    ds.save_as(dest, enforce_file_format=True)
    return dest


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> list[Item]:
    folder = tmp_path_factory.mktemp("corpus")
    items = [_item(name, Path(get_testdata_file(name))) for name in PYDICOM_FILES]
    items.append(_item("multi_ct_1.dcm", _derive("CT_small.dcm", folder / "multi_ct_1.dcm", series=1, number=1)))
    items.append(_item("multi_ct_2.dcm", _derive("CT_small.dcm", folder / "multi_ct_2.dcm", series=1, number=2)))
    items.append(_item("multi_sc_1.dcm", _derive("SC_rgb_rle.dcm", folder / "multi_sc_1.dcm", series=2, number=1)))
    assert len({i.sop_uid for i in items}) == len(items)
    assert len({i.study_uid for i in items}) == 6
    # the oracle changes exactly the files it should, so "expected" is the original elsewhere
    assert {i.name for i in items if i.expected(drop_padding=True) != i.dataset} == CHANGED_BY_ORTHANC_SCU
    assert {i.name for i in items if i.expected(drop_padding=False) != i.dataset} == CHANGED_BY_ORTHANC_SCP
    return items


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OrthancServer]:
    """One Orthanc for the module, knowing modality "pergamon" on a port reserved for every test's Pergamon."""
    binary = require_tool("Orthanc")
    server = OrthancServer(
        binary,
        tmp_path_factory.mktemp("orthanc"),
        dicom_port=free_port(),
        http_port=free_port(),
        modalities={"pergamon": (PERGAMON_AET, "127.0.0.1", free_port())},
    )
    with server:
        yield server


@pytest.fixture
def pergamon(tmp_path: Path, database_url: str, orthanc: OrthancServer) -> Iterator[Pergamon]:
    """A fresh Pergamon on the port Orthanc knows, with Orthanc as remote ORTHANC; Orthanc emptied."""
    orthanc.reset()
    settings = make_settings(
        tmp_path / "pergamon",
        database_url,
        remotes=(RemoteAE(ae_title=ORTHANC_AET, host="127.0.0.1", port=orthanc.dicom_port),),
    )
    port = orthanc.modalities["pergamon"][2]
    settings = dataclasses.replace(settings, dicom=dataclasses.replace(settings.dicom, port=port))
    app = Pergamon(settings)
    app.start()
    yield app
    app.stop()


# -- helpers -------------------------------------------------------------------------------------


def seed(app: Pergamon, items: list[Item]) -> None:
    """Store the files in Pergamon directly (the import path: bytes kept as they are)."""
    for item in items:
        app.archive.store_file(item.path, Origin.from_import(str(item.path)))


def pergamon_datasets(app: Pergamon) -> dict[str, tuple[str, bytes]]:
    """SOP Instance UID -> (transfer syntax, dataset bytes) of every stored object, from index and blobs."""
    with app.archive.db.read() as conn:
        rows = conn.execute(select(instance.c.sop_uid, instance.c.transfer_syntax, instance.c.blob_key)).all()
    found = {}
    for sop_uid, transfer_syntax, key in rows:
        with app.archive.blobs.open(key) as f:
            found[sop_uid] = (transfer_syntax, split_part10(f.read())[1])
    return found


def orthanc_datasets(orthanc: OrthancServer) -> dict[str, tuple[str, bytes]]:
    """SOP Instance UID -> (transfer syntax of the file meta, dataset bytes) of what Orthanc stores."""
    found = {}
    for sop_uid, orthanc_id in orthanc.instances_by_sop_uid().items():
        data = orthanc.instance_file(orthanc_id)
        transfer_syntax = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True).file_meta.TransferSyntaxUID
        found[sop_uid] = (str(transfer_syntax), split_part10(data)[1])
    return found


def in_study(items: list[Item], study_uid: str) -> list[Item]:
    return [i for i in items if i.study_uid == study_uid]


def assert_same(found: dict[str, tuple[str, bytes]], items: list[Item], *, drop_padding: bool) -> None:
    """Exactly these instances, each in its original transfer syntax with the expected bytes."""
    assert sorted(found) == sorted(i.sop_uid for i in items)
    for item in items:
        transfer_syntax, dataset = found[item.sop_uid]
        assert transfer_syntax == item.transfer_syntax, item.name
        assert dataset == item.expected(drop_padding=drop_padding), f"{item.name}: dataset bytes differ"


def study_answer(items: list[Item], study_uid: str) -> dict[str, str]:
    """What Orthanc must report for a study of Pergamon's (Study level, `simplify` form)."""
    study = in_study(items, study_uid)
    first = study[0]
    return {
        "AccessionNumber": first.accession,
        "ModalitiesInStudy": "\\".join(sorted({i.modality for i in study})),
        "PatientID": first.patient_id,
        "PatientName": first.patient_name,
        "QueryRetrieveLevel": "STUDY",
        "RetrieveAETitle": PERGAMON_AET,
        # Orthanc's own encoding (DefaultEncoding Latin1), not what Pergamon answered (ISO_IR 192)
        "SpecificCharacterSet": "ISO_IR 100",
        "StudyDate": first.study_date,
        "StudyInstanceUID": study_uid,
    }


def sorted_modalities(answer: dict[str, str]) -> dict[str, str]:
    """ModalitiesInStudy in a fixed order (PS3.4 sets none)."""
    if "ModalitiesInStudy" in answer:
        answer = {**answer, "ModalitiesInStudy": "\\".join(sorted(answer["ModalitiesInStudy"].split("\\")))}
    return answer


# -- tests ---------------------------------------------------------------------------------------


def test_orthanc_stores_to_pergamon(orthanc: OrthancServer, pergamon: Pergamon, corpus: list[Item]) -> None:
    """Orthanc is the C-STORE SCU: every instance arrives, in its syntax, with Orthanc's bytes."""
    uploaded = [orthanc.upload(item.path) for item in corpus]
    # POST /instances keeps a file as it is: the starting point is the original bytes
    for item, answer in zip(corpus, uploaded, strict=True):
        assert split_part10(orthanc.instance_file(answer["ID"]))[1] == item.dataset, item.name

    studies = sorted({answer["ParentStudy"] for answer in uploaded})
    job = orthanc.store_to("pergamon", studies)

    assert (job["InstancesCount"], job["FailedInstancesCount"], job["RemoteAet"]) == (8, 0, PERGAMON_AET)
    assert pergamon.archive.counts() == {"patients": 6, "studies": 6, "series": 7, "instances": 8}
    assert_same(pergamon_datasets(pergamon), corpus, drop_padding=True)


def test_orthanc_queries_pergamon(orthanc: OrthancServer, pergamon: Pergamon, corpus: list[Item]) -> None:
    """Orthanc's C-FIND SCU (REST /modalities/pergamon/query) gets every study, right values."""
    seed(pergamon, corpus)
    study_uids = sorted({i.study_uid for i in corpus})

    answers = orthanc.query("pergamon", "Study", {"PatientName": "*", "StudyDate": "", "ModalitiesInStudy": ""})

    got = sorted((sorted_modalities(a) for a in answers), key=lambda a: a["StudyInstanceUID"])
    assert got == [study_answer(corpus, uid) for uid in study_uids]


def test_orthanc_queries_pergamon_series(orthanc: OrthancServer, pergamon: Pergamon, corpus: list[Item]) -> None:
    seed(pergamon, corpus)
    multi = in_study(corpus, MULTI_STUDY_UID)

    answers = orthanc.query(
        "pergamon",
        "Series",
        {"StudyInstanceUID": MULTI_STUDY_UID, "Modality": "", "SeriesNumber": "", "NumberOfSeriesRelatedInstances": ""},
    )

    # Orthanc adds AccessionNumber and PatientID to the keys; Pergamon fills in the study's values
    expected = []
    for series_uid in sorted({i.series_uid for i in multi}):
        series = [i for i in multi if i.series_uid == series_uid]
        expected.append(
            {
                "AccessionNumber": "PGM-ACC-1",
                "Modality": series[0].modality,
                "NumberOfSeriesRelatedInstances": str(len(series)),
                "PatientID": MULTI_PATIENT_ID,
                "QueryRetrieveLevel": "SERIES",
                "RetrieveAETitle": PERGAMON_AET,
                "SeriesInstanceUID": series_uid,
                "SeriesNumber": series[0].series_number,
                "SpecificCharacterSet": "ISO_IR 100",
                "StudyInstanceUID": MULTI_STUDY_UID,
            }
        )
    assert sorted(answers, key=lambda a: a["SeriesInstanceUID"]) == expected


@pytest.mark.parametrize(
    ("pattern", "patient_ids"),
    [
        ("compressedsamples^*", {"1CT1", "4MR1"}),
        ("*STRADE^g", {"ID1"}),
        ("müller*", {MULTI_PATIENT_ID}),
        ("MÜLLER^JÜRGEN", {MULTI_PATIENT_ID}),
        ("cq500-ct-31?", {"CQ500-CT-310"}),
        ("citizen^JAN", {""}),
        ("nobody*", set()),
    ],
)
def test_orthanc_queries_pergamon_by_name(
    orthanc: OrthancServer, pergamon: Pergamon, corpus: list[Item], pattern: str, patient_ids: set[str]
) -> None:
    """Person names match case-insensitively (query.pn_case_sensitive = false), also beyond ASCII."""
    seed(pergamon, corpus)

    answers = orthanc.query("pergamon", "Study", {"PatientName": pattern, "PatientID": ""})

    expected = sorted({(i.study_uid, i.patient_id, i.patient_name) for i in corpus if i.patient_id in patient_ids})
    assert sorted((a["StudyInstanceUID"], a["PatientID"], a["PatientName"]) for a in answers) == expected


def test_orthanc_moves_from_pergamon(orthanc: OrthancServer, pergamon: Pergamon, corpus: list[Item]) -> None:
    """Orthanc's C-MOVE SCU (REST /modalities/pergamon/move) brings every study to itself."""
    seed(pergamon, corpus)
    studies = sorted({i.study_uid for i in corpus})

    orthanc.move("pergamon", "Study", [{"StudyInstanceUID": uid} for uid in studies], ORTHANC_AET)

    assert_same(orthanc_datasets(orthanc), corpus, drop_padding=False)


def test_orthanc_retrieves_query_answers(orthanc: OrthancServer, pergamon: Pergamon, corpus: list[Item]) -> None:
    """The Orthanc Explorer way: C-FIND, then /queries/{id}/retrieve of the answers (C-MOVE)."""
    seed(pergamon, corpus)
    created = orthanc.post("/modalities/pergamon/query", {"Level": "Study", "Query": {"PatientID": MULTI_PATIENT_ID}})
    assert len(orthanc.get(f"/queries/{created['ID']}/answers")) == 1

    orthanc.post(f"/queries/{created['ID']}/retrieve", {"TargetAet": ORTHANC_AET, "Synchronous": True})

    multi = in_study(corpus, MULTI_STUDY_UID)
    assert_same(orthanc_datasets(orthanc), multi, drop_padding=False)


def test_movescu_moves_to_orthanc(orthanc: OrthancServer, pergamon: Pergamon, corpus: list[Item]) -> None:
    """dcmtk movescu asks Pergamon to send one study to ORTHANC (a [[dicom.remote]])."""
    movescu = require_tool("movescu")
    seed(pergamon, corpus)

    done = subprocess.run(
        [
            movescu,
            "-S",
            "-aet", "MOVESCU",
            "-aec", PERGAMON_AET,
            "-aem", ORTHANC_AET,
            "-k", "QueryRetrieveLevel=STUDY",
            "-k", f"StudyInstanceUID={MULTI_STUDY_UID}",
            "127.0.0.1", str(pergamon.settings.dicom.port),
        ],
        env=dcmtk_env(),
        capture_output=True,
        text=True,
        timeout=30,
    )  # fmt: skip

    assert done.returncode == 0, done.stderr
    assert "Failed" not in done.stdout + done.stderr, done.stdout + done.stderr
    multi = in_study(corpus, MULTI_STUDY_UID)
    assert_same(orthanc_datasets(orthanc), multi, drop_padding=False)


def test_movescu_asks_orthanc_to_move_into_pergamon(
    orthanc: OrthancServer, pergamon: Pergamon, corpus: list[Item]
) -> None:
    """Orthanc as the C-MOVE SCP: dcmtk movescu asks it to move a study into Pergamon (-aem PERGAMON)."""
    movescu = require_tool("movescu")
    for item in corpus:
        orthanc.upload(item.path)

    done = subprocess.run(
        [
            movescu,
            "-S",
            "-aet", "MOVESCU",
            "-aec", orthanc.aet,
            "-aem", PERGAMON_AET,
            "-k", "QueryRetrieveLevel=STUDY",
            "-k", f"StudyInstanceUID={MULTI_STUDY_UID}",
            "127.0.0.1", str(orthanc.dicom_port),
        ],
        env=dcmtk_env(),
        capture_output=True,
        text=True,
        timeout=30,
    )  # fmt: skip

    assert done.returncode == 0, done.stderr
    multi = in_study(corpus, MULTI_STUDY_UID)
    assert pergamon.archive.counts()["instances"] == len(multi)
    assert_same(pergamon_datasets(pergamon), multi, drop_padding=True)


def test_round_trip(orthanc: OrthancServer, pergamon: Pergamon, corpus: list[Item]) -> None:
    """original -> Orthanc -> Pergamon -> (Orthanc emptied) -> Orthanc: the bytes Orthanc sent come back."""
    uploaded = [orthanc.upload(item.path) for item in corpus]
    orthanc.store_to("pergamon", sorted({answer["ParentStudy"] for answer in uploaded}))
    orthanc.reset()
    assert orthanc.instance_ids() == []

    studies = sorted({i.study_uid for i in corpus})
    orthanc.move("pergamon", "Study", [{"StudyInstanceUID": uid} for uid in studies], ORTHANC_AET)

    # the padding Orthanc dropped on the way out stays dropped; nothing else changed on the round
    assert_same(orthanc_datasets(orthanc), corpus, drop_padding=True)
    unchanged = [i for i in corpus if i.name not in CHANGED_BY_ORTHANC_SCU]
    assert len(unchanged) == 3
    returned = orthanc_datasets(orthanc)
    for item in unchanged:
        assert returned[item.sop_uid][1] == item.dataset, item.name
