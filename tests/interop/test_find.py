"""C-FIND SCP (`dimse/find.py`, `archive/search.py`) against dcmtk `findscu` and pynetdicom as SCUs.

IHE RAD-14 (Query Images), RAD-15 (presentation states), RAD-30/RAD-44 (KOS, SR); PS3.4 C.4.1
and C.6. A small corpus (three patients, four studies with CT, MR, GSPS, KOS and SR series, and
the character-set samples of `samples.charset_samples`) is sent once per module with `storescu`
to a Pergamon running in this process; then every row of `ROWS` (information model, level, keys
-> expected entities and values) is asked by both SCUs. Runs on the backend PERGAMON_TEST_DB
selects (`./run tests` runs SQLite then PostgreSQL).

Keys are written as findscu's ``-k`` takes them: ``Keyword`` (a return key, zero length),
``Keyword=value`` or ``Sequence[0].Keyword=value``; ``<name>`` in a value stands for the UID of
the corpus entity of that name (the Patient ID for a patient).
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import pytest
import samples
from conftest import dcmtk_env, index_database, make_settings, require_tool
from pydicom import Dataset, dcmread
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataelem import RawDataElement
from pydicom.sequence import Sequence
from pydicom.tag import Tag
from pydicom.uid import (
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    generate_uid,
)
from pynetdicom import AE, evt
from pynetdicom.sop_class import (
    PatientRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelFind,
)
from pynetdicom.transport import AssociationSocket

import pergamon.dimse.find as find_door
import pergamon.dimse.find_responses as find_responses
from pergamon.archive.origin import Origin
from pergamon.config import QuerySettings, Settings
from pergamon.runtime import Pergamon

pytestmark = pytest.mark.interop

MODELS = {"P": PatientRootQueryRetrieveInformationModelFind, "S": StudyRootQueryRetrieveInformationModelFind}
UNIQUE = {"PATIENT": "PatientID", "STUDY": "StudyInstanceUID", "SERIES": "SeriesInstanceUID", "IMAGE": "SOPInstanceUID"}
LEVELS = ["PATIENT", "STUDY", "SERIES", "IMAGE"]
CT, MR = "1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.5.1.4.1.1.4"
GSPS, KOS, SR = "1.2.840.10008.5.1.4.1.1.11.1", "1.2.840.10008.5.1.4.1.1.88.59", "1.2.840.10008.5.1.4.1.1.88.33"
SR_TITLE = ("18748-4", "LN", "Diagnostic imaging report")

# name: (Patient ID, Patient's Name, birth date, sex)
PATIENTS = {
    "P1": ("PGM-P1", "SMITH^JOHN", "19600101", "M"),
    "P2": ("PGM-P2", "Smithson^Anna", "19800505", "F"),
    "P3": ("PGM-P3", "Doe^Jane", "19991231", "F"),
}
# name: (patient, date, time, accession, description, referring physician)
STUDIES = {
    "S1": ("P1", "20200115", "083000", "ACC-S1", "CT chest", "Referrer^Rolf"),
    "S2": ("P1", "20210620", "141500", "ACC-S2", "MR brain", "Referrer^Rolf"),
    "S3": ("P2", "20220301", "235959", "ACC-S3", "MR knee", ""),
    "S4": ("P3", "20190101", "070000", "", "CT abdomen", "Referrer^Rolf"),
}
# name: (study, SOP class, number of instances); series numbers follow the order within a study
SERIES = {
    "S1-CT": ("S1", CT, 3),
    "S1-PR": ("S1", GSPS, 1),
    "S1-KO": ("S1", KOS, 1),
    "S1-SR": ("S1", SR, 1),
    "S2-MR": ("S2", MR, 2),
    "S2-CT": ("S2", CT, 1),
    "S3-MR": ("S3", MR, 1),
    "S4-CT": ("S4", CT, 1),
}
CHARSET_KEYS = [case[0] for case in samples.CHARSET_CASES]
CS = {f"CS-{key}" for key in CHARSET_KEYS}
ALL_PATIENTS = {"P1", "P2", "P3"} | CS
ALL_STUDIES = {"S1", "S2", "S3", "S4"} | CS
LEVEL_TABLES: dict[str, dict[str, Any]] = {"PATIENT": PATIENTS, "STUDY": STUDIES, "SERIES": SERIES}


@dataclasses.dataclass
class Corpus:
    """The running server and the names of what it holds."""

    app: Pergamon
    port: int
    ae_title: str
    uids: dict[str, str]  # name -> UID (Patient ID for a patient)
    names: dict[str, dict[str, str]]  # level -> UID -> name
    charset: dict[str, samples.Sample]  # CHARSET_CASES key -> sample

    def resolve(self, value: str) -> str:
        return re.sub(r"<([^>]+)>", lambda m: self.uids[m.group(1)], value)


@contextlib.contextmanager
def running(settings: Settings) -> Iterator[Pergamon]:
    app = Pergamon(settings)
    app.start()
    try:
        yield app
    finally:
        app.stop()


def build_corpus(dest: Path) -> tuple[list[Path], dict[str, str]]:
    """Write the corpus files in storage order; return them and name -> UID."""
    uids: dict[str, str] = {name: patient[0] for name, patient in PATIENTS.items()}
    uids.update({name: generate_uid() for name in [*STUDIES, *SERIES]})
    files: list[Path] = []
    written: dict[str, Dataset] = {}
    numbers: dict[str, int] = {}
    for series_name, (study_name, sop_class, count) in SERIES.items():
        patient_name, date, tm, accession, description, referring = STUDIES[study_name]
        patient_id, name, birth, sex = PATIENTS[patient_name]
        numbers[study_name] = numbers.get(study_name, 0) + 1
        extra: dict[str, Any] = {
            "StudyDate": date,
            "StudyTime": tm,
            "StudyID": study_name,
            "ReferringPhysicianName": referring,
            "PatientBirthDate": birth,
            "PatientSex": sex,
        }
        refs: list[Dataset] = []
        title = None
        if sop_class == GSPS:
            refs = [written["S1-CT-1"]]
            extra |= {
                "ContentLabel": "FINDINGS",
                "ContentDescription": "Pergamon GSPS",
                "PresentationCreationDate": "20200116",
                "PresentationCreationTime": "090000",
                "ContentCreatorName": "Reader^Rita",
            }
        elif sop_class == KOS:
            refs, title = [written["S1-CT-1"], written["S1-CT-2"]], samples.KOS_OF_INTEREST
            extra |= {"ContentDate": "20200118", "ContentTime": "110000"}
        elif sop_class == SR:
            refs, title = [written["S1-CT-1"]], SR_TITLE
            extra |= {"ContentDate": "20200117", "ContentTime": "100000", "CompletionFlag": "COMPLETE"}
        for number in range(1, count + 1):
            instance_name = f"{series_name}-{number}"
            uids[instance_name] = generate_uid()
            ds = samples.make_instance(
                sop_class,
                patient_id=patient_id,
                patient_name=name,
                study_uid=uids[study_name],
                series_uid=uids[series_name],
                sop_instance_uid=uids[instance_name],
                rows=16,
                cols=16,
                references=refs,
                title=title,
                series_number=numbers[study_name],
                instance_number=number,
                study_description=description,
                accession_number=accession,
                extra=extra,
            )
            written[instance_name] = ds
            files.append(samples.write(ds, dest / f"{instance_name}.dcm").path)
    return files, uids


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Corpus]:
    storescu = require_tool("storescu")
    require_tool("findscu")
    root = tmp_path_factory.mktemp("find")
    files, uids = build_corpus(root / "corpus")
    charset = {key: sample for key, sample in zip(CHARSET_KEYS, samples.charset_samples(root / "charset"), strict=True)}
    names: dict[str, dict[str, str]] = {level: {} for level in LEVELS}
    for name, uid in uids.items():
        level = next((lvl for lvl, table in LEVEL_TABLES.items() if name in table), "IMAGE")
        names[level][uid] = name
    for key, sample in charset.items():
        name = f"CS-{key}"
        names["PATIENT"][sample.patient_id] = name
        names["STUDY"][sample.study_uid] = name
        names["SERIES"][sample.series_uid] = name
        names["IMAGE"][sample.sop_instance_uid] = name
        uids[name] = sample.study_uid
    with index_database(root) as url:
        settings = make_settings(root / "data", url)
        with running(settings) as app:
            paths = [*files, *(s.path for s in charset.values())]
            result = subprocess.run(
                [storescu, "-aec", settings.dicom.ae_title, "127.0.0.1", str(settings.dicom.port), *map(str, paths)],
                capture_output=True,
                env=dcmtk_env(),
                timeout=120,
            )
            assert result.returncode == 0, result.stderr.decode(errors="replace")
            assert app.archive.counts()["instances"] == len(paths)
            yield Corpus(app, settings.dicom.port, settings.dicom.ae_title, uids, names, charset)


# --------------------------------------------------------------------------------------------
# The two SCUs
# --------------------------------------------------------------------------------------------


class Answer(NamedTuple):
    status: int
    responses: list[Dataset]
    output: str  # findscu's log (empty for pynetdicom)


def key_dataset(level: str | None, keys: list[str], charset: str | list[str] | None = None) -> Dataset:
    """The identifier findscu builds from ``-k`` arguments, built with pydicom."""
    ds = Dataset()
    if charset is not None:
        ds.SpecificCharacterSet = charset
    if level is not None:
        ds.QueryRetrieveLevel = level
    for key in keys:
        path, _, value = key.partition("=")
        target = ds
        if "[0]." in path:
            sequence, path = path.split("[0].")
            if sequence not in target or not target[sequence].value:
                setattr(target, sequence, Sequence([Dataset()]))
            target = target[sequence].value[0]
        if path.endswith("Sequence") and not value:
            setattr(target, path, Sequence())
            continue
        try:
            setattr(target, path, value.split("\\") if "\\" in value else value)
        except ValueError:  # pydicom refuses to write an invalid value; send its bytes as they are
            tag = Tag(tag_for_keyword(path))
            encoded = value.encode() + b" " * (len(value.encode()) % 2)
            target[tag] = RawDataElement(tag, dictionary_VR(path), len(encoded), encoded, 0, False, True)
    return ds


def find_pynetdicom(corpus: Corpus, model: str, ds: Dataset) -> Answer:
    ae = AE(ae_title="PYNETDICOM")
    ae.add_requested_context(MODELS[model])
    assoc = ae.associate("127.0.0.1", corpus.port, ae_title=corpus.ae_title)
    assert assoc.is_established
    responses, status = [], -1
    try:
        for rsp, identifier in assoc.send_c_find(ds, MODELS[model]):
            status = int(rsp.Status)
            if status in (0xFF00, 0xFF01):
                responses.append(identifier)
    finally:
        assoc.release()
    return Answer(status, responses, "")


_FINAL = re.compile(r"Received Final Find Response \((\w+)")
_FINAL_STATUS = {"Success": 0x0000, "Cancel": 0xFE00}
_DEBUG_STATUS = re.compile(r"DIMSE Status\s*:\s*0x([0-9a-f]{4})")


def find_findscu(corpus: Corpus, model: str, args: list[str | bytes], out: Path, *extra: str) -> Answer:
    out.mkdir(parents=True, exist_ok=True)
    command: list[str | bytes] = ["findscu", "-v", f"-{model}", "-aec", corpus.ae_title, "-X", "-od", str(out)]
    command += [*extra, "127.0.0.1", str(corpus.port)]
    for arg in args:
        command += ["-k", arg]
    result = subprocess.run(command, capture_output=True, env=dcmtk_env(), timeout=60)
    output = (result.stdout + result.stderr).decode("utf-8", "replace")
    debug = _DEBUG_STATUS.findall(output)  # with -d the status is in the DIMSE dump
    if debug:
        status = int(debug[-1], 16)
    else:
        final = _FINAL.search(output)
        assert final is not None, output
        status = _FINAL_STATUS.get(final.group(1), 0xA900 if "DoesNotMatchSOPClass" in output else 0xC000)
    return Answer(status, [dcmread(p) for p in sorted(out.glob("rsp*.dcm"))], output)


def ask(corpus: Corpus, scu: str, model: str, level: str, keys: list[str], out: Path) -> Answer:
    keys = [corpus.resolve(k) for k in keys]
    if scu == "pynetdicom":
        return find_pynetdicom(corpus, model, key_dataset(level, keys))
    return find_findscu(corpus, model, [f"QueryRetrieveLevel={level}", *keys], out)


def value_at(ds: Dataset, path: str) -> str | None:
    """A response value as text (multiple values joined with a backslash); None when absent."""
    target = ds
    if "[0]." in path:
        sequence, path = path.split("[0].")
        if sequence not in target or not target[sequence].value:
            return None
        target = target[sequence].value[0]
    if path not in target:
        return None
    value = target[path].value
    if value is None:
        return ""
    if isinstance(value, Sequence):
        return str(len(value))
    if target[path].VM > 1:
        return "\\".join(str(v) for v in value)
    return str(value)


# --------------------------------------------------------------------------------------------
# The table
# --------------------------------------------------------------------------------------------


class Row(NamedTuple):
    id: str
    model: str  # "P" Patient Root, "S" Study Root
    level: str
    keys: list[str]
    expected: set[str]
    values: dict[str, dict[str, str]] = {}  # name -> key path -> value as `value_at` gives it


ROWS = [
    # Patient level (Patient Root only), PS3.4 C.6.1.1.2
    Row(
        "patient-by-id-with-counts",
        "P",
        "PATIENT",
        [
            "PatientID=PGM-P1",
            "PatientName",
            "PatientBirthDate",
            "NumberOfPatientRelatedStudies",
            "NumberOfPatientRelatedSeries",
            "NumberOfPatientRelatedInstances",
        ],
        {"P1"},
        {
            "P1": {
                "PatientName": "SMITH^JOHN",
                "PatientBirthDate": "19600101",
                "NumberOfPatientRelatedStudies": "2",
                "NumberOfPatientRelatedSeries": "6",
                "NumberOfPatientRelatedInstances": "9",
            }
        },
    ),
    Row("patient-name-wildcard-ci", "P", "PATIENT", ["PatientName=smith*"], {"P1", "P2"}),
    Row("patient-name-single-ci", "P", "PATIENT", ["PatientName=smith^john"], {"P1"}),
    Row("patient-name-question-mark", "P", "PATIENT", ["PatientName=sm?th*"], {"P1", "P2"}),
    Row("patient-name-no-match", "P", "PATIENT", ["PatientName=smith"], set()),
    Row("patient-id-question-mark", "P", "PATIENT", ["PatientID=PGM-P?"], {"P1", "P2", "P3"}),
    Row("patient-birth-date-range", "P", "PATIENT", ["PatientBirthDate=19500101-19651231"], {"P1"}),
    Row("patient-birth-date-open-end", "P", "PATIENT", ["PatientBirthDate=19990101-", "PatientSex"], {"P3"}),
    Row("patient-sex", "P", "PATIENT", ["PatientSex=F"], {"P2", "P3"}),
    Row("patient-universal", "P", "PATIENT", ["PatientID", "PatientName"], ALL_PATIENTS),
    # Study level, PS3.4 C.6.1.1.3 and C.6.2.1.2
    Row("study-date-range", "S", "STUDY", ["StudyDate=20200101-20211231"], {"S1", "S2"}),
    Row("study-date-open-start", "S", "STUDY", ["StudyDate=-20191231"], {"S4"}),
    Row("study-date-open-end", "S", "STUDY", ["StudyDate=20220101-"], {"S3"} | CS),
    Row("study-date-single", "S", "STUDY", ["StudyDate=20200115"], {"S1"}, {"S1": {"StudyDate": "20200115"}}),
    Row("study-time-range", "S", "STUDY", ["StudyTime=0800-0900"], {"S1"}, {"S1": {"StudyTime": "083000"}}),
    Row("study-time-open-end", "S", "STUDY", ["StudyTime=2359-"], {"S3"}),
    Row("study-time-open-start", "S", "STUDY", ["StudyTime=-0700"], {"S4"}),
    Row("study-date-and-reduced-time", "S", "STUDY", ["StudyDate=20210620", "StudyTime=1415"], {"S2"}),
    Row("study-accession", "S", "STUDY", ["AccessionNumber=ACC-S2"], {"S2"}),
    Row(
        "study-accession-empty-matching",
        "S",
        "STUDY",
        ['AccessionNumber=""'],
        {"S4"},
        {"S4": {"AccessionNumber": ""}},
    ),
    Row(
        "study-referring-empty-matching",
        "S",
        "STUDY",
        ['ReferringPhysicianName=""', "StudyDescription"],
        {"S3"},
        {"S3": {"ReferringPhysicianName": "", "StudyDescription": "MR knee"}},
    ),
    Row("study-uid-list", "S", "STUDY", ["StudyInstanceUID=<S1>\\<S3>"], {"S1", "S3"}),
    Row("study-uid-single", "S", "STUDY", ["StudyInstanceUID=<S4>"], {"S4"}),
    Row("study-modalities-ct", "S", "STUDY", ["ModalitiesInStudy=CT"], {"S1", "S2", "S4"}),
    Row("study-modalities-ct-mr", "S", "STUDY", ["ModalitiesInStudy=CT\\MR"], {"S1", "S2", "S3", "S4"}),
    Row("study-modalities-pr", "S", "STUDY", ["ModalitiesInStudy=PR"], {"S1"}),
    Row(
        "study-root-patient-keys",
        "S",
        "STUDY",
        ["PatientName=smith*", "PatientID", "PatientBirthDate", "PatientSex"],
        {"S1", "S2", "S3"},
        {
            "S1": {"PatientName": "SMITH^JOHN", "PatientID": "PGM-P1", "PatientSex": "M"},
            "S3": {"PatientName": "Smithson^Anna", "PatientID": "PGM-P2", "PatientBirthDate": "19800505"},
        },
    ),
    Row(
        "study-computed-keys",
        "S",
        "STUDY",
        [
            "PatientID=PGM-P1",
            "NumberOfStudyRelatedSeries",
            "NumberOfStudyRelatedInstances",
            "ModalitiesInStudy",
            "SOPClassesInStudy",
            "InstanceAvailability",
        ],
        {"S1", "S2"},
        {
            "S1": {
                "NumberOfStudyRelatedSeries": "4",
                "NumberOfStudyRelatedInstances": "6",
                "ModalitiesInStudy": "CT\\KO\\PR\\SR",
                "SOPClassesInStudy": "\\".join(sorted([CT, GSPS, KOS, SR])),
                "InstanceAvailability": "ONLINE",
            },
            "S2": {
                "NumberOfStudyRelatedSeries": "2",
                "NumberOfStudyRelatedInstances": "3",
                "ModalitiesInStudy": "CT\\MR",
            },
        },
    ),
    Row("study-description-wildcard", "S", "STUDY", ["StudyDescription=CT*"], {"S1", "S4"}),
    Row("study-description-case-sensitive", "S", "STUDY", ["StudyDescription=ct*"], set()),
    Row("study-id-question-mark", "S", "STUDY", ["StudyID=S?"], {"S1", "S2", "S3", "S4"}),
    Row("study-universal", "S", "STUDY", ["StudyInstanceUID"], ALL_STUDIES),
    Row("study-key-of-lower-level-ignored", "S", "STUDY", ["StudyID=S?", "Modality=MR"], {"S1", "S2", "S3", "S4"}),
    Row(
        "patient-root-study",
        "P",
        "STUDY",
        ["PatientID=PGM-P1", "StudyDate", "AccessionNumber", "NumberOfPatientRelatedStudies"],
        {"S1", "S2"},
        {"S2": {"StudyDate": "20210620", "AccessionNumber": "ACC-S2", "NumberOfPatientRelatedStudies": "2"}},
    ),
    # Series level, PS3.4 C.6.1.1.4 and C.6.2.1.3
    Row(
        "series-of-study",
        "S",
        "SERIES",
        ["StudyInstanceUID=<S1>", "Modality", "SeriesNumber", "NumberOfSeriesRelatedInstances"],
        {"S1-CT", "S1-PR", "S1-KO", "S1-SR"},
        {
            "S1-CT": {"Modality": "CT", "SeriesNumber": "1", "NumberOfSeriesRelatedInstances": "3"},
            "S1-SR": {"Modality": "SR", "SeriesNumber": "4", "NumberOfSeriesRelatedInstances": "1"},
        },
    ),
    Row("series-study-uid-list", "S", "SERIES", ["StudyInstanceUID=<S1>\\<S2>", "Modality=CT"], {"S1-CT", "S2-CT"}),
    Row(
        "series-modality-list",
        "S",
        "SERIES",
        ["StudyInstanceUID=<S1>", "Modality=PR\\KO\\SR"],
        {"S1-PR", "S1-KO", "S1-SR"},
    ),
    Row("series-uid-list", "S", "SERIES", ["SeriesInstanceUID=<S1-CT>\\<S3-MR>"], {"S1-CT", "S3-MR"}),
    Row("series-study-key-restricts", "S", "SERIES", ["StudyInstanceUID=<S2>", "Modality=MR"], {"S2-MR"}),
    Row(
        "patient-root-series",
        "P",
        "SERIES",
        ["PatientID=PGM-P1", "StudyInstanceUID=<S2>", "SeriesDescription"],
        {"S2-MR", "S2-CT"},
    ),
    # Composite object instance level, PS3.4 C.6.1.1.5 and C.6.2.1.4
    Row(
        "image-of-series",
        "S",
        "IMAGE",
        ["StudyInstanceUID=<S1>", "SeriesInstanceUID=<S1-CT>", "InstanceNumber", "SOPClassUID"],
        {"S1-CT-1", "S1-CT-2", "S1-CT-3"},
        {"S1-CT-2": {"InstanceNumber": "2", "SOPClassUID": CT}},
    ),
    Row("image-uid-list", "S", "IMAGE", ["SOPInstanceUID=<S2-MR-2>\\<S4-CT-1>"], {"S2-MR-2", "S4-CT-1"}),
    Row("image-instance-number", "S", "IMAGE", ["StudyInstanceUID=<S1>", "InstanceNumber=2"], {"S1-CT-2"}),
    Row(
        "image-gsps-keys",  # IHE RAD-15
        "S",
        "IMAGE",
        [
            "StudyInstanceUID=<S1>",
            f"SOPClassUID={GSPS}",
            "ContentLabel",
            "ContentDescription",
            "PresentationCreationDate",
            "PresentationCreationTime",
            "ContentCreatorName",
            "ReferencedSeriesSequence",
        ],
        {"S1-PR-1"},
        {
            "S1-PR-1": {
                "ContentLabel": "FINDINGS",
                "ContentDescription": "Pergamon GSPS",
                "PresentationCreationDate": "20200116",
                "PresentationCreationTime": "090000",
                "ContentCreatorName": "Reader^Rita",
                "ReferencedSeriesSequence[0].SeriesInstanceUID": "<S1-CT>",
            }
        },
    ),
    Row(
        "image-kos-sr-keys",  # IHE RAD-30, RAD-44
        "S",
        "IMAGE",
        [
            "StudyInstanceUID=<S1>",
            f"SOPClassUID={KOS}\\{SR}",
            "ConceptNameCodeSequence",
            "ContentDate",
            "ContentTime",
            "CompletionFlag",
            "VerificationFlag",
        ],
        {"S1-KO-1", "S1-SR-1"},
        {
            "S1-KO-1": {
                "ConceptNameCodeSequence[0].CodeValue": "113000",
                "ConceptNameCodeSequence[0].CodeMeaning": "Of Interest",
                "ContentDate": "20200118",
                "ContentTime": "110000",
            },
            "S1-SR-1": {
                "ConceptNameCodeSequence[0].CodeValue": "18748-4",
                "ContentDate": "20200117",
                "ContentTime": "100000",
                "CompletionFlag": "COMPLETE",
                "VerificationFlag": "VERIFIED",
            },
        },
    ),
    Row(
        "image-sequence-matching",  # PS3.4 C.2.2.2.6
        "S",
        "IMAGE",
        [
            "StudyInstanceUID=<S1>",
            "ConceptNameCodeSequence[0].CodeValue=113000",
            "ConceptNameCodeSequence[0].CodeMeaning",
        ],
        {"S1-KO-1"},
        {"S1-KO-1": {"ConceptNameCodeSequence[0].CodeMeaning": "Of Interest"}},
    ),
    Row("image-not-indexed-key", "S", "IMAGE", ["StudyInstanceUID=<S1>", "VerificationFlag=VERIFIED"], {"S1-SR-1"}),
    Row("image-content-date-range", "S", "IMAGE", ["ContentDate=20200117-20200118"], {"S1-KO-1", "S1-SR-1"}),
    Row(
        "patient-root-image",
        "P",
        "IMAGE",
        ["PatientID=PGM-P1", "StudyInstanceUID=<S2>", "SeriesInstanceUID=<S2-MR>", "PatientName"],
        {"S2-MR-1", "S2-MR-2"},
        {"S2-MR-1": {"PatientName": "SMITH^JOHN"}},
    ),
]


def check_answer(corpus: Corpus, row: Row, answer: Answer) -> None:
    assert answer.status == 0x0000, answer.output
    found: dict[str, Dataset] = {}
    for ds in answer.responses:
        assert ds.QueryRetrieveLevel == row.level
        assert ds.RetrieveAETitle == corpus.ae_title
        # Unique keys of the query level and those above it (PS3.4 C.4.1.1.3.2, C.6.x.1)
        above = LEVELS[(0 if row.model == "P" else 1) : LEVELS.index(row.level) + 1]
        for level in above:
            assert ds.get(UNIQUE[level]), f"{UNIQUE[level]} missing in {ds}"
        # Every requested key is returned, zero length when the entity has no value
        for key in row.keys:
            keyword = key.partition("=")[0].split("[0].")[0]
            assert keyword in ds, f"{keyword} not returned: {ds}"
        name = corpus.names[row.level].get(str(ds[UNIQUE[row.level]].value), str(ds[UNIQUE[row.level]].value))
        assert name not in found, f"{name} returned twice"
        found[name] = ds
    assert set(found) == row.expected
    for name, values in row.values.items():
        for path, expected in values.items():
            assert value_at(found[name], path) == corpus.resolve(expected), (name, path, found[name])


@pytest.mark.parametrize("scu", ["pynetdicom", "findscu"])
@pytest.mark.parametrize("row", ROWS, ids=[r.id for r in ROWS])
def test_table(corpus: Corpus, row: Row, scu: str, tmp_path: Path) -> None:
    check_answer(corpus, row, ask(corpus, scu, row.model, row.level, row.keys, tmp_path))


def test_order_is_stable(corpus: Corpus) -> None:
    """Matches come in the order the entities were stored, the same every time."""
    keys = key_dataset("IMAGE", [corpus.resolve("StudyInstanceUID=<S1>"), "SOPInstanceUID"])
    first = [ds.SOPInstanceUID for ds in find_pynetdicom(corpus, "S", keys).responses]
    second = [ds.SOPInstanceUID for ds in find_pynetdicom(corpus, "S", keys).responses]
    assert first == second
    stored = ["S1-CT-1", "S1-CT-2", "S1-CT-3", "S1-PR-1", "S1-KO-1", "S1-SR-1"]
    assert [corpus.names["IMAGE"][uid] for uid in first] == stored


# --------------------------------------------------------------------------------------------
# Character sets
# --------------------------------------------------------------------------------------------

ROUND_TRIP = ["ISO2022_IR87", "ISO2022_IR13_IR87", "ISO2022_IR149", "ISO_IR126", "ISO_IR100_FR", "ISO_IR100_DE",
              "ISO_IR144", "ISO_IR192_ZH", "ISO_IR192_RU", "GB18030"]  # fmt: skip


@pytest.mark.parametrize("key", ROUND_TRIP)
def test_names_round_trip(corpus: Corpus, key: str, tmp_path: Path) -> None:
    """A name stored in any character set comes back exactly, to pynetdicom and to findscu."""
    sample = corpus.charset[key]
    keys = [f"PatientID={sample.patient_id}", "PatientName"]
    answer = find_pynetdicom(corpus, "S", key_dataset("STUDY", keys))
    assert [str(ds.PatientName) for ds in answer.responses] == [sample.patient_name]
    assert answer.responses[0].SpecificCharacterSet == "ISO_IR 192"
    dcmtk = find_findscu(corpus, "S", ["QueryRetrieveLevel=STUDY", *keys], tmp_path, "+sr")
    assert [str(ds.PatientName) for ds in dcmtk.responses] == [sample.patient_name]
    assert sample.patient_name in dcmtk.output  # findscu logs the UTF-8 response as it came


def _name(key: str) -> str:
    return next(case[2] for case in samples.CHARSET_CASES if case[0] == key)


def _group(key: str, index: int) -> str:
    return _name(key).split("=")[index]


JAPANESE = {"CS-ISO2022_IR87", "CS-ISO2022_IR13_IR87"}  # both hold 山田^太郎=やまだ^たろう (PS3.5 H.3)


@pytest.mark.parametrize(
    ("charset", "query", "expected"),
    [
        ("ISO_IR 192", _group("ISO2022_IR87", 1)[:2] + "*", JAPANESE),
        (["", "ISO 2022 IR 87"], _group("ISO2022_IR87", 1), JAPANESE),
        (["", "ISO 2022 IR 87"], _group("ISO2022_IR87", 2)[:3] + "*", JAPANESE),
        (["", "ISO 2022 IR 149"], _group("ISO2022_IR149", 2), {"CS-ISO2022_IR149"}),
        ("ISO_IR 192", _group("ISO2022_IR149", 0).lower()[:4] + "*", {"CS-ISO2022_IR149"}),
        ("ISO_IR 126", _name("ISO_IR126").lower(), {"CS-ISO_IR126"}),
        ("ISO_IR 192", _name("ISO_IR126").upper(), {"CS-ISO_IR126"}),
        ("ISO_IR 100", _name("ISO_IR100_DE").lower()[:4] + "*", {"CS-ISO_IR100_DE"}),
        ("ISO_IR 100", _name("ISO_IR100_FR"), {"CS-ISO_IR100_FR"}),
        ("ISO_IR 144", _name("ISO_IR144").lower()[:4] + "*", {"CS-ISO_IR144"}),
        ("GB18030", "*" + _group("GB18030", 1), {"CS-GB18030"}),
    ],
)
def test_query_in_another_character_set(corpus: Corpus, charset: Any, query: str, expected: set[str]) -> None:
    """The key is decoded with the request's Specific Character Set, then matched (PS3.4 C.4.1.1.3.1)."""
    answer = find_pynetdicom(corpus, "S", key_dataset("STUDY", [f"PatientName={query}"], charset))
    assert answer.status == 0
    assert {corpus.names["STUDY"][ds.StudyInstanceUID] for ds in answer.responses} == expected


