"""How the index's connections behave: reads open no transaction on PostgreSQL, dead pooled connections are replaced.

Runs on the backend PERGAMON_TEST_DB names; the PostgreSQL-only checks skip on SQLite.
"""

from __future__ import annotations

import time

import pytest
from conftest import POSTGRES_URL, postgresql_only
from psycopg import pq
from sqlalchemy import create_engine, func, insert, select, text

from pergamon.archive.index import database as database_module
from pergamon.archive.index.database import Database
from pergamon.archive.index.schema import job


@pytest.fixture
def db(index_db: Database) -> Database:
    return index_db


def _postgresql_only(db: Database) -> None:
    postgresql_only(db, "SQLite has no server connection to lose and no autocommit reads")


def _job_row(n: int) -> dict[str, object]:
    return {"kind": "test", "state": "pending", "payload": f'{{"n": {n}}}', "attempts": 0,
            "next_run_at": 0.0, "created_at": 0.0, "updated_at": 0.0}


def test_a_read_leaves_no_transaction_open(db: Database) -> None:
    _postgresql_only(db)
    with db.read() as conn:
        assert conn.execute(select(func.count()).select_from(job)).scalar() == 0
        status = conn.connection.dbapi_connection.info.transaction_status  # type: ignore[union-attr]
        assert status == pq.TransactionStatus.IDLE, "the read opened a transaction (BEGIN, ROLLBACK: two round trips)"


def test_reads_see_what_writes_committed_and_writes_still_roll_back(db: Database) -> None:
    with db.write() as conn:
        conn.execute(insert(job).values(**_job_row(1)))
    with pytest.raises(RuntimeError), db.write() as conn:
        conn.execute(insert(job).values(**_job_row(2)))
        raise RuntimeError("fails after the insert")
    with db.read() as conn:
        assert conn.execute(select(func.count()).select_from(job)).scalar() == 1


def test_pooled_connections_killed_by_the_server_are_replaced(db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    """After a server restart (here: every backend of the pool terminated), the next read and write work."""
    _postgresql_only(db)
    monkeypatch.setattr(database_module, "PING_AFTER_IDLE", 0.05)
    with db.read() as first, db.read() as second:  # two pooled connections, both idle afterwards
        pids = {conn.execute(text("SELECT pg_backend_pid()")).scalar() for conn in (first, second)}
    admin = create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            for pid in pids:
                assert conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid}).scalar()
    finally:
        admin.dispose()
    time.sleep(0.1)

    with db.read() as conn:
        assert conn.execute(text("SELECT pg_backend_pid()")).scalar() not in pids
    with db.write() as conn:
        conn.execute(insert(job).values(**_job_row(3)))
    with db.read() as conn:
        assert conn.execute(select(func.count()).select_from(job)).scalar() == 1
