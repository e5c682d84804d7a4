"""Requested procedures (archive.orders): create, change, cancel, and linking studies in both arrival orders."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydicom import Dataset
from pydicom.uid import CTImageStorage, generate_uid
from samples import make_instance, write

from pergamon.archive import errors, orders
from pergamon.archive.orders import Code, Order, OrderStatus, ProcedureStep
from pergamon.archive.origin import Origin


def new_order(number: str, **kwargs: Any) -> Order:
    step = ProcedureStep(
        sps_id="SPS1",
        modality="CT",
        station_ae="CT1",
        start_datetime="20261127080000",
        protocol_codes=(Code("P1", "99X", "Head"),),
    )
    defaults: dict[str, Any] = {
        "placer_order_number": number,
        "accession_number": f"ACC-{number}",
        "requested_procedure_id": "RP1",
        "patient_id": "PAT1",
        "patient_issuer": "HOSP",
        "patient_name": "DOE^JANE",
        "procedure_code": Code("CTHEAD", "99X", "CT head"),
        "steps": (step,),
        "message_type": "ORM^O01",
    }
    return Order(**{**defaults, **kwargs})


def store_study(
    archive: Any, tmp_path: Path, *, study_uid: str | None = None, accession: str = "", accession_issuer: str = ""
) -> str:
    extra: dict[str, Any] = {}
    if accession_issuer:
        issuer = Dataset()
        issuer.LocalNamespaceEntityID = accession_issuer
        extra["IssuerOfAccessionNumberSequence"] = [issuer]
    ds = make_instance(
        CTImageStorage, study_uid=study_uid or generate_uid(), accession_number=accession, rows=8, cols=8, extra=extra
    )
    sample = write(ds, tmp_path / f"{ds.SOPInstanceUID}.dcm")
    archive.store_file(sample.path, Origin.from_import(str(sample.path)))
    return str(ds.StudyInstanceUID)


def schedule(archive: Any, order: Order) -> int:
    with archive.db.write() as conn:
        return orders.schedule(conn, order)


def linked(archive: Any, pk: int) -> list[tuple[str, str]]:
    with archive.db.read() as conn:
        return [(s["study_uid"], s["matched_by"]) for s in orders.get_order(conn, pk)["studies"]]


@pytest.fixture
def linking(archive: Any) -> Any:
    """The archive with the store-time subscriber wired, as runtime.py does."""
    archive.bus.subscribe(orders.link_on_store(archive.db))
    return archive


def test_schedule_creates_the_procedure_with_its_steps(archive: Any) -> None:
    pk = schedule(archive, new_order("PL1"))
    with archive.db.read() as conn:
        found = orders.get_order(conn, pk)
    assert found["status"] == "SC"
    assert found["accession_number"] == "ACC-PL1"
    assert found["procedure_code"] == {"value": "CTHEAD", "scheme": "99X", "meaning": "CT head"}
    assert found["steps"] == [
        {
            "sps_id": "SPS1",
            "modality": "CT",
            "station_ae": "CT1",
            "start_datetime": "20261127080000",
            "protocol_codes": [{"value": "P1", "scheme": "99X", "meaning": "Head"}],
            "status": "SC",
        }
    ]


def test_a_resent_new_order_updates_rather_than_duplicates(archive: Any) -> None:
    first = schedule(archive, new_order("PL1"))
    again = schedule(archive, new_order("PL1", patient_name="DOE^JANET"))
    assert first == again
    with archive.db.read() as conn:
        rows = orders.list_orders(conn)
    assert [(r["pk"], r["patient_name"]) for r in rows] == [(first, "DOE^JANET")]


def test_an_order_without_numbers_is_refused(archive: Any) -> None:
    with pytest.raises(errors.Invalid), archive.db.write() as conn:
        orders.schedule(conn, new_order(""))


def test_change_replaces_details_and_steps(archive: Any) -> None:
    pk = schedule(archive, new_order("PL1"))
    changed = new_order("PL1", accession_number="ACC-NEW", steps=(ProcedureStep(sps_id="SPS2", modality="MR"),))
    with archive.db.write() as conn:
        assert orders.change(conn, changed) == pk
    with archive.db.read() as conn:
        found = orders.get_order(conn, pk)
        assert orders.list_orders(conn, accession="ACC-PL1") == []
    assert found["accession_number"] == "ACC-NEW"
    assert [(s["sps_id"], s["modality"]) for s in found["steps"]] == [("SPS2", "MR")]


def test_change_of_an_unknown_order_is_not_found(archive: Any) -> None:
    with pytest.raises(errors.NotFound), archive.db.write() as conn:
        orders.change(conn, new_order("NOPE"))


def test_cancel_marks_the_order_and_its_steps_and_a_cancelled_order_cannot_change(archive: Any) -> None:
    pk = schedule(archive, new_order("PL1"))
    with archive.db.write() as conn:
        orders.cancel(conn, Order(placer_order_number="PL1"))
    with archive.db.read() as conn:
        found = orders.get_order(conn, pk)
        assert [r["pk"] for r in orders.list_orders(conn, status="CA")] == [pk]
    assert found["status"] == "CA"
    assert {s["status"] for s in found["steps"]} == {"CA"}
    with pytest.raises(errors.Conflict), archive.db.write() as conn:
        orders.change(conn, new_order("PL1"))


def test_a_completed_order_cannot_be_cancelled(archive: Any) -> None:
    schedule(archive, new_order("PL1"))
    with archive.db.write() as conn:
        orders.set_status(conn, Order(placer_order_number="PL1"), OrderStatus.COMPLETED)
    with pytest.raises(errors.Conflict), archive.db.write() as conn:
        orders.cancel(conn, Order(placer_order_number="PL1"))


def test_the_filler_number_finds_the_order_first(archive: Any) -> None:
    pk = schedule(archive, new_order("PL1", filler_order_number="FI1"))
    with archive.db.read() as conn:
        assert orders.find_order(conn, "OTHER", "FI1") == pk
        assert orders.find_order(conn, "PL1", "") == pk
        assert orders.find_order(conn, "PL2", "FI2") is None


def test_images_after_the_order_are_linked_by_study_uid(linking: Any, tmp_path: Path) -> None:
    study_uid = generate_uid()
    pk = schedule(linking, new_order("PL1", study_uid=study_uid, accession_number=""))
    store_study(linking, tmp_path, study_uid=study_uid)
    assert linked(linking, pk) == [(study_uid, "study-uid")]


def test_no_accession_on_either_side_is_no_match(linking: Any, tmp_path: Path) -> None:
    pk = schedule(linking, new_order("PL1", study_uid=generate_uid(), accession_number=""))
    study_uid = store_study(linking, tmp_path)
    assert linked(linking, pk) == []
    assert orders.link_study(linking.db, study_uid) == []


def test_images_after_the_order_are_linked_by_accession(linking: Any, tmp_path: Path) -> None:
    pk = schedule(linking, new_order("PL1"))
    study_uid = store_study(linking, tmp_path, accession="ACC-PL1")
    other = store_study(linking, tmp_path, accession="ACC-OTHER")
    assert linked(linking, pk) == [(study_uid, "accession")]
    with linking.db.read() as conn:
        assert orders.linked_orders(conn, other) == []


def test_images_before_the_order_are_linked_when_it_comes(archive: Any, tmp_path: Path) -> None:
    by_accession = store_study(archive, tmp_path, accession="ACC-PL1")
    by_uid = store_study(archive, tmp_path)
    pk = schedule(archive, new_order("PL1", study_uid=by_uid))
    assert sorted(linked(archive, pk)) == sorted([(by_accession, "accession"), (by_uid, "study-uid")])


def test_an_accession_of_another_issuer_is_not_linked(linking: Any, tmp_path: Path) -> None:
    pk = schedule(linking, new_order("PL1", accession_issuer="RIS_A"))
    same = store_study(linking, tmp_path, accession="ACC-PL1", accession_issuer="RIS_A")
    store_study(linking, tmp_path, accession="ACC-PL1", accession_issuer="RIS_B")
    assert linked(linking, pk) == [(same, "accession")]


def test_a_changed_accession_moves_the_links(archive: Any, tmp_path: Path) -> None:
    old = store_study(archive, tmp_path, accession="ACC-PL1")
    new = store_study(archive, tmp_path, accession="ACC-NEW")
    pk = schedule(archive, new_order("PL1"))
    assert linked(archive, pk) == [(old, "accession")]
    with archive.db.write() as conn:
        orders.change(conn, new_order("PL1", accession_number="ACC-NEW"))
    assert linked(archive, pk) == [(new, "accession")]


def test_storing_more_instances_of_a_linked_study_adds_no_link(linking: Any, tmp_path: Path) -> None:
    pk = schedule(linking, new_order("PL1"))
    study_uid = store_study(linking, tmp_path, accession="ACC-PL1")
    store_study(linking, tmp_path, study_uid=study_uid, accession="ACC-PL1")
    assert linked(linking, pk) == [(study_uid, "accession")]
    assert orders.link_study(linking.db, study_uid) == []


def test_get_order_of_an_unknown_pk_is_not_found(archive: Any) -> None:
    with pytest.raises(errors.NotFound), archive.db.read() as conn:
        orders.get_order(conn, 12345)
