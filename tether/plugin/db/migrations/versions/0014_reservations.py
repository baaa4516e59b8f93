"""Reservations: keys one resource holds alone (a load balancer's VIP address
and port), released with the resource.

The listeners that exist already reserve their VIP address and port here, the
oldest first; where two already share one, the younger is logged to be moved
by hand (it keeps working as before, unreserved).

Revision ID: 0014
Revises: 0013
"""

from __future__ import annotations

import ipaddress
import json
import logging
from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

LOG = logging.getLogger("alembic.runtime.migration")


def upgrade() -> None:
    op.create_table(
        "reservations",
        sa.Column("key", sa.String(length=255), nullable=False),
        sa.Column("resource_id", sa.String(length=36), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["resource_id"], ["resources.id"], name="fk_reservations_resource_id", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("key"),
    )
    op.create_index("ix_reservations_resource_id", "reservations", ["resource_id"], unique=False)
    _reserve_existing_listeners()


def downgrade() -> None:
    op.drop_index("ix_reservations_resource_id", table_name="reservations")
    op.drop_table("reservations")


def _reserve_existing_listeners() -> None:
    """The key format is ``tether.plugin.lbaas.vips.endpoint_key``'s, written
    out: a migration must not change with the code that follows it."""
    bind = op.get_bind()
    rows = bind.execute(
        sa.text(
            "SELECT id, type, parent_id, attributes, created_at FROM resources "
            "WHERE type IN ('loadbalancer', 'listener') ORDER BY created_at, id"
        )
    ).all()
    vips = {row.id: _json(row.attributes).get("vip_address") for row in rows if row.type == "loadbalancer"}
    taken: set[str] = set()
    for row in rows:
        if row.type != "listener" or row.parent_id not in vips:
            continue
        port = _json(row.attributes).get("protocol_port")
        transport = "udp" if _json(row.attributes).get("protocol") == "UDP" else "tcp"
        key = f"vip {_address(vips[row.parent_id])} {transport} {port}"
        if key in taken:
            LOG.warning(
                "listener %s serves %s, which an older listener already serves; move it to "
                "another protocol_port or load balancer",
                row.id,
                key,
            )
            continue
        taken.add(key)
        bind.execute(
            sa.text("INSERT INTO reservations (key, resource_id, created_at) VALUES (:key, :id, :at)"),
            {"key": key, "id": row.id, "at": row.created_at},
        )


def _json(value: Any) -> dict[str, Any]:
    loaded = json.loads(value) if isinstance(value, str) else value
    return loaded if isinstance(loaded, dict) else {}


def _address(vip: Any) -> str:
    if not vip:
        return "*"
    address = ipaddress.ip_address(vip)
    return "*" if address.is_unspecified else str(address)
