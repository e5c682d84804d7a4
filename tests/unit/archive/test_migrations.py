"""The index schema: Alembic's migrations and the create-at-head road give exactly what schema.py declares.

Every table, column, index and constraint added to schema.py needs its migration; a missing or
different one shows up here as a difference reported by Alembic's own comparison. An empty
database skips the migrations (`Database.migrate` creates the declared schema and stamps it), so
both roads are checked, and so is the upgrade of an index an older Pergamon made.
"""

from __future__ import annotations

import subprocess
import sys

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect

from pergamon.archive.index.database import HEAD_REVISION, MIGRATIONS, Database
from pergamon.archive.index.schema import metadata


def _config(conn: object | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = conn
    return config


def _differences_and_revision(db: Database) -> tuple[list, str | None]:
    with db.engine.connect() as conn:
        context = MigrationContext.configure(conn)
        return compare_metadata(context, metadata), context.get_current_revision()


def test_head_revision_is_the_newest_migration() -> None:
    assert ScriptDirectory.from_config(_config()).get_current_head() == HEAD_REVISION


def test_migrations_build_the_declared_schema(database_url: str) -> None:
    db = Database(database_url)
    try:
        with db.engine.begin() as conn:
            command.upgrade(_config(conn), "head")
        assert _differences_and_revision(db) == ([], HEAD_REVISION)
    finally:
        db.dispose()


def test_an_empty_database_is_created_at_head_as_alembic_sees_it(database_url: str) -> None:
    db = Database(database_url)
    try:
        db.migrate()
        assert _differences_and_revision(db) == ([], HEAD_REVISION)
        with db.engine.begin() as conn:  # Alembic finds nothing left to do
            command.upgrade(_config(conn), "head")
        assert _differences_and_revision(db) == ([], HEAD_REVISION)
    finally:
        db.dispose()


def test_an_index_of_an_older_version_is_upgraded(database_url: str) -> None:
    db = Database(database_url)
    try:
        with db.engine.begin() as conn:
            command.upgrade(_config(conn), "0005")
        with db.engine.connect() as conn:
            assert "hl7_message" not in inspect(conn).get_table_names()  # made by 0006
        db.migrate()
        assert _differences_and_revision(db) == ([], HEAD_REVISION)
    finally:
        db.dispose()


def test_opening_an_index_at_head_does_not_load_alembic(database_url: str) -> None:
    db = Database(database_url)
    try:
        db.migrate()
    finally:
        db.dispose()
    probe = (
        "import sys\n"
        "from pergamon.archive.index.database import Database\n"
        f"db = Database({database_url!r})\n"
        "db.migrate()\n"
        "db.dispose()\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('alembic', 'mako')))\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
