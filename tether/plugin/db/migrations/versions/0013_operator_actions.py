"""What operators asked for by hand, who asked and why.

Revision ID: 0013
Revises: 0012
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "operator_actions",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("target_type", sa.String(64), nullable=False),
        sa.Column("target_id", sa.String(255), nullable=True),
        sa.Column("task_id", sa.String(36), nullable=True),
        sa.Column("project_id", sa.String(255), nullable=False),
        sa.Column("roles", sa.JSON(), nullable=False),
        sa.Column("request_id", sa.String(64), nullable=True),
        sa.Column("reason", sa.String(255), nullable=True),
        sa.Column("outcome", sa.JSON(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
    )
    op.create_index("ix_operator_actions_task_id", "operator_actions", ["task_id"])
    op.create_index("ix_operator_actions_target", "operator_actions", ["target_type", "target_id"])


def downgrade() -> None:
    op.drop_index("ix_operator_actions_target", table_name="operator_actions")
    op.drop_index("ix_operator_actions_task_id", table_name="operator_actions")
    op.drop_table("operator_actions")
