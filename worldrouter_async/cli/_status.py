"""``status``: a journal's accounting, from the file alone, while or after a batch runs.

Every input line of the last run counts once: each request row by its state, each invalid
line (recorded with its number and reason) as ``invalid``; a line whose edited request no
longer matches its row counts as invalid instead of that row. Rows are streamed, never all
held in memory, however long the journal.
"""

from __future__ import annotations

import argparse
import sqlite3
from collections import Counter
from pathlib import Path

from attrs import define

from ..batch import InvalidLine, JournalError, JournalRow, OutcomeKind, kind_of
from ..batch.journal import SqliteFile
from ..models import Usage
from ._errors import EXIT_FAILED, EXIT_OK, UsageError, in_cli_terms
from ._json import Record, emit, invalid_records, usage_record
from ._progress import tokens

#: The journal `batch` writes into its ``--out`` directory.
JOURNAL_NAME = "journal.sqlite3"


def journal_path(given: Path) -> Path:
    """The journal `given` names: the file itself, or ``DIR/journal.sqlite3`` for an out dir."""
    return given / JOURNAL_NAME if given.is_dir() else given


@define(frozen=True)
class Status:
    """What a journal holds: counts by kind, token usage, invalid lines and problem rows."""

    counts: Counter[str]
    usage: Usage
    requests: int
    invalid: list[InvalidLine]
    problems: list[JournalRow]

    @property
    def ok(self) -> bool:
        """True when every line completed."""
        return self.counts.keys() <= {OutcomeKind.COMPLETED}


def read_status(path: Path) -> Status:
    """Count `path` in one streaming pass, keeping only invalid lines and problem rows."""
    file = SqliteFile(path, create=False)
    try:
        invalid = list(file.iter_invalid())
        replaced = {line.key for line in invalid if line.journaled}
        counts: Counter[str] = Counter({OutcomeKind.INVALID: len(invalid)})
        usage, requests, problems = Usage(), 0, []
        for row in file.iter_rows():
            requests += 1
            usage += row.usage or Usage()
            if row.key in replaced:
                continue
            kind = kind_of(row)
            counts[kind] += 1
            if row.error and kind != OutcomeKind.COMPLETED:
                problems.append(row)
    finally:
        file.close()
    return Status(+counts, usage, requests, invalid, problems)  # + drops kinds with no line


def _problem_line(row: JournalRow) -> str:
    task = f", task {row.task_id}" if row.task_id else ""
    return f"  {row.key} ({kind_of(row)}{task}): {in_cli_terms(row.error or '')}"


def print_status(path: Path, status: Status) -> None:
    """`status`, for people."""
    print(
        f"{path}: {status.counts.total()} lines, {status.requests} requests; "
        f"tokens {tokens(status.usage)}"
    )
    for kind, count in sorted(status.counts.items()):
        print(f"  {kind:<15} {count}")
    for line in status.invalid:
        where = f"line {line.line}" if line.line else line.key
        print(f"  {where} invalid: {line.reason}")
    for row in status.problems:
        print(_problem_line(row))


def status_record(path: Path, status: Status) -> Record:
    """`status --json`."""
    return {
        "journal": str(path),
        "ok": status.ok,
        "lines": status.counts.total(),
        "requests": status.requests,
        "counts": dict(sorted(status.counts.items())),
        "usage": usage_record(status.usage),
        "invalid_lines": invalid_records(status.invalid),
        "problems": [
            {
                "id": row.key,
                "kind": str(kind_of(row)),
                "task_id": row.task_id,
                "error": in_cli_terms(row.error or ""),
            }
            for row in status.problems
        ],
    }


def run_status(args: argparse.Namespace) -> int:
    """``status``: print a journal's counts and failures; exit 1 when any request failed."""
    journal = journal_path(args.journal)
    try:
        status = read_status(journal)
    except FileNotFoundError as exc:
        raise UsageError(
            f"no journal at {journal}; pass the journal.sqlite3 that batch wrote "
            "(or the --out directory that holds it)"
        ) from exc
    except (JournalError, sqlite3.DatabaseError) as exc:
        raise UsageError(
            f"{journal} is not a batch journal ({exc}); "
            "pass the journal.sqlite3 that batch wrote into its --out directory"
        ) from exc
    except (OSError, ValueError, sqlite3.Error) as exc:
        raise UsageError(f"cannot read journal {journal}: {exc}") from exc
    if args.json:
        emit(status_record(journal, status))
    else:
        print_status(journal, status)
    return EXIT_OK if status.ok else EXIT_FAILED
