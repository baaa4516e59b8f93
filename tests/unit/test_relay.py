"""The outbox relay on SQLite: what it published is not published again,
and is deleted by its claim or with the others at most every interval,
not in a write transaction of its own per window."""

from __future__ import annotations

import datetime
from collections.abc import Iterator

import kombu
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from oslo_config import cfg

from tests.unit.conftest import make_plugin
from tether.plugin import dispatch
from tether.plugin.db.models import Outbox, utcnow
from tether.plugin.service import Plugin


@pytest.fixture
def plugin(conf: cfg.ConfigOpts) -> Plugin:
    conf.set_override("relay_interval", 3600, group="plugin")
    return make_plugin(conf)


@pytest.fixture
def connection(plugin: Plugin) -> Iterator[kombu.Connection]:
    with plugin.broker.connect() as connection:
        assert plugin.pipeline is not None
        plugin.pipeline.relay.on_connect(connection)
        yield connection


def _relay(plugin: Plugin) -> dispatch.OutboxRelay:
    assert plugin.pipeline is not None
    return plugin.pipeline.relay


def _queued(plugin: Plugin) -> int:
    return plugin.broker.work_queue_depths(["noop"])["noop"] or 0


def _outbox(plugin: Plugin) -> int:
    with plugin.sessionmaker() as session:
        return int(session.scalar(sa.select(sa.func.count()).select_from(Outbox)) or 0)


def _accept(plugin: Plugin, count: int) -> None:
    with TestClient(plugin.app) as client:
        for _ in range(count):
            assert client.post("/v1/loadbalancers", json={"provider": "noop"}).status_code == 202


def test_a_published_window_is_not_published_again_and_is_deleted_with_the_others_later(
    plugin: Plugin, connection: kombu.Connection
) -> None:
    relay = _relay(plugin)
    _accept(plugin, 3)
    assert relay.relay_once(connection) == 3
    assert relay.relay_once(connection) == 0
    assert (_queued(plugin), _outbox(plugin)) == (3, 3)
    _accept(plugin, 1)
    assert relay.relay_once(connection) == 1
    assert (_queued(plugin), _outbox(plugin)) == (4, 4)
    relay._deleted_at -= relay.interval  # the interval has passed
    assert relay.relay_once(connection) == 0
    assert (_queued(plugin), _outbox(plugin)) == (4, 0)


def test_a_relay_that_starts_again_publishes_what_was_not_deleted(
    plugin: Plugin, connection: kombu.Connection
) -> None:
    _accept(plugin, 2)
    assert _relay(plugin).relay_once(connection) == 2
    # A crash between the confirm and the delete: the next relay publishes
    # the rows again, and agents skip the duplicates.
    again = dispatch.OutboxRelay(
        plugin.broker, plugin.sessionmaker, plugin.reader, plugin.providers.names, 16, 3600
    )
    again.on_connect(connection)
    assert again.relay_once(connection) == 2
    assert _queued(plugin) == 4


def test_a_row_published_after_its_backoff_is_deleted_at_once(
    plugin: Plugin, connection: kombu.Connection
) -> None:
    _accept(plugin, 1)
    with plugin.sessionmaker.begin() as session:
        row = session.scalars(sa.select(Outbox)).one()
        # As a retry's backoff leaves it: due now, after the rows of the accepts.
        row.not_before = utcnow() - datetime.timedelta(seconds=1)
    assert _relay(plugin).relay_once(connection) == 1
    assert _outbox(plugin) == 0
    assert _relay(plugin).relay_once(connection) == 0
    assert _queued(plugin) == 1
