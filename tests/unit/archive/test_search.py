"""The search back end (`archive/search.py`): what goes to SQL, what is checked in memory, responses.

The planning tests compile queries without a database. The `run_search` tests store small
objects in a real index (the `archive` fixture: SQLite or PostgreSQL per PERGAMON_TEST_DB) and
check paging and the case-sensitive PN re-check against it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import samples
from pydicom import Dataset
from pydicom.uid import generate_uid

from pergamon.archive.index.schema import Level
from pergamon.archive.origin import Origin
from pergamon.archive.query import Constraint, ConstraintKind
from pergamon.archive.search import (
    ItemKeys,
    Search,
    build_plan,
    build_select,
    response_json,
    run_search,
    sql_constraint,
    unique_keys,
)

CT = "1.2.840.10008.5.1.4.1.1.2"
VRS = {
    "PatientID": "LO",
    "PatientName": "PN",
    "StudyDate": "DA",
    "StudyTime": "TM",
    "AccessionNumber": "SH",
    "StudyInstanceUID": "UI",
    "InstitutionName": "LO",
    "Modality": "CS",
    "ContentLabel": "CS",
    "NumberOfStudyRelatedInstances": "IS",
    "ModalitiesInStudy": "CS",
    "ReferringPhysicianName": "PN",
}


def response_dataset(search: Search, attrs: dict[str, Any], computed: dict[str, Any], retrieve_ae: str) -> Dataset:
    """The answer as a door that wants a pydicom Dataset gets it (`Match.dataset`)."""
    return Dataset.from_json(response_json(search, attrs, computed, retrieve_ae))


def key(keyword: str, value: Any, **kwargs: Any) -> Constraint:
    return Constraint.parse(keyword, VRS[keyword], value, **kwargs)


def sql_of(search: Search) -> str:
    query, _ = build_select(search)
    return str(query)


# --------------------------------------------------------------------------------------------
# Planning: SQL for indexed keys, memory for the rest
# --------------------------------------------------------------------------------------------


def test_indexed_study_keys_go_to_sql() -> None:
    """PatientID, StudyDate and AccessionNumber are served by index columns, nothing scanned in memory."""
    search = Search(
        Level.STUDY,
        [key("PatientID", "PGM-1"), key("StudyDate", "20200101-20201231"), key("AccessionNumber", "ACC*")],
    )
    query, in_memory = build_select(search)
    assert in_memory == []
    sql = str(query)
    assert "patient.patient_id =" in sql
    assert "study.study_date >=" in sql and "study.study_date <=" in sql
    assert "study.accession_number LIKE" in sql
    assert sorted(query.compile().params.values()) == ["20200101", "20201231", "ACC%", "PGM-1"]


def test_universal_keys_add_nothing() -> None:
    search = Search(Level.STUDY, [key("PatientID", ""), key("StudyDate", None), key("AccessionNumber", "*")])
    query, in_memory = build_select(search)
    assert in_memory == [] and "WHERE" not in str(query)


def test_non_indexed_key_is_checked_in_memory() -> None:
    constraint = key("InstitutionName", "Pergamon*")
    query, in_memory = build_select(Search(Level.SERIES, [constraint]))
    assert in_memory == [constraint]
    assert "WHERE" not in str(query)


def test_key_below_the_query_level_is_ignored() -> None:
    """Hierarchical search (PS3.4 C.4.1.3.1.1): a series key in a study query restricts nothing."""
    query, in_memory = build_select(Search(Level.STUDY, [key("Modality", "CT"), key("InstitutionName", "X")]))
    assert in_memory == [] and "WHERE" not in str(query)
    assert "series" not in str(query)


def test_study_root_study_level_joins_the_patient() -> None:
    sql = sql_of(Search(Level.STUDY, [key("PatientName", "smith*")]))
    assert "JOIN study ON study.patient_fk = patient.pk" in sql
    assert "patient.patient_name LIKE" in sql


def test_order_is_the_query_level_primary_key() -> None:
    assert sql_of(Search(Level.SERIES)).endswith("ORDER BY series.pk")
    assert sql_of(Search(Level.IMAGE)).endswith("ORDER BY instance.pk")


def test_case_sensitive_pn_is_a_folded_superset_rechecked_in_memory() -> None:
    constraint = key("PatientName", "Smith*", case_sensitive_pn=True)
    query, in_memory = build_select(Search(Level.STUDY, [constraint]))
    assert in_memory == [constraint]
    assert "SMITH%" in query.compile().params.values()


def test_case_insensitive_pn_needs_no_recheck() -> None:
    _, in_memory = build_select(Search(Level.STUDY, [key("ReferringPhysicianName", "smith*")]))
    assert in_memory == []


@pytest.mark.parametrize(
    ("value", "folded"),
    [("Smith^John", ("SMITH^JOHN",)), ("Stra?e*", ("STRA*E*",)), ("straße", ("STRASSE",)), ("Ab\\aB", ("AB",))],
)
def test_sql_constraint_folds_case_sensitive_pn(value: str, folded: tuple[str, ...]) -> None:
    constraint = key("PatientName", value, case_sensitive_pn=True)
    for_sql, recheck = sql_constraint(constraint)
    assert recheck and for_sql.values == folded and not for_sql.case_sensitive


def test_sql_constraint_leaves_other_keys() -> None:
    for constraint in (key("PatientName", "smith*"), key("PatientID", "A*"), key("PatientName", '""')):
        assert sql_constraint(constraint) == (constraint, False)


def test_computed_key_matched_in_memory_with_its_column() -> None:
    constraint = key("NumberOfStudyRelatedInstances", "6")
    plan = build_plan(Search(Level.STUDY, [constraint], return_keys=["NumberOfStudyRelatedInstances"]))
    assert plan.in_memory == [constraint]
    assert plan.computed == ["NumberOfStudyRelatedInstances"]
    assert "study.num_instances" in str(plan.query)


def test_computed_keys_of_levels_not_joined_are_not_selected() -> None:
    plan = build_plan(Search(Level.PATIENT, return_keys=["NumberOfStudyRelatedInstances", "ModalitiesInStudy"]))
    assert plan.computed == []


def test_modalities_in_study_is_indexed() -> None:
    plan = build_plan(Search(Level.STUDY, [key("ModalitiesInStudy", ["CT", "MR"])]))
    assert plan.in_memory == []
    assert "series.modality IN" in str(plan.query.whereclause)  # served by the series' modality index
    plan = build_plan(Search(Level.STUDY, [key("ModalitiesInStudy", "C*")]))
    assert plan.in_memory == []
    assert "study.modalities" in str(plan.query.whereclause)  # a wild card: the study's column


def test_sequence_matching_is_planned_in_memory() -> None:
    items = ItemKeys((Constraint.parse("CodeValue", "SH", "113000"),), ("CodeValue",))
    sequence = Constraint.parse("ConceptNameCodeSequence", "SQ", [])
    assert sequence.kind is ConstraintKind.SEQUENCE
    plan = build_plan(Search(Level.IMAGE, [sequence], sequence_items={"ConceptNameCodeSequence": items}))
    assert plan.item_filters == {"ConceptNameCodeSequence": items}
    universal = ItemKeys((Constraint.parse("CodeValue", "SH", ""),), ("CodeValue",))
    plan = build_plan(Search(Level.IMAGE, [sequence], sequence_items={"ConceptNameCodeSequence": universal}))
    assert plan.item_filters == {}


@pytest.mark.parametrize(
    ("level", "patient_root", "expected"),
    [
        (Level.PATIENT, True, ["PatientID"]),
        (Level.STUDY, True, ["PatientID", "StudyInstanceUID"]),
        (Level.IMAGE, True, ["PatientID", "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"]),
        (Level.STUDY, False, ["StudyInstanceUID"]),
        (Level.SERIES, False, ["StudyInstanceUID", "SeriesInstanceUID"]),
    ],
)
def test_unique_keys(level: Level, patient_root: bool, expected: list[str]) -> None:
    assert unique_keys(level, patient_root=patient_root) == expected


# --------------------------------------------------------------------------------------------
# Response identifiers
# --------------------------------------------------------------------------------------------

ATTRS = {
    "00100010": {"vr": "PN", "Value": [{"Alphabetic": "Yamada^Tarou", "Ideographic": "山田^太郎"}]},
    "00100020": {"vr": "LO", "Value": ["PGM-1"]},
    "0020000D": {"vr": "UI", "Value": ["1.2.3"]},
    "00081030": {"vr": "LO", "Value": ["CT chest"]},
    "0040A043": {
        "vr": "SQ",
        "Value": [
            {"00080100": {"vr": "SH", "Value": ["113000"]}, "00080104": {"vr": "LO", "Value": ["Of Interest"]}},
            {"00080100": {"vr": "SH", "Value": ["999"]}, "00080104": {"vr": "LO", "Value": ["Other"]}},
        ],
    },
}


def test_response_has_requested_unique_and_computed_keys() -> None:
    search = Search(
        Level.STUDY,
        return_keys=["StudyDescription", "AccessionNumber", "ReferencedStudySequence", "NumberOfStudyRelatedSeries"],
    )
    computed = {"NumberOfStudyRelatedSeries": 3, "InstanceAvailability": "ONLINE"}
    ds = response_dataset(search, ATTRS, computed, "PERGAMON")
    assert ds.StudyDescription == "CT chest"
    assert ds.AccessionNumber == "" and "AccessionNumber" in ds  # zero length: the study has none
    assert ds.ReferencedStudySequence == []
    assert ds.NumberOfStudyRelatedSeries == 3
    assert ds.StudyInstanceUID == "1.2.3"
    assert "PatientID" not in ds  # not a unique key of Study Root
    assert "InstanceAvailability" not in ds  # not asked for
    assert ds.QueryRetrieveLevel == "STUDY" and ds.RetrieveAETitle == "PERGAMON"
    assert "SpecificCharacterSet" not in ds


def test_response_in_patient_root_includes_patient_id() -> None:
    ds = response_dataset(Search(Level.STUDY, patient_root=True), ATTRS, {}, "")
    assert ds.PatientID == "PGM-1" and "RetrieveAETitle" not in ds


def test_response_is_utf8_when_text_is_not_ascii() -> None:
    ds = response_dataset(Search(Level.STUDY, return_keys=["PatientName"]), ATTRS, {}, "")
    assert str(ds.PatientName) == "Yamada^Tarou=山田^太郎"
    assert ds.SpecificCharacterSet == "ISO_IR 192"


def test_sequence_returned_whole_without_item_keys() -> None:
    ds = response_dataset(Search(Level.IMAGE, return_keys=["ConceptNameCodeSequence"]), ATTRS, {}, "")
    assert [item.CodeValue for item in ds.ConceptNameCodeSequence] == ["113000", "999"]


def test_sequence_items_reduced_to_item_keys_and_matched() -> None:
    items = ItemKeys((Constraint.parse("CodeValue", "SH", "113000"),), ("CodeValue", "CodingSchemeDesignator"))
    sequences = {"ConceptNameCodeSequence": items}
    search = Search(Level.IMAGE, return_keys=["ConceptNameCodeSequence"], sequence_items=sequences)
    (item,) = response_dataset(search, ATTRS, {}, "").ConceptNameCodeSequence
    assert item.CodeValue == "113000"
    assert item.CodingSchemeDesignator == ""  # requested, not stored
    assert "CodeMeaning" not in item  # not requested


def test_utf8_is_declared_for_non_ascii_in_any_value_or_item() -> None:
    def charset(attrs: dict[str, Any], keywords: list[str]) -> list[str] | None:
        answer = response_json(Search(Level.IMAGE, return_keys=keywords), attrs, {}, "")
        return answer.get("00080005", {}).get("Value")

    names = {"00101001": {"vr": "PN", "Value": [{"Alphabetic": "Smith^John"}, None, {"Alphabetic": "Müller^Hans"}]}}
    meaning = {"00080104": {"vr": "LO", "Value": ["Öl"]}}
    items = {"0040A043": {"vr": "SQ", "Value": [{"00080100": {"vr": "SH", "Value": ["1"]}}, meaning]}}
    assert charset({"00100020": {"vr": "LO", "Value": ["A"]}}, ["PatientID"]) is None
    assert charset(names, ["OtherPatientNames"]) == ["ISO_IR 192"]
    assert charset(items, ["ConceptNameCodeSequence"]) == ["ISO_IR 192"]
    assert charset(items, ["PatientID"]) is None  # only what is returned counts


# --------------------------------------------------------------------------------------------
# run_search on a real index
# --------------------------------------------------------------------------------------------


def store_series(archive: Any, dest: Path, count: int, **kwargs: Any) -> list[str]:
    """Store `count` CT instances of one new series; their SOP Instance UIDs in storage order."""
    series = generate_uid()
    uids = []
    for number in range(1, count + 1):
        ds = samples.make_instance(CT, series_uid=series, instance_number=number, rows=8, cols=8, **kwargs)
        sample = samples.write(ds, dest / f"{ds.SOPInstanceUID}.dcm")
        archive.store_file(sample.path, Origin.from_import(str(sample.path)))
        uids.append(sample.sop_instance_uid)
    return uids


def sop_uids(archive: Any, search: Search) -> list[str]:
    with archive.db.read() as conn:
        return [m.dataset.SOPInstanceUID for m in run_search(conn, search)]


@pytest.mark.parametrize("memory", [False, True], ids=["sql", "in-memory"])
def test_limit_and_offset_page_in_a_stable_order(archive: Any, tmp_path: Path, memory: bool) -> None:
    study = generate_uid()
    stored = store_series(archive, tmp_path, 7, study_uid=study)
    store_series(archive, tmp_path, 2)  # another study, never matched
    constraints = [Constraint.parse("StudyInstanceUID", "UI", study)]
    if memory:  # Institution Name has no index column: matched in memory, paged in Python
        constraints.append(Constraint.parse("InstitutionName", "LO", "Pergamon*"))
    search = Search(Level.IMAGE, constraints, return_keys=["SOPInstanceUID"])
    assert bool(build_select(search)[1]) is memory
    assert sop_uids(archive, search) == stored
    pages = []
    for offset in range(0, 7, 3):
        search.limit, search.offset = 3, offset
        pages.append(sop_uids(archive, search))
    assert pages == [stored[0:3], stored[3:6], stored[6:7]]


def test_case_sensitive_pn_rechecks_the_stored_name(archive: Any, tmp_path: Path) -> None:
    exact = store_series(archive, tmp_path, 1, patient_id="PGM-A", patient_name="Smith^John")
    upper = store_series(archive, tmp_path, 1, patient_id="PGM-B", patient_name="SMITH^JOHN")
    sensitive = Constraint.parse("PatientName", "PN", "Smith*", case_sensitive_pn=True)
    assert sop_uids(archive, Search(Level.IMAGE, [sensitive])) == exact
    insensitive = Constraint.parse("PatientName", "PN", "Smith*")
    assert sop_uids(archive, Search(Level.IMAGE, [insensitive])) == exact + upper


def test_modalities_in_study_match_any_series(archive: Any, tmp_path: Path) -> None:
    """Equal values go through the series table, wild cards through the study's list: the same studies."""
    studies = {"ct": ["CT"], "ct-sr": ["CT", "SR"], "mr": ["MR"], "none": []}
    uids = {}
    for name, modalities in studies.items():
        uids[name] = generate_uid()
        for modality in modalities or ["OT"]:
            store_series(archive, tmp_path, 1, study_uid=uids[name], modality=modality)

    def found(value: str | list[str]) -> set[str]:
        search = Search(Level.STUDY, [key("ModalitiesInStudy", value)], return_keys=["StudyInstanceUID"])
        with archive.db.read() as conn:
            by_uid = {v: k for k, v in uids.items()}
            return {by_uid[m.dataset.StudyInstanceUID] for m in run_search(conn, search)}

    assert found("CT") == found("C?") == {"ct", "ct-sr"}
    assert found(["MR", "SR"]) == found("?R") == {"ct-sr", "mr"}
    assert found("XA") == set()
    assert found("OT") == found("O*") == {"none"}


