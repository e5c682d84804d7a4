"""Searching the index at a Query/Retrieve level: the shared back end of C-FIND and QIDO-RS.

A door parses its request into a `Search` (constraints from `archive.query` plus return keys);
`run_search` turns constraints on indexed attributes into SQL, re-checks the others in memory
against the level's stored DICOM JSON, and yields one `Dataset` per matching entity carrying the
requested keys, the unique keys of the levels above, and the counts PS3.4 C.6 computes.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from pydicom import Dataset
from pydicom.datadict import dictionary_VR, keyword_for_tag, tag_for_keyword
from sqlalchemy import Select, func, select
from sqlalchemy.sql import ColumnElement

from pergamon.archive.index.schema import INDEXED_KEYS, Level, instance, patient, series, study
from pergamon.archive.model import level_of
from pergamon.archive.query import Constraint, ConstraintKind

LEVEL_ORDER = [Level.PATIENT, Level.STUDY, Level.SERIES, Level.IMAGE]

# Unique key of each level (PS3.4 C.6.1.1 / C.6.2.1).
UNIQUE_KEYS = {
    Level.PATIENT: "PatientID",
    Level.STUDY: "StudyInstanceUID",
    Level.SERIES: "SeriesInstanceUID",
    Level.IMAGE: "SOPInstanceUID",
}

# Attributes computed from the index rather than stored (PS3.4 C.6.1.1.x / C.6.2.1.x).
COMPUTED_KEYS = {
    "NumberOfPatientRelatedStudies": Level.PATIENT,
    "NumberOfPatientRelatedSeries": Level.PATIENT,
    "NumberOfPatientRelatedInstances": Level.PATIENT,
    "NumberOfStudyRelatedSeries": Level.STUDY,
    "NumberOfStudyRelatedInstances": Level.STUDY,
    "ModalitiesInStudy": Level.STUDY,
    "SOPClassesInStudy": Level.STUDY,
    "NumberOfSeriesRelatedInstances": Level.SERIES,
}

_TABLE = {Level.PATIENT: patient, Level.STUDY: study, Level.SERIES: series, Level.IMAGE: instance}


@dataclass
class Search:
    """A query at one level: who matches (constraints) and what to return (keywords)."""

    level: Level
    constraints: list[Constraint] = field(default_factory=list)
    return_keys: list[str] = field(default_factory=list)
    patient_root: bool = False
    limit: int = 0
    offset: int = 0


@dataclass
class Match:
    """One matching entity: its response dataset and the primary keys of its rows."""

    dataset: Dataset
    pks: dict[Level, int]


def levels_down_to(level: Level, *, patient_root: bool) -> list[Level]:
    """The levels joined to answer a query at `level` (study root still joins the patient)."""
    return LEVEL_ORDER[: LEVEL_ORDER.index(level) + 1]


def build_select(search: Search) -> tuple[Select[Any], list[Constraint]]:
    """The SQL for a search, and the constraints left to check in memory."""
    levels = levels_down_to(search.level, patient_root=search.patient_root)
    columns: list[Any] = []
    for lvl in levels:
        table = _TABLE[lvl]
        columns += [table.c.pk.label(f"{lvl.value}_pk"), table.c.attrs.label(f"{lvl.value}_attrs")]
    columns += _count_columns(search.level)
    query: Select[Any] = select(*columns).select_from(patient)
    if Level.STUDY in levels:
        query = query.join(study, study.c.patient_fk == patient.c.pk)
    if Level.SERIES in levels:
        query = query.join(series, series.c.study_fk == study.c.pk)
    if Level.IMAGE in levels:
        query = query.join(instance, instance.c.series_fk == series.c.pk)

    in_memory: list[Constraint] = []
    for constraint in search.constraints:
        if constraint.kind in (ConstraintKind.UNIVERSAL, ConstraintKind.SEQUENCE):
            continue
        key = INDEXED_KEYS.get(constraint.keyword)
        if key is not None and key.level in levels:
            clause = constraint.clause(_TABLE[key.level].c[key.column], multi_valued=key.multi_valued)
            if clause is not None:
                query = query.where(clause)
            continue
        owner = COMPUTED_KEYS.get(constraint.keyword) or level_of(constraint.keyword)
        if owner in levels:
            in_memory.append(constraint)
        # Keys of levels below the query level cannot match anything in a hierarchical query
        # (PS3.4 C.4.1.3.1.1); they are ignored rather than failing the whole request.
    query = query.order_by(_TABLE[search.level].c.pk)
    return query, in_memory


def _count_columns(level: Level) -> list[ColumnElement[Any]]:
    if level is Level.PATIENT:
        return [
            patient.c.num_studies.label("n_patient_studies"),
            select(func.coalesce(func.sum(study.c.num_series), 0))
            .where(study.c.patient_fk == patient.c.pk)
            .scalar_subquery()
            .label("n_patient_series"),
            select(func.coalesce(func.sum(study.c.num_instances), 0))
            .where(study.c.patient_fk == patient.c.pk)
            .scalar_subquery()
            .label("n_patient_instances"),
        ]
    if level is Level.STUDY:
        return [
            study.c.num_series.label("n_study_series"),
            study.c.num_instances.label("n_study_instances"),
            study.c.modalities.label("modalities"),
            study.c.sop_classes.label("sop_classes"),
        ]
    if level is Level.SERIES:
        return [series.c.num_instances.label("n_series_instances")]
    return []


def run_search(conn: Any, search: Search, *, retrieve_ae: str = "") -> Iterator[Match]:
    """Yield the matching entities in a stable order, honouring `limit` and `offset`."""
    query, in_memory = build_select(search)
    if not in_memory:
        if search.limit:
            query = query.limit(search.limit)
        if search.offset:
            query = query.offset(search.offset)
    levels = levels_down_to(search.level, patient_root=search.patient_root)
    skipped = 0
    produced = 0
    for row in conn.execute(query):
        attrs: dict[str, Any] = {}
        for lvl in levels:
            attrs.update(json.loads(getattr(row, f"{lvl.value}_attrs")))
        computed = _computed_values(search.level, row)
        if in_memory and not _matches_in_memory(in_memory, attrs, computed):
            continue
        if in_memory and skipped < search.offset:
            skipped += 1
            continue
        yield Match(
            dataset=response_dataset(search, attrs, computed, retrieve_ae),
            pks={lvl: getattr(row, f"{lvl.value}_pk") for lvl in levels},
        )
        produced += 1
        if in_memory and search.limit and produced >= search.limit:
            return


def _computed_values(level: Level, row: Any) -> dict[str, Any]:
    if level is Level.PATIENT:
        return {
            "NumberOfPatientRelatedStudies": row.n_patient_studies,
            "NumberOfPatientRelatedSeries": row.n_patient_series,
            "NumberOfPatientRelatedInstances": row.n_patient_instances,
        }
    if level is Level.STUDY:
        return {
            "NumberOfStudyRelatedSeries": row.n_study_series,
            "NumberOfStudyRelatedInstances": row.n_study_instances,
            "ModalitiesInStudy": row.modalities.split("\\") if row.modalities else None,
            "SOPClassesInStudy": row.sop_classes.split("\\") if row.sop_classes else None,
        }
    if level is Level.SERIES:
        return {"NumberOfSeriesRelatedInstances": row.n_series_instances}
    return {}


def _matches_in_memory(constraints: list[Constraint], attrs: dict[str, Any], computed: dict[str, Any]) -> bool:
    for constraint in constraints:
        if constraint.keyword in computed:
            value = computed[constraint.keyword]
            values = [str(v) for v in value] if isinstance(value, list) else (None if value is None else str(value))
        else:
            values = _json_values(attrs.get(f"{tag_for_keyword(constraint.keyword):08X}"))
        if not constraint.matches(values):
            return False
    return True


def _json_values(element: dict[str, Any] | None) -> list[str] | str | None:
    """The string value(s) of a DICOM JSON element, as the matcher expects them."""
    if not element or "Value" not in element:
        return None
    values: list[str] = []
    for value in element["Value"]:
        if isinstance(value, dict):
            groups = [value.get(g, "") for g in ("Alphabetic", "Ideographic", "Phonetic")]
            values.append("=".join(groups).rstrip("="))
        else:
            values.append(str(value))
    return values if len(values) != 1 else values[0]


def response_dataset(search: Search, attrs: dict[str, Any], computed: dict[str, Any], retrieve_ae: str) -> Dataset:
    """The identifier returned for one match: requested keys (empty when unknown) plus unique keys."""
    wanted: list[str] = list(dict.fromkeys([*search.return_keys, *_unique_keys_down_to(search.level)]))
    selected: dict[str, Any] = {}
    for keyword in wanted:
        tag = tag_for_keyword(keyword)
        if tag is None or keyword in computed:
            continue
        key = f"{tag:08X}"
        if key in attrs:
            selected[key] = attrs[key]
    ds = Dataset.from_json(selected) if selected else Dataset()
    for keyword in wanted:
        if keyword in computed:
            value = computed[keyword]
            setattr(ds, keyword, value if value is not None else "")
        elif keyword not in ds and tag_for_keyword(keyword) is not None:
            ds.add_new(tag_for_keyword(keyword), dictionary_VR(keyword), None)
    ds.QueryRetrieveLevel = search.level.value
    if retrieve_ae:
        ds.RetrieveAETitle = retrieve_ae
    if _needs_utf8(ds):
        ds.SpecificCharacterSet = "ISO_IR 192"
    return ds


def _unique_keys_down_to(level: Level) -> list[str]:
    return [UNIQUE_KEYS[lvl] for lvl in LEVEL_ORDER[: LEVEL_ORDER.index(level) + 1]]


def _needs_utf8(ds: Dataset) -> bool:
    """Whether any text in the response is outside ASCII (the default repertoire)."""
    for elem in ds.iterall():
        if elem.VR in ("PN", "LO", "SH", "ST", "LT", "UT", "UC") and elem.value:
            if not str(elem.value).isascii():
                return True
    return False


def keyword_of(tag: int) -> str:
    """The keyword of a tag ('' for private or unknown tags)."""
    return keyword_for_tag(tag) or ""
