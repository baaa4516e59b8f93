"""The one backoff every retry loop waits by."""

from __future__ import annotations

from tether.common import backoff


def test_waits_double_from_the_first_up_to_the_cap() -> None:
    plain = backoff.Backoff(first=0.5, cap=10.0)
    assert [plain.delay(n) for n in range(1, 8)] == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
    # A loop that has failed for days does not overflow the exponent.
    assert plain.delay(10_000) == 10.0


def test_jitter_takes_up_to_its_fraction_off_and_never_adds() -> None:
    jittered = backoff.Backoff(first=2.0, cap=300.0, jitter=0.5)
    delays = [jittered.delay(3) for _ in range(1000)]
    assert all(4.0 <= d <= 8.0 for d in delays)
    assert len(set(delays)) > 900  # spread, so that peers that failed together come back apart


def test_each_loops_first_wait_is_short_and_no_wait_passes_its_cap() -> None:
    for name in ("RECONNECT", "DATABASE", "CLAIM", "CALLBACK"):
        wait = getattr(backoff, name)
        assert 0 < wait.delay(1) <= 2.0 and wait.delay(100) <= wait.cap, name
