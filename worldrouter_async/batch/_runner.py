"""The resumable bulk runner: journal first, then create, track, download, report.

Input is read and journaled in chunks (``_intake.py``), and at most `max_pending` requests
are between their journal entry and their reported outcome, so memory follows the
concurrency, not the input size. A pool of create workers sends the creates
(``_creates.py``); finished handles arrive through done-callbacks and a bounded pool
finishes them (``_finish.py``: journal, download). This module wires those together and
decides when the run stops. Nothing here spawns a task per request.
"""

from __future__ import annotations

import contextlib
import math
import os
import uuid
from collections.abc import AsyncIterable, AsyncIterator, Iterable
from pathlib import Path
from types import TracebackType
from typing import Final, Self

import anyio
import anyio.to_thread
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from .._errors import InvalidRequestError, first_leaf
from .._handles import TaskHandle
from .._session import Session
from ._creates import CreateWorkers
from ._errors import JournalError
from ._finish import Finished, Finisher, track
from ._gallery import GalleryRefresher
from ._intake import Input, Intake, chunks, invalid_outcome
from ._local import LocalJournal
from ._outcomes import BatchSummary, Outcome, Source, Tally
from ._outputs import LocalOutput, open_output
from ._postgres_job import PostgresJob
from ._shared import SharedRows, shared_rows
from .journal import (
    JournalRow,
    JournalStore,
    PostgresJournal,
    State,
    is_postgres_url,
)

#: Requests read and journaled per transaction.
CHUNK: Final = 256
#: Seconds an interrupted run waits for the answers of creates already sent.
STOP_GRACE: Final = 5.0
NOT_RESENT: Final = (
    "the create sent by an earlier run may have reached the server (its answer never "
    "came), so it was not sent again: against a server that ignores Idempotency-Key that "
    "would pay for the image twice. Resend it with retry_ambiguous_creates=True only if "
    "your server deduplicates creates by Idempotency-Key"
)


