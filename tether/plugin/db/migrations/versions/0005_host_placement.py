"""Host placement: the agent a root is bound to; driver counters.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("resources", schema=None) as batch_op:
        batch_op.add_column(sa.Column("agent_id", sa.String(length=255), nullable=True))
        batch_op.add_column(sa.Column("stats", sa.JSON(), nullable=True))
        batch_op.create_index("ix_resources_agent_id", ["agent_id"], unique=False)
