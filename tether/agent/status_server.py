"""The agent's own small HTTP endpoint: ``/metrics``, ``/healthz``, ``/readyz``.

Served on ``[agent] metrics_port`` (off when 0). ``/readyz`` is 200 when the
agent is connected to the broker and taking work (not disabled).
"""

from __future__ import annotations

import http.server
import json
import logging
import threading
from collections.abc import Callable
from typing import Any

import prometheus_client

LOG = logging.getLogger(__name__)


class StatusServer:
    def __init__(self, host: str, port: int, problems: Callable[[], list[str]]) -> None:
        check = problems

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path == "/metrics":
                    self._send(
                        200, prometheus_client.generate_latest(), prometheus_client.CONTENT_TYPE_LATEST
                    )
                elif self.path == "/healthz":
                    self._json(200, {"status": "alive"})
                elif self.path == "/readyz":
                    found = check()
                    self._json(
                        503 if found else 200,
                        {"status": "not ready" if found else "ready", "problems": found},
                    )
                else:
                    self._json(
                        404, {"error": f"no such endpoint {self.path}; try /metrics, /healthz, /readyz"}
                    )

            def _json(self, status: int, body: dict[str, Any]) -> None:
                self._send(status, json.dumps(body).encode(), "application/json")

            def _send(self, status: int, body: bytes, content_type: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass  # probes every few seconds would drown the log

        self.server = http.server.ThreadingHTTPServer((host, port), Handler)
        self.server.daemon_threads = True
        self._thread = threading.Thread(target=self.server.serve_forever, name="status-server", daemon=True)

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def start(self) -> None:
        self._thread.start()
        LOG.info("metrics and health on http://%s:%d/metrics", *self.server.server_address[:2])

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
