"""The all-in-one refuses a provider its own agents do not serve."""

from __future__ import annotations

import pytest
from oslo_config import cfg

from tether.cmd.allinone import check_providers
from tether.common.exceptions import ConfigError


def test_a_provider_the_api_accepts_and_no_agent_serves_is_refused_naming_both_options(
    conf: cfg.ConfigOpts,
) -> None:
    conf.set_override("providers", ["noop", "fake", "haproxy"], group="plugin")
    conf.set_override("providers", ["noop", "fake"], group="agent")
    with pytest.raises(ConfigError) as raised:
        check_providers(conf)
    assert (
        "[plugin] providers accepts haproxy, which [agent] providers (noop, fake) does not serve"
        in raised.value.msg
    )
    conf.set_override("providers", ["noop", "fake", "haproxy"], group="agent")
    check_providers(conf)