def test_findscu_query_in_iso_2022_ir_87(corpus: Corpus, tmp_path: Path) -> None:
    """findscu sends the key bytes as given: '山田*' escaped into JIS X 0208 (ISO 2022 IR 87)."""
    answer = find_findscu(
        corpus,
        "S",
        [
            b"QueryRetrieveLevel=STUDY",
            b"SpecificCharacterSet=\\ISO 2022 IR 87",
            b"PatientName=" + "山田*".encode("iso2022_jp"),
            b"StudyInstanceUID",
        ],
        tmp_path,
    )
    assert answer.status == 0, answer.output
    names = {str(ds.PatientName) for ds in answer.responses}
    assert names == {corpus.charset["ISO2022_IR87"].patient_name, corpus.charset["ISO2022_IR13_IR87"].patient_name}


# --------------------------------------------------------------------------------------------
# C-CANCEL, failures
# --------------------------------------------------------------------------------------------


def slow_down(monkeypatch: pytest.MonkeyPatch, seconds: float = 0.05) -> None:
    """Make each match take a while, so a C-CANCEL surely arrives before the last response."""
    search = find_door.run_search

    def slow(*args: Any, **kwargs: Any) -> Iterator[Any]:
        for match in search(*args, **kwargs):
            time.sleep(seconds)
            yield match

    monkeypatch.setattr(find_door, "run_search", slow)


