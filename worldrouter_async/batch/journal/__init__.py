"""The write-ahead journal of a bulk job: one row per request and named state transitions.

The intent (request and idempotency key) is committed before the create is sent, and the
task ID as soon as the create answers, so a crash at any instant leaves enough to resume
without losing a task. `JournalStore` (``_store.py``) is the seam: what the runner needs
from any journal, with its contract. The package holds the values every store shares
(``_rows.py``) and the two stores that ship. SQLite, for one machine: its file format
(``_sqlite_schema.py``), synchronous file access (``_sqlite_file.py``), the async store
(``_sqlite.py``) and readers of an existing file (``_readers.py``). PostgreSQL, for many
workers sharing a job (``_postgres.py``; its tables in ``_postgres_schema.py``, its connection
in ``_postgres_connection.py``, its workers in ``_postgres_workers.py``), which implements
`SharedJournalStore` too. A new store is one more module here. Users import
the public names from `worldrouter_async.batch`, which re-exports them.
"""

from ._postgres import PostgresJournal
from ._postgres_schema import is_postgres_url, redact
from ._postgres_workers import LiveWorker
from ._readers import iter_invalid_lines, iter_rows, read_rows
from ._rows import FINAL_STATES, HighWater, InvalidLine, JournalRow, State, encode_request
from ._sqlite import SqliteJournal
from ._sqlite_file import SqliteFile
from ._store import Claimed, JournalStore, SharedJournalStore

__all__ = [
    "FINAL_STATES",
    "Claimed",
    "HighWater",
    "InvalidLine",
    "JournalRow",
    "JournalStore",
    "LiveWorker",
    "PostgresJournal",
    "SharedJournalStore",
    "SqliteFile",
    "SqliteJournal",
    "State",
    "encode_request",
    "is_postgres_url",
    "iter_invalid_lines",
    "iter_rows",
    "read_rows",
    "redact",
]
