"""ANALYZE and VACUUM of the index tables by Pergamon when PostgreSQL's autovacuum is off.

The rule is checked on its own; the PostgreSQL checks run against the real server (they skip on
SQLite) in the test's own schema.
"""

from __future__ import annotations

import logging
import time

import pytest
from conftest import postgresql_only
from sqlalchemy import insert, text

from pergamon.archive.index import maintenance
from pergamon.archive.index.database import Database
from pergamon.archive.index.maintenance import IndexMaintenance, TableActivity, Thresholds
from pergamon.archive.index.schema import patient


@pytest.fixture
def db(index_db: Database) -> Database:
    return index_db


def _postgresql_only(db: Database) -> None:
    postgresql_only(db, "SQLite keeps no planner statistics to refresh")


def _activity(reltuples: float = 1000, changed: int = 0, dead: int = 0, inserted: int = 0) -> TableActivity:
    return TableActivity("study", reltuples, changed, dead, inserted)


@pytest.mark.parametrize(
    ("activity", "expected"),
    [
        (_activity(changed=150), None),  # 50 + 10% of 1000 = 150: not more than the threshold
        (_activity(changed=151), "ANALYZE"),
        (_activity(reltuples=-1, changed=51), "ANALYZE"),  # never analyzed: counted as empty
        (_activity(dead=251), "VACUUM"),  # 50 + 20% of 1000
        (_activity(inserted=1201), "VACUUM"),  # 1000 + 20% of 1000
        (_activity(changed=151, dead=251), "VACUUM (ANALYZE)"),
        (_activity(reltuples=10**6, changed=10**5, dead=10**5, inserted=10**5), None),
    ],
)
def test_the_rule_is_autovacuums(activity: TableActivity, expected: str | None) -> None:
    assert activity.command(Thresholds()) == expected


def test_an_insert_threshold_of_minus_one_turns_insert_vacuums_off() -> None:
    assert _activity(inserted=10**6).command(Thresholds(insert_base=-1)) is None


def _insert_patients(db: Database, n: int) -> None:
    """Insert `n` patients and make this backend publish its table counters now (PostgreSQL 15)."""
    with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        with conn.begin():
            rows = [{"patient_id": f"P{i}", "created_at": 0.0, "updated_at": 0.0} for i in range(n)]
            conn.execute(insert(patient), rows)
        conn.execute(text("SELECT pg_stat_force_next_flush()"))


def _patient_changes(db: Database, at_least: int) -> int:
    """The patient table's changes since ANALYZE, once they reach `at_least` or after 20 s (they arrive late)."""
    deadline = time.monotonic() + 20
    changes = 0
    while changes < at_least and time.monotonic() < deadline:
        with db.read() as conn:
            found = {t.name: t.changed_since_analyze for t in maintenance.table_activity(conn)}
        changes = found.get("patient", 0)
        time.sleep(0.1)
    return changes


def test_a_table_that_changed_is_analyzed_once(db: Database) -> None:
    _postgresql_only(db)
    _insert_patients(db, 300)
    assert _patient_changes(db, 300) >= 300
    done = maintenance.maintain(db)
    assert "patient" in [table for _, table, _ in done], done
    with db.read() as conn:
        analyzed = conn.execute(
            text("SELECT last_analyze IS NOT NULL FROM pg_stat_user_tables"
                 " WHERE schemaname = current_schema() AND relname = 'patient'")
        ).scalar()
        statistics = conn.execute(
            text("SELECT count(*) FROM pg_stats WHERE schemaname = current_schema() AND tablename = 'patient'")
        ).scalar()
    assert analyzed and statistics, "patient has no planner statistics after maintain()"
    assert "patient" not in [table for _, table, _ in maintenance.maintain(db)], "analyzed again with no change"


def test_the_servers_thresholds_are_read(db: Database) -> None:
    _postgresql_only(db)
    with db.read() as conn:
        limits = maintenance.thresholds(conn)
        scale = float(conn.execute(text("SHOW autovacuum_analyze_scale_factor")).scalar())  # type: ignore[arg-type]
    assert limits.analyze_scale == scale and limits.insert_base > 0


def test_nothing_runs_with_autovacuum_on(db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    _postgresql_only(db)
    monkeypatch.setattr(maintenance, "autovacuum_enabled", lambda conn: True)
    worker = IndexMaintenance(db, interval=60)
    worker.start()
    assert worker._thread is None
    worker.stop()


def test_with_autovacuum_off_the_thread_maintains_and_warns(
    db: Database, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    _postgresql_only(db)
    monkeypatch.setattr(maintenance, "autovacuum_enabled", lambda conn: False)
    _insert_patients(db, 300)
    assert _patient_changes(db, 300) >= 300
    with caplog.at_level(logging.INFO, logger="pergamon.archive.index.maintenance"):
        worker = IndexMaintenance(db, interval=60)
        worker.start()
        deadline = time.monotonic() + 20
        while "ANALYZE patient" not in caplog.text and time.monotonic() < deadline:
            time.sleep(0.1)
        worker.stop()
    assert "autovacuum is off" in caplog.text
    assert "ANALYZE patient" in caplog.text
    assert worker._thread is not None and not worker._thread.is_alive(), "stop() left the thread running"


def test_sqlite_and_a_zero_interval_start_nothing(db: Database) -> None:
    worker = IndexMaintenance(db, interval=0 if not db.is_sqlite else 60)
    worker.start()
    assert worker._thread is None
