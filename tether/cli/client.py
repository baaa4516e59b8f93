"""A small HTTP client of the tether API, on the standard library."""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from tether.common.exceptions import TetherError


class ApiError(TetherError):
    """An error answer of the API, with the message it gave."""

    def __init__(self, http_status: int, message: str, request_id: str | None = None) -> None:
        super().__init__(message + (f" (request {request_id})" if request_id else ""))
        #: the answer's status; 0 when the API could not be reached
        self.http_status = http_status
        self.request_id = request_id


class Client:
    def __init__(
        self,
        url: str,
        token: str | None = None,
        project: str | None = None,
        roles: str | None = None,
        timeout: float = 90.0,
    ) -> None:
        self.url = url.rstrip("/")
        self.headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if token:
            self.headers["X-Auth-Token"] = token
        if project:
            self.headers["X-Project-Id"] = project
        if roles:
            self.headers["X-Roles"] = roles
        self.timeout = timeout

    def get(self, path: str, **params: Any) -> Any:
        query = {k: v for k, v in params.items() if v is not None}
        suffix = f"?{urllib.parse.urlencode(query)}" if query else ""
        return self.request("GET", path + suffix)

    def request(self, method: str, path: str, body: Any = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.url + path, data=data, method=method, headers=self.headers)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                raw = response.read()
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            try:
                error = json.loads(raw)["error"]
                raise ApiError(exc.code, error["message"], error.get("request_id")) from None
            except (ValueError, KeyError, TypeError):
                raise ApiError(exc.code, raw.decode(errors="replace") or exc.reason) from None
        except urllib.error.URLError as exc:
            raise ApiError(0, f"cannot reach the tether API at {self.url}: {exc.reason}") from None
        return json.loads(raw) if raw else None


def api(command: Any) -> Client:
    """The API client of the app running a cliff ``command`` (made by the
    app's ``initialize_app`` before any command runs)."""
    client = command.app.client
    assert isinstance(client, Client), "the app makes its client before any command runs"
    return client
