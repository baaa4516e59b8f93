"""The SDK's exceptions raised any way a vendor raises them."""

from __future__ import annotations

import pytest

from tether.drivers.base import (
    DeviceBusy,
    DeviceUnreachable,
    DriverError,
    InvalidConfiguration,
    NotSupported,
)

CLASSES = [DriverError, DeviceUnreachable, DeviceBusy, InvalidConfiguration, NotSupported]


@pytest.mark.parametrize("cls", CLASSES)
def test_with_nothing_to_say_it_still_says_what_happened(cls: type[DriverError]) -> None:
    with pytest.raises(cls) as raised:
        raise cls
    error = raised.value
    assert error.user_message == error.operator_message == error.msg
    assert error.msg.endswith(": no detail given")
    assert error.type == cls.__name__


@pytest.mark.parametrize("cls", CLASSES)
def test_a_message_for_users_and_one_for_operators(cls: type[DriverError]) -> None:
    error = cls("VIP 203.0.113.10 is taken", "device said: ERR 409 vip in use (job 7781)")
    assert error.user_message == "VIP 203.0.113.10 is taken"
    assert error.operator_message == "device said: ERR 409 vip in use (job 7781)"
    assert cls("only one").operator_message == "only one"


def test_retryable_classes_stay_retryable_without_a_message() -> None:
    assert DeviceUnreachable().retryable and DeviceBusy().retryable
    assert not DriverError().retryable and not InvalidConfiguration().retryable
