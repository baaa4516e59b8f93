"""The SDK's exceptions raised any way a vendor raises them."""

from __future__ import annotations

import pytest

from tether.common import exceptions
from tether.common.exceptions import TetherError
from tether.drivers import raising
from tether.drivers.base import (
    DeviceBusy,
    DeviceUnreachable,
    DriverError,
    InvalidConfiguration,
    NotSupported,
)
from tether.plugin.tasks.throttle import TooManyRequests


class VipInUse(InvalidConfiguration):
    """A vendor's own error, with a template of its own fields."""

    message = "VIP {vip} is in use on {device}."


class RateLimited(DeviceUnreachable):
    """A vendor's own retryable error whose field has a format spec."""

    message = "The appliance API is rate limited for {seconds:g} s."


class ApplianceLocked(DeviceBusy):
    """A vendor's own error that changes nothing but its name."""


CLASSES = [DriverError, DeviceUnreachable, DeviceBusy, InvalidConfiguration, NotSupported]
VENDOR_CLASSES = [VipInUse, RateLimited, ApplianceLocked]


@pytest.mark.parametrize("cls", CLASSES)
def test_with_nothing_to_say_it_still_says_what_happened(cls: type[DriverError]) -> None:
    with pytest.raises(cls) as raised:
        raise cls
    error = raised.value
    assert error.user_message == error.operator_message == error.msg
    assert error.msg.endswith(": no detail given")
    assert error.type == cls.__name__


@pytest.mark.parametrize("cls", CLASSES + VENDOR_CLASSES)
def test_a_message_for_users_and_one_for_operators(cls: type[DriverError]) -> None:
    error = cls("VIP 203.0.113.10 is taken", "device said: ERR 409 vip in use (job 7781)")
    assert error.user_message == "VIP 203.0.113.10 is taken"
    assert error.operator_message == "device said: ERR 409 vip in use (job 7781)"
    assert cls("only one").operator_message == "only one"


@pytest.mark.parametrize(
    ("cls", "form"),
    [
        pytest.param(cls, form, id=form.written)
        for cls in CLASSES + VENDOR_CLASSES
        for form in raising.forms(cls)
    ],
)
def test_every_form_builds_without_raising_and_keeps_the_classification_of_its_class(
    cls: type[DriverError], form: raising.Form
) -> None:
    with pytest.raises(cls) as raised:
        form.raise_it()
    error = raised.value
    assert error.retryable is cls.retryable
    assert error.user_message.strip() and error.operator_message.strip()
    if form.user is not None:
        assert error.user_message == form.user
    if form.operator is not None:
        assert error.operator_message == form.operator
        assert form.operator not in error.user_message
    assert all(shown in error.user_message for shown in form.shows)


def test_octavia_libs_keyword_names_are_the_user_and_operator_messages() -> None:
    error = InvalidConfiguration(
        user_fault_string="Listener protocol UDP is not supported.",
        operator_fault_string="appliance 10.0.0.5 firmware 4.2 lacks the udp-lb module",
    )
    assert error.user_message == "Listener protocol UDP is not supported."
    assert error.operator_message == "appliance 10.0.0.5 firmware 4.2 lacks the udp-lb module"
    assert error.kwargs == {}
    # Given both ways, tether's own names win.
    assert DriverError("mine", user_fault_string="octavia's").user_message == "mine"
    # Only the operator's: the user reads the class's template.
    only = DeviceBusy(operator_fault_string="lock held by session 42")
    assert (only.user_message, only.operator_message) == (
        "The device is busy: no detail given",
        "lock held by session 42",
    )


def test_a_vendor_template_is_filled_from_its_own_fields_and_says_which_are_missing() -> None:
    assert (
        VipInUse(vip="203.0.113.10", device="edge-7").user_message == "VIP 203.0.113.10 is in use on edge-7."
    )
    assert VipInUse(vip="203.0.113.10").user_message == "VIP 203.0.113.10 is in use on no detail given."
    assert DriverError(reason="the VIP is taken").user_message == "The driver failed: the VIP is taken"


def test_a_field_that_does_not_fit_its_format_spec_is_shown_as_given() -> None:
    assert RateLimited(seconds=2.5).user_message == "The appliance API is rate limited for 2.5 s."
    assert RateLimited(seconds="a while").user_message == "The appliance API is rate limited for a while s."
    assert RateLimited().user_message == "The appliance API is rate limited for no detail given s."
    assert RateLimited().retryable
    # The same holds for tether's own errors.
    assert "no detail given requests/s" in TooManyRequests(project="p").msg


def test_a_template_that_is_not_one_reads_as_written() -> None:
    unbalanced = "unbalanced { brace and {0} positional and {reason.code} attribute"
    assert exceptions.fill(unbalanced, {"reason": "x"}) == unbalanced
    assert (
        exceptions.fill("{0} positional, {reason.code} attribute, {reason[9]} item", {"reason": "x"})
        == "no detail given positional, no detail given attribute, no detail given item"
    )


def test_an_exception_given_as_the_message_gives_its_text_and_a_blank_one_the_template() -> None:
    cause = OSError(113, "No route to host")
    error = DeviceUnreachable(cause, cause)
    assert error.user_message == error.operator_message == "[Errno 113] No route to host"
    assert str(error) == error.user_message
    # str(socket.timeout()) is empty: the user still reads what happened.
    assert (
        DeviceUnreachable(TimeoutError()).user_message == "The device could not be reached: no detail given"
    )
    assert TetherError("  ").msg == "An unknown error occurred."


def test_retryable_classes_stay_retryable_without_a_message() -> None:
    assert DeviceUnreachable().retryable and DeviceBusy().retryable
    assert not DriverError().retryable and not InvalidConfiguration().retryable
