"""Every way a driver raises an SDK error, and what the conformance kit
(:mod:`tether.drivers.testing`) checks of each: that the agent reports it
as :mod:`tether.drivers.reporting` says, whatever the form.

A form is a way of writing the ``raise``: bare, with a message, with a
message for the user and one for the operator (by position, by tether's
keywords or by octavia-lib's), or with the fields of the class's
``message`` template. For each, the error must be built without raising
(else the agent fails the task as ``DriverBug``), be retried exactly when
its class is retryable, show the API a message a person can read, and keep
its operator message out of the API and in the agent's log.
"""

from __future__ import annotations

import dataclasses
import string
from collections.abc import Callable, Iterable, Iterator

from tether.drivers.base import (
    DeviceBusy,
    DeviceUnreachable,
    Driver,
    DriverError,
    InvalidConfiguration,
    NotSupported,
)
from tether.drivers.reporting import as_driver_error, logged, reported

SDK_ERRORS: tuple[type[DriverError], ...] = (
    DriverError,
    DeviceUnreachable,
    DeviceBusy,
    InvalidConfiguration,
    NotSupported,
)
#: What the forms say to the API user, and what they say to the operator only.
USER = "The VIP 203.0.113.10 is taken; choose another address."
OPERATOR = "device 10.0.0.5 answered ERR 409 vip-in-use (job 7781)"


@dataclasses.dataclass(frozen=True)
class Form:
    """One way of raising ``cls``.

    :ivar written: how a driver writes it, for the kit's messages.
    :ivar user: what the API must show verbatim; None when the class's
        template says it.
    :ivar operator: what must reach the agent's log and never the API.
    :ivar shows: texts the API message must contain (template fields given).
    """

    written: str
    raise_it: Callable[[], None]
    user: str | None = None
    operator: str | None = None
    shows: tuple[str, ...] = ()


def forms(cls: type[DriverError]) -> Iterator[Form]:
    """Each way a driver may raise ``cls``."""
    name = cls.__name__

    def raising(*args: object, **kwargs: object) -> Callable[[], None]:
        def raise_it() -> None:
            raise cls(*args, **kwargs)

        return raise_it

    def bare() -> None:
        raise cls

    yield Form(f"raise {name}", bare)
    yield Form(f"raise {name}()", raising())
    yield Form(f"raise {name}(message)", raising(USER), USER)
    yield Form(f"raise {name}(user_message, operator_message)", raising(USER, OPERATOR), USER, OPERATOR)
    yield Form(
        f"raise {name}(user_message=..., operator_message=...)",
        raising(user_message=USER, operator_message=OPERATOR),
        USER,
        OPERATOR,
    )
    yield Form(
        f"raise {name}(user_fault_string=..., operator_fault_string=...)",
        raising(user_fault_string=USER, operator_fault_string=OPERATOR),
        USER,
        OPERATOR,
    )
    yield Form(f"raise {name}(operator_message=...)", raising(operator_message=OPERATOR), None, OPERATOR)
    fields = {field: f"<{field} given>" for field in template_fields(cls.message)}
    if fields:
        written = ", ".join(f"{field}=..." for field in fields)
        yield Form(f"raise {name}({written})", raising(**fields), shows=tuple(fields.values()))


def template_fields(template: str) -> list[str]:
    """The keyword fields a ``message`` template shows as given, in order
    (not ``{vip.id}``: a driver fills that with an object of its own)."""
    try:
        parsed = [field for _, field, _, _ in string.Formatter().parse(template) if field]
    except ValueError:
        return []  # not a template: it reads as written
    return list(dict.fromkeys(field for field in parsed if field.isidentifier()))


def error_classes(
    driver_class: type[Driver], also: Iterable[type[DriverError]] = ()
) -> list[type[DriverError]]:
    """The SDK's errors, those of the driver's own package and ``also``, each
    once: those that keep the SDK's constructor (one with its own
    ``__init__`` chose its own ways of being raised; the driver's failure
    cases check those)."""
    module = driver_class.__module__
    package = module.rpartition(".")[0] or module
    own = [
        cls
        for cls in _subclasses(DriverError)
        if cls.__module__ == package or cls.__module__.startswith(f"{package}.")
    ]
    found = dict.fromkeys([*SDK_ERRORS, *own, *also])
    return [cls for cls in found if cls.__init__ is DriverError.__init__]


def misreported(classes: Iterable[type[DriverError]], provider: str) -> list[str]:
    """What the agent would report otherwise than each class and form says."""
    wrong: list[str] = []
    for cls in classes:
        for form in forms(cls):
            wrong.extend(f"{form.written}: {problem}" for problem in _problems(cls, form, provider))
    bug = as_driver_error(RuntimeError(OPERATOR), provider)
    if reported(bug).type != "DriverBug" or reported(bug).retryable:
        wrong.append(
            f"raise RuntimeError(...): reported as {reported(bug).type}, not a DriverBug failing at once"
        )
    return wrong


def misreported_failure(exc: Exception, expected: type[DriverError], provider: str) -> str | None:
    """What is wrong with how the agent would report ``exc``, raised where
    the driver's failure case expects ``expected``; None when nothing is."""
    error = as_driver_error(exc, provider)
    if not isinstance(exc, DriverError):
        return (
            f"raised {type(exc).__name__} ({exc}), which the agent reports as {error.type}: raise "
            f"{expected.__name__} from it instead"
        )
    if not isinstance(exc, expected):
        return f"raised {exc.type}, expected {expected.__name__}"
    answer = reported(error)
    if answer.retryable != bool(expected.retryable):
        expected_fate = _fate(expected.retryable)
        return f"{exc.type} would be {_fate(answer.retryable)}, but {expected.__name__} is {expected_fate}"
    if not answer.message.strip():
        return "a failure needs a message the API user can act on"
    return None


def _problems(cls: type[DriverError], form: Form, provider: str) -> Iterator[str]:
    try:
        form.raise_it()
    except Exception as exc:  # noqa: BLE001 - whatever it is, the agent catches it too
        raised: Exception = exc
    else:
        yield "raised nothing"
        return
    if not isinstance(raised, cls):
        yield (
            f"building it raised {type(raised).__name__} ({raised}), which the agent reports as "
            f"{as_driver_error(raised, provider).type}"
        )
        return
    answer = reported(as_driver_error(raised, provider))
    if answer.retryable != bool(cls.retryable):
        yield f"would be {_fate(answer.retryable)}, but {cls.__name__} is {_fate(cls.retryable)}"
    if not answer.message.strip():
        yield "the API would show an empty message"
    if form.user is not None and answer.message != form.user:
        yield f"the API would show {answer.message!r}, not the user message {form.user!r}"
    for shown in form.shows:
        if shown not in answer.message:
            yield f"the API message {answer.message!r} lacks the field given as {shown!r}"
    if form.operator is not None:
        if form.operator in answer.message:
            yield f"the operator message reaches the API: {answer.message!r}"
        if form.operator not in logged(raised):
            yield f"the operator message is missing from the agent's log line: {logged(raised)!r}"


def _fate(retryable: bool) -> str:
    return "retried" if retryable else "failed at once"


def _subclasses(cls: type[DriverError]) -> Iterator[type[DriverError]]:
    for sub in cls.__subclasses__():
        yield sub
        yield from _subclasses(sub)
