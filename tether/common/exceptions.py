"""The exception root of tether.

Every error tether raises on purpose derives from :class:`TetherError`, which
carries a message template and the HTTP status the REST layer answers with
(the module that defines each is named where it is not this one)::

    TetherError
    ├── InvalidInput (400)
    │   └── UnsupportedByProvider (plugin.agents.capabilities: no live driver of the provider can do it)
    ├── Unauthorized (401)
    ├── Forbidden (403)
    ├── NotFound (404)
    ├── Conflict (409)
    ├── AnsweredMeanwhile (409, plugin.api.idempotency: a request with the same key committed meanwhile)
    ├── PayloadTooLarge (413)
    ├── KeyReused (422, plugin.api.idempotency: an Idempotency-Key sent with another request)
    ├── TooManyRequests (429, plugin.tasks.throttle: a project over its rate limit)
    ├── ServiceUnavailable (503)
    ├── Backlogged (503, plugin.tasks.throttle: a provider with too many tasks waiting)
    ├── DatabaseError (500, plugin.db.exceptions: a statement the database refused, translated at the engine)
    │   ├── DatabaseUnavailable (503, also a ServiceUnavailable: locked, busy or unreachable)
    │   └── DuplicateEntry (409, also a Conflict: a unique or foreign key violated by a concurrent writer)
    ├── ConfigError (stops a daemon at start)
    ├── TransportError (503: the broker could not be reached or refused)
    │   └── PublishNotConfirmed
    │       └── Unroutable (common.publisher: the broker routed a message to no queue)
    ├── _EncryptedKey (common.tls: a TLS key with a passphrase no option gives)
    ├── MalformedMessage (a message that cannot be decoded or validated)
    ├── StaleClaim (plugin.db.attempts: a task changed under its lock, a bug in the locking)
    ├── Refused (plugin.outbound.egress: a callback URL that may not be called)
    ├── ClaimFailed (agent.plugin_api: the plugin answered a claim with an error)
    ├── ClaimTimeout (agent.claims, also a TimeoutError: no answer to a claim in time)
    ├── Stopping (agent.plugin_api: the agent stopped before the plugin answered a claim)
    ├── ApiError (cli.client: the API's error answer, as the CLI prints it)
    └── DriverError (drivers.base: what a driver tells the framework)
        ├── DeviceUnreachable       retryable
        ├── DeviceBusy              retryable
        ├── InvalidConfiguration
        ├── NotSupported
        ├── DriverBug               (drivers.reporting) a driver raised something else
        ├── DriverTimeout           (agent.runner) retryable: a call or operation overran
        ├── StepNotRecorded         (agent.steps) retryable: the plugin could not record a step
        ├── StepRefused             (agent.steps) the plugin refused a step's report
        ├── FencedOff               (agent.steps) another attempt took the task over
        ├── StepsFailed             (agent.steps) a step failed for good; its type is that step's error's
        └── CascadeStopped          (agent.cascade) a resource of a cascade delete failed; its error's type
            └── CascadeInterrupted  retryable: the retry goes on from that resource

Third-party errors (kombu, SQLAlchemy, jsonschema, vendor SDKs) are re-raised
as one of these where they enter tether, with ``raise ... from exc``.
"""

from __future__ import annotations

import string
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

#: What a template field nobody filled reads as.
UNSAID = "no detail given"


class _Lenient(string.Formatter):
    """Fills a message template from whatever its raiser gave.

    ``raise DeviceUnreachable`` with nothing to say is natural Python, and so
    is a vendor's template with fields of its own: a field left out reads
    "no detail given", and a value its format spec does not fit (``{rate:g}``
    given text) is shown as text, because an error whose construction raises
    is lost behind the one it raised instead.
    """

    def get_value(self, key: int | str, args: Sequence[Any], kwargs: Mapping[str, Any]) -> Any:
        return kwargs.get(key, UNSAID) if isinstance(key, str) else UNSAID

    def get_field(self, field_name: str, args: Sequence[Any], kwargs: Mapping[str, Any]) -> Any:
        try:
            return super().get_field(field_name, args, kwargs)
        except (AttributeError, IndexError, KeyError, TypeError):
            return UNSAID, field_name

    def format_field(self, value: Any, format_spec: str) -> str:
        try:
            formatted: str = super().format_field(value, format_spec)
        except (TypeError, ValueError):
            return str(value)
        return formatted


_LENIENT = _Lenient()


def fill(template: str, fields: Mapping[str, Any]) -> str:
    """``template`` filled from ``fields``; never raises (a template that is
    not one, with an unmatched brace, reads as written)."""
    try:
        return _LENIENT.vformat(template, (), fields)
    except (ValueError, TypeError, KeyError, IndexError, AttributeError):
        return template


def as_message(value: object) -> str | None:
    """A message as given: its text (an exception's too), or None when it says nothing."""
    if value is None:
        return None
    said = value if isinstance(value, str) else str(value)
    return said if said.strip() else None


class TetherError(Exception):
    """The root of tether's errors.

    Subclasses set ``message`` (a ``str.format`` template filled from the
    keyword arguments) and ``status`` (the HTTP status of the REST answer).

    :param message: the message, in place of the template; anything whose
        ``str()`` is one (an exception) will do. Blank or None: the template
        is filled instead.
    """

    message: ClassVar[str] = "An unknown error occurred."
    status: ClassVar[int] = 500

    def __init__(self, message: object = None, **kwargs: Any) -> None:
        self.kwargs = kwargs
        self.msg = as_message(message) or fill(self.message, kwargs)
        super().__init__(self.msg)

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
