"""The outage breaker: stop sending paid creates into an API that is down, probe, resume.

During an outage every create sent may come back ambiguous (a 502 or a dropped connection
cannot say whether the task was made), so the damage grows with every create sent, not with
the outage's length. After `threshold` consecutive connection failures or 502/503/504
answers the breaker opens: new requests wait, one probe at a time asks whether the API is
back, and everything resumes when an answer comes through. Ambiguous creates are then
bounded by the creates already in flight when the outage began.

Until the API has answered once in a session nothing waits: an API never reached is a
setting to fix (base URL, proxy, firewall), so its failures surface at once instead of after
the breaker's patience. Opening, each probe and closing are reported to the session's
`Hooks` (`BreakerOpened`, `BreakerProbeSent`, `BreakerClosed`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Final

from ._clock import Clock, TimerHandle
from ._hooks import BreakerClosed, BreakerOpened, BreakerProbeSent, Hooks

OUTAGE_STATUSES: Final = frozenset({502, 503, 504})
"""Answers that mean a gateway could not reach the API, or the API is down."""

DEFAULT_THRESHOLD: Final = 5
"""Consecutive outage failures that open the breaker."""


class Breaker:
    """Counts consecutive outage failures; while open, holds requests and probes for recovery.

    The hot path reads plain attributes: `is_open` and `epoch` before a request (wait only
    when open) and `failures` after a success (reset only when non-zero). "In a row" is in
    the order requests were sent: the late answer to a request sent before a failure proves
    nothing about the server now, so only a request sent after the latest failure resets
    the count. Otherwise stale answers arriving during an outage would keep it closed.

    Args:
        clock: decides when probes are due and how long requests wait.
        probe: one request that creates nothing; True once the API answers again.
        backoff: seconds before probe number ``n`` (1-based) after the breaker opened.
        patience: seconds a request waits on an open breaker before it is sent anyway.
        hooks: where openings, probes and closings are reported.
        threshold: consecutive outage failures that open the breaker.
    """

    __slots__ = (
        "_backoff",
        "_changed",
        "_clock",
        "_closed",
        "_hooks",
        "_next_probe",
        "_opened_at",
        "_patience",
        "_probe",
        "_probes",
        "_probing",
        "_threshold",
        "_timer",
        "answered",
        "epoch",
        "failures",
        "is_open",
    )

    def __init__(
        self,
        clock: Clock,
        *,
        probe: Callable[[], Awaitable[bool]],
        backoff: Callable[[int], float],
        patience: float,
        hooks: Hooks,
        threshold: int = DEFAULT_THRESHOLD,
    ) -> None:
        self._clock = clock
        self._probe = probe
        self._backoff = backoff
        self._patience = patience
        self._hooks = hooks
        self._threshold = threshold
        self._changed = asyncio.Event()
        self._timer: TimerHandle | None = None
        self._opened_at = 0.0
        self._next_probe = 0.0
        self._probes = 0
        self._probing = False
        self._closed = False
        #: Consecutive outage failures seen since the last answer that came through.
        self.failures = 0
        #: Outage failures ever seen; read when a request is sent, passed to `record_success`.
        self.epoch = 0
        #: True while requests must wait for a probe to succeed.
        self.is_open = False
        #: True once any answer came through in this session (only then is a failure an outage).
        self.answered = False

    def __repr__(self) -> str:
        state = "open" if self.is_open else "closed"
        return f"<Breaker {state} failures={self.failures}>"

    def record_failure(self) -> None:
        """Note a connection failure or a 502/503/504; open after `threshold` in a row."""
        self.failures += 1
        self.epoch += 1
        if not self.is_open and self.failures >= self._threshold:
            self.is_open = True
            self._opened_at = self._clock.now()
            self._probes = 0
            self._hooks.emit(BreakerOpened(self.failures))
            self._schedule_probe()

    def record_success(self, epoch: int | None = None) -> None:
        """Note an answer that came through; closes the breaker if it was open.

        `epoch` is the value of `epoch` when that request was sent: an answer to a request
        sent before the latest failure is ignored. Probes pass None (always news).
        """
        self.answered = True
        if epoch is not None and epoch != self.epoch:
            return
        self.failures = 0
        if self.is_open:
            self.is_open = False
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            self._hooks.emit(BreakerClosed(self._clock.now() - self._opened_at))
            self._notify()

    async def wait(self) -> None:
        """Return once the breaker is closed, or after `patience` seconds of waiting (at once
        while the API has never answered in this session).

        While open, the first waiter that finds a probe due runs it; the others wait for
        its result, so only one probe is ever in flight.
        """
        if not self.answered:
            return
        give_up = self._clock.now() + self._patience
        while self.is_open and not self._closed:
            now = self._clock.now()
            if now >= give_up:
                return
            if not self._probing and now >= self._next_probe:
                await self._run_probe()
                continue
            await self._changed.wait()

    def close(self) -> None:
        """Release every waiter and stop probing: the session is closing."""
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._notify()

    async def _run_probe(self) -> None:
        self._probing = True
        self._probes += 1
        self._hooks.emit(BreakerProbeSent(self._probes))
        recovered = False
        try:
            recovered = await self._probe()
        finally:  # also when cancelled: the next waiter probes after the backoff
            self._probing = False
            if recovered:
                self.record_success()
            elif self.is_open and not self._closed:
                self._schedule_probe()

    def _schedule_probe(self) -> None:
        delay = self._backoff(self._probes + 1)
        self._next_probe = self._clock.now() + delay
        if self._timer is not None:
            self._timer.cancel()
        # Waking every waiter at each probe time also lets them notice `patience` ran out.
        self._timer = self._clock.call_later(delay, self._notify)

    def _notify(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()
