"""The SQLite `JournalStore`: one journal file, written from one worker thread with group
commit, so the event loop never blocks on a sync to disk."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
from attrs import define, field

from ...models import Usage, converter
from .._errors import JournalError
from ._rows import InvalidLine, JournalRow, State
from ._sqlite_file import SqliteFile


class SqliteJournal:
    """The SQLite `JournalStore`: every call runs on one worker thread, in order."""

    def __init__(self, file: SqliteFile) -> None:
        self._file = file
        self._limiter = anyio.CapacityLimiter(1)
        self._queue: list[_Write] = []
        self._flushing = False
        self._round_over = anyio.Event()

    @classmethod
    async def open(cls, path: Path) -> SqliteJournal:
        """Open the journal at `path` for writing, creating it if there is none."""
        return cls(await anyio.to_thread.run_sync(_open_durable, path))

    @property
    def path(self) -> Path:
        """The journal file."""
        return self._file.path

    @property
    def file(self) -> SqliteFile:
        """The file underneath (its identity and marks; calls on it block)."""
        return self._file

    async def _call(self, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return await anyio.to_thread.run_sync(
            lambda: function(*args, **kwargs), limiter=self._limiter
        )

    async def _write(self, function: Callable[..., object], *args: Any, **kwargs: Any) -> None:
        """Commit one write, grouped with the writes other tasks queued meanwhile.

        Each commit syncs the file to disk, which costs milliseconds, so the writes that
        arrive while one commit runs share the next one (group commit). The caller returns
        once its own write is committed, as before; whoever finds no commit running runs
        the next one.
        """
        write = _Write(lambda: function(*args, **kwargs))
        self._queue.append(write)
        try:
            while not write.done.is_set():
                if self._flushing:
                    await self._round_over.wait()
                else:
                    await self._commit_queued()
        finally:
            if write in self._queue:  # cancelled before its commit began: never written
                self._queue.remove(write)
        if write.error is not None:
            raise write.error

    async def _commit_queued(self) -> None:
        self._flushing = True
        group, self._queue = self._queue, []
        outcomes: list[JournalError | None] = [
            JournalError(f"the write to journal {self.path} did not finish") for _ in group
        ]
        try:
            with anyio.CancelScope(shield=True):  # the writes taken must all be answered
                outcomes = await anyio.to_thread.run_sync(
                    self._file.commit_together,
                    [write.call for write in group],
                    limiter=self._limiter,
                )
        except Exception as exc:  # handed to each writer as its error, never lost
            outcomes = [JournalError(f"cannot write journal {self.path} ({exc!r})") for _ in group]
        finally:
            for write, error in zip(group, outcomes, strict=True):
                write.error = error
                write.done.set()
            self._flushing = False
            self._round_over.set()
            self._round_over = anyio.Event()

    async def aclose(self) -> None:
        """Close the database."""
        await self._call(self._file.close)

    async def lookup(self, keys: Sequence[str]) -> dict[str, JournalRow]:
        """The rows of `keys` that exist."""
        found: dict[str, JournalRow] = await self._call(self._file.lookup, keys)
        return found

    async def add(self, rows: Sequence[JournalRow]) -> None:
        """Record new intents."""
        await self._write(self._file.add, rows)

    async def mark_seen(self, keys: Sequence[str], run: str) -> None:
        """Stamp `run` on existing rows."""
        await self._write(self._file.mark_seen, keys, run)

    async def record_invalid(self, run: str, lines: Sequence[InvalidLine]) -> None:
        """Record lines `run` could not send."""
        await self._write(self._file.record_invalid, run, lines)

    async def mark_submitting(self, key: str) -> None:
        """Commit that a create is about to be sent."""
        await self._write(self._file.count_send, key)

    async def mark_created(self, key: str, task_id: str | None, status: str | None) -> None:
        """Record the task ID."""
        await self._write(
            self._file.set, key, state=State.CREATED, task_id=task_id, status=status, error=None
        )

    async def mark_pending(self, key: str, error: str) -> None:
        """Back to pending: nothing was created."""
        await self._write(self._file.set, key, state=State.PENDING, error=error)

    async def mark_ambiguous(self, key: str, error: str) -> None:
        """Stays submitting, with the reason."""
        await self._write(self._file.set, key, state=State.SUBMITTING, error=error)

    async def mark_failed(self, key: str, error: str, *, usage: Usage | None = None) -> None:
        """Failed for good (with the usage of a task that was paid for, if any)."""
        paid = {"usage": json.dumps(converter.unstructure(usage))} if usage is not None else {}
        await self._write(self._file.set, key, state=State.FAILED, error=error, **paid)

    async def mark_expired(self, key: str, error: str) -> None:
        """The server forgot the task."""
        await self._write(self._file.set, key, state=State.EXPIRED, error=error)

    async def mark_unfinished(self, key: str, status: str | None, error: str) -> None:
        """Still created; tracked again by a rerun."""
        await self._write(self._file.set, key, status=status, error=error)

    async def mark_completed(
        self, key: str, status: str, urls: Sequence[str], usage: Usage | None
    ) -> None:
        """Completed, with its URLs and usage."""
        usage_json = json.dumps(converter.unstructure(usage)) if usage is not None else None
        await self._write(
            self._file.set,
            key,
            state=State.COMPLETED,
            status=status,
            urls=tuple(urls),
            usage=usage_json,
            error=None,
        )

    async def mark_files(self, key: str, files: Sequence[str], digests: Sequence[str]) -> None:
        """Files saved."""
        await self._write(
            self._file.set, key, files=tuple(files), digests=tuple(digests), error=None
        )

    async def mark_download_failed(self, key: str, error: str) -> None:
        """Files not saved; a rerun downloads them."""
        await self._write(self._file.set, key, files=(), digests=(), error=error)


@define
class _Write:
    """One queued journal write and, once committed, its error (None when it succeeded)."""

    call: Callable[[], object]
    done: anyio.Event = field(factory=anyio.Event)
    error: JournalError | None = None


def _open_durable(path: Path) -> SqliteFile:
    """`SqliteFile` at `path`, made durable (closed again if that fails)."""
    file = SqliteFile(path)
    try:
        file.make_durable()
    except BaseException:
        file.close()
        raise
    return file
