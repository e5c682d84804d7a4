"""patient reconciliation history (PIR: updates, merges, identifier changes)

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('patient', schema=None) as batch_op:
        batch_op.add_column(sa.Column('revision', sa.Integer(), server_default='0', nullable=False))

    op.create_table('patient_history',
    sa.Column('pk', sa.Integer(), nullable=False),
    sa.Column('action', sa.String(length=16), nullable=False),
    sa.Column('patient_id', sa.String(length=64), nullable=False),
    sa.Column('issuer', sa.String(length=64), nullable=False),
    sa.Column('prior_patient_id', sa.String(length=64), nullable=True),
    sa.Column('prior_issuer', sa.String(length=64), nullable=True),
    sa.Column('before', sa.Text(), nullable=False),
    sa.Column('after', sa.Text(), nullable=False),
    sa.Column('studies', sa.Integer(), nullable=False),
    sa.Column('message_id', sa.String(length=64), nullable=False),
    sa.Column('origin', sa.Text(), nullable=False),
    sa.Column('recorded_at', sa.Float(), nullable=False),
    sa.PrimaryKeyConstraint('pk', name=op.f('pk_patient_history'))
    )
    with op.batch_alter_table('patient_history', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_patient_history_patient_id_issuer'), ['patient_id', 'issuer'],
                              unique=False)
        batch_op.create_index(batch_op.f('ix_patient_history_prior_patient_id_prior_issuer'),
                              ['prior_patient_id', 'prior_issuer'], unique=False)
        batch_op.create_index(batch_op.f('ix_patient_history_recorded_at'), ['recorded_at'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('patient_history', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_patient_history_recorded_at'))
        batch_op.drop_index(batch_op.f('ix_patient_history_prior_patient_id_prior_issuer'))
        batch_op.drop_index(batch_op.f('ix_patient_history_patient_id_issuer'))

    op.drop_table('patient_history')
    with op.batch_alter_table('patient', schema=None) as batch_op:
        batch_op.drop_column('revision')
