"""What the drift audit found: on each resource, and on each agent's device;
and which providers each agent audits.

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("resources", schema=None) as batch_op:
        batch_op.add_column(sa.Column("drift", sa.JSON(), nullable=True))
    with op.batch_alter_table("agents", schema=None) as batch_op:
        batch_op.add_column(sa.Column("undesired", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("audits", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("agents", schema=None) as batch_op:
        batch_op.drop_column("audits")
        batch_op.drop_column("undesired")
    with op.batch_alter_table("resources", schema=None) as batch_op:
        batch_op.drop_column("drift")