def test_c_cancel_pynetdicom(corpus: Corpus, monkeypatch: pytest.MonkeyPatch) -> None:
    """C-CANCEL after the first pending response ends the query with 0xFE00 (PS3.7 9.1.2.1.6)."""
    slow_down(monkeypatch)
    model = MODELS["S"]
    ae = AE(ae_title="PYNETDICOM")
    ae.add_requested_context(model)
    assoc = ae.associate("127.0.0.1", corpus.port, ae_title=corpus.ae_title)
    assert assoc.is_established
    try:
        context_id = assoc.accepted_contexts[0].context_id
        statuses = []
        for rsp, _identifier in assoc.send_c_find(key_dataset("STUDY", ["StudyInstanceUID"]), model, msg_id=7):
            statuses.append(int(rsp.Status))
            if len(statuses) == 1:
                assoc.send_c_cancel(7, context_id)
        assert statuses[-1] == 0xFE00
        assert 1 <= statuses.count(0xFF00) < len(ALL_STUDIES)
        # The association is still usable
        again = list(assoc.send_c_find(key_dataset("STUDY", ["StudyInstanceUID=" + corpus.uids["S1"]]), model))
        assert [int(rsp.Status) for rsp, _ in again] == [0xFF00, 0x0000]
    finally:
        assoc.release()


