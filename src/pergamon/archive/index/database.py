"""Opening the index database and bringing its schema up to date.

An empty database gets the declared schema (`schema.metadata`) in one `create_all` and is marked
as being at the newest migration, `HEAD_REVISION`, the way Alembic's `stamp` marks it; a database
at `HEAD_REVISION` is left alone; only an older one runs the Alembic migrations. So a serving
process imports Alembic (with Mako: ~8 MiB of resident memory it would keep) only on the first
start after an upgrade. `test_migrations` checks that both roads give the same schema.

What differs between SQLite and PostgreSQL lives here: SQLite gets WAL with synchronous=FULL
(a committed row survives power loss), a busy timeout, case-sensitive LIKE (PS3.4 matching is
case-sensitive except where Pergamon normalises, see `archive.query`) and one in-process write
lock, since SQLite has a single writer anyway and waiting on a lock is cheaper than retrying
SQLITE_BUSY. PostgreSQL writers run concurrently.

Round trips to PostgreSQL are the cost of most index work (a stored object, a query), so two
pieces of SQLAlchemy's generic behaviour are narrowed here. Reads run in autocommit: at PostgreSQL's
READ COMMITTED every statement takes its own snapshot anyway, so the transaction SQLAlchemy opens
gave a read nothing but a BEGIN and a ROLLBACK. A pooled connection is pinged before use only when
it has been idle for `PING_AFTER_IDLE` seconds rather than at every checkout: a server restart or
an idle-connection killer is still caught before a request, while a busy archive skips a round trip
per transaction (SQLAlchemy's "pessimistic" disconnect handling, by a pool event).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, inspect, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DisconnectionError

from pergamon.archive.index.schema import metadata

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).with_name("migrations")
HEAD_REVISION = "0007"
"""The newest migration in `migrations/versions` (a test checks it is Alembic's head)."""
VERSION_TABLE = "alembic_version"
"""Where Alembic records the revision a database is at: one row, `version_num`."""
PING_AFTER_IDLE = 1.0
"""Seconds a pooled PostgreSQL connection may sit unused before it is pinged on its next checkout."""


class Database:
    """An engine plus the write discipline of its dialect."""

    def __init__(self, url: str, *, pool_size: int = 8, connect_args: dict[str, Any] | None = None) -> None:
        self.url = make_url(url)
        self.is_sqlite = self.url.get_backend_name() == "sqlite"
        if self.is_sqlite:
            database = self.url.database or ""
            if database and database != ":memory:":
                Path(database).parent.mkdir(parents=True, exist_ok=True)
            self.engine: Engine = create_engine(
                self.url, connect_args={"check_same_thread": False, "timeout": 60, **(connect_args or {})}
            )
            event.listen(self.engine, "connect", _sqlite_pragmas)
        else:
            self.engine = create_engine(
                self.url,
                pool_size=pool_size,
                max_overflow=pool_size * 4,
                connect_args=connect_args or {},
            )
            _ping_when_idle(self.engine)
        self._write_lock = threading.RLock() if self.is_sqlite else None

    @contextlib.contextmanager
    def write(self) -> Iterator[Connection]:
        """A transaction for writing; committed on normal exit, rolled back on error."""
        lock = self._write_lock or contextlib.nullcontext()
        with lock, self.engine.begin() as conn:
            yield conn

    @contextlib.contextmanager
    def read(self) -> Iterator[Connection]:
        """A connection for reading: its own transaction on SQLite, autocommit on PostgreSQL (see the module)."""
        with self.engine.connect() as conn:
            if self.is_sqlite:
                yield conn
            else:
                yield conn.execution_options(isolation_level="AUTOCOMMIT")

    def migrate(self) -> None:
        """Bring the schema to `HEAD_REVISION`: create it on an empty database, else run the migrations."""
        with self.engine.begin() as conn:
            tables = set(inspect(conn).get_table_names())
            if VERSION_TABLE in tables:
                revision = conn.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalar()
                if revision == HEAD_REVISION:
                    return
            elif not tables & set(metadata.tables):
                _create_at_head(conn)
                log.info("created the index schema (revision %s)", HEAD_REVISION)
                return
        self._run_migrations()

    def _run_migrations(self) -> None:
        """Upgrade with Alembic to the newest revision (an index made by an older Pergamon)."""
        from alembic import command
        from alembic.config import Config

        with self.engine.begin() as conn:
            config = Config()
            config.set_main_option("script_location", str(MIGRATIONS))
            config.attributes["connection"] = conn
            command.upgrade(config, "head")

    def dispose(self) -> None:
        self.engine.dispose()


def _create_at_head(conn: Connection) -> None:
    """The declared schema plus Alembic's version table at `HEAD_REVISION`, as `alembic stamp head` writes it."""
    metadata.create_all(conn)
    conn.execute(
        text(
            f"CREATE TABLE {VERSION_TABLE} (version_num VARCHAR(32) NOT NULL, "
            f"CONSTRAINT {VERSION_TABLE}_pkc PRIMARY KEY (version_num))"
        )
    )
    conn.execute(text(f"INSERT INTO {VERSION_TABLE} (version_num) VALUES (:head)"), {"head": HEAD_REVISION})


def _ping_when_idle(engine: Engine) -> None:
    """Ping a pooled connection on checkout if it sat idle over `PING_AFTER_IDLE` s; a dead one is replaced.

    Raising DisconnectionError from a checkout listener makes the pool drop that connection and
    check out another (a new one if need be), as its own pre-ping does.
    """

    @event.listens_for(engine, "checkin")
    def _idle_from(_dbapi_connection: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _ping_if_idle(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        idle_since = record.info.get("idle_since")
        if idle_since is None or time.monotonic() - idle_since < PING_AFTER_IDLE:
            return  # new, or used a moment ago
        try:
            engine.dialect.do_ping(dbapi_connection)
        except Exception as exc:
            log.info("dropping a pooled database connection that no longer answers: %s", exc)
            raise DisconnectionError(str(exc)) from exc


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA case_sensitive_like=ON")
    cursor.execute("PRAGMA busy_timeout=60000")
    cursor.close()
