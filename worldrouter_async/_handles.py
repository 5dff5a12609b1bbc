"""Awaitable task handles and the results they resolve to."""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import AsyncIterator, Callable, Generator, Iterable
from typing import Any, Final

from attrs import define

from ._errors import TaskAbandonedError, TaskCancelledError, WorldRouterError
from .models import ImageData, ImageRequest, ImageTask, Usage

logger: Final = logging.getLogger("worldrouter_async")


@define(frozen=True)
class ImageResult:
    """A completed task: its images (stored URLs or inline), usage and the final `ImageTask`.

    `urls` holds the stored URLs only; `images` every image, inline ones included.
    """

    task_id: str
    model: str | None
    urls: tuple[str, ...]
    usage: Usage | None
    task: ImageTask

    @classmethod
    def from_task(cls, task: ImageTask) -> ImageResult:
        """Build the result of a completed `task`."""
        return cls(
            task_id=task.task_id or task.id,
            model=task.model,
            urls=task.urls,
            usage=task.usage,
            task=task,
        )

    @property
    def images(self) -> tuple[ImageData, ...]:
        """Every image of the task, in order: stored URLs and inline (``b64_json``) alike.

        `Session.download` and `Session.read` take them all; an item without either is
        left out.
        """
        return tuple(item for item in self.task.data if item.is_image)

    @property
    def request_id(self) -> str | None:
        """The ``x-request-id`` of the answer that reported the task completed, if sent."""
        return self.task.request_id


