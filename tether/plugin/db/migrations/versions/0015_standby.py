"""Active-standby placement: a root's standby agent and the tree it holds;
the address each agent's drivers are reached at by their peers.

Revision ID: 0015
Revises: 0014
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("resources", schema=None) as batch_op:
        batch_op.add_column(sa.Column("standby_agent_id", sa.String(length=255), nullable=True))
        batch_op.add_column(sa.Column("standby_digest", sa.String(length=64), nullable=True))
        batch_op.create_index("ix_resources_standby_agent_id", ["standby_agent_id"], unique=False)
    with op.batch_alter_table("agents", schema=None) as batch_op:
        batch_op.add_column(sa.Column("addresses", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("agents", schema=None) as batch_op:
        batch_op.drop_column("addresses")
    with op.batch_alter_table("resources", schema=None) as batch_op:
        batch_op.drop_index("ix_resources_standby_agent_id")
        batch_op.drop_column("standby_digest")
        batch_op.drop_column("standby_agent_id")
