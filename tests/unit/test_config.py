"""A wrong or missing option stops a daemon at start, naming the option."""

from __future__ import annotations

import pathlib
import subprocess
import sys

import pytest
from oslo_config import cfg

from tether.plugin.db import session


def _refused(module: str, ini: pathlib.Path, text: str) -> str:
    """Start a daemon on an ini file, expect it to refuse; its standard error."""
    ini.write_text(text)
    result = subprocess.run(
        [sys.executable, "-m", module, "--config-file", str(ini)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stderr
    return result.stderr


def test_the_plugin_refuses_to_start_without_a_transport_url(tmp_path: pathlib.Path) -> None:
    ini = tmp_path / "plugin.ini"
    stderr = _refused("tether.cmd.plugin", ini, f"[DEFAULT]\nstate_path = {tmp_path}\n")
    assert "[DEFAULT] transport_url is required but not set" in stderr
    assert str(ini) in stderr


def test_an_invalid_value_names_the_option_and_the_file(tmp_path: pathlib.Path) -> None:
    stderr = _refused(
        "tether.cmd.plugin",
        tmp_path / "plugin.ini",
        "[DEFAULT]\ntransport_url = memory://\n[api]\nbind_port = eighty\n",
    )
    assert "[api] bind_port" in stderr
    assert "eighty" in stderr


def test_an_agent_without_providers_refuses_to_start(tmp_path: pathlib.Path) -> None:
    stderr = _refused("tether.cmd.agent", tmp_path / "agent.ini", "[DEFAULT]\ntransport_url = memory://\n")
    assert "[agent] providers is required" in stderr


def test_an_agent_naming_an_uninstalled_driver_lists_the_problem(tmp_path: pathlib.Path) -> None:
    stderr = _refused(
        "tether.cmd.agent",
        tmp_path / "agent.ini",
        "[DEFAULT]\ntransport_url = memory://\n[agent]\nproviders = noop,nosuchvendor\n",
    )
    assert "no installed package provides a driver called 'nosuchvendor'" in stderr


@pytest.mark.parametrize("url", ["redis://localhost", "kafka://x"])
def test_an_unsupported_transport_url_scheme_is_refused(tmp_path: pathlib.Path, url: str) -> None:
    stderr = _refused(
        "tether.cmd.plugin",
        tmp_path / "plugin.ini",
        f"[DEFAULT]\ntransport_url = {url}\nstate_path = {tmp_path}\n",
    )
    assert "speaks rabbit:// (RabbitMQ) and memory://" in stderr


def test_a_plugin_on_an_unmigrated_database_says_which_command_to_run(tmp_path: pathlib.Path) -> None:
    ini = tmp_path / "plugin.ini"
    stderr = _refused(
        "tether.cmd.plugin", ini, f"[DEFAULT]\ntransport_url = memory://\nstate_path = {tmp_path}\n"
    )
    assert f"tether-manage --config-file {ini} db upgrade" in stderr


def test_manage_status_reports_agents_backlog_and_what_needs_attention(tmp_path: pathlib.Path) -> None:
    ini = tmp_path / "plugin.ini"
    ini.write_text(f"[DEFAULT]\nstate_path = {tmp_path}\n")
    manage = [sys.executable, "-m", "tether.cmd.manage", "--config-file", str(ini)]
    behind = subprocess.run([*manage, "status"], capture_output=True, text=True, timeout=60)
    assert behind.returncode == 1
    assert "ATTENTION: the schema is behind: run tether-manage db upgrade" in behind.stdout
    subprocess.run([*manage, "db", "upgrade"], check=True, capture_output=True, timeout=60)
    fine = subprocess.run([*manage, "status"], capture_output=True, text=True, timeout=60)
    assert fine.returncode == 0, fine.stdout + fine.stderr
    assert "agents    0 alive, 0 dead" in fine.stdout
    assert "nothing needs attention" in fine.stdout


def test_a_sqlite_path_under_home_is_expanded_not_taken_literally(
    conf: cfg.ConfigOpts, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    conf.set_override("state_path", "~/.local/state/tether")
    engine = session.make_engine(conf)
    with engine.connect():
        pass
    assert engine.url.database == str(tmp_path / ".local/state/tether/tether.sqlite")
    assert (tmp_path / ".local/state/tether/tether.sqlite").exists()
    engine.dispose()
