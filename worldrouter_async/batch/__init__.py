"""Bulk generation: a write-ahead journal and a resumable runner.

Example:
    >>> from worldrouter_async.batch import BatchRunner, iter_jsonl
    >>> async def main(session):  # doctest: +SKIP
    ...     lines = iter_jsonl("prompts.jsonl")  # bad lines become invalid outcomes
    ...     async with BatchRunner(session, "job.sqlite3", out_dir="images") as runner:
    ...         async for outcome in runner.run(lines):
    ...             print(outcome.key, outcome.kind)
"""

from ._errors import JournalError, JournalInUseError, JournalLostError, OutputClaimedError
from ._gallery import INDEX_NAME, MANIFEST_NAME, Gallery, build_gallery
from ._jsonl import BatchItem, LineError, iter_jsonl, mark_repeats, read_jsonl
from ._names import file_stem
from ._outcomes import BatchSummary, Outcome, OutcomeKind, Source, kind_of
from ._outputs import check_bucket, is_bucket
from ._runner import BatchRunner
from .journal import (
    Claimed,
    InvalidLine,
    JournalRow,
    JournalStore,
    LiveWorker,
    PostgresJournal,
    SharedJournalStore,
    SqliteJournal,
    State,
    iter_invalid_lines,
    iter_rows,
    read_rows,
)

__all__ = [
    "INDEX_NAME",
    "MANIFEST_NAME",
    "BatchItem",
    "BatchRunner",
    "BatchSummary",
    "Claimed",
    "Gallery",
    "InvalidLine",
    "JournalError",
    "JournalInUseError",
    "JournalLostError",
    "JournalRow",
    "JournalStore",
    "LineError",
    "LiveWorker",
    "Outcome",
    "OutcomeKind",
    "OutputClaimedError",
    "PostgresJournal",
    "SharedJournalStore",
    "Source",
    "SqliteJournal",
    "State",
    "build_gallery",
    "check_bucket",
    "file_stem",
    "is_bucket",
    "iter_invalid_lines",
    "iter_jsonl",
    "iter_rows",
    "kind_of",
    "mark_repeats",
    "read_jsonl",
    "read_rows",
]

for _name in __all__:
    _obj = globals()[_name]
    if isinstance(_obj, type):
        _obj.__module__ = __name__
del _name, _obj
