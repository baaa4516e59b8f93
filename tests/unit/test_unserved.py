"""The plugin says at start when the agent configured beside it does not
serve a provider it accepts."""

from __future__ import annotations

import logging
import pathlib

import pytest
from oslo_config import cfg

from tether.plugin.agents import unserved


def _conf(*files: pathlib.Path) -> cfg.ConfigOpts:
    conf = cfg.ConfigOpts()
    conf([f"--config-file={f}" for f in files], project="tether")
    return conf


def test_a_provider_the_agent_beside_does_not_serve_is_named_with_the_file(
    tmp_path: pathlib.Path, caplog: pytest.LogCaptureFixture
) -> None:
    plugin = tmp_path / "plugin.ini"
    plugin.write_text("[plugin]\nproviders = noop,acme\n")
    (tmp_path / "agent.ini").write_text("[agent]\nproviders = noop, fake\n")
    with caplog.at_level(logging.WARNING):
        assert unserved.warn_unserved(_conf(plugin), ["noop", "acme"]) == ["acme"]
    (record,) = caplog.records
    assert "provider acme is in [plugin] providers" in record.getMessage()
    assert f"{tmp_path / 'agent.ini'}: [agent] providers = noop, fake" in record.getMessage()


def test_nothing_is_said_when_no_agent_is_configured_beside_the_plugin(
    tmp_path: pathlib.Path, caplog: pytest.LogCaptureFixture
) -> None:
    plugin = tmp_path / "plugin.ini"
    plugin.write_text("[plugin]\nproviders = acme\n[agent]\nproviders = noop\n")
    # A commented-out option, as in the sample files, configures nothing.
    (tmp_path / "agent.ini").write_text("[agent]\n#providers = noop,fake\n")
    (tmp_path / "broken.ini").write_text("not an ini [\n")
    with caplog.at_level(logging.WARNING):
        assert unserved.warn_unserved(_conf(plugin), ["acme"]) == []
    assert not caplog.records
