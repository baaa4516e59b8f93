"""What becomes of an exception a driver raises.

The agent reports every failure through these, and the conformance kit
(:mod:`tether.drivers.testing`) checks a driver against the same ones, so
what the kit passes is what the agent does:

* a :class:`~tether.drivers.base.DriverError` is reported as itself: its
  type, its user message (the task's ``error.message`` and the resource's
  ``last_error``) and whether its class is retryable (the plugin retries it
  with backoff up to ``[plugin] max_attempts``, or fails the task at once);
* anything else becomes a :class:`DriverBug`, never retried, its traceback
  in the agent's log;
* the operator message goes to the agent's log line only, never into what
  the plugin records.
"""

from __future__ import annotations

from tether.common import messages
from tether.drivers.base import DriverError


class DriverBug(DriverError):
    """A driver raised something other than a DriverError."""


def as_driver_error(exc: Exception, provider: str) -> DriverError:
    """``exc`` as the agent reports it: itself, or the driver bug it is."""
    if isinstance(exc, DriverError):
        return exc
    # The exception's text stays in the agent's log: it may name what an API
    # client should not see (management addresses, credentials in a URL).
    return DriverBug(
        f"The {provider} driver failed unexpectedly ({type(exc).__name__}); the agent's log has the details.",
        f"The {provider} driver failed unexpectedly ({type(exc).__name__}: {exc}).",
    )


def reported(error: DriverError) -> messages.ReportedError:
    """What a task's result carries of ``error``: nothing of its operator message."""
    return messages.ReportedError(
        type=error.type, message=error.user_message, retryable=bool(error.retryable)
    )


def logged(error: DriverError) -> str:
    """What the agent's log says of ``error``: its user message, and its
    operator message where that says something else."""
    if error.operator_message == error.user_message:
        return error.user_message
    return f"{error.user_message} (operator detail: {error.operator_message})"
