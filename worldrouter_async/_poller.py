"""The one poller coroutine per session, multiplexing the status checks of every pending task.

Pending tasks sit in a due-time heap; the poller sleeps until the earliest is due (or a new
task is due sooner), then hands it to a fixed pool of `max_inflight` poll workers, so the
number of coroutines never depends on the number of pending tasks and no task is spawned
per poll. A poll error only reschedules that task; a 429 holds every poll through the
transport's `Throttle`.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import math
import time
from collections.abc import Awaitable, Callable
from typing import Final, NoReturn

from anyio.abc import TaskGroup

from ._cadence import Cadence, Cohort, first_delay, learn, next_delay, poll_failed
from ._config import PollPolicy, RetryPolicy
from ._errors import (
    APIError,
    APIStatusError,
    RateLimitError,
    SessionClosedError,
    TaskFailedError,
    TaskNotFoundError,
    TaskTimeoutError,
)
from ._handles import ImageResult, TaskHandle
from ._stats import Counters
from ._transport import Throttle
from .models import ImageTask, TaskStatus

logger: Final = logging.getLogger("worldrouter_async")

POLL_TASK_NAME: Final = "worldrouter-async poll"

StatusCallback = Callable[[TaskHandle, "str | None", str], object]
"""``on_status(handle, old_status, new_status)``, called on every status change."""


class _Entry:
    """Poller state of one pending task (slots keep 100,000 of them small)."""

    __slots__ = (
        "active",
        "cohort",
        "created",
        "deadline",
        "due",
        "errors",
        "handle",
        "polls",
        "probe",
        "seen",
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
        self.cohort = cohort
        self.due = math.inf
        self.polls = 0
        self.errors = 0
        self.active = True
        self.probe = False
        self.seen = created if created is not None else 0.0


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
        on_status: StatusCallback | None = None,
    ) -> None:
        self._fetch = fetch
        self._policy = policy
        self._retry = retry
        self._throttle = throttle
        self._max_inflight = max_inflight
        # Timer slack: polls due within this much of each other go out in one wake-up, a
        # few milliseconds early at most, instead of one event-loop round trip each.
        self._slack = min(policy.initial_delay / 10, policy.max_interval / 100, 0.05)
        self._due: asyncio.Queue[_Entry] = asyncio.Queue(maxsize=max_inflight)
        self._counters = counters
        self._on_status = on_status
        self._heap: list[tuple[float, int, _Entry]] = []
        self._seq = 0
        self._wakeup = asyncio.Event()
        self._entries: dict[TaskHandle, _Entry] = {}
        self._cadence: Cadence[_Entry] = Cadence()
        self._closed = False

    @property
    def pending(self) -> int:
        """How many tasks are being tracked now."""
        return len(self._entries)

    def track(self, handle: TaskHandle, *, timeout: float, fresh: bool) -> None:
        """Start polling `handle`'s task; `timeout` seconds from now it fails with a timeout.

        `fresh` says the task was created just now, so how long it takes can teach the
        poller about tasks of the same shape (see `_cadence`).
        """
        if self._closed:
            handle.settle_error(_closed_error(handle))
            return
        now = time.monotonic()
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
        learn(entry.cohort, entry, time.monotonic(), completed=completed, schedule=self._schedule)

    def untrack(self, handle: TaskHandle) -> None:
        """Stop polling `handle` (its heap slot is skipped lazily)."""
        entry = self._entries.pop(handle, None)
        if entry is not None:
            entry.active = False
            self._counters.pending -= 1
            if entry.probe and entry.cohort is not None:
                entry.cohort.probes -= 1

    def close(self) -> None:
        """End every outstanding handle with `SessionClosedError`; later tracks fail at once."""
        self._closed = True
        entries, self._entries = self._entries, {}
        self._heap.clear()
        for entry in entries.values():
            entry.active = False
            self._counters.pending -= 1
            entry.handle.settle_error(_closed_error(entry.handle))

    async def run(self, task_group: TaskGroup) -> NoReturn:
        """The poller loop: hand each task to a poll worker when due, forever.

        The workers are started once in `task_group`; the bounded queue between them is
        what limits polls in flight.
        """
        for _ in range(self._max_inflight):
            task_group.start_soon(self._poll_worker, name=POLL_TASK_NAME)
        while True:
            entry = await self._next_due()
            if self._throttle.paused:  # pacing happens per request, in the transport
                await self._throttle.wait_unpaused()
            if not entry.active:
                continue
            if self._due.full():
                await self._due.put(entry)
            else:
                self._due.put_nowait(entry)

    async def _poll_worker(self) -> NoReturn:
        while True:
            await self._poll(await self._due.get())

    def _schedule(self, entry: _Entry, due: float) -> None:
        """Put `entry` in the heap at `due`; an earlier heap item of it becomes stale."""
        due = entry.due = min(due, entry.deadline)
        self._seq += 1
        heap = self._heap
        if not heap or due < heap[0][0]:
            self._wakeup.set()
        heapq.heappush(heap, (due, self._seq, entry))

    async def _next_due(self) -> _Entry:
        heap = self._heap
        loop = asyncio.get_running_loop()
        while True:
            while heap and (not heap[0][2].active or heap[0][0] != heap[0][2].due):
                heapq.heappop(heap)  # cancelled, or rescheduled since it was pushed
            delay = heap[0][0] - time.monotonic() if heap else math.inf
            if delay <= self._slack:
                return heapq.heappop(heap)[2]
            self._wakeup.clear()
            # A plain loop timer, not a cancel scope: this runs once per wake-up.
            timer = loop.call_later(delay, self._wakeup.set) if math.isfinite(delay) else None
            try:
                await self._wakeup.wait()
            finally:
                if timer is not None:
                    timer.cancel()

    async def _poll(self, entry: _Entry) -> None:
        if not entry.active:  # cancelled while waiting in the queue
            return
        handle = entry.handle
        try:
            task = await self._fetch(handle.task_id or "")
        except APIError as exc:
            if entry.active:
                self._on_poll_error(entry, exc)
        except Exception as exc:  # a bug must end one handle, never the poller
            logger.exception("unexpected error polling task %s", handle.task_id)
            if entry.active:
                self._settle(entry, exc)
        else:
            if entry.active:
                self._on_task(entry, task)

    def _on_task(self, entry: _Entry, task: ImageTask) -> None:
        handle = entry.handle
        entry.errors = 0
        previous = handle.observe(task)
        if previous != task.status and self._on_status is not None:
            self._notify(handle, previous, task.status)
        if task.is_terminal:
            self._learn(entry, completed=task.status == TaskStatus.COMPLETED)
        if task.status == TaskStatus.COMPLETED:
            self._counters.completed += 1
            self._counters.add_usage(task.usage)
            self._settle(entry, None, ImageResult.from_task(task))
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
        elif not self._past_deadline(entry):
            now = time.monotonic()
            self._schedule(entry, now + next_delay(self._policy, entry.cohort, entry, now))

    def _on_poll_error(self, entry: _Entry, exc: APIError) -> None:
        if isinstance(exc, TaskNotFoundError) or not _is_transient(exc):
            self._counters.failed += 1
            self._settle(entry, exc)
            return
        if self._past_deadline(entry):
            return
        entry.errors += 1
        poll_failed(entry)
        if isinstance(exc, RateLimitError) and self._throttle.paused:
            due = self._throttle.paused_until
        else:
            due = time.monotonic() + max(
                self._retry.backoff(entry.errors), self._policy.interval(entry.polls)
            )
        logger.debug(
            "poll of task %s failed (%s); next try in %.3fs",
            entry.handle.task_id,
            exc,
            due - time.monotonic(),
        )
        self._schedule(entry, due)

    def _past_deadline(self, entry: _Entry) -> bool:
        if time.monotonic() < entry.deadline:
            return False
        task_id = entry.handle.task_id or ""
        self._settle(
            entry,
            TaskTimeoutError(
                f"task {task_id} did not finish before its deadline (last status "
                f"{entry.handle.status!r}); it may still complete: Session.track({task_id!r}) "
                "to wait again",
                task_id=task_id,
            ),
        )
        return True

    def _settle(
        self, entry: _Entry, error: BaseException | None, result: ImageResult | None = None
    ) -> None:
        self.untrack(entry.handle)
        if result is not None:
            entry.handle.settle_result(result)
        elif error is not None:
            entry.handle.settle_error(error)

    def _notify(self, handle: TaskHandle, old: str | None, new: str) -> None:
        assert self._on_status is not None
        try:
            self._on_status(handle, old, new)
        except Exception:
            logger.exception("on_status callback raised for task %s", handle.task_id)


def _is_transient(exc: APIError) -> bool:
    if isinstance(exc, APIStatusError):
        return exc.status in (408, 429) or exc.status >= 500
    return True


def _closed_error(handle: TaskHandle) -> SessionClosedError:
    task_id = handle.task_id or ""
    return SessionClosedError(
        f"the session closed while task {task_id} was pending; the task may still complete: "
        f"track it from a new session with Session.track({task_id!r})",
        task_id=task_id,
    )
