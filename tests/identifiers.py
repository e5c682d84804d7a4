"""Search answers as the index gives them, for tests of the code that writes them out (C-FIND, QIDO-RS)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydicom import dcmread
from pydicom.datadict import keyword_for_tag

from pergamon.archive.index.schema import Level
from pergamon.archive.model import split_levels
from pergamon.archive.search import Search, response_json


def identifier_of(path: Path) -> dict[str, Any]:
    """The IMAGE-level answer (DICOM JSON) that returns every indexed attribute of a file, plus computed keys."""
    record = split_levels(dcmread(path, stop_before_pixels=True, defer_size=1024))
    attrs: dict[str, Any] = {}
    for level in (record.patient, record.study, record.series, record.instance):
        attrs.update(level.attrs)
    keywords = [keyword_for_tag(int(key, 16)) for key in attrs]
    search = Search(level=Level.IMAGE, return_keys=[k for k in keywords if k], patient_root=True)
    computed = {"NumberOfStudyRelatedInstances": 12, "ModalitiesInStudy": ["CT", "SR"], "InstanceAvailability": None}
    search.return_keys += list(computed)
    return response_json(search, attrs, computed, "PERGAMON")
