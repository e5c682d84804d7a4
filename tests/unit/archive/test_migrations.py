"""The Alembic migrations build exactly the schema that `archive/index/schema.py` declares.

Every table, column, index and constraint added to schema.py needs its migration; a missing or
different one shows up here as a difference reported by Alembic's own comparison.
"""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from pergamon.archive.index.database import Database
from pergamon.archive.index.schema import metadata


def test_migrated_index_matches_the_declared_schema(database_url: str) -> None:
    db = Database(database_url)
    try:
        db.migrate()
        with db.engine.connect() as conn:
            differences = compare_metadata(MigrationContext.configure(conn), metadata)
    finally:
        db.dispose()
    assert differences == []
