"""Poll workers and their watchdog: the machinery that keeps every poll bounded.

A fixed pool of `max_inflight` workers takes due tasks from a bounded queue, so the number
of coroutines never depends on the number of pending tasks and no task is spawned per poll.

Every poll is bounded: it is abandoned (and counted as a transient failure) at its
`poll_timeout`, or at once when its task's deadline passes, so a hung poll never holds a
handle past its deadline. A poll still running after `STUCK_AFTER` seconds lets a
replacement worker in, so slow polls never starve healthy tasks; at most `max_inflight`
polls may be stuck at once, and when one more gets stuck the one stuck longest is abandoned
early, so `max_inflight` workers always stay free for healthy tasks however many polls hang.
One watchdog per pool, not one timer per poll, enforces all of this: a poll only writes
down when it must be looked at, and the watchdog wakes for the earliest of those.

The watchdog is a coroutine in the poller's task group, woken by a timer that only sets an
event: a loop callback cannot start tasks, and one that raised would die silently with its
timer. If it raises anyway, the poller's `run` raises and the session ends every handle.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable, Callable
from typing import Final, Generic, NoReturn, Protocol, TypeVar

from anyio.abc import TaskGroup

from ._clock import Clock, TimerHandle
from ._errors import APIError, APITimeoutError
from ._handles import TaskHandle
from .models import ImageTask

logger: Final = logging.getLogger("worldrouter_async")

POLL_TASK_NAME: Final = "worldrouter-async poll"

STUCK_AFTER: Final = 1.0
"""Seconds after which a poll still in flight lets a replacement worker in."""


class Polled(Protocol):
    """What the workers need of a pending task: its handle, deadline and current worker,
    and whether it is still tracked."""

    handle: TaskHandle
    deadline: float
    worker: Worker | None
    active: bool


_E = TypeVar("_E", bound=Polled)
_E_contra = TypeVar("_E_contra", bound=Polled, contravariant=True)


class PollOwner(Protocol[_E_contra]):
    """What the workers hand each poll's outcome to: the poller, which decides what it
    means for the handle (see `_poll_answers`)."""

    def past_deadline(self, entry: _E_contra, now: float) -> bool:
        """End `entry` if its deadline has passed, and say so (then it is not polled)."""

    def on_task(self, entry: _E_contra, task: ImageTask) -> None:
        """Apply a poll's answer."""

    def on_poll_error(self, entry: _E_contra, exc: APIError) -> None:
        """Apply a failed poll (an abandoned one fails with `APITimeoutError`)."""

    def on_poll_bug(self, entry: _E_contra, exc: Exception) -> None:
        """End `entry` on an unexpected error: a bug ends one handle, never the poller."""


class Worker:
    """One poll worker and the poll it has in flight, so the watchdog can abandon that poll.

    `check` is when the watchdog must next look at the poll (inf when idle): first when it
    becomes stuck, then at `end`, when it is abandoned.
    """

    __slots__ = ("check", "crowded", "end", "entry", "expired", "started", "stuck", "task")

    def __init__(self, task: asyncio.Task[object]) -> None:
        self.task = task
        self.entry: Polled | None = None
        self.check = math.inf
        self.end = math.inf
        self.started = math.inf
        self.expired = False
        self.crowded = False
        self.stuck = False

    def abandon(self, *, crowded: bool = False) -> None:
        """Cancel the poll in flight; `PollWorkers._poll` turns that into a timeout.

        `crowded` says it goes before its end, to make room beside other stuck polls.
        """
        if not self.expired:
            self.expired = True
            self.crowded = crowded
            self.task.cancel()


