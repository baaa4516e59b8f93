from __future__ import annotations

import pytest

from tether.common.exceptions import ConfigError
from tether.common.transport import parse_url


def test_a_rabbit_url_with_several_hosts_becomes_a_failover_list() -> None:
    url = parse_url("rabbit://u:secret@h1:5672,u:secret@h2:5673/prod")
    assert url.kombu_urls == ("amqp://u:secret@h1:5672/prod", "amqp://u:secret@h2:5673/prod")


def test_the_masked_url_never_shows_the_password() -> None:
    url = parse_url("rabbit://tether:hunter2@broker:5672/")
    assert "hunter2" not in url.masked
    assert url.masked == "rabbit://tether:***@broker:5672//"


def test_the_default_vhost_is_slash() -> None:
    assert parse_url("rabbit://u:p@h:5672/").kombu_urls == ("amqp://u:p@h:5672/%2F",)


def test_memory_is_the_in_process_transport() -> None:
    assert parse_url("memory://").in_memory


def test_an_empty_host_entry_is_refused() -> None:
    with pytest.raises(ConfigError, match="empty host"):
        parse_url("rabbit://u:p@h1:5672,/")
