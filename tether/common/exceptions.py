"""The exception root of tether.

Every error tether raises on purpose derives from :class:`TetherError`, which
carries a message template and the HTTP status the REST layer answers with::

    TetherError
    ├── InvalidInput (400)
    ├── Unauthorized (401)
    ├── Forbidden (403)
    ├── NotFound (404)
    ├── Conflict (409)
    ├── PayloadTooLarge (413)
    ├── ServiceUnavailable (503)
    ├── ConfigError (stops a daemon at start)
    ├── TransportError (the broker could not be reached or refused)
    │   └── PublishNotConfirmed
    ├── MalformedMessage (a message that cannot be decoded or validated)
    └── DriverError (tether.drivers.base: what a driver tells the framework)

Third-party errors (kombu, SQLAlchemy, jsonschema, vendor SDKs) are re-raised
as one of these where they enter tether, with ``raise ... from exc``.
"""

from __future__ import annotations

from typing import Any, ClassVar


class _Unsaid(dict[str, Any]):
    def __missing__(self, key: str) -> str:
        return "no detail given"


class TetherError(Exception):
    """The root of tether's errors.

    Subclasses set ``message`` (a ``str.format`` template filled from the
    keyword arguments) and ``status`` (the HTTP status of the REST answer).
    """

    message: ClassVar[str] = "An unknown error occurred."
    status: ClassVar[int] = 500

    def __init__(self, message: str | None = None, **kwargs: Any) -> None:
        self.kwargs = kwargs
        if message is None:
            # ``raise DeviceUnreachable`` with nothing to say is natural Python:
            # a template's missing fields read as such instead of a KeyError.
            message = self.message.format_map(_Unsaid(kwargs))
        self.msg = message
        super().__init__(message)

    @property
    def type(self) -> str:
        return type(self).__name__


class InvalidInput(TetherError):
    message = "Invalid input: {reason}"
    status = 400


class Unauthorized(TetherError):
    message = "Not authenticated: {reason}."
    status = 401


class Forbidden(TetherError):
    message = "{action} is not allowed: {reason}."
    status = 403


class NotFound(TetherError):
    message = "{kind} {id} was not found."
    status = 404


class Conflict(TetherError):
    message = "{reason}"
    status = 409


class PayloadTooLarge(TetherError):
    message = "The request body is larger than {limit} bytes; send less."
    status = 413


class ServiceUnavailable(TetherError):
    message = "{reason}"
    status = 503


class ConfigError(TetherError):
    message = "Invalid configuration: {reason}"


class TransportError(TetherError):
    message = "The message broker failed: {reason}"
    status = 503


class PublishNotConfirmed(TransportError):
    message = "The broker did not confirm {count} message(s): {reason}"


class MalformedMessage(TetherError):
    message = "Malformed message: {reason}"
