"""The resumable bulk runner: journal first, then create, track, download, report.

A pool of create workers sends the creates; finished handles arrive through done-callbacks
and a bounded pool finishes them (journal, download). Nothing here spawns a task per request.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
import uuid
from collections import Counter, deque
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from types import TracebackType
from typing import Final, Self

import anyio
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectSendStream
from attrs import define, field

from .._download import safe_name
from .._errors import (
    AmbiguousCreateError,
    BadRequestError,
    DownloadError,
    InvalidRequestError,
    SessionClosedError,
    TaskCancelledError,
    TaskFailedError,
    TaskNotFoundError,
    TaskTimeoutError,
    WorldRouterError,
)
from .._handles import TaskHandle
from .._session import Session
from ..models import ImageRequest, Usage, converter
from ._journal import AsyncJournal, JournalRow, State, encode_request
from ._jsonl import BatchItem, items_from_requests


class OutcomeKind:
    """How one request of a run ended."""

    COMPLETED: Final = "completed"
    FAILED: Final = "failed"  # the task failed, or its create was refused
    EXPIRED: Final = "expired"  # the server forgot the task (404 when tracked again)
    AMBIGUOUS: Final = "ambiguous"  # the create may have landed; a rerun resends its key
    UNFINISHED: Final = "unfinished"  # deadline or shutdown; a rerun tracks it again
    DOWNLOAD_FAILED: Final = "download_failed"  # done, but files are missing; a rerun fetches
    INVALID: Final = "invalid"  # the input changed since the journal recorded it
    SUCCESS: Final = frozenset({COMPLETED})


class Source:
    """What this run did for a request."""

    NEW: Final = "new"  # created for the first time
    RESUBMITTED: Final = "resubmitted"  # in flight at a crash: sent again with the same key
    TRACKED: Final = "tracked"  # created earlier: tracked again by task ID
    JOURNAL: Final = "journal"  # already final in the journal: nothing sent


@define(frozen=True)
class Outcome:
    """The result of one request of a bulk run."""

    key: str
    kind: str
    source: str
    task_id: str | None = None
    urls: tuple[str, ...] = ()
    files: tuple[str, ...] = ()
    usage: Usage | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        """True when the request completed (and its files, if wanted, are on disk)."""
        return self.kind in OutcomeKind.SUCCESS


@define(frozen=True)
class BatchSummary:
    """Counts by outcome kind and source, summed token usage and wall time of a run."""

    counts: dict[str, int] = field(factory=dict)
    sources: dict[str, int] = field(factory=dict)
    usage: Usage = field(factory=Usage)
    wall_time: float = 0.0

    @property
    def total(self) -> int:
        """How many requests the run reported on."""
        return sum(self.counts.values())

    @property
    def ok(self) -> bool:
        """True when every request completed."""
        return all(kind in OutcomeKind.SUCCESS for kind in self.counts)


_Done = tuple[JournalRow, TaskHandle | WorldRouterError | None, str]


class BatchRunner:
    """Runs many requests to completion through a journal, so a rerun resumes the job.

    Example:
        >>> async def main(session, requests):  # doctest: +SKIP
        ...     async with BatchRunner(session, "job.sqlite3", out_dir="images") as runner:
        ...         async for outcome in runner.run(requests):
        ...             print(outcome.key, outcome.kind, outcome.files)
        ...     print(runner.summary)
    """

    def __init__(
        self,
        session: Session,
        journal: str | os.PathLike[str],
        *,
        out_dir: str | os.PathLike[str] | None = None,
        concurrency: int = 16,
        timeout: float | None = None,
    ) -> None:
        if concurrency < 1:
            raise InvalidRequestError(f"concurrency must be at least 1 (got {concurrency!r})")
        self._session = session
        self._journal_path = Path(journal)
        self._out_dir = Path(out_dir) if out_dir is not None else None
        self._concurrency = concurrency
        self._timeout = timeout
        self._journal: AsyncJournal | None = None
        self._task_group: TaskGroup | None = None
        self._scope = anyio.CancelScope()
        self._counts: Counter[str] = Counter()
        self._sources: Counter[str] = Counter()
        self._usage = Usage()
        self._started = self._ended = 0.0

    async def __aenter__(self) -> Self:
        self._journal = await AsyncJournal.open(self._journal_path)
        self._task_group = anyio.create_task_group()
        await self._task_group.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        assert self._task_group is not None
        assert self._journal is not None
        self._scope.cancel()
        try:
            return await self._task_group.__aexit__(exc_type, exc, tb)
        finally:
            with anyio.CancelScope(shield=True):
                await self._journal.aclose()

    @property
    def summary(self) -> BatchSummary:
        """Counts, usage and wall time of the run so far."""
        end = self._ended or time.monotonic()
        return BatchSummary(
            counts=dict(self._counts),
            sources=dict(self._sources),
            usage=self._usage,
            wall_time=end - self._started if self._started else 0.0,
        )

    async def run(self, requests: Iterable[ImageRequest | BatchItem]) -> AsyncIterator[Outcome]:
        """Record, create, track and download every request; yield outcomes as they finish."""
        if self._journal is None or self._task_group is None:
            raise RuntimeError("use the runner inside 'async with BatchRunner(...)'")
        self._started = time.monotonic()
        rows, invalid = await self._register(items_from_requests(requests))
        send, receive = anyio.create_memory_object_stream[Outcome](math.inf)
        for outcome in invalid:
            send.send_nowait(outcome)
        self._task_group.start_soon(self._drive, rows, send)
        try:
            async with receive:
                async for outcome in receive:
                    self._count(outcome)
                    yield outcome
        finally:
            self._ended = time.monotonic()
            self._scope.cancel()

    def _count(self, outcome: Outcome) -> None:
        self._counts[outcome.kind] += 1
        self._sources[outcome.source] += 1
        if outcome.usage is not None and outcome.source != Source.JOURNAL:
            self._usage += outcome.usage

    async def _register(self, items: list[BatchItem]) -> tuple[list[JournalRow], list[Outcome]]:
        """Commit the intent of every new request before anything is sent."""
        assert self._journal is not None
        existing = {row.key: row for row in await self._journal.rows()}
        rows: list[JournalRow] = []
        new: list[JournalRow] = []
        invalid: list[Outcome] = []
        for position, item in enumerate(items):
            row = existing.get(item.key)
            if row is None:
                row = JournalRow(
                    key=item.key,
                    position=position,
                    request=item.request,
                    idempotency_key=str(uuid.uuid4()),
                    state=State.PENDING,
                )
                new.append(row)
            elif encode_request(row.request) != encode_request(item.request):
                invalid.append(
                    Outcome(
                        item.key,
                        OutcomeKind.INVALID,
                        Source.JOURNAL,
                        task_id=row.task_id,
                        error=f"request {item.key!r} differs from the one journaled in "
                        f"{self._journal.path}; restore it, give it a new id, or use a new journal",
                    )
                )
                continue
            rows.append(row)
        await self._journal.add(new)
        return rows, invalid

    async def _drive(self, rows: list[JournalRow], send: MemoryObjectSendStream[Outcome]) -> None:
        done_send, done_receive = anyio.create_memory_object_stream[_Done](math.inf)
        with self._scope, send, done_send, done_receive:
            creates: deque[JournalRow] = deque()
            for row in rows:
                if row.state in (State.PENDING, State.SUBMITTING):
                    creates.append(row)
                elif row.state == State.CREATED and row.task_id:
                    self._watch(row, self._track(row), Source.TRACKED, done_send)
                else:
                    done_send.send_nowait((row, None, Source.JOURNAL))
            finishing = anyio.Semaphore(self._concurrency)
            async with anyio.create_task_group() as task_group:
                for _ in range(min(self._concurrency, len(creates))):
                    task_group.start_soon(self._create_worker, creates, done_send)
                for _ in range(len(rows)):
                    row, item, source = await done_receive.receive()
                    await finishing.acquire()
                    task_group.start_soon(self._finish, row, item, source, send, finishing)

    def _track(self, row: JournalRow) -> TaskHandle:
        assert row.task_id is not None
        return self._session.track(row.task_id, timeout=self._timeout)

    @staticmethod
    def _watch(
        row: JournalRow,
        handle: TaskHandle,
        source: str,
        done: MemoryObjectSendStream[_Done],
    ) -> None:
        def on_done(finished: TaskHandle) -> None:
            # After an interrupted run the stream is closed; the journal already holds the
            # task ID, so the next run tracks the task again.
            with contextlib.suppress(anyio.ClosedResourceError, anyio.BrokenResourceError):
                done.send_nowait((row, finished, source))

        handle.add_done_callback(on_done)

    async def _create_worker(
        self, creates: deque[JournalRow], done: MemoryObjectSendStream[_Done]
    ) -> None:
        assert self._journal is not None
        while creates:
            row = creates.popleft()
            source = Source.RESUBMITTED if row.state == State.SUBMITTING else Source.NEW
            await self._journal.count_sends(row.key)  # committed before the create is sent
            try:
                handle = await self._session.submit_request(
                    row.request, timeout=self._timeout, idempotency_key=row.idempotency_key
                )
            except AmbiguousCreateError as exc:  # stays SUBMITTING: a rerun resends its key
                await self._journal.update(row.key, error=str(exc))
                done.send_nowait((row, exc, source))
                continue
            except WorldRouterError as exc:
                # Refused for good (400/422, strict mode) is final; anything else (429, 503,
                # no connection, a bad key) certainly created nothing, so a rerun tries again.
                final = isinstance(exc, BadRequestError | InvalidRequestError)
                await self._journal.update(
                    row.key, state=State.FAILED if final else State.PENDING, error=str(exc)
                )
                done.send_nowait((row, exc, source))
                continue
            await self._journal.update(
                row.key, state=State.CREATED, task_id=handle.task_id, status=handle.status
            )
            self._watch(row, handle, source, done)

    async def _finish(
        self,
        row: JournalRow,
        item: TaskHandle | WorldRouterError | None,
        source: str,
        send: MemoryObjectSendStream[Outcome],
        finishing: anyio.Semaphore,
    ) -> None:
        try:
            if item is None:
                outcome = await self._from_journal(row)
            elif isinstance(item, WorldRouterError):
                kind = (
                    OutcomeKind.AMBIGUOUS
                    if isinstance(item, AmbiguousCreateError)
                    else OutcomeKind.FAILED
                )
                outcome = Outcome(row.key, kind, source, error=str(item))
            else:
                outcome = await self._from_handle(row, item, source)
            send.send_nowait(outcome)
        finally:
            finishing.release()

    async def _from_handle(self, row: JournalRow, handle: TaskHandle, source: str) -> Outcome:
        assert self._journal is not None
        error = handle.exception()
        task_id = handle.task_id
        if error is None:
            result = handle.result()
            await self._journal.update(
                row.key,
                state=State.COMPLETED,
                status=result.task.status,
                urls=result.urls,
                usage=_usage_json(result.usage),
                error=None,
            )
            return await self._download(row.key, task_id, result.urls, result.usage, source)
        if isinstance(error, TaskFailedError):
            await self._journal.update(
                row.key, state=State.FAILED, status="failed", error=str(error)
            )
            return Outcome(row.key, OutcomeKind.FAILED, source, task_id=task_id, error=str(error))
        if isinstance(error, TaskNotFoundError):
            await self._journal.update(row.key, state=State.EXPIRED, error=str(error))
            return Outcome(row.key, OutcomeKind.EXPIRED, source, task_id=task_id, error=str(error))
        await self._journal.update(row.key, status=handle.status, error=str(error))
        kind = OutcomeKind.UNFINISHED if _is_unfinished(error) else OutcomeKind.FAILED
        return Outcome(row.key, kind, source, task_id=task_id, error=str(error))

    async def _from_journal(self, row: JournalRow) -> Outcome:
        kind = {
            State.COMPLETED: OutcomeKind.COMPLETED,
            State.EXPIRED: OutcomeKind.EXPIRED,
        }.get(row.state, OutcomeKind.FAILED)
        if kind == OutcomeKind.COMPLETED and await self._files_missing(row.files):
            return await self._download(row.key, row.task_id, row.urls, row.usage, Source.JOURNAL)
        return Outcome(
            row.key,
            kind,
            Source.JOURNAL,
            task_id=row.task_id,
            urls=row.urls,
            files=row.files,
            usage=row.usage,
            error=row.error,
        )

    async def _files_missing(self, files: tuple[str, ...]) -> bool:
        if self._out_dir is None:
            return False
        if not files:
            return True
        for name in files:
            if not await anyio.Path(name).exists():
                return True
        return False

    async def _download(
        self,
        key: str,
        task_id: str | None,
        urls: tuple[str, ...],
        usage: Usage | None,
        source: str,
    ) -> Outcome:
        assert self._journal is not None
        files: tuple[str, ...] = ()
        if self._out_dir is not None:
            stem = safe_name(key)
            try:
                paths = await self._session.download_urls(urls, self._out_dir, stem=stem)
            except DownloadError as exc:
                await self._journal.update(key, files=(), error=str(exc))
                return Outcome(
                    key,
                    OutcomeKind.DOWNLOAD_FAILED,
                    source,
                    task_id=task_id,
                    urls=urls,
                    usage=usage,
                    error=str(exc),
                )
            files = tuple(str(path) for path in paths)
            await self._journal.update(key, files=files, error=None)
        return Outcome(
            key,
            OutcomeKind.COMPLETED,
            source,
            task_id=task_id,
            urls=urls,
            files=files,
            usage=usage,
        )


def _is_unfinished(error: BaseException) -> bool:
    return isinstance(error, TaskTimeoutError | SessionClosedError | TaskCancelledError)


def _usage_json(usage: Usage | None) -> str | None:
    return json.dumps(converter.unstructure(usage)) if usage is not None else None