def test_person_name_terms_use_the_name_index(archive: Any, tmp_path: Path) -> None:
    """A name key matches every component group; the terms become a union, so the name index serves the prefix."""
    yamada = store_series(archive, tmp_path, 1, patient_id="PGM-Y", patient_name="Yamada^Tarou=山田^太郎")
    smith = store_series(archive, tmp_path, 1, patient_id="PGM-S", patient_name="Smith^John")
    assert sop_uids(archive, Search(Level.IMAGE, [key("PatientName", "山田*")])) == yamada
    assert sop_uids(archive, Search(Level.IMAGE, [key("PatientName", "Yamada*")])) == yamada
    assert sop_uids(archive, Search(Level.IMAGE, [key("PatientName", "smith^john")])) == smith
    query = build_plan(Search(Level.STUDY, [key("PatientName", "SMITH*")])).query
    assert "UNION ALL" in str(query.whereclause)
    if archive.db.engine.dialect.name == "sqlite":  # the plan, not a timing: a range search on the name index
        with archive.db.read() as conn:
            sql = str(query.compile(archive.db.engine, compile_kwargs={"literal_binds": True}))
            plan = " | ".join(row[-1] for row in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + sql))
        assert "USING COVERING INDEX ix_patient_patient_name (patient_name>? AND patient_name<?)" in plan, plan
        assert "SCAN study" not in plan, plan
    else:
        plan = postgresql_plan(archive, query)
        assert "ix_patient_patient_name" in plan and "~>=~" in plan, plan  # the prefix is an index range


