"""The resumable bulk runner: journal first, then create, track, download, report.

Input is read and journaled in chunks, and at most `max_pending` requests are between
their journal entry and their reported outcome, so memory follows the concurrency, not the
input size. A pool of create workers sends the creates; finished handles arrive through
done-callbacks and a bounded pool finishes them (journal, download). Nothing here spawns a
task per request.
"""

from __future__ import annotations

import contextlib
import errno
import math
import os
import time
import uuid
from collections import Counter
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator, Iterable
from itertools import islice
from pathlib import Path
from types import TracebackType
from typing import Final, Self, TypeVar

import anyio
import anyio.lowlevel
import anyio.to_thread
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from attrs import define

from .._errors import (
    AmbiguousCreateError,
    APIConnectionError,
    AuthenticationError,
    CreateHeldBackError,
    DownloadError,
    InvalidRequestError,
    NoImagesError,
    PermissionDeniedError,
    TaskFailedError,
    TaskNotFoundError,
    WorldRouterError,
    first_leaf,
)
from .._handles import ImageResult, TaskHandle
from .._retries import is_final
from .._session import Session
from ..models import ImageData, ImageRequest, Usage
from ._claim import OutputClaim, refuse_fresh_start
from ._errors import JournalError
from ._gallery import GalleryRefresher
from ._journal import (
    InvalidLine,
    JournalRow,
    JournalStore,
    SqliteFile,
    SqliteJournal,
    State,
    encode_request,
)
from ._jsonl import BatchItem, LineError, as_item
from ._lock import JournalLock
from ._names import file_digest, file_stem
from ._outcomes import BatchSummary, Outcome, OutcomeKind, Source, kind_of

#: Requests read and journaled per transaction.
CHUNK: Final = 256
#: Creates that fail to connect in a row before the run stops sending creates.
CONNECTION_FAILURES_TO_STOP: Final = 5
#: Seconds an interrupted run waits for the answers of creates already sent.
STOP_GRACE: Final = 5.0
NOT_RESENT: Final = (
    "the create sent by an earlier run may have reached the server (its answer never "
    "came), so it was not sent again: against a server that ignores Idempotency-Key that "
    "would pay for the image twice. Resend it with retry_ambiguous_creates=True only if "
    "your server deduplicates creates by Idempotency-Key"
)
NOT_SENT: Final = "not sent: the run had stopped sending creates; a rerun sends it"
_T = TypeVar("_T")
#: What `BatchRunner.run` reads: requests, and lines that could not be read as one.
Input = ImageRequest | BatchItem | LineError


@define(frozen=True)
class _Finished:
    """A request this run is done acting on, and what became of it."""

    row: JournalRow
    source: Source
    handle: TaskHandle | None = None
    error: WorldRouterError | None = None
    note: str | None = None  # why nothing was done, when the journal state says the rest


