"""`dimse.json_dataset.encode` writes the same bytes as pydicom writing `Dataset.from_json` of the same JSON."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from identifiers import identifier_of
from pydicom import Dataset
from pynetdicom.dsutils import encode as pynetdicom_encode

from pergamon.archive.index.schema import Level
from pergamon.archive.search import Search, response_json
from pergamon.dimse import json_dataset


def reference(elements: dict[str, Any], implicit_vr: bool) -> bytes | None:
    """What pynetdicom's C-FIND SCP sends for this identifier: pydicom writing the Dataset."""
    return pynetdicom_encode(Dataset.from_json(elements), implicit_vr, True)


def check_same(elements: dict[str, Any]) -> None:
    for implicit_vr in (True, False):
        expected = reference(elements, implicit_vr)
        if expected is None:  # pydicom cannot write it (a value too long for Explicit VR): neither may we
            with pytest.raises(Exception):  # noqa: B017 - pydicom's and ours differ in type
                json_dataset.encode(elements, implicit_vr=implicit_vr)
        else:
            assert json_dataset.encode(elements, implicit_vr=implicit_vr) == expected, (implicit_vr, elements)


def test_identifiers_of_the_corpus_encode_as_pydicom_does(index_corpus: list[Path]) -> None:
    assert len(index_corpus) > 50
    utf8 = 0
    for path in index_corpus:
        elements = identifier_of(path)
        utf8 += "00080005" in elements
        check_same(elements)
    assert utf8 >= 3  # the character-set samples were answered in UTF-8


NAMES = {"Alphabetic": "Yamada^Tarou", "Ideographic": "山田^太郎", "Phonetic": "やまだ^たろう"}

CASES: dict[str, dict[str, Any]] = {
    "person names in three groups, UTF-8": {
        "00080005": {"vr": "CS", "Value": ["ISO_IR 192"]},
        "00100010": {"vr": "PN", "Value": [NAMES]},
        "00081030": {"vr": "LO", "Value": ["Brustkorb, Übersicht"]},
    },
    "person name groups present but empty, and several names": {
        "00081060": {"vr": "PN", "Value": [{"Alphabetic": "Doe^J"}, {"Alphabetic": "X", "Phonetic": ""}, {}]},
        "00100010": {"vr": "PN", "Value": [{"Ideographic": ""}]},
    },
    "odd and even UIDs, an empty value among several": {
        "00080016": {"vr": "UI", "Value": ["1.2.3"]},
        "00080018": {"vr": "UI", "Value": ["1.2.34"]},
        "00080061": {"vr": "CS", "Value": ["CT", None, "MR"]},
        "00200012": {"vr": "IS", "Value": [7, -20]},
    },
    "binary integers": {
        "00280010": {"vr": "US", "Value": [512]},
        "00281040": {"vr": "SS", "Value": [-3, 4]},
        "00081199": {"vr": "SQ", "Value": []},
        "00091001": {"vr": "UL", "Value": [70000]},
        "00091002": {"vr": "SL", "Value": [-70000]},
    },
    "zero-length elements of every kind": {
        "00080020": {"vr": "DA"},
        "00080030": {"vr": "TM"},
        "00080050": {"vr": "SH"},
        "00080090": {"vr": "PN"},
        "00081110": {"vr": "SQ"},
        "00201208": {"vr": "IS"},
        "00280030": {"vr": "DS"},
        "00420011": {"vr": "OB"},
    },
    "left to pydicom: decimals, floats, tags, sequences, inline binary, a string IS": {
        "00180050": {"vr": "DS", "Value": [2.5]},
        "00189087": {"vr": "FD", "Value": [1000.0]},
        "00200013": {"vr": "IS", "Value": ["0012"]},
        "00209165": {"vr": "AT", "Value": ["00100020"]},
        "00081115": {
            "vr": "SQ",
            "Value": [{"0020000E": {"vr": "UI", "Value": ["1.2.3.4"]}, "00081160": {"vr": "IS", "Value": [1, 2]}}],
        },
        "00420011": {"vr": "OB", "InlineBinary": "AAECAw=="},
    },
    "non-ASCII text without a character set goes to pydicom": {
        "00100010": {"vr": "PN", "Value": [{"Alphabetic": "Müller^Hans"}]},
        "00081030": {"vr": "LO", "Value": ["Schädel"]},
    },
    "an empty Specific Character Set": {
        "00080005": {"vr": "CS", "Value": []},
        "00100010": {"vr": "PN", "Value": [{"Alphabetic": "Doe^Jane"}]},
    },
    "long text": {
        "00324000": {"vr": "LT", "Value": ["x" * 10241]},
        "00081080": {"vr": "LO", "Value": ["y" * 70001]},
    },
}


@pytest.mark.parametrize("name", list(CASES))
def test_hand_made_identifiers_encode_as_pydicom_does(name: str) -> None:
    check_same(dict(sorted(CASES[name].items())))


def test_a_study_level_identifier_needs_no_pydicom(monkeypatch: pytest.MonkeyPatch) -> None:
    """The common answer (text, names, counts, modalities) is written without pydicom, and still the same bytes."""
    search = Search(
        level=Level.STUDY,
        return_keys=[
            "PatientName",
            "PatientID",
            "StudyDate",
            "AccessionNumber",
            "ModalitiesInStudy",
            "NumberOfStudyRelatedInstances",
            "StudyDescription",
            "StudyTime",
        ],
    )
    attrs = {
        "00100010": {"vr": "PN", "Value": [{"Alphabetic": "Doe^Jane"}]},
        "00100020": {"vr": "LO", "Value": ["P-1"]},
        "00080020": {"vr": "DA", "Value": ["20240101"]},
        "0020000D": {"vr": "UI", "Value": ["1.2.826.0.1.3680043.8.498.1"]},
    }
    computed = {
        "ModalitiesInStudy": ["CT", "SR"],
        "NumberOfStudyRelatedInstances": 250,
        "InstanceAvailability": "ONLINE",
    }
    elements = response_json(search, attrs, computed, "PERGAMON")
    expected = {flag: reference(elements, flag) for flag in (True, False)}

    def refuse(*args: object) -> bytes:
        raise AssertionError("pydicom was used")

    monkeypatch.setattr(json_dataset, "_pydicom_element", refuse)
    for flag in (True, False):
        assert json_dataset.encode(elements, implicit_vr=flag) == expected[flag]
