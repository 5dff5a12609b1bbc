"""The one path from a request to a handle: check, create, track; and the create workers.

Every way of submitting (`Session.submit`, `submit_request`, `submit_many`, `pipeline`, the
batch runner through `submit_request`) goes through `Submitter`: the request is checked
against its model, created once through `Creates` (slow start, no task lost to a cancelled
caller), and tracked by the poller. `start_create_workers` is the one bounded pool that
runs "create with concurrency C" for `submit_many` and `Pipeline`.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Final, TypeVar

import anyio
from anyio.abc import TaskGroup

from ._creates import AbandonedLog, AbandonedTask, Creates
from ._errors import AmbiguousCreateError, InvalidRequestError, WorldRouterError
from ._handles import TaskHandle
from ._hooks import Hooks, TaskEnded, TaskResolved
from ._poller import Poller, unpollable
from ._requests import RequestLike, check_task_id, check_timeout, new_idempotency_key, prepare
from ._support import CALLER, InputLine, WarnAt, check_support
from .models import ImageRequest, ImageTask

Item = TypeVar("Item")

MANY_WORKER_NAME: Final = "worldrouter-async submit_many create"


def start_create_workers(
    task_group: TaskGroup,
    workers: int,
    take: Callable[[], Awaitable[Item | None]],
    submit: Callable[[Item], Awaitable[object]],
    *,
    name: str,
) -> None:
    """Start `workers` tasks in `task_group` that `submit` what `take` gives, until None.

    A fixed pool, not a task per request, so at most `workers` creates run at once whatever
    the number of requests, and `take` decides when the next one may start (backpressure).
    """

    async def worker() -> None:
        while (item := await take()) is not None:
            await submit(item)

    for _ in range(workers):
        task_group.start_soon(worker, name=name)


class Submitter:
    """Checks, creates and tracks one session's requests; records the handles nobody took.

    `check_open` raises if the session cannot send now (closed, another event loop, or its
    poller failed); `untrack` is what a handle calls when its caller cancels it.
    """

    def __init__(
        self,
        *,
        creates: Creates,
        poller: Poller,
        abandoned: AbandonedLog,
        hooks: Hooks,
        check_open: Callable[[], None],
        is_open: Callable[[], bool],
        untrack: Callable[[TaskHandle], None],
        strict: bool,
        task_timeout: float,
    ) -> None:
        self._creates = creates
        self._poller = poller
        self._abandoned = abandoned
        self._hooks = hooks
        self._check_open = check_open
        self._is_open = is_open
        self._untrack = untrack
        self.strict = strict
        self.task_timeout = task_timeout

    async def create(
        self, request: ImageRequest, *, idempotency_key: str | None, warn_at: WarnAt = CALLER
    ) -> ImageTask:
        """Check `request` against its model, then create it once (no polling)."""
        self._check_open()
        check_support(request, strict=self.strict, warn_at=warn_at)
        return await self._creates.create(request, idempotency_key or new_idempotency_key())

    async def submit(
        self,
        request: ImageRequest,
        *,
        timeout: float | None,
        idempotency_key: str | None,
        warn_at: WarnAt = CALLER,
    ) -> TaskHandle:
        """Create `request` and track it; a bad timeout is refused before the paid create."""
        check_timeout(timeout, self.task_timeout)
        task = await self.create(request, idempotency_key=idempotency_key, warn_at=warn_at)
        return self.track(task.task_id or task.id, request=request, task=task, timeout=timeout)

    async def submit_item(
        self, item: RequestLike, *, timeout: float | None, warn_at: WarnAt
    ) -> TaskHandle:
        """`submit` for a request or its fields; every failure becomes a failed handle."""
        prepared = prepare(item, strict=self.strict, warn_at=warn_at)
        if isinstance(prepared, TaskHandle):
            return prepared
        return await self.submit_prepared(prepared, timeout=timeout)

    async def submit_prepared(self, request: ImageRequest, *, timeout: float | None) -> TaskHandle:
        """Create a checked request and track it; a create error becomes a failed handle."""
        try:
            self._check_open()
            task = await self._creates.create(request, new_idempotency_key())
        except WorldRouterError as exc:
            return TaskHandle.failed(exc, request=request)
        return self.track(task.task_id or task.id, request=request, task=task, timeout=timeout)

    async def submit_many(
        self, items: list[RequestLike], *, workers: int, timeout: float | None
    ) -> list[TaskHandle]:
        """`Session.submit_many`: one handle per item, in order, at most `workers` creates
        at once; if cancelled, the tasks created are abandoned (no caller gets them)."""
        # Checked here, in the caller's task, so a warning points at the caller's line
        # (the workers below run in tasks of their own, with no user code on the stack).
        handles = [prepare(item, strict=self.strict) for item in items]
        work = ((i, r) for i, r in enumerate(handles) if isinstance(r, ImageRequest))

        async def take() -> tuple[int, ImageRequest] | None:
            return next(work, None)

        async def submit(item: tuple[int, ImageRequest]) -> None:
            index, request = item
            handles[index] = await self.submit_prepared(request, timeout=timeout)

        try:
            async with anyio.create_task_group() as task_group:
                count = min(workers, len(items))
                start_create_workers(task_group, count, take, submit, name=MANY_WORKER_NAME)
        except BaseException:  # cancelled: no caller gets these handles
            self.abandon(
                (handle for handle in handles if isinstance(handle, TaskHandle)),
                "submit_many was cancelled",
            )
            raise
        return [handle for handle in handles if isinstance(handle, TaskHandle)]

    async def submit_streamed(
        self, item: RequestLike, index: int, *, timeout: float | None
    ) -> TaskHandle:
        """Submit the `index`-th request of a pipeline (from 0); failures become handles.

        It runs in a pipeline worker, with no user code on the stack, so a warning about an
        ignored parameter names the request's place in the input instead of a line. Once
        the session has closed it raises, which stops the pipeline.
        """
        if not self._is_open():
            raise RuntimeError(
                f"the session closed while its pipeline was running: request {index} was "
                "not submitted and no later request is taken from the input; tasks still "
                "pending end with SessionClosedError (track their task ids from a new session)"
            )
        source = InputLine(f"<pipeline request {index}>")
        return await self.submit_item(item, timeout=timeout, warn_at=source)

    def track(
        self,
        task_id: str,
        *,
        request: ImageRequest | None,
        task: ImageTask | None,
        timeout: float | None,
    ) -> TaskHandle:
        """A handle that the poller resolves; a created task whose id cannot be polled
        still gets a (failed) handle that keeps its receipt."""
        try:
            check_task_id(task_id)
        except InvalidRequestError as exc:
            if task is None:
                raise
            handle = unpollable(task, request, exc)  # created: keep the receipt
            self._hooks.emit(TaskResolved(handle, False))
            self._hooks.emit(TaskEnded(handle))
            return handle
        deadline = check_timeout(timeout, self.task_timeout)
        handle = TaskHandle(task_id, request=request, task=task, on_cancel=self._untrack)
        self._poller.track(handle, timeout=deadline, fresh=task is not None)
        return handle

    def abandon(self, handles: Iterable[TaskHandle], reason: str) -> None:
        """Stop tracking `handles`, which no caller will get, and record their task ids."""
        now = time.time()
        records = []
        for handle in handles:
            if handle.task_id is not None:
                handle._abandon(reason)
                records.append(
                    AbandonedTask(handle.task_id, None, handle.status, handle.request, reason, now)
                )
            elif isinstance(error := handle.exception(), AmbiguousCreateError):
                key = error.idempotency_key  # its create may have made a task
                records.append(AbandonedTask(None, key, None, handle.request, reason, now))
        self._abandoned.add(records)
