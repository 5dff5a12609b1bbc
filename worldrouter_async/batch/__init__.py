"""Bulk generation: a write-ahead journal and a resumable runner.

Example:
    >>> from worldrouter_async.batch import BatchItem, BatchRunner, iter_jsonl
    >>> async def main(session):  # doctest: +SKIP
    ...     items = (i for i in iter_jsonl("prompts.jsonl") if isinstance(i, BatchItem))
    ...     async with BatchRunner(session, "job.sqlite3", out_dir="images") as runner:
    ...         async for outcome in runner.run(items):
    ...             print(outcome.key, outcome.kind)
"""

from ._errors import JournalError, JournalInUseError, JournalLostError, OutputClaimedError
from ._journal import JournalRow, JournalStore, SqliteJournal, State, iter_rows, read_rows
from ._jsonl import BatchItem, LineError, iter_jsonl, read_jsonl
from ._names import file_stem
from ._outcomes import BatchSummary, Outcome, OutcomeKind, Source, kind_of
from ._runner import BatchRunner

__all__ = [
    "BatchItem",
    "BatchRunner",
    "BatchSummary",
    "JournalError",
    "JournalInUseError",
    "JournalLostError",
    "JournalRow",
    "JournalStore",
    "LineError",
    "Outcome",
    "OutcomeKind",
    "OutputClaimedError",
    "Source",
    "SqliteJournal",
    "State",
    "file_stem",
    "iter_jsonl",
    "iter_rows",
    "kind_of",
    "read_jsonl",
    "read_rows",
]

for _name in __all__:
    _obj = globals()[_name]
    if isinstance(_obj, type):
        _obj.__module__ = __name__
del _name, _obj
