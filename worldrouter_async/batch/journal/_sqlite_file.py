"""Synchronous access to one SQLite journal file: durable commits, group commit, the file's
identity and its high-water mark.

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
from pathlib import Path
from typing import Any

from .._errors import JournalError
from ._rows import HighWater, InvalidLine, JournalRow, State, encode_request
from ._sqlite_schema import (
    BUSY_TIMEOUT,
    INVALID_LINES,
    MIGRATE_1_TO_2,
    SCHEMA_VERSION,
    SELECT_ROWS,
    check_header,
    create_file,
    decode_row,
)


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
                create_file(path)
            except (sqlite3.Error, OSError) as exc:
                raise JournalError(f"cannot create a journal at {path} ({exc})") from exc
        check_header(path)
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
            self._write(lambda: self._db.executescript(MIGRATE_1_TO_2))

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
        return map(decode_row, self._db.execute(f"{SELECT_ROWS} ORDER BY position"))

    def lookup(self, keys: Sequence[str]) -> dict[str, JournalRow]:
        """The rows of `keys` that exist."""
        found: dict[str, JournalRow] = {}
        for start in range(0, len(keys), 500):
            chunk = keys[start : start + 500]
            marks = ", ".join("?" * len(chunk))
            cursor = self._db.execute(f"{SELECT_ROWS} WHERE key IN ({marks})", chunk)
            found.update((row.key, row) for row in map(decode_row, cursor))
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
            self._db.execute(INVALID_LINES)
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
