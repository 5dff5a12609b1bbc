"""Finishing a request: turning a finished handle, a failed create or a journal row into
its `Outcome`, with the downloads and the journal marks that go with it."""

from __future__ import annotations

import errno
from collections.abc import Callable, Sequence

from attrs import define

from .._errors import (
    AmbiguousCreateError,
    DownloadError,
    NoImagesError,
    TaskFailedError,
    TaskNotFoundError,
    WorldRouterError,
    first_leaf,
)
from .._handles import ImageResult, TaskHandle
from .._retries import is_final
from .._session import Session
from ..models import Usage
from ._names import file_stem
from ._outcomes import Outcome, OutcomeKind, Source, kind_of
from ._outputs import Output
from .journal import JournalRow, JournalStore


@define(frozen=True)
class Finished:
    """A request this run is done acting on, and what became of it."""

    row: JournalRow
    source: Source
    handle: TaskHandle | None = None
    error: WorldRouterError | None = None
    note: str | None = None  # why nothing was done, when the journal state says the rest


def track(session: Session, row: JournalRow, timeout: float | None) -> TaskHandle:
    """Track the task a journal row names (the row must hold its task ID)."""
    assert row.task_id is not None
    return session.track(row.task_id, timeout=timeout)


class Finisher:
    """Makes the outcome of each finished request: journals it and saves its images.

    Args:
        session: the session whose downloads (and tracking, for fresh URLs) are used.
        store: the journal that records what became of each request.
        output: where images are saved (a directory or a bucket prefix); None keeps URLs only.
        timeout: seconds to wait for a task tracked again for fresh URLs.
        stop: called with the reason when the run must stop sending creates (disk full).
    """

    def __init__(
        self,
        session: Session,
        store: JournalStore,
        *,
        output: Output | None,
        timeout: float | None,
        stop: Callable[[str], None],
    ) -> None:
        self._session = session
        self._store = store
        self._output = output
        self._timeout = timeout
        self._stop = stop

    async def outcome(self, finished: Finished) -> Outcome:
        """The outcome of `finished`, once the journal records it and its images are saved."""
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
            files=tuple(self._locations(row.files)),
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
        if row.task_id is None:
            return None
        try:
            result = await track(self._session, row, self._timeout)
        except WorldRouterError:
            return None
        await self._store.mark_completed(row.key, result.task.status, result.urls, result.usage)
        return result

    def _locations(self, files: Sequence[str]) -> list[str]:
        """Journal file names as paths or URLs (names are relative to the output)."""
        if self._output is None:
            return list(files)
        return [self._output.location(name) for name in files]

    async def _files_intact(self, row: JournalRow) -> bool:
        """True when every file of the row exists and still has the bytes it was saved with."""
        if self._output is None:
            return True
        if not row.files or row.error:
            return False
        return await self._output.intact(row.files, row.digests or (None,) * len(row.files))

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
        files: tuple[str, ...] = ()
        if self._output is not None:
            out = self._output
            try:
                saved = await out.save(
                    self._session, _images_to_save(task_id, urls, result), stem=file_stem(key)
                )
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
            await self._store.mark_files(
                key, [file.name for file in saved], [file.digest for file in saved]
            )
            files = tuple(file.location for file in saved)
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
) -> ImageResult | tuple[str, ...]:
    """`result` (its inline images included), else the journaled `urls`.

    Nothing to save is a failed download, never a completed row without a file.
    """
    if not (urls if result is None else result.images):
        raise DownloadError(
            f"task {task_id} has no image left to save: the journal keeps no inline image "
            "and the server could not be asked again; rerun later",
            url="",
        )
    return urls if result is None else result


def _paid_usage(error: BaseException) -> Usage | None:
    """The usage of a task that completed without an image (paid, nothing to show)."""
    return error.usage if isinstance(error, NoImagesError) else None
