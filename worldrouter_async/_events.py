"""Status events: one `StatusChange` value per change, fanned out to a callback and streams.

The poller reports each server status change, and each handle that ends without a final
server status (deadline, cancel, abandonment, session close, a poll error), to the session's
`StatusFeed`, a subscriber of its `Hooks` (`TaskStatusChanged`, `TaskEnded`). The feed
calls the session's ``on_status`` listener synchronously and appends to every
`StatusStream` opened with `Session.status_changes`. A stream's buffer is bounded and drops
its oldest change when full (counted in `StatusStream.dropped`), so a slow consumer never
holds up the poller or grows memory without bound.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
import weakref
from collections import deque
from enum import StrEnum
from types import TracebackType
from typing import Final, Protocol, Self

from attrs import define

from ._errors import (
    InvalidRequestError,
    SessionClosedError,
    TaskAbandonedError,
    TaskCancelledError,
    TaskFailedError,
    TaskTimeoutError,
)
from ._handles import TaskHandle
from ._hooks import Event, TaskEnded, TaskStatusChanged
from .models import TaskStatus

logger: Final = logging.getLogger("worldrouter_async")

DEFAULT_BUFFER: Final = 1024


class LocalStatus(StrEnum):
    """How a handle ended when this SDK, not the server, decided it (`StatusChange.local`).

    The task itself may still run on the server: ``Session.track(task_id)`` waits again.
    """

    TIMED_OUT = "timed_out"
    """The handle's deadline (``task_timeout``/``timeout=``) passed first."""
    CANCELLED = "cancelled"
    """Tracking was stopped with `TaskHandle.cancel` (or its last waiter was cancelled)."""
    ABANDONED = "abandoned"
    """Its caller was cancelled, or left a pipeline, before it got the handle; the task is
    listed in `Session.abandoned`."""
    CLOSED = "closed"
    """The session closed while the task was pending."""
    ERRORED = "errored"
    """Polling hit an error no retry can fix (for example 404 for an expired task)."""


@define(frozen=True)
class StatusChange:
    """One status change of a tracked task, as `on_status` and `status_changes()` see it.

    `new` is the server's new status, or, when `local` is true, a `LocalStatus` saying how
    the SDK stopped tracking the task. When `final` is true the handle is already done, so
    ``change.handle.result()`` or ``change.handle.exception()`` can be read at once.

    Attributes:
        handle: the task's handle.
        old: the previous status seen from the server (None before the first one).
        new: the new server status, or a `LocalStatus` for a local ending.
        time: wall-clock time the SDK saw the change (``time.time()``), for display.
        local: True when `new` is a `LocalStatus` rather than a server status.
    """

    handle: TaskHandle
    old: str | None
    new: str
    time: float
    local: bool = False

    @property
    def task_id(self) -> str | None:
        """The task's ID (the handle's)."""
        return self.handle.task_id

    @property
    def final(self) -> bool:
        """True for the last change of a handle: completed, failed, or a local ending."""
        return self.local or self.new in TaskStatus.TERMINAL


class StatusListener(Protocol):
    """A synchronous ``on_status`` callback: ``on_status(change)``, returning None.

    It runs inside the poller, so it must be quick and must not block; an ``async def``
    function is refused (use `Session.status_changes` to consume changes asynchronously).
    """

    def __call__(self, change: StatusChange, /) -> None: ...


def _check_listener(listener: StatusListener) -> None:
    """Refuse a coroutine function as ``on_status``: nothing would ever await its result."""
    if inspect.iscoroutinefunction(listener) or inspect.iscoroutinefunction(
        getattr(listener, "__call__", None)  # noqa: B004 (an object with an async __call__)
    ):
        raise TypeError(
            f"on_status must be a plain (synchronous) function, but {listener!r} is async and "
            "nothing would await it; to handle changes asynchronously, iterate "
            "'async for change in session.status_changes()' instead"
        )


