"""Finding HAProxy where Debian puts it, whatever the agent's PATH."""

from __future__ import annotations

import pathlib

import pytest

from tether.drivers.base import InvalidConfiguration
from tether.reference_drivers.haproxy import driver, executables


def test_haproxy_is_found_in_sbin_with_a_users_path(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sbin = tmp_path / "sbin"
    sbin.mkdir()
    binary = sbin / "haproxy"
    binary.write_text("#!/bin/sh\n")
    binary.chmod(0o755)
    monkeypatch.setattr(executables, "SBIN", (str(sbin),))
    # Debian's PATH for users other than root.
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    assert driver.find_binary("haproxy") == str(binary)


def test_a_missing_binary_says_where_it_was_looked_for_and_what_to_do(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(InvalidConfiguration) as raised:
        driver.find_binary("haproxy-not-here")
    message = str(raised.value)
    assert "on PATH or in /usr/local/sbin, /usr/sbin, /sbin" in message
    assert "install Debian's haproxy package, or set [driver:haproxy] binary to its path" in message


def test_a_path_is_taken_as_it_is(tmp_path: pathlib.Path) -> None:
    with pytest.raises(InvalidConfiguration, match="is not installed; install"):
        driver.find_binary(str(tmp_path / "haproxy"))
