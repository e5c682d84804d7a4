"""HL7 v2 message log (every received message, its ACK and outcome)

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('hl7_message',
    sa.Column('pk', sa.Integer(), nullable=False),
    sa.Column('received_at', sa.Float(), nullable=False),
    sa.Column('transport', sa.String(length=16), nullable=False),
    sa.Column('peer', sa.String(length=128), nullable=False),
    sa.Column('replay_of', sa.Integer(), nullable=True),
    sa.Column('size', sa.Integer(), nullable=False),
    sa.Column('raw', sa.LargeBinary(), nullable=False),
    sa.Column('charset', sa.String(length=64), nullable=True),
    sa.Column('sending_application', sa.String(length=255), nullable=True),
    sa.Column('sending_facility', sa.String(length=255), nullable=True),
    sa.Column('message_type', sa.String(length=16), nullable=True),
    sa.Column('trigger_event', sa.String(length=16), nullable=True),
    sa.Column('control_id', sa.String(length=255), nullable=True),
    sa.Column('version', sa.String(length=16), nullable=True),
    sa.Column('status', sa.String(length=8), nullable=False),
    sa.Column('error_code', sa.String(length=8), nullable=True),
    sa.Column('error_text', sa.Text(), nullable=True),
    sa.Column('detail', sa.Text(), nullable=True),
    sa.Column('ack', sa.Text(), nullable=True),
    sa.Column('processed_at', sa.Float(), nullable=True),
    sa.ForeignKeyConstraint(['replay_of'], ['hl7_message.pk'], name=op.f('fk_hl7_message_replay_of')),
    sa.PrimaryKeyConstraint('pk', name=op.f('pk_hl7_message'))
    )
    with op.batch_alter_table('hl7_message', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_hl7_message_control_id'), ['control_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_hl7_message_message_type'), ['message_type'], unique=False)
        batch_op.create_index(batch_op.f('ix_hl7_message_received_at'), ['received_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_hl7_message_status'), ['status'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('hl7_message', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_hl7_message_status'))
        batch_op.drop_index(batch_op.f('ix_hl7_message_received_at'))
        batch_op.drop_index(batch_op.f('ix_hl7_message_message_type'))
        batch_op.drop_index(batch_op.f('ix_hl7_message_control_id'))

    op.drop_table('hl7_message')
