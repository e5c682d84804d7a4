"""orders (requested procedures) and PIX cross-references

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('requested_procedure',
    sa.Column('pk', sa.Integer(), nullable=False),
    sa.Column('placer_order_number', sa.String(length=64), nullable=False),
    sa.Column('filler_order_number', sa.String(length=64), nullable=False),
    sa.Column('accession_number', sa.String(length=64), nullable=False),
    sa.Column('accession_issuer', sa.String(length=64), nullable=False),
    sa.Column('requested_procedure_id', sa.String(length=64), nullable=False),
    sa.Column('study_uid', sa.String(length=64), nullable=False),
    sa.Column('patient_id', sa.String(length=64), nullable=False),
    sa.Column('patient_issuer', sa.String(length=64), nullable=False),
    sa.Column('patient_name', sa.Text(), nullable=True),
    sa.Column('procedure_code', sa.Text(), nullable=True),
    sa.Column('procedure_description', sa.Text(), nullable=True),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('message_type', sa.String(length=16), nullable=False),
    sa.Column('created_at', sa.Float(), nullable=False),
    sa.Column('updated_at', sa.Float(), nullable=False),
    sa.PrimaryKeyConstraint('pk', name=op.f('pk_requested_procedure'))
    )
    with op.batch_alter_table('requested_procedure', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_requested_procedure_accession_number'), ['accession_number'], unique=False)
        batch_op.create_index(
            batch_op.f('ix_requested_procedure_filler_order_number'), ['filler_order_number'], unique=False
        )
        batch_op.create_index(batch_op.f('ix_requested_procedure_patient_id'), ['patient_id'], unique=False)
        batch_op.create_index(
            batch_op.f('ix_requested_procedure_placer_order_number'), ['placer_order_number'], unique=False
        )
        batch_op.create_index(batch_op.f('ix_requested_procedure_status'), ['status'], unique=False)
        batch_op.create_index(batch_op.f('ix_requested_procedure_study_uid'), ['study_uid'], unique=False)

    op.create_table('scheduled_procedure_step',
    sa.Column('pk', sa.Integer(), nullable=False),
    sa.Column('procedure_fk', sa.Integer(), nullable=False),
    sa.Column('sps_id', sa.String(length=64), nullable=False),
    sa.Column('modality', sa.String(length=16), nullable=True),
    sa.Column('station_ae', sa.String(length=16), nullable=True),
    sa.Column('start_datetime', sa.String(length=26), nullable=True),
    sa.Column('protocol_codes', sa.Text(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.ForeignKeyConstraint(
        ['procedure_fk'], ['requested_procedure.pk'], name=op.f('fk_scheduled_procedure_step_procedure_fk')
    ),
    sa.PrimaryKeyConstraint('pk', name=op.f('pk_scheduled_procedure_step')),
    sa.UniqueConstraint('procedure_fk', 'sps_id', name=op.f('uq_scheduled_procedure_step_procedure_fk_sps_id'))
    )
    with op.batch_alter_table('scheduled_procedure_step', schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f('ix_scheduled_procedure_step_procedure_fk'), ['procedure_fk'], unique=False
        )

    op.create_table('procedure_study',
    sa.Column('pk', sa.Integer(), nullable=False),
    sa.Column('procedure_fk', sa.Integer(), nullable=False),
    sa.Column('study_uid', sa.String(length=64), nullable=False),
    sa.Column('matched_by', sa.String(length=16), nullable=False),
    sa.Column('linked_at', sa.Float(), nullable=False),
    sa.ForeignKeyConstraint(['procedure_fk'], ['requested_procedure.pk'], name=op.f('fk_procedure_study_procedure_fk')),
    sa.PrimaryKeyConstraint('pk', name=op.f('pk_procedure_study')),
    sa.UniqueConstraint('procedure_fk', 'study_uid', name=op.f('uq_procedure_study_procedure_fk_study_uid'))
    )
    with op.batch_alter_table('procedure_study', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_procedure_study_procedure_fk'), ['procedure_fk'], unique=False)
        batch_op.create_index(batch_op.f('ix_procedure_study_study_uid'), ['study_uid'], unique=False)

    op.create_table('pix_xref',
    sa.Column('pk', sa.Integer(), nullable=False),
    sa.Column('set_key', sa.String(length=36), nullable=False),
    sa.Column('patient_id', sa.String(length=64), nullable=False),
    sa.Column('issuer', sa.String(length=64), nullable=False),
    sa.Column('issuer_uid', sa.String(length=128), nullable=False),
    sa.Column('source', sa.String(length=16), nullable=False),
    sa.Column('updated_at', sa.Float(), nullable=False),
    sa.PrimaryKeyConstraint('pk', name=op.f('pk_pix_xref')),
    sa.UniqueConstraint('patient_id', 'issuer', name=op.f('uq_pix_xref_patient_id_issuer'))
    )
    with op.batch_alter_table('pix_xref', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_pix_xref_set_key'), ['set_key'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('pix_xref', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_pix_xref_set_key'))
    op.drop_table('pix_xref')
    with op.batch_alter_table('procedure_study', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_procedure_study_study_uid'))
        batch_op.drop_index(batch_op.f('ix_procedure_study_procedure_fk'))
    op.drop_table('procedure_study')
    with op.batch_alter_table('scheduled_procedure_step', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_scheduled_procedure_step_procedure_fk'))
    op.drop_table('scheduled_procedure_step')
    with op.batch_alter_table('requested_procedure', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_requested_procedure_study_uid'))
        batch_op.drop_index(batch_op.f('ix_requested_procedure_status'))
        batch_op.drop_index(batch_op.f('ix_requested_procedure_placer_order_number'))
        batch_op.drop_index(batch_op.f('ix_requested_procedure_patient_id'))
        batch_op.drop_index(batch_op.f('ix_requested_procedure_filler_order_number'))
        batch_op.drop_index(batch_op.f('ix_requested_procedure_accession_number'))
    op.drop_table('requested_procedure')
