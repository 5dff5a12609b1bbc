"""Time as an input: the one place the scheduler asks what time it is and when to wake.

The poller, the cadence, the throttle, the breaker and handle deadlines all take a `Clock`,
so tests can run them on virtual time (`worldrouter_async.testing.FakeClock`) and assert
exact schedules instead of waiting on the wall clock.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Protocol


class TimerHandle(Protocol):
    """A scheduled callback that can still be cancelled."""

    def cancel(self) -> None:
        """Stop the callback from running; harmless once it has run."""


class Clock(Protocol):
    """What the scheduler needs from time: now, a sleep to a deadline, and a timer."""

    def now(self) -> float:
        """Seconds on a monotonic scale (only differences mean anything)."""

    async def sleep_until(self, deadline: float) -> None:
        """Return once `now()` has reached `deadline` (at once if it already has)."""

    def call_later(self, delay: float, callback: Callable[[], object]) -> TimerHandle:
        """Run `callback()` on the event loop after `delay` seconds of this clock."""


class SystemClock:
    """The real monotonic clock and the running event loop's timers."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "SystemClock()"

    def now(self) -> float:
        """`time.monotonic()`."""
        return time.monotonic()

    async def sleep_until(self, deadline: float) -> None:
        """Sleep until the monotonic clock reaches `deadline`."""
        delay = deadline - time.monotonic()
        await asyncio.sleep(max(delay, 0.0))

    def call_later(self, delay: float, callback: Callable[[], object]) -> TimerHandle:
        """`loop.call_later` on the running loop."""
        return asyncio.get_running_loop().call_later(max(delay, 0.0), callback)


SYSTEM_CLOCK = SystemClock()
"""The clock every session uses unless it is given another."""
