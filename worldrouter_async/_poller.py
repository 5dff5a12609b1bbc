"""The one poller coroutine per session, multiplexing the status checks of every pending task.

Pending tasks sit in a `DueQueue`; the poller sleeps until the earliest is due (or a new
task is due sooner), then hands it to a pool of `max_inflight` poll workers, so the number
of coroutines never depends on the number of pending tasks and no task is spawned per poll.
A poll error only reschedules that task; a 429 holds every poll through the `Throttle`.

Every poll is bounded: it is abandoned (and counted as a transient failure) at its
`poll_timeout`, or at once when its task's deadline passes, so a hung poll never holds a
handle past its deadline. A poll still running after `STUCK_AFTER` seconds lets a
replacement worker in, so slow polls never starve healthy tasks; at most `max_inflight`
polls may be stuck at once, and when one more gets stuck the one stuck longest is abandoned
early, so `max_inflight` workers always stay free for healthy tasks however many polls hang.
One watchdog per poller, not one timer per poll, enforces all of this: a poll only writes
down when it must be looked at, and the watchdog wakes for the earliest of those.

The watchdog is a coroutine in the poller's task group, woken by a timer that only sets an
event: a loop callback cannot start tasks, and one that raised would die silently with its
timer. If any part of this machinery raises anyway, `run` raises and the session ends every
handle with `PollerFailedError` (see `Poller.fail`). Time is read only through the
session's `Clock`.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable, Callable
from typing import Final, NoReturn

from anyio.abc import TaskGroup

from ._cadence import Cadence, Cohort, first_delay, learn, next_delay, poll_failed
from ._clock import Clock, TimerHandle
from ._config import PollPolicy, RetryPolicy
from ._due import DueQueue
from ._errors import (
    APIError,
    APITimeoutError,
    InvalidRequestError,
    NoImagesError,
    PollerFailedError,
    RateLimitError,
    SessionClosedError,
    TaskFailedError,
    TaskNotFoundError,
    TaskTimeoutError,
    UnpollableTaskIdError,
    first_leaf,
)
from ._events import StatusFeed
from ._handles import ImageResult, TaskHandle
from ._retries import is_transient
from ._stats import Counters
from ._throttle import Throttle
from .models import ImageRequest, ImageTask, TaskStatus

logger: Final = logging.getLogger("worldrouter_async")

POLL_TASK_NAME: Final = "worldrouter-async poll"

STUCK_AFTER: Final = 1.0
"""Seconds after which a poll still in flight lets a replacement worker in."""


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
        self.worker: _Worker | None = None


class _Worker:
    """One poll worker and the poll it has in flight, so the watchdog can abandon that poll.

    `check` is when the watchdog must next look at the poll (inf when idle): first when it
    becomes stuck, then at `end`, when it is abandoned.
    """

    __slots__ = ("check", "crowded", "end", "entry", "expired", "started", "stuck", "task")

    def __init__(self, task: asyncio.Task[object]) -> None:
        self.task = task
        self.entry: _Entry | None = None
        self.check = math.inf
        self.end = math.inf
        self.started = math.inf
        self.expired = False
        self.crowded = False
        self.stuck = False

    def abandon(self, *, crowded: bool = False) -> None:
        """Cancel the poll in flight; `Poller._poll` turns that into a transient failure.

        `crowded` says it goes before its end, to make room beside other stuck polls.
        """
        if not self.expired:
            self.expired = True
            self.crowded = crowded
            self.task.cancel()


class Poller:
    """Schedules and sends the polls of every pending task of one session."""

    def __init__(
        self,
        fetch: Callable[[str], Awaitable[ImageTask]],
        *,
        policy: PollPolicy,
        retry: RetryPolicy,
        throttle: Throttle,
        max_inflight: int,
        counters: Counters,
        events: StatusFeed,
        clock: Clock,
        poll_timeout: float,
    ) -> None:
        self._fetch = fetch
        self._policy = policy
        self._retry = retry
        self._throttle = throttle
        self._max_inflight = max_inflight
        self._clock = clock
        self._poll_timeout = poll_timeout
        self._stuck_after = min(STUCK_AFTER, poll_timeout)
        # Timer slack: polls due within this much of each other go out in one wake-up, a
        # few milliseconds early at most, instead of one event-loop round trip each.
        self._slack = min(policy.initial_delay / 10, policy.max_interval / 100, 0.05)
        self._queue: asyncio.Queue[_Entry] = asyncio.Queue(maxsize=max_inflight)
        self._counters = counters
        self._events = events
        self._due: DueQueue[_Entry] = DueQueue()
        self._wakeup = asyncio.Event()
        self._entries: dict[TaskHandle, _Entry] = {}
        self._cadence: Cadence[_Entry] = Cadence()
        self._task_group: TaskGroup | None = None
        self._pool: set[_Worker] = set()
        self._watchdog: TimerHandle | None = None
        self._watch_at = math.inf
        self._watch_due = asyncio.Event()
        self._workers = 0
        self._stuck = 0
        self._closed = False
        self._failure: BaseException | None = None

    @property
    def pending(self) -> int:
        """How many tasks are being tracked now."""
        return len(self._entries)

    @property
    def workers(self) -> int:
        """Poll workers running now: `max_inflight`, plus replacements for stuck polls."""
        return self._workers

    def track(self, handle: TaskHandle, *, timeout: float, fresh: bool) -> None:
        """Start polling `handle`'s task; `timeout` seconds from now it fails with a timeout.

        `fresh` says the task was created just now, so how long it takes can teach the
        poller about tasks of the same shape (see `_cadence`).
        """
        if self._closed:
            handle._settle_error(self._ending_error(handle, None))
            self._events.ended(handle)
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
        self._counters.pending += 1
        self._schedule(entry, now + self._first_delay(entry))

    def _first_delay(self, entry: _Entry) -> float:
        return first_delay(self._policy, entry.cohort, entry)

    def _learn(self, entry: _Entry, *, completed: bool) -> None:
        """Feed a finished task's duration to its cohort and release the parked tasks."""
        learn(entry.cohort, entry, self._clock.now(), completed=completed, schedule=self._schedule)

    def untrack(self, handle: TaskHandle) -> None:
        """Stop polling `handle`, abandoning its poll in flight if there is one."""
        entry = self._entries.pop(handle, None)
        if entry is not None:
            entry.active = False
            self._due.cancel(entry)
            self._counters.pending -= 1
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
        self._stop_watchdog()
        entries, self._entries = self._entries, {}
        self._due.clear()
        for entry in entries.values():
            entry.active = False
            self._counters.pending -= 1
            entry.handle._settle_error(self._ending_error(entry.handle, entry.last_error))
            self._events.ended(entry.handle)

    def fail(self, cause: BaseException) -> None:
        """The poller stopped on `cause`: end every handle, and later tracks, with
        `PollerFailedError`, so no wait is left without a poller to end it."""
        logger.error("the poller stopped on an internal error; pending tasks end", exc_info=cause)
        if self._failure is None:
            self._failure = first_leaf(cause)
        self.close()

    def _ending_error(self, handle: TaskHandle, last_error: APIError | None) -> SessionClosedError:
        if self._failure is None:
            return _closed_error(handle, last_error)
        task_id = handle.task_id or ""
        error = PollerFailedError(
            f"the session's poller stopped on an internal error "
            f"({type(self._failure).__name__}: {self._failure}) while task {task_id} was "
            "pending; the task may still complete: track it from a new session with "
            f"Session.track({task_id!r})",
            task_id=task_id,
        )
        error.__cause__ = self._failure
        return error

    async def run(self, task_group: TaskGroup) -> NoReturn:
        """The poller loop: hand each task to a poll worker when due, forever.

        The workers and the watchdog are started in `task_group`; the bounded queue between
        the loop and the workers is what limits polls in flight.
        """
        self._task_group = task_group
        task_group.start_soon(self._watchdog_loop, name=f"{POLL_TASK_NAME} watchdog")
        for _ in range(self._max_inflight):
            self._add_worker()
        while True:
            entry = await self._next_due()
            if self._throttle.paused:  # pacing happens per request, in the transport
                await self._throttle.wait_unpaused()
            if not entry.active:
                continue
            if self._queue.full():
                await self._queue.put(entry)
            else:
                self._queue.put_nowait(entry)

    def _add_worker(self) -> None:
        """Start one more poll worker; called only from tasks of the poller's task group."""
        assert self._task_group is not None
        self._task_group.start_soon(self._poll_worker, name=POLL_TASK_NAME)
        self._workers += 1

    async def _poll_worker(self) -> None:
        task = asyncio.current_task()
        assert task is not None
        worker = _Worker(task)
        self._pool.add(worker)
        try:
            # A replacement for a stuck poll leaves once that poll is over, so the pool
            # shrinks back to `max_inflight` healthy workers.
            while self._workers - self._stuck <= self._max_inflight:
                await self._poll(worker, await self._queue.get())
        finally:
            self._workers -= 1
            self._pool.discard(worker)
            if not self._pool:
                self._stop_watchdog()

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

    async def _poll(self, worker: _Worker, entry: _Entry) -> None:
        if not entry.active:  # cancelled while waiting in the queue
            return
        now = self._clock.now()
        if self._past_deadline(entry, now):  # waited in the queue past its deadline
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
                self._on_poll_error(entry, exc)
        except asyncio.CancelledError:
            self._end_poll(worker, entry)
            if not worker.expired or worker.task.uncancel() > cancelling:
                raise  # the session is closing, not the watchdog
            if entry.active:
                self._on_poll_error(entry, self._abandoned_error(worker, handle, end - now))
        except Exception as exc:  # a bug must end one handle, never the poller
            self._end_poll(worker, entry)
            logger.exception("unexpected error polling task %s", handle.task_id)
            if entry.active:
                self._settle(entry, exc)
        else:
            self._end_poll(worker, entry)
            if entry.active:
                self._on_task(entry, task)

    def _abandoned_error(
        self, worker: _Worker, handle: TaskHandle, bound: float
    ) -> APITimeoutError:
        if worker.crowded:
            return APITimeoutError(
                f"the poll of task {handle.task_id} was still unanswered after "
                f"{self._clock.now() - worker.started:.3g}s while {self._max_inflight} other "
                "polls hung too, and was abandoned early to keep the other tasks polled"
            )
        return APITimeoutError(
            f"the poll of task {handle.task_id} got no answer within {bound:.3g}s and was abandoned"
        )

    def _end_poll(self, worker: _Worker, entry: _Entry) -> None:
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

    def _stop_watchdog(self) -> None:
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

    def _on_slow_poll(self, worker: _Worker) -> None:
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

    def _on_task(self, entry: _Entry, task: ImageTask) -> None:
        handle = entry.handle
        entry.errors = 0
        entry.last_error = None
        previous = handle._observe(task)
        if task.is_terminal:
            self._learn(entry, completed=task.status == TaskStatus.COMPLETED)
        if task.status == TaskStatus.COMPLETED:
            self._counters.add_usage(task.usage)
            self._on_completed(entry, task)
        elif task.status == TaskStatus.FAILED:
            self._counters.failed += 1
            error = task.error
            self._settle(
                entry,
                TaskFailedError(
                    task_id=handle.task_id or task.id,
                    code=error.code if error else None,
                    message=error.message if error else "the server gave no reason",
                ),
            )
        # Published after a final status settles the handle, before a deadline can end it.
        if previous != task.status:
            self._events.changed(handle, previous, task.status)
        if not task.is_terminal:
            now = self._clock.now()
            if not self._past_deadline(entry, now):
                self._schedule(entry, now + self._delay_after(entry, task, previous, now))

    def _on_completed(self, entry: _Entry, task: ImageTask) -> None:
        """Settle a completed task: its result, or `NoImagesError` if it has no image."""
        if task.has_image:
            self._counters.completed += 1
            self._settle(entry, None, ImageResult.from_task(task))
            return
        self._counters.failed += 1
        self._settle(entry, NoImagesError(task=task, task_id=entry.handle.task_id or task.id))

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

    def _on_poll_error(self, entry: _Entry, exc: APIError) -> None:
        entry.last_error = exc
        if not self._worth_another_poll(entry, exc):
            self._counters.failed += 1
            self._settle(entry, exc)
            return
        now = self._clock.now()
        if self._past_deadline(entry, now):
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

    def _worth_another_poll(self, entry: _Entry, exc: APIError) -> bool:
        """True for a transient failure, and for a 404 within `not_found_grace` of the
        create (a replica may not know a task it was just told about); False ends it."""
        if isinstance(exc, TaskNotFoundError):
            since = entry.fresh_since
            grace = self._policy.not_found_grace
            return since is not None and self._clock.now() < since + grace
        return is_transient(exc)

    def _past_deadline(self, entry: _Entry, now: float) -> bool:
        if now < entry.deadline:
            return False
        self._time_out(entry)
        return True

    def _time_out(self, entry: _Entry) -> None:
        task_id = entry.handle.task_id or ""
        error = TaskTimeoutError(
            f"task {task_id} did not finish before its deadline (last status "
            f"{_last_status(entry.handle)}{_last_failure(entry.last_error)}); it may still "
            f"complete: Session.track({task_id!r}) to wait again",
            task_id=task_id,
        )
        error.__cause__ = entry.last_error
        self._settle(entry, error)

    def _settle(
        self, entry: _Entry, error: BaseException | None, result: ImageResult | None = None
    ) -> None:
        self.untrack(entry.handle)
        if result is not None:
            entry.handle._settle_result(result)
        elif error is not None:
            entry.handle._settle_error(error)
            self._events.ended(entry.handle)