class BatchRunner:
    """Runs many requests to completion through a journal, so a rerun resumes the job.

    One run at a time holds a journal (an OS lock); a second raises `JournalInUseError`.
    A row whose create may have reached the server (``submitting``) is resent on resume only
    when ``session.retry_ambiguous_creates`` is on; otherwise it is reported ``ambiguous``.
    `out_dir` is claimed for the journal (``OUT/.worldrouter-job``): a journal that lost
    records raises `JournalLostError`, and a second journal `OutputClaimedError`, before
    anything is sent.

    A ``postgresql://`` journal is shared: any number of runners (on any machines) run the
    same `job` at once, each acting only on the rows it claimed, and a row held by another
    live worker is reported once that worker is done with it, or taken over if it dies (see
    `PostgresJournal`). `out_dir` is then claimed for the job, one claim for all its workers.

    Args:
        session: the open session that sends the creates.
        journal: the journal file (created when missing), a ``postgresql://`` URL (with
            `job`), or any other `JournalStore`, which the caller opens, locks and closes.
        out_dir: where images are saved (``KEY-INDEX.EXT``): a directory, or a bucket prefix
            ``s3://bucket/prefix`` (needs the ``s3`` extra; credentials and endpoint from
            the AWS environment); None keeps URLs only.
        concurrency: creates (and finishing downloads) in flight at once.
        max_pending: requests between their journal entry and their outcome at once; bounds
            memory and the tasks waiting on the server.
        timeout: seconds to wait for each task (None: the session's default).
        new_journal: start a new journal even though `out_dir` already holds images (whose
            journal is then presumed lost: every request is created, and paid for, again),
            or go on with a journal that holds less than `out_dir`'s claim records.
        job: the job's name in a PostgreSQL journal (required with a ``postgresql://`` URL).
        worker_timeout: seconds a silent worker of a PostgreSQL journal keeps its rows.

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
        journal: str | os.PathLike[str] | JournalStore,
        *,
        out_dir: str | os.PathLike[str] | None = None,
        concurrency: int = 16,
        max_pending: int = 1024,
        timeout: float | None = None,
        new_journal: bool = False,
        job: str | None = None,
        worker_timeout: float = 30.0,
    ) -> None:
        if concurrency < 1:
            raise InvalidRequestError(f"concurrency must be at least 1 (got {concurrency!r})")
        if max_pending < concurrency:
            raise InvalidRequestError(
                f"max_pending must be at least concurrency={concurrency} (got {max_pending!r})"
            )
        self._session = session
        self._output = open_output(out_dir) if out_dir is not None else None
        self._given_store: JournalStore | None = None
        self._opener: LocalJournal | PostgresJob | None = None  # a journal this runner opens
        self._gallery: GalleryRefresher | None = None
        if is_postgres_url(journal):
            assert isinstance(journal, str)
            if job is None:
                raise InvalidRequestError(
                    "a postgresql:// journal holds many jobs: name this one with job='NAME'"
                )
            shared = PostgresJournal(journal, job=job, worker_timeout=worker_timeout)
            self._opener = PostgresJob(shared, self._output, new_journal=new_journal)
        elif isinstance(journal, str | os.PathLike):
            self._opener = LocalJournal(Path(journal), self._output, new_journal=new_journal)
            # The gallery (manifest.jsonl, index.html) is read from the journal file this
            # runner opens; a store given by the caller may not be a file. It is written
            # beside local images only: a bucket has no contact sheet.
            if isinstance(self._output, LocalOutput):
                self._gallery = GalleryRefresher(self._opener.path, self._output.directory)
        else:
            self._given_store = journal
        self._concurrency = concurrency
        self._timeout = timeout
        self._store: JournalStore | None = None
        self._shared: SharedRows | None = None
        self._creates: CreateWorkers | None = None
        self._finisher: Finisher | None = None
        self._task_group: TaskGroup | None = None
        self._scope = anyio.CancelScope()
        self._claim_scope = anyio.CancelScope()
        self._window = anyio.Semaphore(max_pending)
        self._run_id = uuid.uuid4().hex
        self._ran = False
        self._stop_reason: str | None = None
        self._fatal: JournalError | None = None
        self._dispatched = self._delivered = 0
        self._input_done = False
        self._done: MemoryObjectSendStream[Finished] | None = None
        self._tally = Tally()

    async def __aenter__(self) -> Self:
        # A store given by the caller is opened and locked (or not) on its own.
        store = self._given_store if self._opener is None else await self._opener.open()
        assert store is not None
        self._store = store
        self._shared = shared_rows(store, slice_size=self._concurrency)
        self._creates = CreateWorkers(
            self._session,
            store,
            timeout=self._timeout,
            deliver=self._deliver,
            watch=self._watch,
            stop=self._stop,
            stopped=lambda: self._stop_reason is not None,
        )
        self._finisher = Finisher(
            self._session, store, output=self._output, timeout=self._timeout, stop=self._stop
        )
        if self._output is not None and self._shared is None:  # others may be writing theirs
            await self._output.remove_partials()
        self._task_group = anyio.create_task_group()
        await self._task_group.__aenter__()
        if self._opener is not None:
            self._task_group.start_soon(self._keep_claim, self._opener)
        return self

    async def _keep_claim(self, opener: LocalJournal | PostgresJob) -> None:
        with self._claim_scope:
            await opener.keep_claim()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        assert self._task_group is not None
        assert self._creates is not None
        self._scope.cancel()
        self._claim_scope.cancel()
        if self._gallery is not None:
            self._gallery.stop()
        self._creates.give_grace(STOP_GRACE)  # creates answering after an interrupt: bounded
        try:
            # The body's own exception (or cancellation) propagates as it is, never wrapped
            # in an ExceptionGroup; a failure of the runner's task surfaces alone likewise.
            await self._task_group.__aexit__(None, None, None)
        except BaseExceptionGroup as group:
            if exc is None:
                raise (group.exceptions[0] if len(group.exceptions) == 1 else group) from None
        finally:
            if self._opener is not None:  # the runner opened the journal, so it closes it
                await self._opener.close()
        return None

    @property
    def summary(self) -> BatchSummary:
        """Counts, usage and wall time of the run so far."""
        return self._tally.summary

    @property
    def stop_reason(self) -> str | None:
        """Why the run stopped sending creates early (bad key, no connection, disk full)."""
        return self._stop_reason

    async def run(self, requests: Iterable[Input] | AsyncIterable[Input]) -> AsyncIterator[Outcome]:
        """Record, create, track and download every request; yield outcomes as they finish.

        `requests` may be a list, any iterable or an async iterable; it is read in chunks as
        the run needs more. A `LineError` among them (pass `iter_jsonl` as it is) is yielded
        as an ``invalid`` outcome and recorded in the journal, so every input line is counted.
        Raises `JournalError` (after the outcomes so far) when the journal cannot be written:
        everything committed until then is kept for the rerun.
        """
        if self._store is None or self._task_group is None:
            raise RuntimeError("use the runner inside 'async with BatchRunner(...)'")
        if self._ran:
            raise RuntimeError(
                "this BatchRunner has already run; open a new 'async with BatchRunner(...)' "
                "on the same journal to run again (it resumes from the journal)"
            )
        self._ran = True
        self._tally.start()
        send, receive = anyio.create_memory_object_stream[Outcome](self._concurrency)
        self._task_group.start_soon(self._drive, requests, send)
        if self._gallery is not None:
            self._task_group.start_soon(self._gallery.run)
        try:
            async with receive:
                async for outcome in receive:
                    self._tally.count(outcome)
                    if self._gallery is not None:
                        self._gallery.changed()
                    yield outcome
        finally:
            self._tally.end()
            self._scope.cancel()
            if self._gallery is not None:
                self._gallery.stop()
        if self._gallery is not None:
            await self._gallery.finish()
        if self._fatal is not None:
            raise self._fatal

    def _stop(self, reason: str) -> None:
        if self._stop_reason is None:
            self._stop_reason = f"stopped sending creates: {reason}"

    # --- reading and dispatching ---------------------------------------------------------

    async def _drive(
        self,
        requests: Iterable[Input] | AsyncIterable[Input],
        send: MemoryObjectSendStream[Outcome],
    ) -> None:
        done_send, done_receive = anyio.create_memory_object_stream[Finished](math.inf)
        creates_send, creates_receive = anyio.create_memory_object_stream[JournalRow](0)
        self._done = done_send
        with self._scope, send, done_send, creates_receive:
            try:
                async with anyio.create_task_group() as task_group:
                    task_group.start_soon(self._finish_all, done_receive, send)
                    assert self._creates is not None
                    self._creates.start(task_group, self._concurrency, creates_receive)
                    with creates_send:  # a worker's failure cancels the feed, and is reported
                        await self._feed(requests, creates_send, send)
                    self._input_done = True
                    self._close_done_when_all_delivered()
            except* JournalError as group:
                fatal = first_leaf(group)
                assert isinstance(fatal, JournalError)
                self._fatal = fatal

    async def _feed(
        self,
        requests: Iterable[Input] | AsyncIterable[Input],
        creates: MemoryObjectSendStream[JournalRow],
        send: MemoryObjectSendStream[Outcome],
    ) -> None:
        assert self._store is not None
        intake = Intake(self._session, self._store, self._run_id)
        position = 0
        await intake.start()
        async with contextlib.aclosing(chunks(requests, CHUNK)) as chunked:
            async for chunk in chunked:
                if self._stop_reason is not None:
                    return  # what was not read is not journaled: status and summary agree
                rows, invalid = await intake.take(chunk, position)
                position += len(chunk)
                for entry in invalid:
                    await send.send(invalid_outcome(entry))
                if self._shared is None:
                    await self._dispatch_all(rows, creates)
                else:
                    await self._shared.claim_and_dispatch(
                        rows, lambda claimed: self._dispatch_all(claimed, creates)
                    )
        if self._shared is not None:
            await self._shared.take_over_held(
                lambda rows: self._dispatch_all(rows, creates),
                stopped=lambda: self._stop_reason is not None,
            )

    async def _dispatch_all(
        self, rows: list[JournalRow], creates: MemoryObjectSendStream[JournalRow]
    ) -> None:
        for row in rows:
            await self._window.acquire()
            self._dispatched += 1
            await self._dispatch(row, creates)

    async def _dispatch(self, row: JournalRow, creates: MemoryObjectSendStream[JournalRow]) -> None:
        if row.state == State.PENDING:
            await creates.send(row)
        elif row.state == State.SUBMITTING:
            if self._session.retry_ambiguous_creates:
                await creates.send(row)
            else:
                self._deliver(Finished(row, Source.JOURNAL, note=NOT_RESENT))
        elif row.state == State.CREATED and row.task_id:
            self._track_journaled(row)
        else:
            self._deliver(Finished(row, Source.JOURNAL))

    def _deliver(self, finished: Finished) -> None:
        assert self._done is not None
        # After an interrupted run the stream is closed; the journal already holds what a
        # rerun needs (the task ID, or the state to resend from).
        with contextlib.suppress(anyio.ClosedResourceError, anyio.BrokenResourceError):
            self._done.send_nowait(finished)
        self._delivered += 1
        self._close_done_when_all_delivered()

    def _close_done_when_all_delivered(self) -> None:
        if self._input_done and self._delivered == self._dispatched and self._done is not None:
            self._done.close()

    def _track_journaled(self, row: JournalRow) -> None:
        """Track a task an earlier run created; one whose id no poll can name (see
        `UnpollableTaskIdError`) is reported from the journal, which keeps its id and why."""
        try:
            handle = track(self._session, row, self._timeout)
        except InvalidRequestError:
            self._deliver(Finished(row, Source.JOURNAL))
            return
        self._watch(row, handle, Source.TRACKED)

    def _watch(self, row: JournalRow, handle: TaskHandle, source: Source) -> None:
        handle.add_done_callback(lambda finished: self._deliver(Finished(row, source, finished)))

    # --- finishing -----------------------------------------------------------------------

    async def _finish_all(
        self, done: MemoryObjectReceiveStream[Finished], send: MemoryObjectSendStream[Outcome]
    ) -> None:
        finishing = anyio.Semaphore(self._concurrency)
        async with anyio.create_task_group() as task_group:
            with done:
                async for finished in done:
                    await finishing.acquire()
                    task_group.start_soon(self._finish, finished, send, finishing)

    async def _finish(
        self, finished: Finished, send: MemoryObjectSendStream[Outcome], slot: anyio.Semaphore
    ) -> None:
        try:
            assert self._finisher is not None
            outcome = await self._finisher.outcome(finished)
            if self._shared is not None:
                await self._shared.release(outcome.key)
            with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError):
                await send.send(outcome)
        finally:
            slot.release()
            self._window.release()
