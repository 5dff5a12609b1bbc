"""`Pipeline`: a bounded window of tasks over an endless stream of requests.

A few create workers take requests from the input only while the window has room; a slot is
given back when the reader takes a finished handle, so a reader that stops reading stops
new creates (backpressure). If the session closes meanwhile, the pipeline takes no more
requests, yields a handle for each one it took, then raises the reason. The workers run in
a task group that the ``async with`` block owns: leaving it, by ``break``, an error or
cancellation, stops the creates, and every task created whose handle the reader did not
take is abandoned: untracked and listed in `Session.abandoned`. A task group
cannot live across the ``yield`` of an async generator (PEP 789), hence a context manager
that is also the iterator.
"""

from __future__ import annotations

import asyncio
import functools
from collections import deque
from collections.abc import (
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Iterator,
)
from types import TracebackType
from typing import Final, Self

import anyio
from anyio.abc import TaskGroup

from ._handles import TaskHandle
from ._requests import RequestLike
from ._submit import start_create_workers

WORKER_NAME: Final = "worldrouter-async pipeline create"


class Pipeline:
    """Creates tasks from `requests` with at most `max_pending` in the window at once.

    The window counts requests being created, tasks pending on the server, and finished
    handles the reader has not taken yet. Iterating yields each request's handle once it
    is done (first finished first, or in input order with ``ordered=True``); a request
    whose validation or create failed yields a handle that raises that error, so no input
    is lost. Made by `Session.pipeline`; use it as ``async with ... as handles``.

    Example:
        >>> async def main(session, requests):  # doctest: +SKIP
        ...     async with session.pipeline(requests, max_pending=16) as handles:
        ...         async for handle in handles:
        ...             print(handle.task_id, handle.exception() or handle.result().urls)
    """

    def __init__(
        self,
        submit: Callable[[RequestLike, int], Awaitable[TaskHandle]],
        requests: Iterable[RequestLike] | AsyncIterable[RequestLike],
        *,
        max_pending: int,
        ordered: bool,
        workers: int,
        abandon: Callable[[Iterable[TaskHandle], str], None],
    ) -> None:
        self._submit = submit
        self._abandon = abandon
        self._source: Iterator[RequestLike] | AsyncIterator[RequestLike] = (
            aiter(requests) if isinstance(requests, AsyncIterable) else iter(requests)
        )
        self._workers = min(workers, max_pending)
        self._ordered = ordered
        self._slots = anyio.Semaphore(max_pending)
        self._pull_lock = anyio.Lock()
        self._issued = 0  # requests taken from the input
        self._finished = 0  # of those, handles done
        self._yielded = 0  # of those, handles given to the reader
        self._unfinished: dict[int, TaskHandle] = {}
        self._ready: deque[TaskHandle] = deque()  # first finished first
        self._ready_by_index: dict[int, TaskHandle] = {}  # ordered: waiting for their turn
        self._exhausted = False
        self._source_error: Exception | None = None
        self._wakeup = asyncio.Event()
        self._task_group: TaskGroup | None = None
        self._state = "new"

    def __repr__(self) -> str:
        return (
            f"<Pipeline {self._state} pending={self.pending} ready={self.ready} "
            f"yielded={self._yielded}>"
        )

    @property
    def pending(self) -> int:
        """Requests taken from the input whose handle is not done yet (creating or polling)."""
        return self._issued - self._finished

    @property
    def ready(self) -> int:
        """Done handles waiting for the reader (in input order mode, also ones not yet due)."""
        return self._finished - self._yielded

    async def __aenter__(self) -> Self:
        if self._state != "new":
            raise RuntimeError(f"a Pipeline can be entered once; this one is {self._state}")
        self._state = "running"
        task_group = self._task_group = anyio.create_task_group()
        await task_group.__aenter__()
        start_create_workers(
            task_group, self._workers, self._take_request, self._submit_one, name=WORKER_NAME
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        # Stop creating, and wait for the workers to end; every task created whose handle
        # the reader did not take is abandoned (untracked and recorded on the session).
        self._state = "closed"
        assert self._task_group is not None
        self._task_group.cancel_scope.cancel()
        untaken = [*self._unfinished.values(), *self._ready, *self._ready_by_index.values()]
        self._unfinished.clear()
        self._ready.clear()
        self._ready_by_index.clear()
        if untaken:
            self._abandon(untaken, "its pipeline ended before the reader took it")
        try:
            await self._task_group.__aexit__(exc_type, exc, tb)
        except BaseExceptionGroup as group:
            if exc is None or group.exceptions != (exc,):
                raise
            return False  # the block's own error: let it propagate unwrapped
        finally:
            aclose = getattr(self._source, "aclose", None)
            if aclose is not None:  # an async generator input stops with the pipeline
                await aclose()
        return False

    def __aiter__(self) -> Self:
        self._check_running()
        return self

    async def __anext__(self) -> TaskHandle:
        self._check_running()
        while True:
            handle = self._take()
            if handle is not None:
                self._yielded += 1
                self._slots.release()  # taking a handle makes room for one more create
                return handle
            if self._exhausted and self._yielded == self._issued:
                error, self._source_error = self._source_error, None
                if error is not None:
                    raise error
                raise StopAsyncIteration
            self._wakeup.clear()
            await self._wakeup.wait()

    def _check_running(self) -> None:
        if self._state != "running":
            raise RuntimeError(
                f"this pipeline is {self._state}; iterate it inside its block: "
                "'async with session.pipeline(requests) as handles: async for handle in handles'"
            )

    def _take(self) -> TaskHandle | None:
        if not self._ordered:
            return self._ready.popleft() if self._ready else None
        return self._ready_by_index.pop(self._yielded, None)

    async def _take_request(self) -> tuple[int, RequestLike] | None:
        """The next request once the window has room; None once the input is used up."""
        await self._slots.acquire()
        pulled = await self._pull()
        if pulled is None:
            self._slots.release()
        return pulled

    async def _submit_one(self, pulled: tuple[int, RequestLike]) -> None:
        index, request = pulled
        try:
            handle = await self._submit(request, index)
        except Exception as exc:  # the session closed (or a bug): take no more, lose none
            handle = TaskHandle.failed(exc)
            self._end_of_input(exc)
        if self._state == "closed":  # created as the block was left: nobody will take it
            self._abandon((handle,), "its pipeline ended before the reader took it")
            return
        self._unfinished[index] = handle
        handle.add_done_callback(functools.partial(self._on_done, index))

    async def _pull(self) -> tuple[int, RequestLike] | None:
        """The next request and its input position; None once the input is used up."""
        async with self._pull_lock:  # an async generator cannot be advanced concurrently
            if self._exhausted:
                return None
            try:
                if isinstance(self._source, AsyncIterator):
                    request = await anext(self._source)
                else:
                    request = next(self._source)
            except (StopIteration, StopAsyncIteration):
                self._end_of_input(None)
                return None
            except Exception as exc:  # raised by the reader after the handles before it
                self._end_of_input(exc)
                return None
            index = self._issued
            self._issued += 1
            return index, request

    def _end_of_input(self, error: Exception | None) -> None:
        """Take no more requests; the reader gets `error` after the handles taken so far."""
        if not self._exhausted:
            self._exhausted = True
            self._source_error = error
        self._wakeup.set()

    def _on_done(self, index: int, handle: TaskHandle) -> None:
        self._unfinished.pop(index, None)
        self._finished += 1
        if self._ordered:
            self._ready_by_index[index] = handle
        else:
            self._ready.append(handle)
        self._wakeup.set()
