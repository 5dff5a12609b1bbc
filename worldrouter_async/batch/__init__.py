"""Bulk generation: a write-ahead journal and a resumable runner.

Example:
    >>> from worldrouter_async.batch import BatchRunner, read_jsonl
    >>> async def main(session):  # doctest: +SKIP
    ...     items, bad_lines = read_jsonl(Path("prompts.jsonl"))
    ...     async with BatchRunner(session, "job.sqlite3", out_dir="images") as runner:
    ...         async for outcome in runner.run(items):
    ...             print(outcome.key, outcome.kind)
"""

from ._journal import JournalRow, State, read_rows
from ._jsonl import BatchItem, LineError, read_jsonl
from ._runner import BatchRunner, BatchSummary, Outcome, OutcomeKind, Source

__all__ = [
    "BatchItem",
    "BatchRunner",
    "BatchSummary",
    "JournalRow",
    "LineError",
    "Outcome",
    "OutcomeKind",
    "Source",
    "State",
    "read_jsonl",
    "read_rows",
]

for _name in __all__:
    _obj = globals()[_name]
    if isinstance(_obj, type):
        _obj.__module__ = __name__
del _name, _obj
