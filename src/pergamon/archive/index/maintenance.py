"""ANALYZE and VACUUM of the index tables when PostgreSQL's autovacuum is off.

PostgreSQL plans each query from table statistics that ANALYZE gathers. Without them it guesses,
and on a large index it guesses badly: with 10^6 instances never analyzed, a study search by
Patient ID ran as a parallel scan of every study (72 ms) instead of two index lookups (0.1 ms).
The autovacuum daemon normally analyzes and vacuums a table once enough of it changed. Where an
operator turned it off (the project's test machines do), `IndexMaintenance` applies the same rule
to Pergamon's own tables every `database.maintenance_interval` seconds, with the server's own
thresholds (`autovacuum_analyze_threshold` and friends, PostgreSQL docs 25.1.6). With autovacuum
on it does nothing; SQLite plans from its indexes without statistics and is left alone.

ANALYZE and VACUUM (not FULL) take a lock that lets reads and writes go on, so the maintenance
runs beside ingest and queries.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

from sqlalchemy import Connection, text

from pergamon.archive.index.database import Database
from pergamon.archive.index.schema import metadata

log = logging.getLogger(__name__)

_THRESHOLD_SETTINGS = {
    "autovacuum_analyze_threshold": "analyze_base",
    "autovacuum_analyze_scale_factor": "analyze_scale",
    "autovacuum_vacuum_threshold": "vacuum_base",
    "autovacuum_vacuum_scale_factor": "vacuum_scale",
    "autovacuum_vacuum_insert_threshold": "insert_base",
    "autovacuum_vacuum_insert_scale_factor": "insert_scale",
}


@dataclass(frozen=True)
class Thresholds:
    """When autovacuum would act on a table of `reltuples` rows (PostgreSQL's defaults)."""

    analyze_base: float = 50
    analyze_scale: float = 0.1
    vacuum_base: float = 50
    vacuum_scale: float = 0.2
    insert_base: float = 1000
    insert_scale: float = 0.2


@dataclass(frozen=True)
class TableActivity:
    """A table's counters from `pg_stat_user_tables`; `reltuples` is -1 before its first ANALYZE."""

    name: str
    reltuples: float
    changed_since_analyze: int
    dead_rows: int
    inserted_since_vacuum: int

    def command(self, limits: Thresholds) -> str | None:
        """The statement autovacuum's rule asks for now: "VACUUM (ANALYZE)", "VACUUM", "ANALYZE" or None."""
        rows = max(self.reltuples, 0.0)
        analyze = self.changed_since_analyze > limits.analyze_base + limits.analyze_scale * rows
        vacuum = (
            self.dead_rows > limits.vacuum_base + limits.vacuum_scale * rows
            or (  # an insert threshold of -1 turns insert-driven vacuums off
                limits.insert_base >= 0 and self.inserted_since_vacuum > limits.insert_base + limits.insert_scale * rows
            )
        )
        if vacuum:
            return "VACUUM (ANALYZE)" if analyze else "VACUUM"
        return "ANALYZE" if analyze else None


def autovacuum_enabled(conn: Connection) -> bool:
    return str(conn.execute(text("SHOW autovacuum")).scalar()).lower() == "on"


def thresholds(conn: Connection) -> Thresholds:
    """The server's autovacuum thresholds, so Pergamon acts when autovacuum would have."""
    rows = conn.execute(
        text("SELECT name, setting FROM pg_settings WHERE name = ANY(:names)"), {"names": sorted(_THRESHOLD_SETTINGS)}
    ).all()
    return Thresholds(**{_THRESHOLD_SETTINGS[name]: float(setting) for name, setting in rows})


def table_activity(conn: Connection) -> list[TableActivity]:
    """The counters of Pergamon's tables in the current schema."""
    rows = conn.execute(
        text(
            "SELECT s.relname, c.reltuples, s.n_mod_since_analyze, s.n_dead_tup, s.n_ins_since_vacuum"
            " FROM pg_stat_user_tables s JOIN pg_class c ON c.oid = s.relid"
            " WHERE s.schemaname = current_schema() AND s.relname = ANY(:names) ORDER BY s.relname"
        ),
        {"names": sorted(metadata.tables)},
    ).all()
    return [TableActivity(str(r[0]), float(r[1]), int(r[2]), int(r[3]), int(r[4])) for r in rows]


def maintain(db: Database) -> list[tuple[str, str, float]]:
    """Run what autovacuum's rule asks for on each table; (command, table, seconds) of what ran."""
    with db.read() as conn:
        limits = thresholds(conn)
        due = [(t.command(limits), t.name) for t in table_activity(conn)]
    done = []
    quote = db.engine.dialect.identifier_preparer.quote
    for command, table in due:
        if command is None:
            continue
        started = time.monotonic()
        # VACUUM cannot run inside a transaction block.
        with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql(f"{command} {quote(table)}")
        done.append((command, table, time.monotonic() - started))
    return done


class IndexMaintenance:
    """The background thread of `maintain`, on PostgreSQL with autovacuum off."""

    def __init__(self, db: Database, interval: float) -> None:
        self.db = db
        self.interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self.db.is_sqlite or self.interval <= 0:
            return
        with self.db.read() as conn:
            if autovacuum_enabled(conn):
                log.info("PostgreSQL autovacuum is on: the index tables' statistics are left to it")
                return
        log.warning(
            "PostgreSQL autovacuum is off: Pergamon will ANALYZE and VACUUM its own tables, checking every %.0f s",
            self.interval,
        )
        self._thread = threading.Thread(target=self._run, name="pergamon-index-maintenance", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                for command, table, seconds in maintain(self.db):
                    log.info("index maintenance: %s %s took %.1f s", command, table, seconds)
            except Exception:
                log.exception("index maintenance failed; trying again in %.0f s", self.interval)
            self._stop.wait(self.interval)