class TaskHandle:
    """One submitted or tracked task; ``await handle`` gives its `ImageResult`.

    Several coroutines may await the same handle. When the last of them is cancelled the
    handle stops being tracked (the task itself may still run on the server).

    Example:
        >>> async def main(session):  # doctest: +SKIP
        ...     handle = await session.submit("gpt-image-2", "a red kite")
        ...     print(handle.task_id, handle.status)
        ...     result = await handle
        ...     print(result.urls)
    """

    __slots__ = (
        "__weakref__",
        "_callbacks",
        "_error",
        "_event",
        "_on_cancel",
        "_request",
        "_result",
        "_status",
        "_task",
        "_task_id",
        "_waiters",
    )

    def __init__(
        self,
        task_id: str | None,
        *,
        request: ImageRequest | None = None,
        task: ImageTask | None = None,
        on_cancel: Callable[[TaskHandle], None] | None = None,
    ) -> None:
        self._task_id = task_id
        self._request = request
        self._task = task
        self._status: str | None = task.status if task is not None else None
        self._on_cancel = on_cancel
        self._result: ImageResult | None = None
        self._error: BaseException | None = None
        self._event: asyncio.Event | None = None
        self._callbacks: list[Callable[[TaskHandle], object]] | None = None
        self._waiters = 0

    @classmethod
    def failed(cls, error: BaseException, *, request: ImageRequest | None = None) -> TaskHandle:
        """A handle for a request whose create failed: awaiting it raises `error`."""
        handle = cls(getattr(error, "task_id", None), request=request)
        handle._settle_error(error)
        return handle

    def __repr__(self) -> str:
        return f"<TaskHandle task_id={self._task_id!r} status={self._status!r}>"

    @property
    def task_id(self) -> str | None:
        """The server's task ID; None only for a request whose create failed."""
        return self._task_id

    @property
    def status(self) -> str | None:
        """The last status seen from the server, including ones this SDK does not know."""
        return self._status

    @property
    def request(self) -> ImageRequest | None:
        """The request this handle was submitted with (None for `Session.track`)."""
        return self._request

    @property
    def task(self) -> ImageTask | None:
        """The last `ImageTask` seen from the server."""
        return self._task

    def done(self) -> bool:
        """True once the handle has a result or an error."""
        return self._result is not None or self._error is not None

    def result(self) -> ImageResult:
        """The result of a done handle; raises its error, or `RuntimeError` if pending."""
        if self._result is not None:
            return self._result
        if self._error is not None:
            raise self._error
        raise RuntimeError(f"task {self._task_id} is still pending; await the handle instead")

    def exception(self) -> BaseException | None:
        """The error of a done handle, None if it succeeded; `RuntimeError` if pending."""
        if not self.done():
            raise RuntimeError(f"task {self._task_id} is still pending; await the handle instead")
        return self._error

    def cancel(self) -> bool:
        """Stop tracking this task; waiters get `TaskCancelledError`. False if already done."""
        return self._stop(
            TaskCancelledError(
                f"tracking of task {self._task_id} was cancelled; the task may still run "
                "on the server: Session.track it again to get its result",
                task_id=self._task_id or "",
            )
        )

    def _abandon(self, reason: str) -> bool:
        """Stop tracking a task whose handle no caller will get (`reason` says why)."""
        return self._stop(
            TaskAbandonedError(
                f"task {self._task_id} was abandoned ({reason}) and is no longer tracked; it "
                "may still run on the server: Session.track it to get its result",
                task_id=self._task_id or "",
            )
        )

    def _stop(self, error: TaskCancelledError) -> bool:
        if self.done():
            return False
        on_cancel = self._on_cancel
        self._settle_error(error)
        if on_cancel is not None:  # after settling, so it sees the handle done
            on_cancel(self)
        return True

    def add_done_callback(self, callback: Callable[[TaskHandle], object]) -> None:
        """Call `callback(handle)` once the handle is done (at once if it already is)."""
        if self.done():
            callback(self)
        elif self._callbacks is None:
            self._callbacks = [callback]
        else:
            self._callbacks.append(callback)

    def remove_done_callback(self, callback: Callable[[TaskHandle], object]) -> None:
        """Forget a callback added with `add_done_callback`, if still pending."""
        if self._callbacks and callback in self._callbacks:
            self._callbacks.remove(callback)

    async def wait(self) -> ImageResult:
        """Wait for the result (the same as ``await handle``)."""
        try:
            await self._settled()
        finally:
            if not self._waiters and not self.done():
                self.cancel()
        return self.result()

    async def _settled(self) -> None:
        """Wait until the handle is done; a cancelled wait leaves the handle as it is."""
        if self.done():
            return
        if self._event is None:
            self._event = asyncio.Event()
        self._waiters += 1
        try:
            await self._event.wait()
        finally:
            self._waiters -= 1

    def __await__(self) -> Generator[Any, None, ImageResult]:
        return self.wait().__await__()

    def _observe(self, task: ImageTask) -> str | None:
        """Record a fresh server view of the task; returns the previous status."""
        previous = self._status
        self._task = task
        self._status = task.status
        return previous

    def _settle_result(self, result: ImageResult) -> None:
        """Resolve the handle with a result (poller side)."""
        self._result = result
        self._finish()

    def _settle_error(self, error: BaseException) -> None:
        """Resolve the handle with an error (poller side)."""
        self._error = error
        self._finish()

    def _finish(self) -> None:
        self._on_cancel = None
        if self._event is not None:
            self._event.set()
        callbacks, self._callbacks = self._callbacks, None
        for callback in callbacks or ():
            try:
                callback(self)
            except Exception:
                logger.exception("done callback %r of task %s raised", callback, self._task_id)


async def as_completed(handles: Iterable[TaskHandle]) -> AsyncIterator[TaskHandle]:
    """Yield `handles` as they finish, first finished first; each exactly once.

    Example:
        >>> async def main(session, handles):  # doctest: +SKIP
        ...     async for handle in session.as_completed(handles):
        ...         print(handle.task_id, handle.exception() or handle.result().urls)
    """
    pending = list(dict.fromkeys(handles))
    finished: deque[TaskHandle] = deque()
    wakeup = asyncio.Event()

    def on_done(handle: TaskHandle) -> None:
        finished.append(handle)
        wakeup.set()

    for handle in pending:
        handle.add_done_callback(on_done)
    try:
        for _ in range(len(pending)):
            while not finished:
                wakeup.clear()
                await wakeup.wait()
            yield finished.popleft()
    finally:
        for handle in pending:
            handle.remove_done_callback(on_done)


def error_task_id(error: BaseException) -> str | None:
    """The task ID an SDK error is about, if it names one."""
    return getattr(error, "task_id", None) if isinstance(error, WorldRouterError) else None