def _last_status(handle: TaskHandle) -> str:
    """The last status seen, saying so when no docs name it, with its answer's request id."""
    status = handle.status
    task = handle.task
    text = repr(status)
    if status is not None and status not in TaskStatus.KNOWN:
        text += ", which the API documentation does not name: the server may have stopped it"
    if task is not None and task.request_id:
        text += f"; request_id={task.request_id!r}"
    return text


def _last_failure(error: APIError | None) -> str:
    """The message tail that says why the last poll failed, if it did."""
    return "" if error is None else f"; last poll failed: {type(error).__name__}: {error}"


def _closed_error(handle: TaskHandle, last_error: APIError | None) -> SessionClosedError:
    task_id = handle.task_id or ""
    error = SessionClosedError(
        f"the session closed while task {task_id} was pending{_last_failure(last_error)}; "
        "the task may still complete: track it from a new session with "
        f"Session.track({task_id!r})",
        task_id=task_id,
    )
    error.__cause__ = last_error
    return error


def unpollable(
    task: ImageTask, request: ImageRequest | None, problem: InvalidRequestError
) -> TaskHandle:
    """The handle of a task just created under an id no poll can name (blank, ``.``,
    ``..``): it ends at once with `UnpollableTaskIdError`, which keeps the create's answer
    as the receipt."""
    task_id = task.task_id or task.id
    error = UnpollableTaskIdError(
        f"the create answered task id {task_id!r}, which no poll URL can name (ids must not "
        "be blank, '.' or '..'), so the task cannot be tracked. It was created and may be "
        f"billed (status {task.status!r}): quote the id and the request_id to support",
        task=task,
        status=200,
        request_id=task.request_id,
    )
    error.__cause__ = problem
    handle = TaskHandle(task_id, request=request, task=task)
    handle._settle_error(error)
    return handle