def test_c_cancel_findscu(corpus: Corpus, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    slow_down(monkeypatch)
    answer = find_findscu(corpus, "S", ["QueryRetrieveLevel=STUDY", "StudyInstanceUID"], tmp_path, "--cancel", "1")
    assert answer.status == 0xFE00, answer.output
    assert 1 <= len(answer.responses) < len(ALL_STUDIES)


@pytest.mark.parametrize(
    ("model", "keys", "comment", "offending"),
    [
        ("S", ["QueryRetrieveLevel=STUDY", "StudyDate=2020x"], "StudyDate", 0x00080020),
        ("S", ["QueryRetrieveLevel=STUDY", "StudyDate=20201231-20200101"], "StudyDate", 0x00080020),
        ("S", ["QueryRetrieveLevel=STUDY", "StudyTime=2500"], "StudyTime", 0x00080030),
        ("S", ["QueryRetrieveLevel=SERIES", "SeriesNumber=abc"], "SeriesNumber", 0x00200011),
        ("S", ["QueryRetrieveLevel=STUDY", "StudyInstanceUID=1.2.*3"], "StudyInstanceUID", 0x0020000D),
        ("S", ["StudyInstanceUID"], "Query/Retrieve Level (missing)", None),
        ("S", ["QueryRetrieveLevel=PATIENT", "PatientID"], "Query/Retrieve Level PATIENT", None),
        ("P", ["QueryRetrieveLevel=FRAME", "PatientID"], "Query/Retrieve Level FRAME", None),
    ],
)
def test_invalid_query(corpus: Corpus, model: str, keys: list[str], comment: str, offending: int | None) -> None:
    """A refused identifier gets 0xA900 with an Error Comment; the association stays usable."""
    ae = AE(ae_title="PYNETDICOM")
    ae.add_requested_context(MODELS[model])
    assoc = ae.associate("127.0.0.1", corpus.port, ae_title=corpus.ae_title)
    assert assoc.is_established
    try:
        level = None
        rest = []
        for key in keys:
            if key.startswith("QueryRetrieveLevel="):
                level = key.partition("=")[2]
            else:
                rest.append(key)
        responses = list(assoc.send_c_find(key_dataset(level, rest), MODELS[model]))
        assert len(responses) == 1
        status, identifier = responses[0]
        assert status.Status == 0xA900
        assert identifier is None
        assert comment in status.ErrorComment
        if offending is not None:
            assert status.OffendingElement == offending
        again = list(assoc.send_c_find(key_dataset("STUDY", [f"StudyInstanceUID={corpus.uids['S1']}"]), MODELS[model]))
        assert [int(rsp.Status) for rsp, _ in again] == [0xFF00, 0x0000]
    finally:
        assoc.release()


def test_invalid_query_findscu(corpus: Corpus, tmp_path: Path) -> None:
    answer = find_findscu(corpus, "S", ["QueryRetrieveLevel=STUDY", "StudyDate=2020x"], tmp_path, "-d")
    assert answer.status == 0xA900, answer.output
    assert "StudyDate: '2020x' is not a date" in answer.output
    assert answer.responses == []


# --------------------------------------------------------------------------------------------
# Tests with their own server
# --------------------------------------------------------------------------------------------


def store(app: Pergamon, dest: Path, ds: Dataset) -> None:
    sample = samples.write(ds, dest / f"{ds.SOPInstanceUID}.dcm")
    app.archive.store_file(sample.path, Origin.from_import(str(sample.path)))


def test_counts_follow_new_instances(settings: Settings, tmp_path: Path) -> None:
    """Number of ... Related ... and Modalities in Study reflect every stored instance (PS3.4 C.3.4)."""
    require_tool("findscu")
    study, ct_series, mr_series = generate_uid(), generate_uid(), generate_uid()
    common = {"patient_id": "PGM-COUNT", "patient_name": "Count^Carl", "study_uid": study, "rows": 16, "cols": 16}
    with running(settings) as app:
        corpus = Corpus(app, settings.dicom.port, settings.dicom.ae_title, {}, {}, {})
        store(app, tmp_path, samples.make_instance(CT, series_uid=ct_series, **common))
        keys = ["PatientID=PGM-COUNT", "NumberOfStudyRelatedSeries", "NumberOfStudyRelatedInstances"]
        keys.append("ModalitiesInStudy")

        def study_counts() -> tuple[str | None, ...]:
            (ds,) = find_pynetdicom(corpus, "S", key_dataset("STUDY", keys)).responses
            return tuple(value_at(ds, k) for k in keys[1:])

        assert study_counts() == ("1", "1", "CT")
        for number in (2, 3):
            store(app, tmp_path, samples.make_instance(CT, series_uid=ct_series, instance_number=number, **common))
        store(app, tmp_path, samples.make_instance(MR, series_uid=mr_series, **common))
        assert study_counts() == ("2", "4", "CT\\MR")
        series_keys = [f"StudyInstanceUID={study}", "Modality", "NumberOfSeriesRelatedInstances"]
        series = find_pynetdicom(corpus, "S", key_dataset("SERIES", series_keys)).responses
        assert {(s.Modality, s.NumberOfSeriesRelatedInstances) for s in series} == {("CT", 3), ("MR", 1)}
        store(app, tmp_path, samples.make_instance(CT, **{**common, "study_uid": generate_uid()}))
        patient_keys = ["PatientID=PGM-COUNT"]
        patient_keys += [f"NumberOfPatientRelated{k}" for k in ("Studies", "Series", "Instances")]
        answer = find_findscu(corpus, "P", ["QueryRetrieveLevel=PATIENT", *patient_keys], tmp_path / "out")
        (ds,) = answer.responses
        assert [value_at(ds, k.partition("=")[0]) for k in patient_keys[1:]] == ["2", "3", "5"]


NAMES = ["Smith^John", "SMITH^JOHN", "Straße^Anna", "STRASSE^ANNA"]


@pytest.mark.parametrize(
    ("case_sensitive", "query", "expected"),
    [
        (True, "Smith*", {"Smith^John"}),
        (True, "SMITH*", {"SMITH^JOHN"}),
        (True, "smith*", set()),
        (True, "Smith^John", {"Smith^John"}),
        (True, "Stra?e*", {"Straße^Anna"}),
        (True, "STRA??E^ANNA", {"STRASSE^ANNA"}),
        (True, "Straße^Anna", {"Straße^Anna"}),
        (False, "smith*", {"Smith^John", "SMITH^JOHN"}),
        (False, "straße^anna", {"Straße^Anna", "STRASSE^ANNA"}),
    ],
)
def test_pn_case_sensitive_setting(
    settings: Settings, tmp_path: Path, case_sensitive: bool, query: str, expected: set[str]
) -> None:
    """`query.pn_case_sensitive` is honoured: SQL selects case-insensitively, memory re-checks."""
    settings = dataclasses.replace(settings, query=QuerySettings(pn_case_sensitive=case_sensitive))
    with running(settings) as app:
        for number, name in enumerate(NAMES):
            extra = {"ReferringPhysicianName": name}
            ds = samples.make_instance(CT, patient_id=f"PGM-CASE-{number}", patient_name=name, extra=extra)
            store(app, tmp_path, ds)
        corpus = Corpus(app, settings.dicom.port, settings.dicom.ae_title, {}, {}, {})
        for key in ("PatientName", "ReferringPhysicianName"):
            answer = find_pynetdicom(corpus, "S", key_dataset("STUDY", [f"{key}={query}", "PatientID"]))
            assert answer.status == 0
            assert {NAMES[int(ds.PatientID.rpartition("-")[2])] for ds in answer.responses} == expected, key


@pytest.mark.parametrize(
    ("max_pdu", "syntax"),
    [(0, ImplicitVRLittleEndian), (512, ExplicitVRLittleEndian), (4096, ImplicitVRLittleEndian)],
    ids=["unlimited-implicit", "512-explicit", "4096-implicit"],
)
def test_responses_keep_to_the_peers_maximum_pdu(settings: Settings, tmp_path: Path, max_pdu: int, syntax: str) -> None:
    """Every P-DATA-TF fits the SCU's Maximum Length (PS3.8 D.1) and long identifiers arrive whole.

    The pending responses are Pergamon's own (`find_responses`): with no limit each one is a single
    P-DATA-TF holding the command and the identifier.
    """
    comment = " ".join(f"{i:05d}" for i in range(1500))  # 9,000 characters of LT: many 512-byte PDUs
    with running(settings) as app:
        for number in (1, 2, 3):
            ds = samples.make_instance(
                CT, patient_id="PGM-PDU", study_uid="1.2.826.0.1.3680043.8.498.77", instance_number=number
            )
            ds.ImageComments = comment
            store(app, tmp_path, ds)
        ae = AE(ae_title="PYNETDICOM")
        ae.add_requested_context(MODELS["S"], syntax)
        pdus: list[tuple[int, int]] = []  # (PDV list length, number of PDVs) of each P-DATA-TF received

        def received(event: Any) -> None:
            if event.pdu.pdu_type == 0x04:
                pdus.append((len(event.pdu.encode()) - 6, len(event.pdu.presentation_data_value_items)))

        assoc = ae.associate(
            "127.0.0.1",
            settings.dicom.port,
            ae_title=settings.dicom.ae_title,
            max_pdu=max_pdu,
            evt_handlers=[(evt.EVT_PDU_RECV, received)],
        )
        assert assoc.is_established
        try:
            keys = [
                "StudyInstanceUID=1.2.826.0.1.3680043.8.498.77",
                "SeriesInstanceUID",
                "ImageComments",
                "InstanceNumber",
            ]
            answers = [(int(rsp.Status), ds) for rsp, ds in assoc.send_c_find(key_dataset("IMAGE", keys), MODELS["S"])]
        finally:
            assoc.release()
    assert [status for status, _ in answers] == [0xFF00, 0xFF00, 0xFF00, 0x0000]
    assert sorted(ds.InstanceNumber for _, ds in answers[:3]) == [1, 2, 3]
    assert [ds.ImageComments for _, ds in answers[:3]] == [comment] * 3
    if max_pdu:
        assert max(length for length, _ in pdus) <= max_pdu
        assert len(pdus) > 3 * 9000 / max_pdu
    else:
        assert [count for _, count in pdus] == [2, 2, 2, 1]  # command and identifier in one PDU; then the final status


def test_pending_responses_share_socket_writes(corpus: Corpus, monkeypatch: pytest.MonkeyPatch) -> None:
    """The pending responses of one query go to the socket together, and the final status after them."""
    writes: list[bytes] = []  # the P-DATA-TF writes of Pergamon's side
    send = AssociationSocket.send

    def counted(self: AssociationSocket, data: bytes) -> None:
        if self.assoc.is_acceptor and data[:1] == b"\x04":
            writes.append(bytes(data))
        send(self, data)

    monkeypatch.setattr(AssociationSocket, "send", counted)
    monkeypatch.setattr(find_responses, "BATCH_SECONDS", 60.0)  # a slow machine must not flush on time here
    ae = AE(ae_title="PYNETDICOM")
    ae.add_requested_context(MODELS["S"])
    assoc = ae.associate("127.0.0.1", corpus.port, ae_title=corpus.ae_title)
    assert assoc.is_established
    try:
        answers = assoc.send_c_find(key_dataset("STUDY", ["StudyInstanceUID"]), MODELS["S"])
        statuses = [int(rsp.Status) for rsp, _ in answers]
    finally:
        assoc.release()
    assert statuses == [0xFF00] * len(ALL_STUDIES) + [0x0000]
    assert len(writes) == 2, [len(w) for w in writes]  # all pending responses, then the final one
    assert writes[0].count(b"\x00\x00\x00\x09\x02\x00\x00\x00\x00\xff") == len(ALL_STUDIES)  # Status FF00


def test_findscu_with_a_small_maximum_pdu(settings: Settings, tmp_path: Path) -> None:
    """dcmtk reassembles identifiers cut to its 4 KiB Maximum Length."""
    require_tool("findscu")
    comment = " ".join(f"{i:05d}" for i in range(1500))
    with running(settings) as app:
        ds = samples.make_instance(CT, patient_id="PGM-PDU4K")
        ds.ImageComments = comment
        store(app, tmp_path, ds)
        corpus = Corpus(app, settings.dicom.port, settings.dicom.ae_title, {}, {}, {})
        keys = ["QueryRetrieveLevel=IMAGE", "PatientID=PGM-PDU4K", "ImageComments"]
        answer = find_findscu(corpus, "P", keys, tmp_path / "out", "--max-pdu", "4096")
    assert answer.status == 0x0000, answer.output
    (ds,) = answer.responses
    assert ds.ImageComments == comment
