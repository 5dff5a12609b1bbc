"""Policies are pure functions of the attempt number, clamped on overflow."""

from __future__ import annotations

import pytest

from worldrouter_async import PollPolicy, RetryPolicy


def test_backoff_doubles_then_caps() -> None:
    """Without jitter the delay doubles per attempt up to the cap."""
    policy = RetryPolicy(base=0.5, cap=4.0)
    assert [policy.backoff(n, jitter=False) for n in range(1, 7)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]


def test_backoff_never_overflows() -> None:
    """A huge attempt number still gives the cap, not an OverflowError."""
    assert RetryPolicy(cap=30.0).backoff(10**9, jitter=False) == 30.0


def test_full_jitter_stays_within_zero_and_the_delay() -> None:
    """Full jitter draws uniformly from [0, delay]."""
    policy = RetryPolicy(base=1.0, cap=8.0)
    assert all(0.0 <= policy.backoff(3) <= 4.0 for _ in range(200))


def test_poll_intervals_grow_to_the_cap() -> None:
    """The documented default cadence: 2, 3, 4.5, 6.75, then 8 seconds."""
    policy = PollPolicy()
    assert [policy.interval(n, jitter=False) for n in range(6)] == [2.0, 3.0, 4.5, 6.75, 8.0, 8.0]
    assert policy.interval(10**9, jitter=False) == 8.0


def test_poll_jitter_is_bounded() -> None:
    """Jitter spreads each interval by at most the configured fraction."""
    policy = PollPolicy(initial_delay=10.0, max_interval=20.0, jitter=0.1)
    assert all(9.0 <= policy.interval(0) <= 11.0 for _ in range(200))


def test_poll_cost_grows_slowly_with_task_length() -> None:
    """A 30 s task costs about 6 polls, a 90 s task about 14 (vs 30 and 90 at 1 s)."""

    def polls_for(duration: float) -> int:
        elapsed, count = 0.0, 0
        while elapsed < duration:
            elapsed += PollPolicy().interval(count, jitter=False)
            count += 1
        return count

    assert polls_for(30) == 6
    assert polls_for(90) == 14


@pytest.mark.parametrize("bad", [{"initial_delay": 0}, {"factor": 0.5}, {"jitter": 1.0}])
def test_invalid_poll_policies_are_refused(bad: dict[str, float]) -> None:
    """A zero initial delay (a tight loop) or a shrinking factor is refused at construction."""
    with pytest.raises(ValueError, match="must be"):
        PollPolicy(**bad)
