"""A new root's create, built as plain rows, leaves what the ORM path leaves."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import msgspec
import sqlalchemy as sa
from fastapi.testclient import TestClient

from tether.common import wire
from tether.plugin.service import Plugin

#: Columns that differ between any two creates.
_OWN = {"id", "resource_id", "root_id", "task_id", "created_at", "updated_at", "queued_at", "pending_at"}
_OWN |= {"deadline", "request_id"}


def _rows(plugin: Plugin, body: dict[str, Any]) -> dict[str, Any]:
    with plugin.engine.connect() as conn:
        resource = conn.execute(sa.text("SELECT * FROM resources WHERE id = :id"), body).mappings().one()
        task = conn.execute(sa.text("SELECT * FROM tasks WHERE resource_id = :id"), body).mappings().one()
        outbox = (
            conn.execute(sa.text("SELECT * FROM outbox WHERE task_id = :id"), {"id": task["id"]})
            .mappings()
            .one()
        )
    work = wire.decode_work(outbox["payload"].encode())
    assert work.task.id == task["id"] and work.resource.id == work.tree.id == resource["id"]
    assert all(task[k] for k in ("pending_at", "queued_at", "deadline", "updated_at"))
    return {
        "resource": _mine(resource) | {"attributes": json.loads(resource["attributes"])},
        "task": _mine(task) | {"desired": json.loads(task["desired"])},
        "outbox": _mine(outbox) | {"payload": "compared below"},
        "work": _mine(msgspec.to_builtins(work.task)),
        "work resource": _mine(msgspec.to_builtins(work.resource)),
    }


def _mine(row: Any) -> dict[str, Any]:
    return {k: v for k, v in dict(row).items() if k not in _OWN}


def test_a_new_root_on_the_bulk_path_leaves_the_rows_and_message_of_the_orm_path(
    client: TestClient, plugin: Plugin
) -> None:
    body = {"provider": "noop", "name": "ünïcode", "description": "x" * 50}
    bulk = client.post("/v1/loadbalancers", json=body)
    # An Idempotency-Key writes rows of its own, so it takes the ORM path.
    orm_ = client.post("/v1/loadbalancers", json=body, headers={"Idempotency-Key": "one"})
    assert bulk.status_code == orm_.status_code == 202, (bulk.text, orm_.text)
    assert _rows(plugin, bulk.json()) == _rows(plugin, orm_.json())
    mine = {k: v for k, v in bulk.json().items() if k not in {"id", "task", "created_at", "updated_at"}}
    theirs = {k: v for k, v in orm_.json().items() if k not in {"id", "task", "created_at", "updated_at"}}
    assert mine == theirs
    assert bulk.json()["task"]["state"] == orm_.json()["task"]["state"] == "PENDING"


def test_resources_and_tasks_get_ids_in_the_order_they_were_made(client: TestClient) -> None:
    # Time-ordered ids keep a batch's rows together in every index on them.
    made = []
    for i in range(4):
        # An Idempotency-Key takes the ORM path; none, the bulk one.
        headers = {"Idempotency-Key": f"key-{i}"} if i % 2 else {}
        response = client.post("/v1/loadbalancers", json={"provider": "noop"}, headers=headers)
        assert response.status_code == 202, response.text
        made.append(response.json())
        time.sleep(0.002)  # a new millisecond: within one, RFC 9562 orders by a counter
    for ids in ([lb["id"] for lb in made], [lb["task"]["id"] for lb in made]):
        assert all(uuid.UUID(i).version == 7 for i in ids), ids
        assert ids == sorted(ids), ids
    listener = client.post(
        "/v1/listeners", json={"loadbalancer_id": made[-1]["id"], "protocol": "HTTP", "protocol_port": 80}
    )
    assert listener.status_code == 202, listener.text
    assert made[-1]["id"] < listener.json()["id"]
