"""Logging for tether daemons.

Every line carries the request id of the API call it serves, so one grep
follows a request from the plugin's API through the broker to the agent and
its driver. The id travels in a context variable inside a process and in the
message between processes.
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime
import json
import logging
import sys
import time
from collections.abc import Iterator
from typing import Any

from oslo_config import cfg

LOG_OPTS: list[cfg.Opt] = [
    cfg.BoolOpt("debug", default=False, help="Log at DEBUG level instead of INFO."),
    cfg.StrOpt(
        "log_format",
        default="text",
        choices=[
            ("text", "one human-readable line per record"),
            ("json", "one JSON object per line, for log shippers"),
        ],
        help="How log records are written.",
    ),
    cfg.StrOpt(
        "log_file",
        help="File to append log lines to; standard error when unset (what systemd "
        "and container runtimes collect).",
    ),
]

FORMAT = "%(asctime)s %(process)d %(levelname)s %(name)s [%(request_id)s] %(message)s"

_request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")


def current_request_id() -> str:
    return _request_id.get()


@contextlib.contextmanager
def request_context(request_id: str | None) -> Iterator[None]:
    token = _request_id.set(request_id or "-")
    try:
        yield
    finally:
        _request_id.reset(token)


def install_record_factory() -> None:
    """Stamp every log record with the request id current where it is made.

    Stamping at creation, not in a handler, keeps the id right when a record
    is handled later or elsewhere (queue handlers, test capture).
    """
    factory = logging.getLogRecordFactory()
    if getattr(factory, "tether", False):
        return

    def make_record(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = factory(*args, **kwargs)
        record.request_id = _request_id.get()
        return record

    make_record.tether = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(make_record)


class TextFormatter(logging.Formatter):
    """:data:`FORMAT`, the time's text made once a second: a daemon under load
    writes hundreds of lines a second, and ``strftime`` was a tenth of an
    agent's logging."""

    _cached: tuple[int, str] = (-1, "")

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        second = int(record.created)
        cached_second, text = self._cached
        if second != cached_second:
            text = time.strftime("%Y-%m-%d %H:%M:%S", self.converter(second))
            self._cached = (second, text)  # one assignment: threads see a whole pair
        return f"{text},{int(record.msecs):03d}"


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message, request id,
    process, and the traceback when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.datetime.fromtimestamp(record.created, datetime.UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", "-"),
            "pid": record.process,
        }
        if record.exc_info:
            entry["traceback"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def setup(conf: cfg.ConfigOpts) -> None:
    handler: logging.Handler
    if conf.log_file:
        handler = logging.FileHandler(conf.log_file)
    else:
        handler = logging.StreamHandler(sys.stderr)
    if conf.log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(TextFormatter(FORMAT, defaults={"request_id": "-"}))
    install_record_factory()
    # Nothing tether writes names a thread, a source line or a multiprocessing
    # process name; finding them took a sixth of each line's cost, and the
    # daemons write a line per task change (the logging HOWTO's own advice).
    logging._srcfile = None  # noqa: SLF001
    logging.logThreads = False
    logging.logMultiprocessing = False
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if conf.debug else logging.INFO)
    # Library chatter at INFO drowns the lines an operator needs.
    for noisy in ("amqp", "kombu", "uvicorn.access", "alembic.runtime.migration"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
