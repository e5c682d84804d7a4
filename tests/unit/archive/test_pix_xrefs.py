"""PIX cross-reference sets (archive.pix) and their use by the search path (archive.search)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydicom.uid import CTImageStorage
from samples import make_instance, write

from pergamon.archive import pix
from pergamon.archive.index.schema import Level
from pergamon.archive.origin import Origin
from pergamon.archive.pix import Domain, PatientIdentifier
from pergamon.archive.query import Constraint
from pergamon.archive.search import Search, run_search

LOCAL = Domain("PERGAMON", "1.2.3.99")
A = PatientIdentifier("A1", "HOSP_A", "1.2.3.1")
B = PatientIdentifier("B1", "HOSP_B", "1.2.3.2")
C = PatientIdentifier("C1", "HOSP_C", "1.2.3.3")
L = PatientIdentifier("L1", "PERGAMON", "1.2.3.99")


def members(archive: Any, ident: PatientIdentifier) -> list[tuple[str, str]]:
    with archive.db.read() as conn:
        return sorted(pix.equivalent_ids(conn, ident.patient_id, ident.issuer))


def test_an_update_links_the_listed_identifiers(archive: Any) -> None:
    pix.replace_set(archive.db, [A, B, C], source="ITI-10", local=LOCAL)
    assert members(archive, B) == [("A1", "HOSP_A"), ("B1", "HOSP_B"), ("C1", "HOSP_C")]


def test_an_unlink_arrives_as_two_updates_that_split_the_set(archive: Any) -> None:
    pix.replace_set(archive.db, [A, B, C], source="ITI-10", local=LOCAL)
    pix.replace_set(archive.db, [A, B], source="ITI-10", local=LOCAL)
    pix.replace_set(archive.db, [C], source="ITI-10", local=LOCAL)
    assert members(archive, A) == [("A1", "HOSP_A"), ("B1", "HOSP_B")]
    assert members(archive, C) == [("C1", "HOSP_C")]


def test_an_update_replaces_rather_than_merges(archive: Any) -> None:
    pix.replace_set(archive.db, [A, B], source="ITI-10", local=LOCAL)
    pix.replace_set(archive.db, [A, C], source="ITI-10", local=LOCAL)
    assert members(archive, A) == [("A1", "HOSP_A"), ("C1", "HOSP_C")]
    assert members(archive, B) == [("B1", "HOSP_B")]  # left alone: nothing cross-referenced any more


def test_a_local_identifier_also_stands_for_the_id_without_issuer(archive: Any) -> None:
    pix.replace_set(archive.db, [L, A], source="ITI-10", local=LOCAL)
    assert members(archive, A) == [("A1", "HOSP_A"), ("L1", ""), ("L1", "PERGAMON")]
    with archive.db.read() as conn:
        shown = pix.cross_references(conn, "A1", "HOSP_A")
    assert [(x["patient_id"], x["issuer"], x["source"]) for x in shown] == [
        ("L1", "PERGAMON", "ITI-10"),
        ("L1", "", "local"),
    ]


def test_a_query_answer_restricted_to_domains_keeps_the_other_domains(archive: Any) -> None:
    pix.replace_set(archive.db, [L, A, B], source="ITI-10", local=LOCAL)
    c2 = PatientIdentifier("C2", "HOSP_C")
    pix.apply_query_answer(archive.db, L, [c2], [Domain("HOSP_B"), Domain(uid="1.2.3.3")], local=LOCAL)
    assert members(archive, L) == [("A1", "HOSP_A"), ("C2", "HOSP_C"), ("L1", ""), ("L1", "PERGAMON")]


def test_a_not_found_answer_removes_stale_cross_references(archive: Any) -> None:
    pix.replace_set(archive.db, [L, A], source="ITI-10", local=LOCAL)
    pix.apply_query_answer(archive.db, L, [], [], local=LOCAL)
    assert members(archive, L) == [("L1", "PERGAMON")]
    assert members(archive, A) == [("A1", "HOSP_A")]


def store(archive: Any, tmp_path: Path, patient_id: str, issuer: str) -> str:
    extra = {"IssuerOfPatientID": issuer} if issuer else {}
    ds = make_instance(CTImageStorage, patient_id=patient_id, rows=8, cols=8, extra=extra)
    sample = write(ds, tmp_path / f"{ds.SOPInstanceUID}.dcm")
    archive.store_file(sample.path, Origin.from_import(str(sample.path)))
    return str(ds.StudyInstanceUID)


def find_studies(archive: Any, patient_id: str, issuer: str | None) -> list[str]:
    constraints = [Constraint.parse("PatientID", "LO", patient_id)]
    if issuer is not None:
        constraints.append(Constraint.parse("IssuerOfPatientID", "LO", issuer))
    search = Search(Level.STUDY, constraints=constraints, return_keys=["PatientID"])
    with archive.db.read() as conn:
        return sorted(str(m.dataset.StudyInstanceUID) for m in run_search(conn, search))


def test_a_search_by_one_identifier_finds_the_studies_of_its_cross_references(archive: Any, tmp_path: Path) -> None:
    local_study = store(archive, tmp_path, "L1", "")  # stored without issuer: Pergamon's own domain
    a_study = store(archive, tmp_path, "A1", "HOSP_A")
    unrelated = store(archive, tmp_path, "A1", "HOSP_Z")
    assert find_studies(archive, "A1", "HOSP_A") == [a_study]
    pix.replace_set(archive.db, [L, A], source="ITI-10", local=LOCAL)
    assert find_studies(archive, "A1", "HOSP_A") == sorted([local_study, a_study])
    assert find_studies(archive, "L1", "PERGAMON") == sorted([local_study, a_study])
    # Without an issuer the ID is matched as usual, in every domain.
    assert find_studies(archive, "A1", None) == sorted([a_study, unrelated])
