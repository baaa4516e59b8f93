"""The console's actions are requests to this plugin's own API.

A form posts to the console; the console sends the same request the CLI
would, with the signed-in caller's credentials, to the API application in
the same process (an ASGI call, no socket). So an action is checked,
validated, logged and recorded exactly as through the API, under the same
policy rule, and answers with the API's own error when refused; the
console holds no second copy of any action's rules, and the browser never
holds a token a script could read.
"""

from __future__ import annotations

import dataclasses
import json
import urllib.parse
from typing import Any

import fastapi
from starlette.types import Message

from tether.plugin.api.console.caller import credentials


@dataclasses.dataclass(frozen=True)
class Answer:
    status: int
    body: Any

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    @property
    def message(self) -> str:
        """What the API said went wrong, for a person."""
        if isinstance(self.body, dict) and isinstance(self.body.get("error"), dict):
            return str(self.body["error"].get("message", ""))
        if isinstance(self.body, dict) and "detail" in self.body:
            return str(self.body["detail"])
        return f"the API answered {self.status}"


async def call(request: fastapi.Request, method: str, path: str, body: Any = None) -> Answer:
    """``method path`` on this plugin's API as the console's caller.

    :param path: URL-encoded, without a query.
    """
    payload = b"" if body is None else json.dumps(body).encode()
    headers = [(k.encode(), v.encode()) for k, v in credentials(request).items()]
    headers += [
        (b"host", request.headers.get("host", "localhost").encode()),
        (b"content-type", b"application/json"),
        (b"content-length", str(len(payload)).encode()),
        # The console request's id: one id on both requests' log lines.
        (b"x-request-id", str(request.state.request_id).encode()),
    ]
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": request.url.scheme,
        "path": urllib.parse.unquote(path),
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": request.scope.get("client"),
        "server": request.scope.get("server"),
    }
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": payload, "more_body": False}

    status, chunks = 500, []

    async def send(message: Message) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))

    await request.app(scope, receive, send)
    raw = b"".join(chunks)
    try:
        answer = json.loads(raw) if raw else None
    except ValueError:
        answer = raw.decode(errors="replace")
    return Answer(status, answer)
