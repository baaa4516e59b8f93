"""What the console's unit tests share."""

from __future__ import annotations

import re

from fastapi.testclient import TestClient

ADMIN = {"X-Project-Id": "ops", "X-Roles": "admin"}


def node(html: str, resource_id: str) -> str:
    """The part of the resources page about one resource (up to the next)."""
    start = html.index(f'id="r-{resource_id}"')
    end = html.find('id="r-', start + 1)
    return html[start : end if end != -1 else len(html)]


def form_token(client: TestClient, headers: dict[str, str] | None = None) -> str:
    """The token the console's forms carry for this caller."""
    page = client.get("/console/tasks", headers=headers or {}).text
    found = re.search(r'<meta name="form-token" content="([0-9a-f]+)">', page)
    assert found, page
    return found.group(1)
