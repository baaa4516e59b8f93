"""A wrong or missing option stops a daemon at start, naming the option."""

from __future__ import annotations

import pathlib
import subprocess
import sys

import pytest


def _run(module: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, timeout=60)


def test_the_plugin_refuses_to_start_without_a_transport_url(tmp_path: pathlib.Path) -> None:
    ini = tmp_path / "plugin.ini"
    ini.write_text(f"[DEFAULT]\nstate_path = {tmp_path}\n")
    result = _run("tether.cmd.plugin", "--config-file", str(ini))
    assert result.returncode == 2
    assert "[DEFAULT] transport_url is required but not set" in result.stderr
    assert str(ini) in result.stderr


def test_an_invalid_value_names_the_option_and_the_file(tmp_path: pathlib.Path) -> None:
    ini = tmp_path / "plugin.ini"
    ini.write_text("[DEFAULT]\ntransport_url = memory://\n[api]\nbind_port = eighty\n")
    result = _run("tether.cmd.plugin", "--config-file", str(ini))
    assert result.returncode == 2
    assert "[api] bind_port" in result.stderr
    assert "eighty" in result.stderr


def test_an_agent_without_providers_refuses_to_start(tmp_path: pathlib.Path) -> None:
    ini = tmp_path / "agent.ini"
    ini.write_text("[DEFAULT]\ntransport_url = memory://\n")
    result = _run("tether.cmd.agent", "--config-file", str(ini))
    assert result.returncode == 2
    assert "[agent] providers is required" in result.stderr


def test_an_agent_naming_an_uninstalled_driver_lists_the_problem(tmp_path: pathlib.Path) -> None:
    ini = tmp_path / "agent.ini"
    ini.write_text("[DEFAULT]\ntransport_url = memory://\n[agent]\nproviders = noop,acme\n")
    result = _run("tether.cmd.agent", "--config-file", str(ini))
    assert result.returncode == 2
    assert "no installed package provides a driver called 'acme'" in result.stderr


@pytest.mark.parametrize("url", ["redis://localhost", "kafka://x"])
def test_an_unsupported_transport_url_scheme_is_refused(tmp_path: pathlib.Path, url: str) -> None:
    ini = tmp_path / "plugin.ini"
    ini.write_text(f"[DEFAULT]\ntransport_url = {url}\nstate_path = {tmp_path}\n")
    result = _run("tether.cmd.plugin", "--config-file", str(ini))
    assert result.returncode == 2
    assert "speaks rabbit:// (RabbitMQ) and memory://" in result.stderr


def test_a_plugin_on_an_unmigrated_database_says_which_command_to_run(tmp_path: pathlib.Path) -> None:
    ini = tmp_path / "plugin.ini"
    ini.write_text(f"[DEFAULT]\ntransport_url = memory://\nstate_path = {tmp_path}\n")
    result = _run("tether.cmd.plugin", "--config-file", str(ini))
    assert result.returncode == 2
    assert f"tether-manage --config-file {ini} db upgrade" in result.stderr
