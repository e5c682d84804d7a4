"""`media.from_index_json` renders index JSON exactly as `to_json` renders the Dataset built from it;
`to_json` renders raw elements as it renders converted ones."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from identifiers import identifier_of
from pydicom import Dataset, dcmread
from pydicom.dataelem import RawDataElement

from pergamon.web.dicomweb import media


def slow_path(elements: dict[str, Any]) -> str:
    return json.dumps(media.to_json(Dataset.from_json(elements)), ensure_ascii=False)


def fast_path(elements: dict[str, Any]) -> str:
    return json.dumps(media.from_index_json(elements), ensure_ascii=False)


def test_identifiers_of_the_corpus_render_as_to_json_does(index_corpus: list[Path]) -> None:
    assert len(index_corpus) > 50
    for path in index_corpus:
        elements = identifier_of(path)
        assert fast_path(elements) == slow_path(elements), path.name


CASES: dict[str, dict[str, Any]] = {
    "empty values among several, all empty, empty sequence": {
        "00080008": {"vr": "CS", "Value": ["ORIGINAL", "", "AXIAL"]},
        "00080050": {"vr": "SH", "Value": [""]},
        "00080061": {"vr": "CS", "Value": [None, None]},
        "00081110": {"vr": "SQ", "Value": []},
        "00081111": {"vr": "SQ"},
    },
    "person names": {
        "00080090": {"vr": "PN", "Value": [{"Alphabetic": ""}]},
        "00081060": {
            "vr": "PN",
            "Value": [{"Alphabetic": "Doe^J"}, {"Ideographic": "山田^太郎"}, {"Alphabetic": "X", "Phonetic": ""}],
        },
        "00100010": {"vr": "PN", "Value": [{"Alphabetic": "Yamada", "Ideographic": "山田", "Phonetic": "やまだ"}]},
    },
    "numbers": {
        "00180050": {"vr": "DS", "Value": [2]},
        "00200012": {"vr": "IS", "Value": [7, -20]},
        "00200013": {"vr": "IS", "Value": ["0012"]},
        "00280010": {"vr": "US", "Value": [512]},
        "00281040": {"vr": "SS", "Value": [-3, 4]},
    },
    "character set, with and without a value": {
        "00080005": {"vr": "CS"},
        "00100010": {"vr": "PN", "Value": [{"Alphabetic": "Müller"}]},
    },
    "left to to_json: a value with a backslash, tags, binary, items, character set": {
        "00080005": {"vr": "CS", "Value": ["ISO_IR 100"]},
        "00081030": {"vr": "LO", "Value": ["A\\B"]},
        "00081115": {"vr": "SQ", "Value": [{"0020000E": {"vr": "UI", "Value": ["1.2.3"]}}]},
        "00209165": {"vr": "AT", "Value": ["00100020"]},
        "00420011": {"vr": "OB", "InlineBinary": "AAECAw=="},
    },
}


@pytest.mark.parametrize("name", list(CASES))
def test_hand_made_elements_render_as_to_json_does(name: str) -> None:
    elements = dict(sorted(CASES[name].items()))
    assert fast_path(elements) == slow_path(elements)


def test_qido_results_equal_the_dataset_form(index_corpus: list[Path]) -> None:
    """A QIDO-RS JSON result (Retrieve URL added, level and empty sparse keys dropped) equals the XML path's dataset."""
    from pydicom.datadict import keyword_for_tag

    from pergamon.archive.index.schema import Level
    from pergamon.archive.search import Match, json_key
    from pergamon.web.dicomweb import qido

    base = "http://pergamon.test/dicom-web"
    for path in index_corpus:
        elements = identifier_of(path)
        empty = {keyword_for_tag(int(k, 16)) for k, e in elements.items() if "Value" not in e}
        sparse = frozenset({*sorted(empty)[:3], "StudyDescription", "InstanceNumber"})
        sparse_keys = frozenset(json_key(keyword) for keyword in sparse)
        fast = qido._result_json(Match(json=elements, pks={}), base, Level.IMAGE, sparse_keys)
        slow = media.to_json(qido._result_dataset(Match(json=elements, pks={}), base, Level.IMAGE, sparse))
        assert json.dumps(fast, ensure_ascii=False) == json.dumps(slow, ensure_ascii=False), path.name


def test_headers_render_from_their_raw_bytes_as_from_converted_elements(index_corpus: list[Path]) -> None:
    """`to_json` writes plain raw elements straight from their bytes: the same JSON as after pydicom's conversion."""
    checked = 0
    for path in index_corpus:
        raw = dcmread(path, stop_before_pixels=True)
        converted = dcmread(path, stop_before_pixels=True)
        for tag in list(converted.keys()):
            converted[tag]  # reading an element replaces its raw form by pydicom's conversion
        checked += sum(isinstance(raw.get_item(tag), RawDataElement) for tag in raw.keys())  # noqa: SIM118
        fast = json.dumps(media.to_json(raw), ensure_ascii=False)
        assert fast == json.dumps(media.to_json(converted), ensure_ascii=False), path.name
    assert checked > 1000  # the short cut was there to take
