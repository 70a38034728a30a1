"""SLA events and clocks, survey answers

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:

    op.create_table('sla_clocks',
    sa.Column('conversation_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('policy', sa.String(length=64), nullable=True),
    sa.Column('mailbox', sa.String(length=64), nullable=True),
    sa.Column('department', sa.String(length=64), nullable=True),
    sa.Column('urgency', sa.String(length=32), nullable=True),
    sa.Column('tier', sa.String(length=32), nullable=True),
    sa.Column('calendar', sa.String(length=64), nullable=True),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('opened_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('waiting_since', sa.DateTime(timezone=True), nullable=True),
    sa.Column('first_response_due', sa.DateTime(timezone=True), nullable=True),
    sa.Column('first_response_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('first_response_minutes', sa.Float(), nullable=True),
    sa.Column('next_response_due', sa.DateTime(timezone=True), nullable=True),
    sa.Column('next_response_rounds', sa.Integer(), nullable=False),
    sa.Column('next_response_breaches', sa.Integer(), nullable=False),
    sa.Column('resolution_due', sa.DateTime(timezone=True), nullable=True),
    sa.Column('resolved_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('resolution_minutes', sa.Float(), nullable=True),
    sa.Column('checks', sa.Text(), nullable=False),
    sa.Column('notified', sa.Text(), nullable=False),
    sa.Column('next_check_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['conversation_id'], ['conversations.id'], name=op.f('fk_sla_clocks_conversation_id_conversations')),
    sa.PrimaryKeyConstraint('conversation_id', name=op.f('pk_sla_clocks'))
    )
    with op.batch_alter_table('sla_clocks', schema=None) as batch_op:
        batch_op.create_index('ix_sla_clocks_next_check_at', ['next_check_at'], unique=False)
        batch_op.create_index('ix_sla_clocks_opened_at', ['opened_at'], unique=False)

    op.create_table('sla_events',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('key', sa.String(length=200), nullable=False),
    sa.Column('conversation_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('source', sa.String(length=32), nullable=False),
    sa.Column('message_pk', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('detail', sa.Text(), nullable=True),
    sa.Column('recorded_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['conversation_id'], ['conversations.id'], name=op.f('fk_sla_events_conversation_id_conversations')),
    sa.ForeignKeyConstraint(['message_pk'], ['messages.id'], name=op.f('fk_sla_events_message_pk_messages')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_sla_events')),
    sa.UniqueConstraint('key', name=op.f('uq_sla_events_key'))
    )
    with op.batch_alter_table('sla_events', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_sla_events_conversation_id'), ['conversation_id'], unique=False)

    op.create_table('survey_answers',
    sa.Column('conversation_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('rating', sa.Integer(), nullable=False),
    sa.Column('answered_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('message_pk', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('channel', sa.String(length=16), nullable=False),
    sa.ForeignKeyConstraint(['conversation_id'], ['conversations.id'], name=op.f('fk_survey_answers_conversation_id_conversations')),
    sa.ForeignKeyConstraint(['message_pk'], ['messages.id'], name=op.f('fk_survey_answers_message_pk_messages')),
    sa.PrimaryKeyConstraint('conversation_id', name=op.f('pk_survey_answers'))
    )
    with op.batch_alter_table('survey_answers', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_survey_answers_answered_at'), ['answered_at'], unique=False)




def downgrade() -> None:

    with op.batch_alter_table('survey_answers', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_survey_answers_answered_at'))

    op.drop_table('survey_answers')
    with op.batch_alter_table('sla_events', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_sla_events_conversation_id'))

    op.drop_table('sla_events')
    with op.batch_alter_table('sla_clocks', schema=None) as batch_op:
        batch_op.drop_index('ix_sla_clocks_opened_at')
        batch_op.drop_index('ix_sla_clocks_next_check_at')

    op.drop_table('sla_clocks')

