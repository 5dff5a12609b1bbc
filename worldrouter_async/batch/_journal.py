"""The write-ahead journal of a bulk job: one SQLite row per request, in WAL mode.

The intent (request and idempotency key) is committed before the create is sent, and the
task ID as soon as the create answers, so a crash at any instant leaves enough on disk to
resume without losing a task or paying for one twice.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Final

import anyio
import anyio.to_thread
from attrs import define

from ..models import ImageRequest, Usage, converter


class State:
    """Journal states of one request, in the order a request moves through them."""

    PENDING: Final = "pending"  # intent recorded, create never sent
    SUBMITTING: Final = "submitting"  # create sent (or about to be); answer not recorded
    CREATED: Final = "created"  # task ID recorded; waiting for the task
    COMPLETED: Final = "completed"  # URLs recorded (files column says what is on disk)
    FAILED: Final = "failed"  # the task or its create failed for good
    EXPIRED: Final = "expired"  # the server no longer knows the task (404 on resume)
    FINAL: Final = frozenset({COMPLETED, FAILED, EXPIRED})


SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS requests (
    key TEXT PRIMARY KEY,
    position INTEGER NOT NULL,
    request TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    state TEXT NOT NULL,
    task_id TEXT,
    status TEXT,
    urls TEXT NOT NULL DEFAULT '[]',
    files TEXT NOT NULL DEFAULT '[]',
    usage TEXT,
    error TEXT,
    sends INTEGER NOT NULL DEFAULT 0,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
INSERT OR IGNORE INTO meta VALUES ('schema_version', '1');
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
    "usage",
    "error",
    "sends",
)
_UPDATABLE: Final = frozenset(_COLUMNS) - {"key", "position", "request", "idempotency_key"}


@define(frozen=True)
class JournalRow:
    """One request as the journal holds it."""

    key: str
    position: int
    request: ImageRequest
    idempotency_key: str
    state: str
    task_id: str | None = None
    status: str | None = None
    urls: tuple[str, ...] = ()
    files: tuple[str, ...] = ()
    usage: Usage | None = None
    error: str | None = None
    sends: int = 0


def _row(values: tuple[Any, ...]) -> JournalRow:
    record = dict(zip(_COLUMNS, values, strict=True))
    return JournalRow(
        key=record["key"],
        position=record["position"],
        request=converter.structure(json.loads(record["request"]), ImageRequest),
        idempotency_key=record["idempotency_key"],
        state=record["state"],
        task_id=record["task_id"],
        status=record["status"],
        urls=tuple(json.loads(record["urls"])),
        files=tuple(json.loads(record["files"])),
        usage=converter.structure(json.loads(record["usage"]), Usage) if record["usage"] else None,
        error=record["error"],
        sends=record["sends"],
    )


def encode_request(request: ImageRequest) -> str:
    """The canonical JSON of a request, used to store it and to spot edited input."""
    return json.dumps(converter.unstructure(request), sort_keys=True)


class Journal:
    """Synchronous access to the journal file; `AsyncJournal` runs it off the event loop."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        # NORMAL under WAL survives a killed process; only a power cut may lose the last commit.
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(SCHEMA)

    def close(self) -> None:
        """Close the database file."""
        self._db.close()

    def rows(self) -> list[JournalRow]:
        """Every request, in input order."""
        cursor = self._db.execute(
            f"SELECT {', '.join(_COLUMNS)} FROM requests ORDER BY position"  # noqa: S608 - fixed names
        )
        return [_row(values) for values in cursor]

    def add(self, rows: Iterable[JournalRow]) -> None:
        """Record new intents in one transaction."""
        now = time.time()
        with self._db:
            self._db.execute("BEGIN")
            self._db.executemany(
                "INSERT INTO requests (key, position, request, idempotency_key, state, updated_at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                [
                    (r.key, r.position, encode_request(r.request), r.idempotency_key, r.state, now)
                    for r in rows
                ],
            )

    def update(self, key: str, fields: Mapping[str, Any]) -> None:
        """Set `fields` of one request and commit."""
        unknown = set(fields) - _UPDATABLE
        if unknown:
            raise ValueError(f"journal columns {sorted(unknown)} cannot be updated")
        values = [
            json.dumps(list(v)) if name in ("urls", "files") else v for name, v in fields.items()
        ]
        assignments = ", ".join(f"{name} = ?" for name in fields)
        self._db.execute(
            f"UPDATE requests SET {assignments}, updated_at = ? WHERE key = ?",  # noqa: S608
            [*values, time.time(), key],
        )

    def count_sends(self, key: str) -> None:
        """Note that a create for `key` is about to be sent (committed before sending)."""
        self._db.execute(
            "UPDATE requests SET state = ?, sends = sends + 1, updated_at = ? WHERE key = ?",
            (State.SUBMITTING, time.time(), key),
        )


class AsyncJournal:
    """The journal with every call run on one worker thread, in order."""

    def __init__(self, journal: Journal) -> None:
        self._journal = journal
        self._limiter = anyio.CapacityLimiter(1)

    @classmethod
    async def open(cls, path: Path) -> AsyncJournal:
        """Open (creating if needed) the journal at `path`."""
        journal = await anyio.to_thread.run_sync(Journal, path)
        return cls(journal)

    @property
    def path(self) -> Path:
        """The journal file."""
        return self._journal.path

    async def aclose(self) -> None:
        """Close the database."""
        await anyio.to_thread.run_sync(self._journal.close, limiter=self._limiter)

    async def rows(self) -> list[JournalRow]:
        """Every request, in input order."""
        return await anyio.to_thread.run_sync(self._journal.rows, limiter=self._limiter)

    async def add(self, rows: list[JournalRow]) -> None:
        """Record new intents."""
        await anyio.to_thread.run_sync(self._journal.add, rows, limiter=self._limiter)

    async def update(self, key: str, **fields: Any) -> None:
        """Set fields of one request."""
        await anyio.to_thread.run_sync(self._journal.update, key, fields, limiter=self._limiter)

    async def count_sends(self, key: str) -> None:
        """Commit that a create is about to be sent."""
        await anyio.to_thread.run_sync(self._journal.count_sends, key, limiter=self._limiter)


def read_rows(path: str | os.PathLike[str]) -> list[JournalRow]:
    """Read a journal without writing to it (for `worldrouter-async status`)."""
    journal_file = Path(path)
    if not journal_file.exists():
        raise FileNotFoundError(f"no journal at {journal_file}")
    journal = Journal(journal_file)
    try:
        return journal.rows()
    finally:
        journal.close()
