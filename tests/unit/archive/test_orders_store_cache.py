"""`orders.link_on_store` looks at a study once per accession, and again after an order arrives."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydicom.uid import generate_uid
from sqlalchemy import delete
from test_orders_core import linked, new_order, schedule, store_study

from pergamon.archive import orders
from pergamon.archive.index.schema import procedure_study


def test_a_study_is_looked_at_once_until_an_order_arrives(archive: Any, tmp_path: Path, monkeypatch: Any) -> None:
    looked: list[str] = []
    real_link_study = orders.link_study

    def counted(db: Any, study_uid: str) -> list[int]:
        looked.append(study_uid)
        return real_link_study(db, study_uid)

    monkeypatch.setattr(orders, "link_study", counted)
    archive.bus.subscribe(orders.link_on_store(archive.db))
    study_uid = generate_uid()
    for _ in range(3):
        store_study(archive, tmp_path, study_uid=study_uid, accession="ACC-C1")
    assert looked == [study_uid]
    store_study(archive, tmp_path, study_uid=study_uid, accession="ACC-C2")  # another accession: looked at again
    assert looked == [study_uid, study_uid]

    # An order whose own linking missed the study (both committed at once) is linked by the next
    # instance once the order is announced.
    order = new_order("PLC1", accession_number="ACC-C1")
    pk = schedule(archive, order)
    with archive.db.write() as conn:
        conn.execute(delete(procedure_study).where(procedure_study.c.procedure_fk == pk))
    store_study(archive, tmp_path, study_uid=study_uid, accession="ACC-C1")
    assert linked(archive, pk) == []
    archive.bus.emit(orders.received(order, "new", created=True))
    store_study(archive, tmp_path, study_uid=study_uid, accession="ACC-C1")
    assert linked(archive, pk) == [(study_uid, "accession")]
    assert len(looked) == 3


def test_an_order_after_the_images_is_linked(archive: Any, tmp_path: Path) -> None:
    archive.bus.subscribe(orders.link_on_store(archive.db))
    study_uid = store_study(archive, tmp_path, accession="ACC-C3")
    store_study(archive, tmp_path, study_uid=study_uid, accession="ACC-C3")
    pk = schedule(archive, new_order("PLC3", accession_number="ACC-C3"))
    store_study(archive, tmp_path, study_uid=study_uid, accession="ACC-C3")
    assert linked(archive, pk) == [(study_uid, "accession")]
