"""The write-ahead journal of a bulk job: one row per request and named state transitions.

The intent (request and idempotency key) is committed before the create is sent, and the
task ID as soon as the create answers, so a crash at any instant leaves enough to resume
without losing a task. `JournalStore` (``_store.py``) is the seam: what the runner needs
from any journal, with its contract. The package holds the values every store shares
(``_rows.py``) and the SQLite store that ships: its file format (``_sqlite_schema.py``),
synchronous file access (``_sqlite_file.py``), the async store (``_sqlite.py``) and readers
of an existing file (``_readers.py``). A new store is one more module here. Users import
the public names from `worldrouter_async.batch`, which re-exports them.
"""

from ._readers import iter_invalid_lines, iter_rows, read_rows
from ._rows import FINAL_STATES, HighWater, InvalidLine, JournalRow, State, encode_request
from ._sqlite import SqliteJournal
from ._sqlite_file import SqliteFile
from ._store import JournalStore

__all__ = [
    "FINAL_STATES",
    "HighWater",
    "InvalidLine",
    "JournalRow",
    "JournalStore",
    "SqliteFile",
    "SqliteJournal",
    "State",
    "encode_request",
    "iter_invalid_lines",
    "iter_rows",
    "read_rows",
]
