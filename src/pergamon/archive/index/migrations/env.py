"""Alembic environment: runs on the connection `Database.migrate` hands over (online mode only)."""

from __future__ import annotations

from alembic import context

from pergamon.archive.index.schema import metadata

connection = context.config.attributes.get("connection")
if connection is None:  # `alembic` command line, e.g. revision --autogenerate
    from sqlalchemy import create_engine

    url = context.config.get_main_option("sqlalchemy.url") or "sqlite:///alembic-dev.sqlite"
    with create_engine(url).connect() as conn:
        context.configure(connection=conn, target_metadata=metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()
else:
    context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()
