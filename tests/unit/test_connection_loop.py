"""A connection loop's burst: what it takes from the broker before its tick's work."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest

from tether.common.connection import ConnectionLoop


class _Connection:
    """What :meth:`ConnectionLoop.wait` uses of a kombu connection: its
    socket, and ``drain_events`` taking one event (a byte) from it."""

    def __init__(self, sock: socket.socket) -> None:
        self.connection = SimpleNamespace(transport=SimpleNamespace(sock=sock))
        self.sock = sock
        self.taken = 0

    def drain_events(self, timeout: float) -> None:
        self.sock.settimeout(timeout)
        self.sock.recv(1)
        self.taken += 1


@pytest.fixture
def broker_end() -> Iterator[tuple[socket.socket, _Connection]]:
    ours, theirs = socket.socketpair()
    yield theirs, _Connection(ours)
    ours.close()
    theirs.close()


def _loop(batch_wait: float, burst: int) -> ConnectionLoop:
    loop = ConnectionLoop(SimpleNamespace(batch_wait=batch_wait), "test-loop")  # type: ignore[arg-type]
    loop.burst = burst
    return loop


def _later(sock: socket.socket, seconds: float) -> threading.Timer:
    """Send the second event ``seconds`` from now."""
    timer = threading.Timer(seconds, sock.send, args=(b"2",))
    timer.start()
    return timer


def test_a_lone_event_waits_for_a_second_one_within_the_batch_wait(broker_end: Any) -> None:
    broker, connection = broker_end
    broker.send(b"1")
    second = _later(broker, 0.05)
    _loop(batch_wait=30.0, burst=2).wait(connection)
    second.join()
    assert connection.taken == 2


@pytest.mark.parametrize(
    ("call", "batch_wait", "burst", "sent", "taken"),
    [("wait", 0.0, 2, b"1", 1), ("wait", 30.0, 1, b"1", 1), ("take_arrived", 30.0, 10, b"123", 3)],
    ids=[
        "no batch wait: only what has arrived",
        "a burst of one: nothing to wait for",
        "taking what arrived: all of it, and nothing more",
    ],
)
def test_the_tick_does_not_wait(
    broker_end: Any, call: str, batch_wait: float, burst: int, sent: bytes, taken: int
) -> None:
    broker, connection = broker_end
    broker.send(sent)
    later = _later(broker, 10)
    assert getattr(_loop(batch_wait=batch_wait, burst=burst), call)(connection) is not False
    # Back before the next event was even sent.
    assert later.is_alive()
    later.cancel()
    assert connection.taken == taken


def test_the_batch_wait_runs_from_the_first_event_not_from_each(broker_end: Any) -> None:
    broker, connection = broker_end
    broker.send(b"1")
    # Events keep coming well within the wait of the last one, but the
    # burst may not outlast the wait of the first.
    stop = threading.Event()

    def trickle() -> None:
        while not stop.wait(0.02):
            broker.send(b"n")

    sender = threading.Thread(target=trickle)
    sender.start()
    try:
        _loop(batch_wait=0.2, burst=1000).wait(connection)
    finally:
        stop.set()
        sender.join()
    assert 2 <= connection.taken < 100


def test_taking_what_arrived_stops_at_a_burst(broker_end: Any) -> None:
    broker, connection = broker_end
    broker.send(b"12345")
    assert _loop(batch_wait=0.0, burst=2).take_arrived(connection)
    assert connection.taken == 2


def test_a_connection_that_fails_while_taking_what_arrived_is_left_for_the_tick(broker_end: Any) -> None:
    broker, connection = broker_end
    broker.send(b"1")

    def broken(timeout: float) -> None:
        raise ConnectionResetError("the broker went away")

    connection.drain_events = broken
    assert not _loop(batch_wait=0.0, burst=10).take_arrived(connection)
