"""patient name and accession number indexes serve LIKE prefixes on PostgreSQL (pattern operator classes)

Revision ID: 0007
Revises: 0006

Under any collation but C, PostgreSQL answers `patient_name LIKE 'ROBE%'` with a sequential scan
of the table even though the column is indexed; an index with the pattern operator class serves
the prefix (and equality). SQLite's indexes already serve both, so nothing changes there.
"""

from __future__ import annotations

from alembic import op

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None

_INDEXES = (
    ("ix_patient_patient_name", "patient", "patient_name", "text_pattern_ops"),
    ("ix_study_accession_number", "study", "accession_number", "varchar_pattern_ops"),
)


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for name, table, column, ops in _INDEXES:
        op.drop_index(name, table_name=table)
        op.create_index(name, table, [column], postgresql_ops={column: ops})


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for name, table, column, _ops in _INDEXES:
        op.drop_index(name, table_name=table)
        op.create_index(name, table, [column])
