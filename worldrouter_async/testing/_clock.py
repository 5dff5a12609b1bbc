"""`FakeClock`: virtual time for the scheduler, advanced by hand or whenever the loop is idle.

Like trio's ``MockClock`` with ``autojump_threshold=0``: when nothing else can run, time
jumps straight to the next timer, so a test of a 15-minute deadline takes milliseconds and
asserts exact times instead of wall-clock windows.

**The idle rule.** asyncio has no "all tasks are blocked" hook, so the clock watches the
event loop. While a timer of this clock is pending it keeps one callback in the loop's
ready queue. Each time that callback runs it looks at the queue (``loop._ready`` on the
standard loops) and counts the loop iterations in a row in which nothing else was ready.
Every iteration begins with a zero-timeout poll for I/O whose callbacks queue up *behind*
the clock's, so bytes already sent over loopback sockets in the same loop always count as
work. After `idle_iterations` quiet iterations (default 3) the clock jumps to its earliest
timer and fires every timer due at that instant. On loops that hide their ready queue
(uvloop), the clock cannot see other work and instead waits `idle_iterations` times
``FALLBACK_FACTOR`` iterations after the last use of the clock; prefer the standard loop
for fake-clock tests.

Work the clock cannot see, such as a thread finishing (DNS lookups, ``to_thread``) or
traffic with another process, needs `autojump_threshold`: real seconds to wait, once the
loop looks idle, before jumping. It is 0 by default, which is right for everything in one
event loop (the SDK and the bundled emulator over loopback).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import math
from collections.abc import Callable
from typing import Final

from .._clock import TimerHandle

FALLBACK_FACTOR: Final = 20
"""Without a visible ready queue, idle means this many times more quiet iterations."""


class _Timer:
    """One pending callback of a `FakeClock` (returned by `FakeClock.call_later`)."""

    __slots__ = ("_clock", "callback", "cancelled", "when")

    def __init__(self, clock: FakeClock, when: float, callback: Callable[[], object]) -> None:
        self._clock = clock
        self.when = when
        self.callback = callback
        self.cancelled = False

    def __repr__(self) -> str:
        state = "cancelled" if self.cancelled else "pending"
        return f"<FakeClock timer at {self.when!r} {state}>"

    def cancel(self) -> None:
        """Stop the callback from running; harmless once it has run."""
        if not self.cancelled:
            self.cancelled = True
            self._clock._forget(self)


class FakeClock:
    """Virtual monotonic time for `Session(clock=...)` and the emulator's task timings.

    Args:
        start: the virtual time `now()` starts at.
        autojump: jump to the next timer whenever the event loop is idle (see the module
            docstring for the exact rule); with False, only `advance` moves time.
        autojump_threshold: real seconds the loop must stay idle before a jump; raise it
            when a test waits on threads or other processes.
        idle_iterations: quiet event-loop iterations in a row that count as idle.

    Example:
        >>> async def test_deadline():  # doctest: +SKIP
        ...     clock = FakeClock()
        ...     async with Emulator(clock=clock) as emu, Session(
        ...         emu.api_key, emu.base_url, clock=clock
        ...     ) as session:
        ...         handle = await session.submit("gpt-image-2", "[never] x", timeout=900)
        ...         with pytest.raises(TaskTimeoutError):
        ...             await handle  # 900 virtual seconds, a few real milliseconds
        ...         assert clock.now() == 900
    """

    def __init__(
        self,
        *,
        start: float = 0.0,
        autojump: bool = True,
        autojump_threshold: float = 0.0,
        idle_iterations: int = 3,
    ) -> None:
        if not math.isfinite(start):
            raise ValueError(f"start must be a finite number of seconds (got {start!r})")
        if not autojump_threshold >= 0:
            raise ValueError(
                f"autojump_threshold must be 0 or more real seconds (got {autojump_threshold!r})"
            )
        if idle_iterations < 1:
            raise ValueError(f"idle_iterations must be at least 1 (got {idle_iterations!r})")
        self._now = start
        self._timers: list[tuple[float, int, _Timer]] = []
        self._live = 0
        self._seq = itertools.count()
        self.autojump = autojump
        self._threshold = autojump_threshold
        self._idle_needed = idle_iterations
        self._quiet = 0
        self._watching: asyncio.AbstractEventLoop | None = None
        self.jumps = 0
        """How many times the clock has jumped by itself (for tests of the clock)."""

    def __repr__(self) -> str:
        return f"<FakeClock now={self._now!r} timers={self._live}>"

    def now(self) -> float:
        """The virtual time in seconds."""
        self._quiet = 0
        return self._now

    async def sleep_until(self, deadline: float) -> None:
        """Return once virtual time reaches `deadline` (after one yield if it already has)."""
        if deadline <= self._now:
            await asyncio.sleep(0)
            return
        future = asyncio.get_running_loop().create_future()
        timer = self._call_at(deadline, lambda: _resolve(future))
        try:
            await future
        finally:
            timer.cancel()

    def call_later(self, delay: float, callback: Callable[[], object]) -> TimerHandle:
        """Run `callback()` once virtual time has moved `delay` seconds on."""
        if math.isnan(delay):
            raise ValueError("delay must be a number of seconds (got nan)")
        return self._call_at(self._now + max(delay, 0.0), callback)

    def _call_at(self, when: float, callback: Callable[[], object]) -> _Timer:
        # Absolute times keep `sleep_until(t)` exact: now + (t - now) can round past t.
        timer = _Timer(self, when, callback)
        heapq.heappush(self._timers, (timer.when, next(self._seq), timer))
        self._live += 1
        self._quiet = 0
        if self.autojump:
            loop = asyncio.get_running_loop()
            if self._watching is not loop:
                self._watch(loop)
        return timer

    def next_deadline(self) -> float:
        """When the earliest pending timer fires (inf when none is pending)."""
        self._drop_cancelled()
        return self._timers[0][0] if self._timers else math.inf

    def advance(self, seconds: float) -> None:
        """Move time `seconds` on, firing every timer due on the way, earliest first.

        Each callback runs with `now()` at its own timer's time; tasks the callbacks wake
        run after `advance` returns, when `now()` is the final time.
        """
        if not seconds >= 0:
            raise ValueError(f"advance takes 0 or more seconds (got {seconds!r})")
        target = self._now + seconds
        self._fire_until(target)
        self._now = target

    def _fire_until(self, target: float) -> None:
        # `self._timers` is read afresh each time: a callback's cancel may rebuild it.
        while self._timers and self._timers[0][0] <= target:
            when, _, timer = heapq.heappop(self._timers)
            if timer.cancelled:
                continue
            timer.cancelled = True  # it ran: a late cancel() is a no-op
            self._live -= 1
            self._now = max(self._now, when)
            try:
                timer.callback()
            except Exception as exc:  # like a loop callback: report it, keep the clock going
                asyncio.get_running_loop().call_exception_handler(
                    {"message": f"exception in {timer!r}", "exception": exc}
                )

    def _forget(self, timer: _Timer) -> None:
        self._live -= 1
        if len(self._timers) > 2 * self._live + 64:  # prune cancelled timers
            self._timers = [item for item in self._timers if not item[2].cancelled]
            heapq.heapify(self._timers)

    def _drop_cancelled(self) -> None:
        timers = self._timers
        while timers and timers[0][2].cancelled:
            heapq.heappop(timers)

    # --- autojump ----------------------------------------------------------------------------

    def _watch(self, loop: asyncio.AbstractEventLoop) -> None:
        self._watching = loop
        self._quiet = 0
        loop.call_soon(self._check_idle, loop)

    def _check_idle(self, loop: asyncio.AbstractEventLoop) -> None:
        if loop is not self._watching:  # the clock has moved on to another event loop
            return
        self._drop_cancelled()
        if not self.autojump or not self._timers:
            self._watching = None
            return
        ready = getattr(loop, "_ready", None)
        if ready is None:  # a loop that hides its queue: count quiet iterations since use
            needed = self._idle_needed * FALLBACK_FACTOR
            self._quiet += 1
        else:
            needed = self._idle_needed
            self._quiet = self._quiet + 1 if not ready else 0
        if self._quiet < needed:
            loop.call_soon(self._check_idle, loop)
        elif self._threshold and self._quiet == needed:
            self._quiet += 1  # wait once, in real time, for work the loop cannot show
            loop.call_later(self._threshold, self._check_idle, loop)
        else:
            self.jumps += 1
            self._quiet = 0
            self._fire_until(self._timers[0][0])
            loop.call_soon(self._check_idle, loop)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
