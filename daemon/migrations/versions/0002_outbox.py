"""outbox, suppressions, bounces, reply limits, FAQ offers, routing, corrections

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22 23:19:40.134237
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    
    op.create_table("instance_keys",
    sa.Column("name", sa.String(length=64), nullable=False),
    sa.Column("value", sa.String(length=200), nullable=False),
    sa.PrimaryKeyConstraint("name", name=op.f("pk_instance_keys"))
    )
    op.create_table("reply_limits",
    sa.Column("recipient", sa.String(length=320), nullable=False),
    sa.Column("rule", sa.String(length=64), nullable=False),
    sa.Column("last_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("window_start", sa.DateTime(timezone=True), nullable=False),
    sa.Column("window_count", sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint("recipient", "rule", name=op.f("pk_reply_limits"))
    )
    op.create_table("bounces",
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
    sa.Column("message_pk", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
    sa.Column("position", sa.Integer(), nullable=False),
    sa.Column("recipient", sa.String(length=320), nullable=True),
    sa.Column("status", sa.String(length=16), nullable=True),
    sa.Column("action", sa.String(length=16), nullable=True),
    sa.Column("reason", sa.String(length=32), nullable=False),
    sa.Column("hard", sa.Boolean(), nullable=False),
    sa.Column("diagnostic", sa.Text(), nullable=True),
    sa.Column("original_message_id", sa.String(length=998), nullable=True),
    sa.Column("reported_at", sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(["message_pk"], ["messages.id"], name=op.f("fk_bounces_message_pk_messages")),
    sa.PrimaryKeyConstraint("id", name=op.f("pk_bounces")),
    sa.UniqueConstraint("message_pk", "position", name=op.f("uq_bounces_message_pk"))
    )
    with op.batch_alter_table("bounces", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_bounces_message_pk"), ["message_pk"], unique=False)
        batch_op.create_index(batch_op.f("ix_bounces_original_message_id"), ["original_message_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_bounces_recipient"), ["recipient"], unique=False)

    op.create_table("corrections",
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
    sa.Column("message_pk", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
    sa.Column("head", sa.String(length=16), nullable=False),
    sa.Column("previous", sa.String(length=64), nullable=True),
    sa.Column("label", sa.String(length=64), nullable=False),
    sa.Column("source", sa.String(length=32), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(["message_pk"], ["messages.id"], name=op.f("fk_corrections_message_pk_messages")),
    sa.PrimaryKeyConstraint("id", name=op.f("pk_corrections"))
    )
    with op.batch_alter_table("corrections", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_corrections_created_at"), ["created_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_corrections_message_pk"), ["message_pk"], unique=False)

    op.create_table("faq_offers",
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
    sa.Column("message_pk", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
    sa.Column("entry", sa.String(length=128), nullable=False),
    sa.Column("department", sa.String(length=64), nullable=True),
    sa.Column("language", sa.String(length=8), nullable=True),
    sa.Column("score", sa.Float(), nullable=False),
    sa.Column("offered_at", sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(["message_pk"], ["messages.id"], name=op.f("fk_faq_offers_message_pk_messages")),
    sa.PrimaryKeyConstraint("id", name=op.f("pk_faq_offers")),
    sa.UniqueConstraint("message_pk", "entry", name=op.f("uq_faq_offers_message_pk"))
    )
    with op.batch_alter_table("faq_offers", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_faq_offers_entry"), ["entry"], unique=False)
        batch_op.create_index(batch_op.f("ix_faq_offers_offered_at"), ["offered_at"], unique=False)

    op.create_table("outbox",
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
    sa.Column("key", sa.String(length=200), nullable=False),
    sa.Column("kind", sa.String(length=32), nullable=False),
    sa.Column("message_id", sa.String(length=998), nullable=False),
    sa.Column("mail_from", sa.String(length=320), nullable=False),
    sa.Column("recipients", sa.Text(), nullable=False),
    sa.Column("raw", sa.LargeBinary(), nullable=False),
    sa.Column("state", sa.String(length=16), nullable=False),
    sa.Column("attempts", sa.Integer(), nullable=False),
    sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("claimed_by", sa.String(length=200), nullable=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("last_error", sa.Text(), nullable=True),
    sa.Column("message_pk", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
    sa.Column("conversation_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
    sa.Column("rule", sa.String(length=64), nullable=True),
    sa.ForeignKeyConstraint(["conversation_id"], ["conversations.id"], name=op.f("fk_outbox_conversation_id_conversations")),
    sa.ForeignKeyConstraint(["message_pk"], ["messages.id"], name=op.f("fk_outbox_message_pk_messages")),
    sa.PrimaryKeyConstraint("id", name=op.f("pk_outbox")),
    sa.UniqueConstraint("key", name=op.f("uq_outbox_key"))
    )
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_outbox_message_pk"), ["message_pk"], unique=False)
        batch_op.create_index("ix_outbox_state_due", ["state", "next_attempt_at"], unique=False)

    op.create_table("suppressions",
    sa.Column("address", sa.String(length=320), nullable=False),
    sa.Column("reason", sa.String(length=32), nullable=False),
    sa.Column("detail", sa.Text(), nullable=True),
    sa.Column("message_pk", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(["message_pk"], ["messages.id"], name=op.f("fk_suppressions_message_pk_messages")),
    sa.PrimaryKeyConstraint("address", name=op.f("pk_suppressions"))
    )
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.add_column(sa.Column("route_state", sa.String(length=16), nullable=False, server_default="none"))
        batch_op.add_column(sa.Column("route_folder", sa.String(length=512), nullable=True))
        batch_op.add_column(sa.Column("route_keywords", sa.Text(), nullable=True))
        batch_op.create_index("ix_deliveries_route", ["folder_id", "route_state"], unique=False)

    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.add_column(sa.Column("automated", sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column("automated_reason", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("department", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("urgency", sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column("department_confidence", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("urgency_confidence", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("triage", sa.Boolean(), nullable=True))
        batch_op.add_column(sa.Column("route_reason", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("reply_decision", sa.Text(), nullable=True))

    


def downgrade() -> None:
    
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.drop_column("reply_decision")
        batch_op.drop_column("route_reason")
        batch_op.drop_column("triage")
        batch_op.drop_column("urgency_confidence")
        batch_op.drop_column("department_confidence")
        batch_op.drop_column("urgency")
        batch_op.drop_column("department")
        batch_op.drop_column("automated_reason")
        batch_op.drop_column("automated")

    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.drop_column("route_keywords")
        batch_op.drop_column("route_folder")
        batch_op.drop_index("ix_deliveries_route")
        batch_op.drop_column("route_state")

    op.drop_table("suppressions")
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.drop_index("ix_outbox_state_due")
        batch_op.drop_index(batch_op.f("ix_outbox_message_pk"))

    op.drop_table("outbox")
    with op.batch_alter_table("faq_offers", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_faq_offers_offered_at"))
        batch_op.drop_index(batch_op.f("ix_faq_offers_entry"))

    op.drop_table("faq_offers")
    with op.batch_alter_table("corrections", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_corrections_message_pk"))
        batch_op.drop_index(batch_op.f("ix_corrections_created_at"))

    op.drop_table("corrections")
    with op.batch_alter_table("bounces", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_bounces_recipient"))
        batch_op.drop_index(batch_op.f("ix_bounces_original_message_id"))
        batch_op.drop_index(batch_op.f("ix_bounces_message_pk"))

    op.drop_table("bounces")
    op.drop_table("reply_limits")
    op.drop_table("instance_keys")
    