class BatchRunner:
    """Runs many requests to completion through a journal, so a rerun resumes the job.

    One run at a time holds a journal (an OS lock); a second raises `JournalInUseError`.
    A row whose create may have reached the server (``submitting``) is resent on resume only
    when ``session.retry_ambiguous_creates`` is on; otherwise it is reported ``ambiguous``.
    `out_dir` is claimed for the journal (``OUT/.worldrouter-job``): a journal that lost
    records raises `JournalLostError`, and a second journal `OutputClaimedError`, before
    anything is sent.

    Args:
        session: the open session that sends the creates.
        journal: the journal file (created when missing), or any other `JournalStore`,
            which the caller opens, locks and closes.
        out_dir: where images are saved (``KEY-INDEX.EXT``); None keeps URLs only.
        concurrency: creates (and finishing downloads) in flight at once.
        max_pending: requests between their journal entry and their outcome at once; bounds
            memory and the tasks waiting on the server.
        timeout: seconds to wait for each task (None: the session's default).
        new_journal: start a new journal even though `out_dir` already holds images (whose
            journal is then presumed lost: every request is created, and paid for, again),
            or go on with a journal that holds less than `out_dir`'s claim records.

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
    ) -> None:
        if concurrency < 1:
            raise InvalidRequestError(f"concurrency must be at least 1 (got {concurrency!r})")
        if max_pending < concurrency:
            raise InvalidRequestError(
                f"max_pending must be at least concurrency={concurrency} (got {max_pending!r})"
            )
        self._session = session
        if isinstance(journal, str | os.PathLike):
            self._given_store: JournalStore | None = None
            self._journal_path = Path(journal)
            self._lock: JournalLock | None = JournalLock(self._journal_path)
        else:
            self._given_store = journal
            self._journal_path = journal.path
            self._lock = None
        self._out_dir = Path(out_dir) if out_dir is not None else None
        # The gallery (manifest.jsonl, index.html) is read from the journal file this runner
        # opens; a store given by the caller may not be a file.
        self._gallery = (
            GalleryRefresher(self._journal_path, self._out_dir)
            if self._out_dir is not None and self._lock is not None
            else None
        )
        self._concurrency = concurrency
        self._timeout = timeout
        self._new_journal = new_journal
        self._store: JournalStore | None = None
        self._task_group: TaskGroup | None = None
        self._scope = anyio.CancelScope()
        self._window = anyio.Semaphore(max_pending)
        self._run_id = uuid.uuid4().hex
        self._ran = False
        self._stop_reason: str | None = None
        self._fatal: JournalError | None = None
        self._connection_failures = 0
        self._dispatched = self._delivered = 0
        self._input_done = False
        self._done: MemoryObjectSendStream[_Finished] | None = None
        self._in_flight: set[anyio.CancelScope] = set()
        self._counts: Counter[str] = Counter()
        self._sources: Counter[str] = Counter()
        self._usage = Usage()
        self._job_usage = Usage()
        self._started = self._ended = 0.0

    async def __aenter__(self) -> Self:
        if self._lock is None:  # a store given by the caller locks (or not) on its own
            self._store = self._given_store
        else:
            await anyio.to_thread.run_sync(self._prepare)
            try:
                journal = await SqliteJournal.open(self._journal_path)
            except BaseException:
                self._lock.release()
                raise
            try:
                await anyio.to_thread.run_sync(self._claim_output, journal.file)
            except BaseException:
                with anyio.CancelScope(shield=True):
                    await journal.aclose()
                self._lock.release()
                raise
            self._store = journal
        await anyio.to_thread.run_sync(self._remove_partial_downloads)
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
        assert self._store is not None
        self._scope.cancel()
        if self._gallery is not None:
            self._gallery.stop()
        for shield in self._in_flight:  # creates answering after an interrupt: bounded
            shield.deadline = anyio.current_time() + STOP_GRACE
        try:
            # The body's own exception (or cancellation) propagates as it is, never wrapped
            # in an ExceptionGroup; a failure of the runner's task surfaces alone likewise.
            await self._task_group.__aexit__(None, None, None)
        except BaseExceptionGroup as group:
            if exc is None:
                raise (group.exceptions[0] if len(group.exceptions) == 1 else group) from None
        finally:
            if self._lock is not None:  # the runner opened the journal, so it closes it
                with anyio.CancelScope(shield=True):
                    await self._store.aclose()
                self._lock.release()
        return None

    def _prepare(self) -> None:
        """Lock the journal file, then refuse a silent fresh start (unlocking on error)."""
        assert self._lock is not None
        try:
            self._journal_path.parent.mkdir(parents=True, exist_ok=True)
            self._lock.acquire()
        except OSError as exc:
            raise JournalError(
                f"cannot open a journal at {self._journal_path} ({exc.strerror or exc}); "
                "choose an output directory (or journal path) that can be written"
            ) from exc
        try:
            self._refuse_fresh_start_over_images()
        except BaseException:
            self._lock.release()
            raise

    def _refuse_fresh_start_over_images(self) -> None:
        out = self._out_dir
        if (
            out is not None
            and out.is_dir()
            and not self._journal_path.exists()
            and not self._new_journal
        ):
            refuse_fresh_start(out, self._journal_path)

    def _claim_output(self, journal: SqliteFile) -> None:
        """Claim the output directory for this journal, refusing one showing lost records.

        From then on each commit that adds rows or counts a send moves the claim's mark.
        """
        if self._out_dir is None:
            return
        assert journal.journal_id is not None  # given by make_durable
        claim = OutputClaim(self._out_dir, self._journal_path)
        claim.take(journal.journal_id, journal.high_water, new_journal=self._new_journal)
        journal.on_advance = claim.advance

    def _remove_partial_downloads(self) -> None:
        """Delete the ``.*.part`` files a run killed mid-download left behind."""
        if self._out_dir is not None and self._out_dir.is_dir():
            for part in self._out_dir.glob(".*.part"):
                part.unlink(missing_ok=True)

    @property
    def summary(self) -> BatchSummary:
        """Counts, usage and wall time of the run so far."""
        end = self._ended or time.monotonic()
        return BatchSummary(
            counts=dict(self._counts),
            sources=dict(self._sources),
            usage=self._usage,
            wall_time=end - self._started if self._started else 0.0,
            job_usage=self._job_usage,
        )

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
        self._started = time.monotonic()
        send, receive = anyio.create_memory_object_stream[Outcome](self._concurrency)
        self._task_group.start_soon(self._drive, requests, send)
        if self._gallery is not None:
            self._task_group.start_soon(self._gallery.run)
        try:
            async with receive:
                async for outcome in receive:
                    self._count(outcome)
                    if self._gallery is not None:
                        self._gallery.changed()
                    yield outcome
        finally:
            self._ended = time.monotonic()
            self._scope.cancel()
            if self._gallery is not None:
                self._gallery.stop()
        if self._gallery is not None:
            await self._gallery.finish()
        if self._fatal is not None:
            raise self._fatal

    def _count(self, outcome: Outcome) -> None:
        self._counts[outcome.kind] += 1
        self._sources[outcome.source] += 1
        if outcome.usage is not None:
            self._job_usage += outcome.usage
            if outcome.source != Source.JOURNAL:
                self._usage += outcome.usage

    def _stop(self, reason: str) -> None:
        if self._stop_reason is None:
            self._stop_reason = f"stopped sending creates: {reason}"

    # --- reading and dispatching ---------------------------------------------------------

    async def _drive(
        self,
        requests: Iterable[Input] | AsyncIterable[Input],
        send: MemoryObjectSendStream[Outcome],
    ) -> None:
        done_send, done_receive = anyio.create_memory_object_stream[_Finished](math.inf)
        creates_send, creates_receive = anyio.create_memory_object_stream[JournalRow](0)
        self._done = done_send
        with self._scope, send, done_send:
            try:
                async with anyio.create_task_group() as task_group:
                    task_group.start_soon(self._finisher, done_receive, send)
                    with creates_receive:
                        for _ in range(self._concurrency):
                            task_group.start_soon(self._create_worker, creates_receive.clone())
                    # Workers only go away when the run fails; that failure is reported.
                    with creates_send, contextlib.suppress(anyio.BrokenResourceError):
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
        position = 0
        await self._store.record_invalid(self._run_id, [])  # the last run's lines are old news
        async with contextlib.aclosing(_chunks(requests, CHUNK)) as chunks:
            async for chunk in chunks:
                if self._stop_reason is not None:
                    return  # what was not read is not journaled: status and summary agree
                unreadable = [_unreadable(entry) for entry in chunk if isinstance(entry, LineError)]
                items = [
                    as_item(request, position + i)
                    for i, request in enumerate(chunk)
                    if not isinstance(request, LineError)
                ]
                for item in items:
                    if not item.line:  # a JSONL item was reported with its line when read
                        self._session.report_ignored(
                            item.request, source=f"<batch request {item.key!r}>", line=0
                        )
                rows, invalid = await self._register(items, position)
                position += len(chunk)
                invalid = sorted([*unreadable, *invalid], key=lambda entry: entry.line)
                if invalid:
                    await self._store.record_invalid(self._run_id, invalid)
                for entry in invalid:
                    await send.send(_invalid(entry))
                for row in rows:
                    await self._window.acquire()
                    self._dispatched += 1
                    await self._dispatch(row, creates)

    async def _register(
        self, items: list[BatchItem], first_position: int
    ) -> tuple[list[JournalRow], list[InvalidLine]]:
        """Commit the intent of every new request of a chunk before anything is sent."""
        assert self._store is not None
        existing = await self._store.lookup([item.key for item in items])
        rows: list[JournalRow] = []
        new: list[JournalRow] = []
        invalid: list[InvalidLine] = []
        seen: list[str] = []
        in_chunk: set[str] = set()
        for offset, item in enumerate(items):
            row = existing.get(item.key)
            if item.key in in_chunk or (row is not None and row.run == self._run_id):
                reason = f'id "{item.key}" repeats an earlier request'
                invalid.append(InvalidLine(item.line, item.key, reason))
                continue
            in_chunk.add(item.key)
            if row is None:
                row = JournalRow(
                    key=item.key,
                    position=first_position + offset,
                    request=item.request,
                    idempotency_key=str(uuid.uuid4()),
                    state=State.PENDING,
                    run=self._run_id,
                )
                new.append(row)
            else:
                seen.append(item.key)
                if encode_request(row.request) != encode_request(item.request):
                    invalid.append(
                        InvalidLine(
                            item.line,
                            item.key,
                            f'request "{item.key}" differs from the one journaled in '
                            f"{self._store.path}; restore it, give it a new id, or use a new "
                            "journal",
                            journaled=True,
                        )
                    )
                    continue
            rows.append(row)
        await self._store.add(new)
        await self._store.mark_seen(seen, self._run_id)
        return rows, invalid

    async def _dispatch(self, row: JournalRow, creates: MemoryObjectSendStream[JournalRow]) -> None:
        if row.state == State.PENDING:
            await creates.send(row)
        elif row.state == State.SUBMITTING:
            if self._session.retry_ambiguous_creates:
                await creates.send(row)
            else:
                self._deliver(_Finished(row, Source.JOURNAL, note=NOT_RESENT))
        elif row.state == State.CREATED and row.task_id:
            self._track_journaled(row)
        else:
            self._deliver(_Finished(row, Source.JOURNAL))

    def _deliver(self, finished: _Finished) -> None:
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

    def _track(self, row: JournalRow) -> TaskHandle:
        assert row.task_id is not None
        return self._session.track(row.task_id, timeout=self._timeout)

    def _track_journaled(self, row: JournalRow) -> None:
        """Track a task an earlier run created; one whose id no poll can name (see
        `UnpollableTaskIdError`) is reported from the journal, which keeps its id and why."""
        try:
            handle = self._track(row)
        except InvalidRequestError:
            self._deliver(_Finished(row, Source.JOURNAL))
            return
        self._watch(row, handle, Source.TRACKED)

    def _watch(self, row: JournalRow, handle: TaskHandle, source: Source) -> None:
        handle.add_done_callback(lambda finished: self._deliver(_Finished(row, source, finished)))

    # --- creating ------------------------------------------------------------------------

    async def _create_worker(self, creates: MemoryObjectReceiveStream[JournalRow]) -> None:
        with creates:
            async for row in creates:
                if self._stop_reason is not None:
                    self._deliver(_Finished(row, Source.JOURNAL, note=NOT_SENT))
                else:
                    await self._create(row)

    async def _create(self, row: JournalRow) -> None:
        # A create cut off mid-flight leaves a row nobody can settle without risking a second
        # payment, so an interrupted run lets creates in flight get their answer (and records
        # it) for up to STOP_GRACE seconds; see __aexit__.
        with anyio.CancelScope(shield=True) as shield:
            self._in_flight.add(shield)
            try:
                await self._send_create(row)
            finally:
                self._in_flight.discard(shield)

    async def _send_create(self, row: JournalRow) -> None:
        assert self._store is not None
        source = Source.RESUBMITTED if row.state == State.SUBMITTING else Source.NEW
        await self._store.mark_submitting(row.key)  # committed before the create is sent
        try:
            handle = await self._session.submit_request(
                row.request,
                timeout=self._timeout,
                idempotency_key=row.idempotency_key,
                reported=True,
            )
        except AmbiguousCreateError as exc:  # stays SUBMITTING: see retry_ambiguous_creates
            await self._store.mark_ambiguous(row.key, str(exc))
            self._count_unanswered(exc)
            self._deliver(_Finished(row, source, error=exc))
            return
        except WorldRouterError as exc:
            # Refused for good (400, 413, 422, strict mode) is final; anything else (429,
            # 503, no connection, a bad key) certainly created nothing: a rerun sends it.
            if is_final(exc):
                await self._store.mark_failed(row.key, str(exc))
            else:
                await self._store.mark_pending(row.key, str(exc))
            if isinstance(exc, AuthenticationError | PermissionDeniedError):
                self._stop(f"the server refused the API key: {exc}")
            elif isinstance(exc, CreateHeldBackError):
                self._stop(
                    f"the server refused a create ({exc.refusal}) for a reason every other "
                    "create shares, so no other was sent; fix its cause and rerun"
                )
            self._count_unanswered(exc)
            self._deliver(_Finished(row, source, error=exc))
            return
        self._count_unanswered(None)
        await self._store.mark_created(row.key, handle.task_id, handle.status)
        self._watch(row, handle, source)

    def _count_unanswered(self, exc: WorldRouterError | None) -> None:
        """Count creates in a row that got no answer at all; any answer resets the count."""
        if not isinstance(exc, APIConnectionError) and not isinstance(
            getattr(exc, "__cause__", None), APIConnectionError
        ):
            self._connection_failures = 0
            return
        self._connection_failures += 1
        if self._connection_failures >= CONNECTION_FAILURES_TO_STOP:
            self._stop(
                f"{self._connection_failures} creates in a row could not reach the server "
                f"(last: {exc}); check the network and the base URL"
            )

    # --- finishing -----------------------------------------------------------------------

    async def _finisher(
        self, done: MemoryObjectReceiveStream[_Finished], send: MemoryObjectSendStream[Outcome]
    ) -> None:
        finishing = anyio.Semaphore(self._concurrency)
        async with anyio.create_task_group() as task_group:
            with done:
                async for finished in done:
                    await finishing.acquire()
                    task_group.start_soon(self._finish, finished, send, finishing)

    async def _finish(
        self, finished: _Finished, send: MemoryObjectSendStream[Outcome], slot: anyio.Semaphore
    ) -> None:
        try:
            outcome = await self._outcome(finished)
            with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError):
                await send.send(outcome)
        finally:
            slot.release()
            self._window.release()

    async def _outcome(self, finished: _Finished) -> Outcome:
        row, source = finished.row, finished.source
        if finished.handle is not None:
            return await self._from_handle(row, finished.handle, source)
        if finished.error is not None:
            error = finished.error
            if isinstance(error, AmbiguousCreateError):
                kind = OutcomeKind.AMBIGUOUS
            else:
                kind = OutcomeKind.FAILED if is_final(error) else OutcomeKind.PENDING
            return Outcome(row.key, kind, source, error=str(error))
        return await self._from_journal(row, finished.note)

    async def _from_handle(self, row: JournalRow, handle: TaskHandle, source: Source) -> Outcome:
        assert self._store is not None
        error = handle.exception()
        task_id = handle.task_id
        if error is None:
            result = handle.result()
            await self._store.mark_completed(row.key, result.task.status, result.urls, result.usage)
            return await self._download(
                row.key, task_id, result.urls, result.usage, source, result=result
            )
        if isinstance(error, TaskFailedError):
            await self._store.mark_failed(row.key, str(error), usage=_paid_usage(error))
            kind = OutcomeKind.FAILED
        elif isinstance(error, TaskNotFoundError):
            await self._store.mark_expired(row.key, str(error))
            kind = OutcomeKind.EXPIRED
        else:  # deadline, shutdown, or tracking failed: the task lives on; a rerun tracks it
            await self._store.mark_unfinished(row.key, handle.status, str(error))
            kind = OutcomeKind.UNFINISHED
        usage = _paid_usage(error)
        return Outcome(row.key, kind, source, task_id=task_id, usage=usage, error=str(error))

    async def _from_journal(self, row: JournalRow, note: str | None) -> Outcome:
        kind = kind_of(row)
        if kind in (OutcomeKind.COMPLETED, OutcomeKind.DOWNLOAD_FAILED) and not (
            await self._files_intact(row)
        ):
            fresh = await self._fetch_again(row)
            return await self._download(
                row.key, row.task_id, row.urls, row.usage, Source.JOURNAL, fresh
            )
        return Outcome(
            row.key,
            kind,
            Source.JOURNAL,
            task_id=row.task_id,
            urls=row.urls,
            files=tuple(str(path) for path in self._paths(row.files)),
            usage=row.usage,
            error=note or row.error,
        )

    async def _fetch_again(self, row: JournalRow) -> ImageResult | None:
        """The task's result as the server gives it now, for a rerun that downloads again.

        Stored image URLs are often signed and expire, so the journaled ones may answer 403
        by the time of the rerun, and inline images are not journaled at all. None when the
        server cannot say (it forgot the task, or does not answer): the journaled URLs are
        then the last resort.
        """
        assert self._store is not None
        if row.task_id is None:
            return None
        try:
            result = await self._track(row)
        except WorldRouterError:
            return None
        await self._store.mark_completed(row.key, result.task.status, result.urls, result.usage)
        return result

    def _paths(self, files: Iterable[str]) -> list[Path]:
        """Journal file names as paths (names are relative to the output directory)."""
        out = self._out_dir or Path()
        return [out / name for name in files]  # an absolute name (older journals) stays as is

    async def _files_intact(self, row: JournalRow) -> bool:
        """True when every file of the row exists and still has the bytes it was saved with."""
        if self._out_dir is None:
            return True
        if not row.files or row.error:
            return False
        paths = self._paths(row.files)
        digests = row.digests or (None,) * len(paths)

        def check() -> bool:
            return all(
                path.is_file()
                and path.stat().st_size > 0  # an empty body was never an image
                and (digest is None or file_digest(path) == digest)
                for path, digest in zip(paths, digests, strict=True)
            )

        return await anyio.to_thread.run_sync(check)

    async def _download(
        self,
        key: str,
        task_id: str | None,
        urls: tuple[str, ...],
        usage: Usage | None,
        source: Source,
        result: ImageResult | None = None,
    ) -> Outcome:
        """Save the images of `result` (inline ones included), else `urls`, in the output."""
        assert self._store is not None
        files: tuple[str, ...] = ()
        if self._out_dir is not None:
            out = self._out_dir
            try:
                saved = _images_to_save(task_id, urls, result)
                paths = await self._session.download_urls(saved, out, stem=file_stem(key))
                digests = await anyio.to_thread.run_sync(lambda: [file_digest(p) for p in paths])
            except (DownloadError, OSError, ExceptionGroup) as caught:
                exc = first_leaf(caught)  # concurrent downloads report in a group
                if not isinstance(exc, DownloadError | OSError):
                    raise
                if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
                    self._stop(f"the disk holding {out} is full ({exc.strerror})")
                message = f"saving the images of {key!r} in {out} failed: {exc}"
                await self._store.mark_download_failed(key, message)
                return Outcome(
                    key,
                    OutcomeKind.DOWNLOAD_FAILED,
                    source,
                    task_id=task_id,
                    urls=urls,
                    usage=usage,
                    error=message,
                )
            await self._store.mark_files(key, [p.name for p in paths], digests)
            files = tuple(str(path) for path in paths)
        return Outcome(
            key,
            OutcomeKind.COMPLETED,
            source,
            task_id=task_id,
            urls=urls,
            files=files,
            usage=usage,
        )


def _images_to_save(
    task_id: str | None, urls: tuple[str, ...], result: ImageResult | None
) -> tuple[str, ...] | tuple[ImageData, ...]:
    """The images of `result` (inline ones included), else the journaled `urls`.

    Nothing to save is a failed download, never a completed row without a file.
    """
    saved = urls if result is None else result.images
    if not saved:
        raise DownloadError(
            f"task {task_id} has no image left to save: the journal keeps no inline image "
            "and the server could not be asked again; rerun later",
            url="",
        )
    return saved


def _paid_usage(error: BaseException) -> Usage | None:
    """The usage of a task that completed without an image (paid, nothing to show)."""
    return error.usage if isinstance(error, NoImagesError) else None


def _unreadable(error: LineError) -> InvalidLine:
    return InvalidLine(error.line, f"line-{error.line}", error.message)


def _invalid(line: InvalidLine) -> Outcome:
    return Outcome(
        line.key, OutcomeKind.INVALID, Source.JOURNAL, error=line.reason, line=line.line or None
    )


async def _chunks(
    source: Iterable[_T] | AsyncIterable[_T], size: int
) -> AsyncGenerator[list[_T], None]:
    """Lists of up to `size` items from a sync or async iterable, read only as needed."""
    if isinstance(source, AsyncIterable):
        chunk: list[_T] = []
        async for item in source:
            chunk.append(item)
            if len(chunk) == size:
                yield chunk
                chunk = []
        if chunk:
            yield chunk
        return
    iterator = iter(source)
    while chunk := list(islice(iterator, size)):
        yield chunk
        await anyio.lowlevel.checkpoint()
