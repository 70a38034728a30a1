"""Routes made again after a correction: where the message is now, keywords to take off

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-23 07:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.add_column(sa.Column("route_from", sa.String(length=512), nullable=True))
        batch_op.add_column(sa.Column("route_drop", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.drop_column("route_drop")
        batch_op.drop_column("route_from")