class StatusStream:
    """An async iterator of the `StatusChange` values of one session, from when it was opened.

    Changes wait in a buffer of `buffer` entries; when it is full the oldest change is
    dropped and counted in `dropped`, so a slow reader loses old changes instead of slowing
    the poller. Iteration ends once the session closes and the buffer is drained; `aclose`
    (or leaving ``async with``) stops the stream early.

    Example:
        >>> async def main(session):  # doctest: +SKIP
        ...     async with session.status_changes() as changes:
        ...         async for change in changes:
        ...             print(change.task_id, change.old, "->", change.new)
    """

    __slots__ = ("__weakref__", "_buffer", "_closed", "_dropped", "_wakeup")

    def __init__(self, buffer: int) -> None:
        self._buffer: deque[StatusChange] = deque(maxlen=buffer)
        self._dropped = 0
        self._closed = False
        self._wakeup = asyncio.Event()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<StatusStream {state} buffered={len(self._buffer)} dropped={self._dropped}>"

    @property
    def dropped(self) -> int:
        """How many changes were dropped because the buffer was full."""
        return self._dropped

    def _push(self, change: StatusChange) -> None:
        """Buffer `change` (feed side), dropping the oldest one if the buffer is full."""
        if self._closed:
            return
        if len(self._buffer) == self._buffer.maxlen:
            self._dropped += 1
        self._buffer.append(change)
        self._wakeup.set()

    def _end(self) -> None:
        """Stop accepting changes; iteration ends once the buffer is drained (feed side)."""
        self._closed = True
        self._wakeup.set()

    async def aclose(self) -> None:
        """Stop the stream now, discarding buffered changes."""
        self._end()
        self._buffer.clear()

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> StatusChange:
        while not self._buffer:
            if self._closed:
                raise StopAsyncIteration
            self._wakeup.clear()
            await self._wakeup.wait()
        return self._buffer.popleft()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


class StatusFeed:
    """Fans each change of one session out to its ``on_status`` listener and open streams.

    Streams are held weakly: one its reader abandoned without closing is dropped with it.
    """

    #: The events it publishes (`Hooks` gives it no others).
    event_kinds: Final = (TaskStatusChanged, TaskEnded)

    def __init__(self, listener: StatusListener | None) -> None:
        if listener is not None:
            _check_listener(listener)
        self._listener = listener
        self._streams: weakref.WeakSet[StatusStream] = weakref.WeakSet()
        self._closed = False

    def on_event(self, event: Event) -> None:
        """Publish a poller event that is a status change (an `Observer` of `Hooks`)."""
        match event:
            case TaskStatusChanged(handle=handle, old=old, new=new):
                self.changed(handle, old, new)
            case TaskEnded(handle=handle):
                self.ended(handle)

    def changed(self, handle: TaskHandle, old: str | None, new: str) -> None:
        """Publish a server status change of `handle` (poller side)."""
        if self._listener is not None or self._streams:
            self._publish(StatusChange(handle, old, new, time.time()))

    def ended(self, handle: TaskHandle) -> None:
        """Publish how a done `handle` ended, unless the server's own final status said so."""
        status = _local_status(handle.exception())
        if status is not None and (self._listener is not None or self._streams):
            self._publish(StatusChange(handle, handle.status, status, time.time(), local=True))

    def subscribe(self, buffer: int) -> StatusStream:
        """A new stream of changes from now on (already ended if the feed is closed)."""
        if buffer < 1:
            raise InvalidRequestError(f"buffer must be at least 1 change (got {buffer!r})")
        stream = StatusStream(buffer)
        if self._closed:
            stream._end()
        else:
            self._streams.add(stream)
        return stream

    def close(self) -> None:
        """End every stream (after the changes already buffered); later streams end at once."""
        self._closed = True
        streams = list(self._streams)
        self._streams.clear()
        for stream in streams:
            stream._end()

    def _publish(self, change: StatusChange) -> None:
        for stream in list(self._streams):
            stream._push(change)
        if self._listener is None:
            return
        try:
            returned: object = self._listener(change)
        except Exception:
            logger.exception("on_status callback raised for task %s", change.task_id)
            return
        if inspect.iscoroutine(returned):  # a sync wrapper around an async function
            returned.close()
            logger.error(
                "on_status returned a coroutine for task %s, which is never awaited; "
                "use 'async for change in session.status_changes()' instead",
                change.task_id,
            )


def _local_status(error: BaseException | None) -> LocalStatus | None:
    """The local ending an error stands for; None for a result or a server-reported failure."""
    match error:
        case None | TaskFailedError():
            return None
        case TaskTimeoutError():
            return LocalStatus.TIMED_OUT
        case TaskAbandonedError():
            return LocalStatus.ABANDONED
        case TaskCancelledError():
            return LocalStatus.CANCELLED
        case SessionClosedError():
            return LocalStatus.CLOSED
        case _:
            return LocalStatus.ERRORED
