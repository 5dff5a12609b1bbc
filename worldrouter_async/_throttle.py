"""`Throttle`: one 429 pause for every request of a session, and pacing to a rate.

It reads time only through a `Clock`, so its pauses and pacing run on virtual time in tests.
"""

from __future__ import annotations

from collections import deque
from typing import Final

from ._clock import Clock

_RATE_WINDOW: Final = 2.0  # seconds of accepted requests behind the adaptive rate estimate
_BACK_OFF: Final = 0.95  # after a 429, pace at this fraction of the rate just granted


class Throttle:
    """Holds every request of a session while a 429 pause lasts, and paces to a rate.

    One pause for everyone is what stops a thundering herd: after a 429 no request goes out
    until its Retry-After has passed, whichever coroutine hit it. Without a configured rate,
    a 429 also turns on pacing at 95% of the rate the server was just granting, which then
    grows by 10% for every second without a 429 (additive-increase, multiplicative-decrease
    in spirit), so a saturated session settles just under the server's limit.
    """

    __slots__ = (
        "_clock",
        "_configured",
        "_interval",
        "_last_raise",
        "_next_slot",
        "_successes",
        "paused_until",
    )

    def __init__(self, requests_per_second: float | None, *, clock: Clock) -> None:
        self._clock = clock
        self._configured = requests_per_second
        self._interval = 1.0 / requests_per_second if requests_per_second else 0.0
        self._next_slot = 0.0
        self._successes: deque[float] = deque()
        self._last_raise = 0.0
        self.paused_until = 0.0

    @property
    def rate(self) -> float | None:
        """The requests per second being paced to now, or None when not pacing."""
        return 1.0 / self._interval if self._interval else None

    @property
    def paused(self) -> bool:
        """True while a 429 pause is in force."""
        return self.paused_until > self._clock.now()

    @property
    def holding(self) -> bool:
        """True while requests must wait (a 429 pause or pacing); checked before `wait`."""
        return bool(self._interval) or self.paused

    async def wait_unpaused(self) -> None:
        """Return once no 429 pause is in force."""
        # A loop, not an Event: a later 429 may extend the pause while we sleep.
        while self.paused_until > self._clock.now():
            await self._clock.sleep_until(self.paused_until)

    async def wait(self) -> None:
        """Return when a request may be sent (at once when neither paused nor paced)."""
        await self.wait_unpaused()
        if self._interval:
            now = self._clock.now()
            slot = max(now, self._next_slot)
            self._next_slot = slot + self._interval
            if slot > now:
                await self._clock.sleep_until(slot)

    def record_success(self) -> None:
        """Note a request the server accepted (the rate estimate behind adaptive pacing)."""
        if self._configured is not None and self._interval == 1.0 / self._configured:
            return
        now = self._clock.now()
        successes = self._successes
        successes.append(now)
        while successes[0] < now - _RATE_WINDOW:
            successes.popleft()
        if self._interval and now - self._last_raise >= 1.0:
            self._last_raise = now
            self._set_rate(1.1 / self._interval)

    def pause(self, seconds: float) -> bool:
        """Hold all requests for `seconds`, slow down; True when this extends the pause."""
        now = self._clock.now()
        if len(self._successes) >= 2:
            granted = len(self._successes) / max(now - self._successes[0], 1e-3)
            if not self._interval or granted * _BACK_OFF < 1.0 / self._interval:
                self._set_rate(granted * _BACK_OFF)
            self._last_raise = now
        until = now + seconds
        if until <= self.paused_until:
            return False
        self.paused_until = until
        return True

    def _set_rate(self, rate: float) -> None:
        if self._configured is not None:
            rate = min(rate, self._configured)
        self._interval = 1.0 / max(rate, 1.0)