def test_accession_number_prefix_uses_its_index(archive: Any, tmp_path: Path) -> None:
    """`A12*` finds by prefix; on PostgreSQL (collation not C) only a pattern-operator index can serve it."""
    first = store_series(archive, tmp_path, 1, patient_id="PGM-1", accession_number="A1234")
    store_series(archive, tmp_path, 1, patient_id="PGM-2", accession_number="B1234")
    assert sop_uids(archive, Search(Level.IMAGE, [key("AccessionNumber", "A12*")])) == first
    if archive.db.engine.dialect.name == "postgresql":
        plan = postgresql_plan(archive, build_plan(Search(Level.STUDY, [key("AccessionNumber", "A12*")])).query)
        assert "ix_study_accession_number" in plan and "~>=~" in plan, plan


def postgresql_plan(archive: Any, query: Any) -> str:
    """PostgreSQL's plan with sequential scans priced out: whether an index *can* serve the query, whatever the size."""
    with archive.db.read() as conn:
        conn.exec_driver_sql("SET LOCAL enable_seqscan = off")
        sql = str(query.compile(archive.db.engine, compile_kwargs={"literal_binds": True}))
        return " | ".join(row[0] for row in conn.exec_driver_sql("EXPLAIN " + sql))


def test_stored_non_ascii_text_is_declared_utf8_and_ascii_is_not(archive: Any, tmp_path: Path) -> None:
    """run_search decides ISO_IR 192 from the stored JSON text (escaped non-ASCII included), per match."""
    store_series(archive, tmp_path, 1, patient_id="PGM-U", patient_name="Müller^Hans")
    store_series(archive, tmp_path, 1, patient_id="PGM-A", patient_name="Muller^Hans")
    search = Search(Level.STUDY, return_keys=["PatientID", "PatientName"])
    with archive.db.read() as conn:
        charsets = {m.json["00100020"]["Value"][0]: m.json.get("00080005") for m in run_search(conn, search)}
    assert charsets == {"PGM-U": {"vr": "CS", "Value": ["ISO_IR 192"]}, "PGM-A": None}
