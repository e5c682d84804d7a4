"""MPPS, GP-PPS and IAN

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('performed_procedure_step',
    sa.Column('pk', sa.Integer(), nullable=False),
    sa.Column('sop_uid', sa.String(length=64), nullable=False),
    sa.Column('sop_class_uid', sa.String(length=64), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('patient_id', sa.String(length=64), nullable=True),
    sa.Column('issuer', sa.String(length=64), nullable=True),
    sa.Column('study_uid', sa.String(length=64), nullable=True),
    sa.Column('calling_ae', sa.String(length=16), nullable=False),
    sa.Column('attrs', sa.Text(), nullable=False),
    sa.Column('last_seq', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.Float(), nullable=False),
    sa.Column('updated_at', sa.Float(), nullable=False),
    sa.Column('ian_queued_at', sa.Float(), nullable=True),
    sa.PrimaryKeyConstraint('pk', name=op.f('pk_performed_procedure_step')),
    sa.UniqueConstraint('sop_uid', name=op.f('uq_performed_procedure_step_sop_uid'))
    )
    with op.batch_alter_table('performed_procedure_step', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_performed_procedure_step_created_at'), ['created_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_performed_procedure_step_status'), ['status'], unique=False)

    op.create_table('pps_message',
    sa.Column('pk', sa.Integer(), nullable=False),
    sa.Column('pps_fk', sa.Integer(), nullable=False),
    sa.Column('seq', sa.Integer(), nullable=False),
    sa.Column('operation', sa.String(length=8), nullable=False),
    sa.Column('attrs', sa.Text(), nullable=False),
    sa.Column('calling_ae', sa.String(length=16), nullable=False),
    sa.Column('received_at', sa.Float(), nullable=False),
    sa.ForeignKeyConstraint(['pps_fk'], ['performed_procedure_step.pk'], name=op.f('fk_pps_message_pps_fk')),
    sa.PrimaryKeyConstraint('pk', name=op.f('pk_pps_message')),
    sa.UniqueConstraint('pps_fk', 'seq', name=op.f('uq_pps_message_pps_fk_seq'))
    )
    op.create_table('pps_reference',
    sa.Column('pk', sa.Integer(), nullable=False),
    sa.Column('pps_fk', sa.Integer(), nullable=False),
    sa.Column('series_uid', sa.String(length=64), nullable=False),
    sa.Column('sop_class_uid', sa.String(length=64), nullable=False),
    sa.Column('sop_uid', sa.String(length=64), nullable=False),
    sa.ForeignKeyConstraint(['pps_fk'], ['performed_procedure_step.pk'], name=op.f('fk_pps_reference_pps_fk')),
    sa.PrimaryKeyConstraint('pk', name=op.f('pk_pps_reference'))
    )
    with op.batch_alter_table('pps_reference', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_pps_reference_pps_fk'), ['pps_fk'], unique=False)
        batch_op.create_index(batch_op.f('ix_pps_reference_sop_uid'), ['sop_uid'], unique=False)

    op.create_table('pps_forward',
    sa.Column('pk', sa.Integer(), nullable=False),
    sa.Column('pps_fk', sa.Integer(), nullable=False),
    sa.Column('destination', sa.String(length=16), nullable=False),
    sa.Column('delivered_seq', sa.Integer(), nullable=False),
    sa.Column('updated_at', sa.Float(), nullable=False),
    sa.ForeignKeyConstraint(['pps_fk'], ['performed_procedure_step.pk'], name=op.f('fk_pps_forward_pps_fk')),
    sa.PrimaryKeyConstraint('pk', name=op.f('pk_pps_forward')),
    sa.UniqueConstraint('pps_fk', 'destination', name=op.f('uq_pps_forward_pps_fk_destination'))
    )


def downgrade() -> None:
    op.drop_table('pps_forward')
    with op.batch_alter_table('pps_reference', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_pps_reference_sop_uid'))
        batch_op.drop_index(batch_op.f('ix_pps_reference_pps_fk'))

    op.drop_table('pps_reference')
    op.drop_table('pps_message')
    with op.batch_alter_table('performed_procedure_step', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_performed_procedure_step_status'))
        batch_op.drop_index(batch_op.f('ix_performed_procedure_step_created_at'))

    op.drop_table('performed_procedure_step')
