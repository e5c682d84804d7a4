"""`add_instance` into a series the index already holds (the per-object fast path of `index.writer`).

Checks the rows, counters and SOP Classes in Study that path leaves, including an object replacing
an instance already stored (in the same series, or moving it from another series or study), with
the statements run on the driver cursor and through `Connection.execute`. Runs on the backend of
PERGAMON_TEST_DB; on PostgreSQL, also that the study's SOP Classes are read under its row lock.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
import samples
from pydicom.uid import CTImageStorage, MRImageStorage, generate_uid
from sqlalchemy import Connection, select, text, update

from pergamon.archive.index import writer
from pergamon.archive.index.database import Database
from pergamon.archive.index.driver import DriverStatement
from pergamon.archive.index.schema import instance, patient, series, study
from pergamon.archive.model import ObjectRecord, split_levels


@pytest.fixture(params=["driver", "connection"])
def db(request: pytest.FixtureRequest, database_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Database]:
    """An empty index; with "connection", every `DriverStatement` runs through `Connection.execute`."""
    if request.param == "connection":

        def execute(self: DriverStatement, conn: Connection, params: dict[str, Any]) -> None:
            conn.execute(self.statement, dict(params))

        def fetchone(self: DriverStatement, conn: Connection, params: dict[str, Any]) -> Any:
            return conn.execute(self.statement, dict(params)).first()

        monkeypatch.setattr(DriverStatement, "execute", execute)
        monkeypatch.setattr(DriverStatement, "fetchone", fetchone)
    database = Database(database_url)
    database.migrate()
    yield database
    database.dispose()


def record(
    study_uid: str, series_uid: str, sop_uid: str, sop_class: str = CTImageStorage, patient_id: str = "WRITER1"
) -> ObjectRecord:
    ds = samples.make_instance(
        sop_class,
        patient_id=patient_id,
        study_uid=study_uid,
        series_uid=series_uid,
        sop_instance_uid=sop_uid,
        rows=8,
        cols=8,
    )
    return split_levels(ds)


def store(db: Database, rec: ObjectRecord, blob_key: str) -> str | None:
    with db.write() as conn:
        return writer.add_instance(
            conn, rec, writer.BlobInfo(blob_key, 100, "a" * 64, "1.2.840.10008.1.2.1"), {"by": "t"}
        )


def study_row(db: Database, study_uid: str) -> Any:
    with db.read() as conn:
        return conn.execute(select(study).where(study.c.study_uid == study_uid)).one()


def series_counts(db: Database) -> dict[str, int]:
    with db.read() as conn:
        return dict(conn.execute(select(series.c.series_uid, series.c.num_instances)).all())  # type: ignore[arg-type]


def instance_keys(db: Database) -> dict[str, tuple[str, str]]:
    """SOP Instance UID -> (Series Instance UID, blob key) of every instance row."""
    with db.read() as conn:
        rows = conn.execute(
            select(instance.c.sop_uid, series.c.series_uid, instance.c.blob_key).join(
                series, series.c.pk == instance.c.series_fk
            )
        ).all()
    return {row.sop_uid: (row.series_uid, row.blob_key) for row in rows}


def test_objects_of_a_known_series_get_their_rows_counters_and_sop_classes(db: Database) -> None:
    study_uid, series_uid = generate_uid(), generate_uid()
    uids = [generate_uid() for _ in range(3)]
    assert store(db, record(study_uid, series_uid, uids[0]), "k0") is None  # creates the series
    first = study_row(db, study_uid)
    dateless = record(study_uid, series_uid, uids[1])
    del dateless.instance.columns["content_date"], dateless.instance.columns["content_time"]
    assert store(db, dateless, "k1") is None
    assert store(db, record(study_uid, series_uid, uids[2], MRImageStorage), "k2") is None

    after = study_row(db, study_uid)
    assert (after.num_instances, after.num_series) == (3, 1)
    assert after.sop_classes == "\\".join(sorted([CTImageStorage, MRImageStorage]))
    assert after.updated_at >= first.updated_at
    assert series_counts(db) == {series_uid: 3}
    with db.read() as conn:
        assert conn.execute(select(patient.c.num_studies)).scalars().all() == [1]
        row = conn.execute(select(instance).where(instance.c.sop_uid == uids[1])).one()
        dated = conn.execute(select(instance.c.content_date).where(instance.c.sop_uid == uids[2])).scalar_one()
    assert (row.sop_class_uid, row.blob_key, row.size, row.sha256) == (CTImageStorage, "k1", 100, "a" * 64)
    assert (row.transfer_syntax, row.origin, row.instance_number) == ("1.2.840.10008.1.2.1", '{"by": "t"}', "1")
    assert row.content_date is None and row.content_time is None  # attributes the object lacks
    assert dated == "20240315"
    assert instance_keys(db) == {uids[0]: (series_uid, "k0"), uids[1]: (series_uid, "k1"), uids[2]: (series_uid, "k2")}


def test_an_object_replacing_an_instance_of_its_own_series(db: Database) -> None:
    study_uid, series_uid = generate_uid(), generate_uid()
    uids = [generate_uid() for _ in range(2)]
    store(db, record(study_uid, series_uid, uids[0]), "k0")
    store(db, record(study_uid, series_uid, uids[1]), "k1")

    assert store(db, record(study_uid, series_uid, uids[1]), "k1-again") == "k1"

    assert instance_keys(db) == {uids[0]: (series_uid, "k0"), uids[1]: (series_uid, "k1-again")}
    assert series_counts(db) == {series_uid: 2}
    after = study_row(db, study_uid)
    assert (after.num_instances, after.num_series, after.sop_classes) == (2, 1, CTImageStorage)


def test_an_object_replacing_the_last_instance_of_another_series_and_study(db: Database) -> None:
    old_study, old_series = generate_uid(), generate_uid()
    new_study, new_series = generate_uid(), generate_uid()
    moved, other = generate_uid(), generate_uid()
    store(db, record(old_study, old_series, moved, patient_id="OLD"), "k-old")
    store(db, record(new_study, new_series, other, MRImageStorage), "k-other")

    assert store(db, record(new_study, new_series, moved), "k-moved") == "k-old"

    assert instance_keys(db) == {moved: (new_series, "k-moved"), other: (new_series, "k-other")}
    assert series_counts(db) == {new_series: 2}
    after = study_row(db, new_study)
    assert (after.num_instances, after.num_series) == (2, 1)
    assert after.sop_classes == "\\".join(sorted([CTImageStorage, MRImageStorage]))
    with db.read() as conn:
        assert conn.execute(select(study.c.study_uid)).scalars().all() == [new_study]
        assert conn.execute(select(patient.c.patient_id, patient.c.num_studies)).all() == [("WRITER1", 1)]


def test_a_store_waiting_for_the_study_row_reads_the_sop_classes_committed_meanwhile(db: Database) -> None:
    if db.is_sqlite:
        pytest.skip("SQLite has one writer: nothing commits while a store waits")
    study_uid, series_uid = generate_uid(), generate_uid()
    store(db, record(study_uid, series_uid, generate_uid()), "k0")
    late = record(study_uid, series_uid, generate_uid())
    failures: list[BaseException] = []

    def store_late() -> None:
        try:
            store(db, late, "k1")
        except BaseException as exc:  # reported by the test
            failures.append(exc)

    with db.engine.connect() as holder:
        holder.execute(update(study).values(sop_classes="1.2.3"))  # holds the study row
        writer_thread = threading.Thread(target=store_late)
        writer_thread.start()
        waiting = 0
        for _ in range(500):
            waiting = holder.execute(
                text("SELECT count(*) FROM pg_locks WHERE NOT granted AND locktype = 'transactionid'")
            ).scalar_one()
            if waiting or not writer_thread.is_alive():
                break
            threading.Event().wait(0.01)
        holder.commit()
    writer_thread.join(30)
    assert not failures and waiting
    after = study_row(db, study_uid)
    assert after.sop_classes == f"1.2.3\\{CTImageStorage}"
    assert after.num_instances == 2
