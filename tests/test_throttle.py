"""Throttle on virtual time: one 429 pause for every request, pacing to exact slots."""

from __future__ import annotations

import anyio
import pytest

from worldrouter_async._throttle import Throttle
from worldrouter_async.testing import FakeClock

pytestmark = pytest.mark.anyio


async def test_a_pause_holds_every_waiter_until_it_ends(clock: FakeClock) -> None:
    """After pause(s), wait() returns at exactly now + s for every waiting request."""
    throttle = Throttle(None, clock=clock)
    assert not throttle.holding
    assert throttle.pause(2.5)
    assert throttle.paused
    assert throttle.holding
    released: list[float] = []

    async def request() -> None:
        await throttle.wait()
        released.append(clock.now())

    async with anyio.create_task_group() as task_group:
        for _ in range(3):
            task_group.start_soon(request)
    assert released == [2.5, 2.5, 2.5]
    assert not throttle.paused


async def test_a_later_429_extends_the_pause_while_requests_wait(clock: FakeClock) -> None:
    """A pause that ends later replaces the current one; a shorter one is ignored."""
    throttle = Throttle(None, clock=clock)
    throttle.pause(1.0)
    released: list[float] = []

    async def request() -> None:
        await throttle.wait_unpaused()
        released.append(clock.now())

    async with anyio.create_task_group() as task_group:
        task_group.start_soon(request)
        await clock.sleep_until(0.5)
        assert throttle.pause(2.0)  # until 2.5
        assert not throttle.pause(0.1)  # until 0.6: already covered
    assert released == [2.5]


async def test_a_configured_rate_spaces_requests_into_exact_slots(clock: FakeClock) -> None:
    """requests_per_second=4 lets one request out every 0.25 s, the first at once."""
    throttle = Throttle(4.0, clock=clock)
    assert throttle.rate == 4.0
    sent: list[float] = []
    for _ in range(5):
        await throttle.wait()
        sent.append(clock.now())
    assert sent == [0.0, 0.25, 0.5, 0.75, 1.0]


async def test_a_429_turns_on_pacing_below_the_granted_rate(clock: FakeClock) -> None:
    """Unpaced, a 429 after 10 requests/s paces at 95% of that, then grows 10% a second."""
    throttle = Throttle(None, clock=clock)
    for step in range(11):  # 11 successes over 1 s
        clock.advance(0.0 if step == 0 else 0.1)
        throttle.record_success()
    assert throttle.rate is None
    throttle.pause(0.0)
    granted = 11 / 1.0
    assert throttle.rate == pytest.approx(granted * 0.95)
    clock.advance(1.0)
    throttle.record_success()
    assert throttle.rate == pytest.approx(granted * 0.95 * 1.1)


async def test_a_configured_rate_is_never_exceeded_by_adaptive_growth(clock: FakeClock) -> None:
    """Growth after a 429 stops at the configured requests_per_second."""
    throttle = Throttle(5.0, clock=clock)
    for _ in range(4):
        throttle.record_success()
        clock.advance(0.1)
    throttle.pause(0.0)
    assert throttle.rate is not None
    assert throttle.rate <= 5.0
    for _ in range(30):
        clock.advance(1.0)
        throttle.record_success()
    assert throttle.rate == 5.0
