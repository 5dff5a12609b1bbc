"""The SQLite journal's file format: its tables and version, how a row is read back, and
how a new file is made whole (so no half-made journal is ever left under its name)."""

from __future__ import annotations

import json
import os
import sqlite3
import uuid
from pathlib import Path
from typing import Any, Final

from ...models import ImageRequest, Usage, converter
from .._errors import JournalError
from ._rows import JournalRow, State

SCHEMA_VERSION: Final = "2"
SQLITE_MAGIC: Final = b"SQLite format 3\x00"
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
MIGRATE_1_TO_2: Final = """
ALTER TABLE requests ADD COLUMN digests TEXT NOT NULL DEFAULT '[]';
ALTER TABLE requests ADD COLUMN run TEXT;
UPDATE meta SET value = '2' WHERE name = 'schema_version';
"""

# Added without a schema version bump: a journal without it simply has no invalid lines
# recorded, and the first run that opens it for writing creates it.
INVALID_LINES: Final = """
CREATE TABLE IF NOT EXISTS invalid_lines (
    line INTEGER NOT NULL,
    key TEXT NOT NULL,
    reason TEXT NOT NULL,
    journaled INTEGER NOT NULL DEFAULT 0,
    run TEXT NOT NULL
);
"""

COLUMNS: Final = (
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
SELECT_ROWS: Final = f"SELECT {', '.join(COLUMNS)} FROM requests"  # noqa: S608 - fixed names


def decode_row(values: tuple[Any, ...]) -> JournalRow:
    """The row that a ``SELECT_ROWS`` result holds (its columns in `COLUMNS` order)."""
    record = dict(zip(COLUMNS, values, strict=True))
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


def create_file(path: Path) -> None:
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


def check_header(path: Path) -> None:
    """Raise unless `path` starts like an SQLite file (an empty one is refused too)."""
    with path.open("rb") as file:
        header = file.read(len(SQLITE_MAGIC))
    if not header:
        raise JournalError(
            f"journal {path} is empty (0 bytes), so it cannot say which tasks were already "
            "created. Restore it from a backup, or delete it to start over (every request is "
            "then created, and paid for, again)"
        )
    if header != SQLITE_MAGIC:
        raise JournalError(f"{path} is not a worldrouter-async journal (not an SQLite file)")
