"""The one poller per session: schedules the status checks of every pending task.

Pending tasks sit in a `DueQueue`; the poller sleeps until the earliest is due (or a new
task is due sooner), then hands it to its `PollWorkers` (`_poll_workers`: a bounded pool
whose watchdog keeps every poll bounded). What an answer or a failure does to a handle is
decided by the functions of `_poll_answers`; the poller applies the decision: it settles
the handle, or reschedules the task (a poll error only reschedules that task; a 429 holds
every poll through the `Throttle`). What happens is reported to the session's `Hooks`,
whose subscribers keep the counters and the status feed.

If any part of this machinery raises, `run` raises and the session ends every handle with
`PollerFailedError` (see `Poller.fail`). Time is read only through the session's `Clock`.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable, Callable
from typing import Final, NoReturn

from anyio.abc import TaskGroup

from ._cadence import Cadence, Cohort, first_delay, learn, next_delay, poll_failed
from ._clock import Clock
from ._config import PollPolicy, RetryPolicy
from ._due import DueQueue
from ._errors import APIError, RateLimitError, first_leaf
from ._handles import ImageResult, TaskHandle
from ._hooks import Hooks, TaskEnded, TaskResolved, TaskStatusChanged, TaskTracked, TaskUntracked
from ._poll_answers import (
    completed,
    ending_error,
    failed,
    timeout_error,
    unpollable,
    worth_another_poll,
)
from ._poll_workers import PollWorkers, Worker
from ._throttle import Throttle
from .models import ImageTask, TaskStatus

__all__ = ["Poller", "unpollable"]

logger: Final = logging.getLogger("worldrouter_async")


class _Entry:
    """Poller state of one pending task (slots keep 100,000 of them small)."""

    __slots__ = (
        "active",
        "cohort",
        "created",
        "deadline",
        "errors",
        "fresh_since",
        "handle",
        "last_error",
        "polls",
        "probe",
        "seen",
        "worker",
    )

    def __init__(
        self,
        handle: TaskHandle,
        deadline: float,
        created: float | None,
        cohort: Cohort[_Entry] | None,
    ) -> None:
        self.handle = handle
        self.deadline = deadline
        self.created = created
        #: When this session created the task (None if tracked by id): unlike `created`,
        #: kept after a failed poll, for `PollPolicy.not_found_grace`.
        self.fresh_since = created
        self.cohort = cohort
        self.polls = 0
        self.errors = 0
        self.active = True
        self.probe = False
        self.seen = created if created is not None else 0.0
        self.last_error: APIError | None = None
        self.worker: Worker | None = None


class Poller:
    """Schedules and sends the polls of every pending task of one session.

    It reports each task's life to `hooks`, the session's observer channel.
    """

    def __init__(
        self,
        fetch: Callable[[str], Awaitable[ImageTask]],
        *,
        policy: PollPolicy,
        retry: RetryPolicy,
        throttle: Throttle,
        max_inflight: int,
        hooks: Hooks,
        clock: Clock,
        poll_timeout: float,
    ) -> None:
        self._policy = policy
        self._retry = retry
        self._throttle = throttle
        self._clock = clock
        # Timer slack: polls due within this much of each other go out in one wake-up, a
        # few milliseconds early at most, instead of one event-loop round trip each.
        self._slack = min(policy.initial_delay / 10, policy.max_interval / 100, 0.05)
        self._hooks = hooks
        self._workers: PollWorkers[_Entry] = PollWorkers(
            self, fetch, max_inflight=max_inflight, clock=clock, poll_timeout=poll_timeout
        )
        self._due: DueQueue[_Entry] = DueQueue()
        self._wakeup = asyncio.Event()
        self._entries: dict[TaskHandle, _Entry] = {}
        self._cadence: Cadence[_Entry] = Cadence()
        self._closed = False
        self._failure: BaseException | None = None

    @property
    def pending(self) -> int:
        """How many tasks are being tracked now."""
        return len(self._entries)

    @property
    def workers(self) -> int:
        """Poll workers running now: `max_inflight`, plus replacements for stuck polls."""
        return self._workers.workers

    def track(self, handle: TaskHandle, *, timeout: float, fresh: bool) -> None:
        """Start polling `handle`'s task; `timeout` seconds from now it fails with a timeout.

        `fresh` says the task was created just now, so how long it takes can teach the
        poller about tasks of the same shape (see `_cadence`).
        """
        if self._closed:
            handle._settle_error(ending_error(handle, None, self._failure))
            self._hooks.emit(TaskEnded(handle))
            return
        now = self._clock.now()
        learns = fresh and self._policy.adaptive and handle.request is not None
        cohort = self._cadence.cohort(handle.request) if learns and handle.request else None
        entry = _Entry(
            handle,
            now + timeout if math.isfinite(timeout) else math.inf,
            now if fresh else None,
            cohort,
        )
        self._entries[handle] = entry
        self._hooks.emit(TaskTracked(handle))
        self._schedule(entry, now + first_delay(self._policy, entry.cohort, entry))

    def _learn(self, entry: _Entry, *, completed: bool) -> None:
        """Feed a finished task's duration to its cohort and release the parked tasks."""
        learn(entry.cohort, entry, self._clock.now(), completed=completed, schedule=self._schedule)

    def untrack(self, handle: TaskHandle) -> None:
        """Stop polling `handle`, abandoning its poll in flight if there is one."""
        entry = self._entries.pop(handle, None)
        if entry is not None:
            entry.active = False
            self._due.cancel(entry)
            self._hooks.emit(TaskUntracked(handle))
            if entry.probe and entry.cohort is not None:
                entry.cohort.probes -= 1
            if entry.worker is not None:
                entry.worker.abandon()

    @property
    def failure(self) -> BaseException | None:
        """The error that stopped the poller, if one did (see `fail`)."""
        return self._failure

    def close(self) -> None:
        """End every outstanding handle with `SessionClosedError`; later tracks fail at once."""
        self._closed = True
        self._workers.stop_watchdog()
        entries, self._entries = self._entries, {}
        self._due.clear()
        for entry in entries.values():
            entry.active = False
            handle = entry.handle
            self._hooks.emit(TaskUntracked(handle))
            handle._settle_error(ending_error(handle, entry.last_error, self._failure))
            self._hooks.emit(TaskEnded(handle))

    def fail(self, cause: BaseException) -> None:
        """The poller stopped on `cause`: end every handle, and later tracks, with
        `PollerFailedError`, so no wait is left without a poller to end it."""
        logger.error("the poller stopped on an internal error; pending tasks end", exc_info=cause)
        if self._failure is None:
            self._failure = first_leaf(cause)
        self.close()

    async def run(self, task_group: TaskGroup) -> NoReturn:
        """The poller loop: hand each task to a poll worker when due, forever.

        The workers and the watchdog are started in `task_group`; the bounded queue between
        the loop and the workers is what limits polls in flight.
        """
        self._workers.start(task_group)
        queue = self._workers.queue
        while True:
            entry = await self._next_due()
            if self._throttle.paused:  # pacing happens per request, in the transport
                await self._throttle.wait_unpaused()
            if not entry.active:
                continue
            if queue.full():
                await queue.put(entry)
            else:
                queue.put_nowait(entry)

    def _schedule(self, entry: _Entry, due: float) -> None:
        """Make `entry` due at `due`, or at its deadline if that comes first."""
        if self._due.schedule(entry, min(due, entry.deadline)):
            self._wakeup.set()

    async def _next_due(self) -> _Entry:
        due, clock = self._due, self._clock
        while True:
            now = clock.now()
            entry = due.pop_due(now + self._slack)
            if entry is not None:
                if entry.deadline > now + self._slack:
                    return entry
                # Due for its deadline, not a poll: end it on time, never a slack early.
                await clock.sleep_until(entry.deadline)
                if entry.active:
                    self._time_out(entry)
                continue
            delay = due.next_due() - now
            self._wakeup.clear()
            # A plain timer, not a cancel scope: this runs once per wake-up.
            timer = clock.call_later(delay, self._wakeup.set) if math.isfinite(delay) else None
            try:
                await self._wakeup.wait()
            finally:
                if timer is not None:
                    timer.cancel()

    def on_task(self, entry: _Entry, task: ImageTask) -> None:
        """Apply a poll's answer: settle a final one, publish a change, schedule the next."""
        handle = entry.handle
        entry.errors = 0
        entry.last_error = None
        previous = handle._observe(task)
        if task.is_terminal:
            self._learn(entry, completed=task.status == TaskStatus.COMPLETED)
        if task.status == TaskStatus.COMPLETED:
            outcome = completed(task, handle.task_id or "")
            succeeded = isinstance(outcome, ImageResult)
            self._hooks.emit(TaskResolved(handle, succeeded, task.usage))
            self._settle(entry, outcome)
        elif task.status == TaskStatus.FAILED:
            self._hooks.emit(TaskResolved(handle, False))
            self._settle(entry, failed(task, handle.task_id or ""))
        # Published after a final status settles the handle, before a deadline can end it.
        if previous != task.status:
            self._hooks.emit(TaskStatusChanged(handle, previous, task.status))
        if not task.is_terminal:
            now = self._clock.now()
            if not self.past_deadline(entry, now):
                self._schedule(entry, now + self._delay_after(entry, task, previous, now))

    def _delay_after(
        self, entry: _Entry, task: ImageTask, previous: str | None, now: float
    ) -> float:
        """Seconds to the next poll of a task still running, or in a status no docs name.

        An undocumented status (``cancelled``, ``expired``...) may mean the server stopped
        the task or may turn into a documented one: it is polled at the longest interval
        until the deadline, so it costs few polls and ends in a `TaskTimeoutError` naming it.
        """
        delay = next_delay(self._policy, entry.cohort, entry, now)
        if task.status in TaskStatus.KNOWN:
            return delay
        if previous != task.status:
            logger.warning(
                "task %s reports status %r, which the API documentation does not name; "
                "polling it every %.3gs until its deadline",
                entry.handle.task_id,
                task.status,
                self._policy.max_interval,
            )
        return self._policy.max_interval

    def on_poll_error(self, entry: _Entry, exc: APIError) -> None:
        """Apply a failed poll: end the handle, or poll again after a backoff (a 429 waits
        for the throttle's pause)."""
        entry.last_error = exc
        now = self._clock.now()
        if not worth_another_poll(exc, policy=self._policy, fresh_since=entry.fresh_since, now=now):
            self._hooks.emit(TaskResolved(entry.handle, False))
            self._settle(entry, exc)
            return
        if self.past_deadline(entry, now):
            return
        entry.errors += 1
        poll_failed(entry)
        if isinstance(exc, RateLimitError) and self._throttle.paused:
            due = self._throttle.paused_until
        else:
            due = now + max(self._retry.backoff(entry.errors), self._policy.interval(entry.polls))
        logger.debug(
            "poll of task %s failed (%s); next try in %.3fs", entry.handle.task_id, exc, due - now
        )
        self._schedule(entry, due)

    def on_poll_bug(self, entry: _Entry, exc: Exception) -> None:
        """End `entry` with the unexpected error a poll raised (a bug, already logged)."""
        self._settle(entry, exc)

    def past_deadline(self, entry: _Entry, now: float) -> bool:
        """End `entry` with `TaskTimeoutError` if its deadline has passed; True if so."""
        if now < entry.deadline:
            return False
        self._time_out(entry)
        return True

    def _time_out(self, entry: _Entry) -> None:
        self._settle(entry, timeout_error(entry.handle, entry.last_error))

    def _settle(self, entry: _Entry, outcome: ImageResult | BaseException) -> None:
        """Stop tracking `entry` and settle its handle with `outcome`."""
        handle = entry.handle
        self.untrack(handle)
        if isinstance(outcome, ImageResult):
            handle._settle_result(outcome)
        else:
            handle._settle_error(outcome)
            self._hooks.emit(TaskEnded(handle))