class PollWorkers(Generic[_E]):
    """The pool of poll workers of one poller, and the watchdog that bounds their polls.

    Each worker takes the next due task from `queue`, polls it with `fetch`, and hands the
    answer or the failure to `owner`.
    """

    def __init__(
        self,
        owner: PollOwner[_E],
        fetch: Callable[[str], Awaitable[ImageTask]],
        *,
        max_inflight: int,
        clock: Clock,
        poll_timeout: float,
    ) -> None:
        self._owner = owner
        self._fetch = fetch
        self._max_inflight = max_inflight
        self._clock = clock
        self._poll_timeout = poll_timeout
        self._stuck_after = min(STUCK_AFTER, poll_timeout)
        #: Due tasks waiting for a worker; its bound is what limits polls in flight.
        self.queue: asyncio.Queue[_E] = asyncio.Queue(maxsize=max_inflight)
        self._task_group: TaskGroup | None = None
        self._pool: set[Worker] = set()
        self._watchdog: TimerHandle | None = None
        self._watch_at = math.inf
        self._watch_due = asyncio.Event()
        self._workers = 0
        self._stuck = 0

    @property
    def workers(self) -> int:
        """Poll workers running now: `max_inflight`, plus replacements for stuck polls."""
        return self._workers

    def start(self, task_group: TaskGroup) -> None:
        """Start the watchdog and `max_inflight` workers in `task_group`."""
        self._task_group = task_group
        task_group.start_soon(self._watchdog_loop, name=f"{POLL_TASK_NAME} watchdog")
        for _ in range(self._max_inflight):
            self._add_worker()

    def _add_worker(self) -> None:
        """Start one more poll worker; called only from tasks of the poller's task group."""
        assert self._task_group is not None
        self._task_group.start_soon(self._poll_worker, name=POLL_TASK_NAME)
        self._workers += 1

    async def _poll_worker(self) -> None:
        task = asyncio.current_task()
        assert task is not None
        worker = Worker(task)
        self._pool.add(worker)
        try:
            # A replacement for a stuck poll leaves once that poll is over, so the pool
            # shrinks back to `max_inflight` healthy workers.
            while self._workers - self._stuck <= self._max_inflight:
                await self._poll(worker, await self.queue.get())
        finally:
            self._workers -= 1
            self._pool.discard(worker)
            if not self._pool:
                self.stop_watchdog()

    async def _poll(self, worker: Worker, entry: _E) -> None:
        """One poll of `entry` by `worker`, bounded; its answer or failure goes to the owner."""
        if not entry.active:  # cancelled while waiting in the queue
            return
        owner = self._owner
        now = self._clock.now()
        if owner.past_deadline(entry, now):  # waited in the queue past its deadline
            return
        # The poll ends at the poll timeout or the task's deadline, whichever comes first;
        # the watchdog looks at it first at `STUCK_AFTER`, if that comes sooner.
        end = worker.end = min(now + self._poll_timeout, entry.deadline)
        check = worker.check = min(now + self._stuck_after, end)
        worker.started = now
        worker.entry, entry.worker, worker.expired = entry, worker, False
        worker.crowded = False
        if check < self._watch_at:
            self._arm_watchdog(check, now)
        handle = entry.handle
        cancelling = worker.task.cancelling()
        try:
            task = await self._fetch(handle.task_id or "")
        except APIError as exc:
            self._end_poll(worker, entry)
            if entry.active:
                owner.on_poll_error(entry, exc)
        except asyncio.CancelledError:
            self._end_poll(worker, entry)
            if not worker.expired or worker.task.uncancel() > cancelling:
                raise  # the session is closing, not the watchdog
            if entry.active:
                owner.on_poll_error(entry, self._abandoned_error(worker, handle, end - now))
        except Exception as exc:  # a bug must end one handle, never the poller
            self._end_poll(worker, entry)
            logger.exception("unexpected error polling task %s", handle.task_id)
            if entry.active:
                owner.on_poll_bug(entry, exc)
        else:
            self._end_poll(worker, entry)
            if entry.active:
                owner.on_task(entry, task)

    def _abandoned_error(self, worker: Worker, handle: TaskHandle, bound: float) -> APITimeoutError:
        if worker.crowded:
            return APITimeoutError(
                f"the poll of task {handle.task_id} was still unanswered after "
                f"{self._clock.now() - worker.started:.3g}s while {self._max_inflight} other "
                "polls hung too, and was abandoned early to keep the other tasks polled"
            )
        return APITimeoutError(
            f"the poll of task {handle.task_id} got no answer within {bound:.3g}s and was abandoned"
        )

    def _end_poll(self, worker: Worker, entry: _E) -> None:
        # The watchdog's timer is left alone: it finds nothing to do here when it fires.
        worker.check = math.inf
        worker.entry = entry.worker = None
        if worker.stuck:
            worker.stuck = False
            self._stuck -= 1

    def _arm_watchdog(self, at: float, now: float) -> None:
        """Make the watchdog wake at `at` (earlier than it would have).

        The timer only sets an event; the watchdog's work runs in its own task.
        """
        if self._watchdog is not None:
            self._watchdog.cancel()
        self._watch_at = at
        self._watchdog = self._clock.call_later(at - now, self._watch_due.set)

    def stop_watchdog(self) -> None:
        """Cancel the watchdog's timer (the poller is closing, or no worker is left)."""
        if self._watchdog is not None:
            self._watchdog.cancel()
        self._watchdog, self._watch_at = None, math.inf

    async def _watchdog_loop(self) -> NoReturn:
        """The watchdog's task: wait for its timer, then look at the polls due a look."""
        while True:
            await self._watch_due.wait()
            self._watch_due.clear()
            self._watch()

    def _watch(self) -> None:
        """Deal with every poll due a look by now, then set the timer for the next.

        Polls due at the time the watchdog was set for are handled even if the timer fired
        a hair early, so a fake clock sees polls abandoned at exactly their end.
        """
        now = self._clock.now()
        at = now if self._watch_at == math.inf else max(self._watch_at, now)
        self._watchdog, self._watch_at = None, math.inf
        upcoming = math.inf
        for worker in tuple(self._pool):
            if worker.check <= at:
                if worker.check < worker.end:
                    self._on_slow_poll(worker)
                else:
                    worker.check = math.inf
                    worker.abandon()
            upcoming = min(upcoming, worker.check)
        if upcoming < math.inf:
            self._arm_watchdog(upcoming, now)

    def _on_slow_poll(self, worker: Worker) -> None:
        """Let a replacement worker in for a stuck poll, and look again at its end.

        At most `max_inflight` polls stay stuck: one more abandons the one stuck longest,
        so the healthy workers never drop below `max_inflight`.
        """
        if self._stuck >= self._max_inflight:
            self._abandon_longest_stuck()
        worker.check = worker.end
        worker.stuck = True
        self._stuck += 1
        if self._workers - self._stuck < self._max_inflight:
            task_id = worker.entry.handle.task_id if worker.entry else None
            logger.debug("the poll of task %s is slow; adding a poll worker", task_id)
            self._add_worker()

    def _abandon_longest_stuck(self) -> None:
        stuck = [worker for worker in self._pool if worker.stuck and not worker.expired]
        if stuck:
            oldest = min(stuck, key=lambda worker: worker.started)
            oldest.check = math.inf
            oldest.abandon(crowded=True)
