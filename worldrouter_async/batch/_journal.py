"""The write-ahead journal of a bulk job: one row per request and named state transitions.

The intent (request and idempotency key) is committed before the create is sent, and the
task ID as soon as the create answers, so a crash at any instant leaves enough on disk to
resume without losing a task. `JournalStore` is what the runner needs; `SqliteJournal` (one
SQLite file, written from a worker thread) is the implementation it ships with.

A run writes the file with a rollback journal and ``synchronous=EXTRA``: every commit is in
the main file, synced to disk, when it returns, so losing the sidecar files (``-wal``,
``-shm``, ``-journal``, as a copy of the journal file alone does) never loses the record of
a create that was sent. (EXTRA also syncs the directory once the rollback journal is
deleted, so a power cut cannot bring that journal back and undo the commit.)
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from enum import StrEnum
from pathlib import Path
from typing import Any, Final, Protocol

import anyio
import anyio.to_thread
from attrs import define, field

from ..models import ImageRequest, Usage, converter
from ._errors import JournalError


class State(StrEnum):
    """Journal states of one request, in the order a request moves through them."""

    PENDING = "pending"  # intent recorded, no create sent (or one certainly refused)
    SUBMITTING = "submitting"  # create sent (or about to be); answer not recorded
    CREATED = "created"  # task ID recorded; waiting for the task
    COMPLETED = "completed"  # URLs recorded (files column says what is on disk)
    FAILED = "failed"  # the task or its create failed for good
    EXPIRED = "expired"  # the server no longer knows the task (404 on resume)


FINAL_STATES: Final = frozenset({State.COMPLETED, State.FAILED, State.EXPIRED})
SCHEMA_VERSION: Final = "2"
_SQLITE_MAGIC: Final = b"SQLite format 3\x00"
#: Seconds a write waits for a reader (``worldrouter-async status``) to let go of the file.
BUSY_TIMEOUT: Final = 30.0

SCHEMA: Final = """
CREATE TABLE requests (
    key TEXT PRIMARY KEY,
    position INTEGER NOT NULL,
    request TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    state TEXT NOT NULL,
    task_id TEXT,
    status TEXT,
    urls TEXT NOT NULL DEFAULT '[]',
    files TEXT NOT NULL DEFAULT '[]',
    digests TEXT NOT NULL DEFAULT '[]',
    usage TEXT,
    error TEXT,
    sends INTEGER NOT NULL DEFAULT 0,
    run TEXT,
    updated_at REAL NOT NULL
);
CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
INSERT INTO meta VALUES ('schema_version', '2');
"""
# Version 1 journals (v0.1) lack the digests and run columns; opening one adds them.
_MIGRATE_1_TO_2: Final = """
ALTER TABLE requests ADD COLUMN digests TEXT NOT NULL DEFAULT '[]';
ALTER TABLE requests ADD COLUMN run TEXT;
UPDATE meta SET value = '2' WHERE name = 'schema_version';
"""

# Added without a schema version bump: a journal without it simply has no invalid lines
# recorded, and the first run that opens it for writing creates it.
_INVALID_LINES: Final = """
CREATE TABLE IF NOT EXISTS invalid_lines (
    line INTEGER NOT NULL,
    key TEXT NOT NULL,
    reason TEXT NOT NULL,
    journaled INTEGER NOT NULL DEFAULT 0,
    run TEXT NOT NULL
);
"""

_COLUMNS: Final = (
    "key",
    "position",
    "request",
    "idempotency_key",
    "state",
    "task_id",
    "status",
    "urls",
    "files",
    "digests",
    "usage",
    "error",
    "sends",
    "run",
)
_SELECT: Final = f"SELECT {', '.join(_COLUMNS)} FROM requests"  # noqa: S608 - fixed names


@define(frozen=True)
class JournalRow:
    """One request as the journal holds it.

    `files` are relative to the run's output directory, so a resume from another working
    directory finds them; `digests` holds each file's SHA-256 as saved.
    """

    key: str
    position: int
    request: ImageRequest
    idempotency_key: str
    state: State
    task_id: str | None = None
    status: str | None = None
    urls: tuple[str, ...] = ()
    files: tuple[str, ...] = ()
    digests: tuple[str, ...] = ()
    usage: Usage | None = None
    error: str | None = None
    sends: int = 0
    run: str | None = None


@define(frozen=True)
class InvalidLine:
    """An input line the last run could not send, recorded so `status` can show it later.

    `key` is the line's id (``line-N`` when it has none or cannot be read). `journaled` is
    True when `key` names a journal row this line no longer matches (its request was edited):
    the line then stands for that row in the counts.
    """

    line: int
    key: str
    reason: str
    journaled: bool = False


@define(frozen=True)
class HighWater:
    """How much a journal has recorded: its rows (intents) and the creates sent for them.

    Both only grow, so a journal found below a mark it once reached has lost records.
    """

    rows: int = 0
    sends: int = 0

    def covers(self, other: HighWater) -> bool:
        """True when this mark is at or above `other` on both counts."""
        return self.rows >= other.rows and self.sends >= other.sends


def _row(values: tuple[Any, ...]) -> JournalRow:
    record = dict(zip(_COLUMNS, values, strict=True))
    return JournalRow(
        key=record["key"],
        position=record["position"],
        request=converter.structure(json.loads(record["request"]), ImageRequest),
        idempotency_key=record["idempotency_key"],
        state=State(record["state"]),
        task_id=record["task_id"],
        status=record["status"],
        urls=tuple(json.loads(record["urls"])),
        files=tuple(json.loads(record["files"])),
        digests=tuple(json.loads(record["digests"])),
        usage=converter.structure(json.loads(record["usage"]), Usage) if record["usage"] else None,
        error=record["error"],
        sends=record["sends"],
        run=record["run"],
    )


def encode_request(request: ImageRequest) -> str:
    """The canonical JSON of a request, used to store it and to spot edited input."""
    return json.dumps(converter.unstructure(request), sort_keys=True)


class JournalStore(Protocol):
    """What the runner needs from a journal: lookups and one named call per transition.

    Every call commits before it returns, and raises `JournalError` when it cannot.
    """

    @property
    def path(self) -> Path:
        """Where the journal lives (for messages)."""
        ...

    async def aclose(self) -> None:
        """Release the store."""

    async def lookup(self, keys: Sequence[str]) -> dict[str, JournalRow]:
        """The rows of those `keys` that exist."""
        ...

    async def add(self, rows: Sequence[JournalRow]) -> None:
        """Record new intents (state `pending`) before anything is sent for them."""

    async def mark_seen(self, keys: Sequence[str], run: str) -> None:
        """Note that `run` has read these keys (a key seen twice in one run is a repeat)."""

    async def record_invalid(self, run: str, lines: Sequence[InvalidLine]) -> None:
        """Record input lines `run` could not send, forgetting those of earlier runs."""

    async def mark_submitting(self, key: str) -> None:
        """A create is about to be sent: committed first, so a crash leaves `submitting`."""

    async def mark_created(self, key: str, task_id: str | None, status: str | None) -> None:
        """The create answered with a task ID."""

    async def mark_pending(self, key: str, error: str) -> None:
        """The create certainly created nothing (refused, never connected): send it later."""

    async def mark_ambiguous(self, key: str, error: str) -> None:
        """The create may have landed: the row stays `submitting`."""

    async def mark_failed(self, key: str, error: str, *, usage: Usage | None = None) -> None:
        """The task failed, or its create was refused for good; `usage` when it was paid."""

    async def mark_expired(self, key: str, error: str) -> None:
        """The server no longer knows the task."""

    async def mark_unfinished(self, key: str, status: str | None, error: str) -> None:
        """Tracking stopped before the task ended (deadline, shutdown); it stays `created`."""

    async def mark_completed(
        self, key: str, status: str, urls: Sequence[str], usage: Usage | None
    ) -> None:
        """The task completed; files are recorded by `mark_files` once saved."""

    async def mark_files(self, key: str, files: Sequence[str], digests: Sequence[str]) -> None:
        """The images are saved (paths relative to the output directory)."""

    async def mark_download_failed(self, key: str, error: str) -> None:
        """Saving the images failed; the task is done, so a rerun only downloads."""


class SqliteFile:
    """Synchronous access to one journal file; `SqliteJournal` runs it off the event loop."""

    def __init__(self, path: Path, *, create: bool = True) -> None:
        self.path = path
        #: Called with the new mark after each commit that records intents or a send.
        self.on_advance: Callable[[HighWater], None] | None = None
        self._high_water = HighWater()
        self._in_group = False  # inside `commit_together`: writes are savepoints
        if not path.exists():
            if not create:
                raise FileNotFoundError(f"no journal at {path}")
            try:
                _create(path)
            except (sqlite3.Error, OSError) as exc:
                raise JournalError(f"cannot create a journal at {path} ({exc})") from exc
        _check_header(path)
        try:
            self._db = sqlite3.connect(
                path, timeout=BUSY_TIMEOUT, check_same_thread=False, isolation_level=None
            )
        except sqlite3.Error as exc:
            raise JournalError(f"{path} is not a worldrouter-async journal ({exc})") from exc
        try:
            self._open(path)
        except BaseException:
            self._db.close()  # a refused file is never left open
            raise

    def _open(self, path: Path) -> None:
        """Check the schema version, then set the connection up (migrating a v1 journal)."""
        try:
            version = self._db.execute(
                "SELECT value FROM meta WHERE name = 'schema_version'"
            ).fetchone()
        except sqlite3.Error as exc:
            raise JournalError(f"{path} is not a worldrouter-async journal ({exc})") from exc
        if version is None or version[0] not in ("1", SCHEMA_VERSION):
            raise JournalError(f"{path} is a journal of an unknown version {version}")
        stat = path.stat()
        self._identity = (stat.st_dev, stat.st_ino)
        if version[0] == "1":
            self._write(lambda: self._db.executescript(_MIGRATE_1_TO_2))

    def make_durable(self) -> None:
        """Make every later commit reach the main file, check the file, and read its marks.

        Under WAL a commit can live only in the ``-wal`` file until a checkpoint, and a lost
        ``-wal`` forgets it: the next run would create, and pay for, those requests again.
        A rollback journal with ``synchronous=EXTRA`` puts each commit into the main file (on
        disk) before it returns. A journal of an older version is moved out of WAL here,
        which first folds its ``-wal`` into the main file.
        """
        try:
            mode = self._db.execute("PRAGMA journal_mode=DELETE").fetchone()[0]
            self._db.execute("PRAGMA synchronous=EXTRA")
            check = self._db.execute("PRAGMA quick_check").fetchone()[0]
        except sqlite3.Error as exc:
            raise JournalError(
                f"cannot prepare journal {self.path} for writing ({exc}); if another program "
                "has it open, close that program and rerun"
            ) from exc
        if mode != "delete":
            raise JournalError(
                f"cannot take journal {self.path} out of WAL mode: another program has it "
                "open. Close it (or wait for it to end) and rerun"
            )
        if check != "ok":
            raise JournalError(
                f"journal {self.path} is damaged ({check}), so it cannot say which tasks were "
                "already created. Restore it from a backup, or delete it to start over (every "
                "request is then created, and paid for, again)"
            )
        if self._meta("journal_id") is None:  # journals of older versions have no identity
            self._write(
                lambda: self._db.execute(
                    "INSERT INTO meta VALUES ('journal_id', ?)", (uuid.uuid4().hex,)
                )
            )
        rows, sends = self._db.execute(
            "SELECT count(*), coalesce(sum(sends), 0) FROM requests"
        ).fetchone()
        self._high_water = HighWater(rows, sends)

    @property
    def journal_id(self) -> str | None:
        """The identity the journal was given when created (None: an older, unprepared file)."""
        return self._meta("journal_id")

    @property
    def high_water(self) -> HighWater:
        """Rows and sends recorded, as counted by `make_durable` and the writes since."""
        return self._high_water

    def _meta(self, name: str) -> str | None:
        found = self._db.execute("SELECT value FROM meta WHERE name = ?", (name,)).fetchone()
        return None if found is None else str(found[0])

    def _advance(self, rows: int = 0, sends: int = 0) -> None:
        mark = HighWater(self._high_water.rows + rows, self._high_water.sends + sends)
        self._high_water = mark
        if self.on_advance is not None and not self._in_group:  # else told after the commit
            self.on_advance(mark)

    def close(self) -> None:
        """Close the database file."""
        self._db.close()

    def iter_rows(self) -> Iterator[JournalRow]:
        """Every request, in input order, read from the file as the caller goes."""
        return map(_row, self._db.execute(f"{_SELECT} ORDER BY position"))

    def lookup(self, keys: Sequence[str]) -> dict[str, JournalRow]:
        """The rows of `keys` that exist."""
        found: dict[str, JournalRow] = {}
        for start in range(0, len(keys), 500):
            chunk = keys[start : start + 500]
            marks = ", ".join("?" * len(chunk))
            cursor = self._db.execute(f"{_SELECT} WHERE key IN ({marks})", chunk)
            found.update((row.key, row) for row in map(_row, cursor))
        return found

    def add(self, rows: Iterable[JournalRow]) -> None:
        """Record new intents in one transaction."""
        now = time.time()
        values = [
            (r.key, r.position, encode_request(r.request), r.idempotency_key, r.state, r.run, now)
            for r in rows
        ]
        self._write(
            lambda: self._db.executemany(
                "INSERT INTO requests"
                " (key, position, request, idempotency_key, state, run, updated_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                values,
            )
        )
        if values:
            self._advance(rows=len(values))

    def mark_seen(self, keys: Sequence[str], run: str) -> None:
        """Stamp `run` on existing rows."""
        self._write(
            lambda: self._db.executemany(
                "UPDATE requests SET run = ? WHERE key = ?", [(run, key) for key in keys]
            )
        )

    def set(self, key: str, **fields: Any) -> None:
        """Set columns of one row (JSON-encoding sequences) and commit."""
        encoded = {
            name: json.dumps(list(value)) if isinstance(value, tuple | list) else value
            for name, value in fields.items()
        }
        assignments = "".join(f"{name} = ?, " for name in encoded)
        self._write(
            lambda: self._db.execute(
                f"UPDATE requests SET {assignments}updated_at = ? WHERE key = ?",  # noqa: S608
                [*encoded.values(), time.time(), key],
            )
        )

    def count_send(self, key: str) -> None:
        """Mark `key` submitting and count the send, in one commit."""
        self._write(
            lambda: self._db.execute(
                "UPDATE requests SET state = ?, sends = sends + 1, updated_at = ? WHERE key = ?",
                (State.SUBMITTING, time.time(), key),
            )
        )
        self._advance(sends=1)

    def commit_together(self, calls: Sequence[Callable[[], object]]) -> list[JournalError | None]:
        """Run several write calls in one transaction, so they share one sync to disk.

        Each call is a savepoint of its own: one that fails is undone alone and gets its
        error back, in the order of `calls`; if the commit fails, every call gets the error.
        """
        try:
            self._check_file()
        except JournalError as exc:
            return [JournalError(str(exc)) for _ in calls]
        before = self._high_water
        outcomes: list[JournalError | None] = []
        committed = False
        try:
            with self._db:
                self._db.execute("BEGIN IMMEDIATE")
                self._in_group = True
                try:
                    for call in calls:
                        try:
                            call()
                        except JournalError as exc:
                            outcomes.append(exc)
                        else:
                            outcomes.append(None)
                finally:
                    self._in_group = False
            committed = True
        except (sqlite3.Error, OSError) as exc:
            return [self._write_error(exc) for _ in calls]
        finally:
            if not committed:  # rolled back: the marks of its writes were never reached
                self._high_water = before
        if self.on_advance is not None and self._high_water != before:
            self.on_advance(self._high_water)
        return outcomes

    def _has_invalid_lines(self) -> bool:
        found = self._db.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'invalid_lines'"
        ).fetchone()
        return found is not None

    def record_invalid(self, run: str, lines: Sequence[InvalidLine]) -> None:
        """Replace the invalid lines of earlier runs by `lines` of `run` (appended per call)."""

        def write() -> None:
            self._db.execute(_INVALID_LINES)
            self._db.execute("DELETE FROM invalid_lines WHERE run != ?", (run,))
            self._db.executemany(
                "INSERT INTO invalid_lines (line, key, reason, journaled, run)"
                " VALUES (?, ?, ?, ?, ?)",
                [(i.line, i.key, i.reason, i.journaled, run) for i in lines],
            )

        self._write(write)

    def iter_invalid(self) -> Iterator[InvalidLine]:
        """The invalid lines the last run recorded, in input order (none in older journals)."""
        if not self._has_invalid_lines():
            return iter(())
        cursor = self._db.execute(
            "SELECT line, key, reason, journaled FROM invalid_lines ORDER BY line, rowid"
        )
        return (
            InvalidLine(line, key, reason, bool(journaled))
            for line, key, reason, journaled in cursor
        )

    def _write(self, statement: Callable[[], object]) -> None:
        """Run one committed write (a savepoint inside `commit_together`)."""
        if self._in_group:
            self._db.execute("SAVEPOINT one_write")
            try:
                statement()
            except sqlite3.Error as exc:
                self._db.execute("ROLLBACK TO one_write")
                raise self._write_error(exc) from exc
            finally:
                self._db.execute("RELEASE one_write")
            return
        self._check_file()
        try:
            with self._db:
                self._db.execute("BEGIN IMMEDIATE")
                statement()
        except (sqlite3.Error, OSError) as exc:
            raise self._write_error(exc) from exc

    def _write_error(self, exc: BaseException) -> JournalError:
        try:  # a journal deleted or replaced mid-write fails with a vaguer error first
            self._check_file()
        except JournalError as cause:
            return cause
        return JournalError(
            f"cannot write journal {self.path} ({exc}); the run stopped and everything "
            "recorded so far is kept: fix the problem (disk space, permissions) and rerun"
        )

    def _check_file(self) -> None:
        """Raise unless the journal file is still the one opened (not deleted or replaced)."""
        try:
            stat = os.stat(self.path)
        except FileNotFoundError:
            raise JournalError(
                f"journal {self.path} was deleted while this run was using it; the run stopped "
                "so that nothing is sent that no journal records. Restore the file to resume"
            ) from None
        if (stat.st_dev, stat.st_ino) != self._identity:
            raise JournalError(
                f"journal {self.path} was replaced by another file while this run was using "
                "it; the run stopped. Put the original back to resume"
            )


def _create(path: Path) -> None:
    """Build a new journal beside `path` and move it in whole, so no half-made file remains."""
    temp = path.with_name(f".{path.name}.new")
    temp.unlink(missing_ok=True)
    db = sqlite3.connect(temp, isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode=DELETE")
        db.executescript(SCHEMA)
        db.execute("INSERT INTO meta VALUES ('journal_id', ?)", (uuid.uuid4().hex,))
    finally:
        db.close()
    os.replace(temp, path)


def _check_header(path: Path) -> None:
    with path.open("rb") as file:
        header = file.read(len(_SQLITE_MAGIC))
    if not header:
        raise JournalError(
            f"journal {path} is empty (0 bytes), so it cannot say which tasks were already "
            "created. Restore it from a backup, or delete it to start over (every request is "
            "then created, and paid for, again)"
        )
    if header != _SQLITE_MAGIC:
        raise JournalError(f"{path} is not a worldrouter-async journal (not an SQLite file)")


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


def read_rows(path: str | os.PathLike[str]) -> list[JournalRow]:
    """Every row of an existing journal, in input order."""
    return list(iter_rows(path))


def iter_invalid_lines(path: str | os.PathLike[str]) -> Iterator[InvalidLine]:
    """The input lines the last run on an existing journal could not send, in input order."""
    file = SqliteFile(Path(path), create=False)
    try:
        yield from file.iter_invalid()
    finally:
        file.close()


def iter_rows(path: str | os.PathLike[str]) -> Iterator[JournalRow]:
    """The rows of an existing journal, in input order, one at a time: memory stays flat
    however many rows it holds (`worldrouter-async status`)."""
    file = SqliteFile(Path(path), create=False)
    try:
        yield from file.iter_rows()
    finally:
        file.close()
