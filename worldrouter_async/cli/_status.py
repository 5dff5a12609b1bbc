"""``status``: a journal's accounting, from the file alone, while or after a batch runs.

Every input line of the last run counts once: each request row by its state, each invalid
line (recorded with its number and reason) as ``invalid``; a line whose edited request no
longer matches its row counts as invalid instead of that row. Rows are streamed, never all
held in memory, however long the journal. A ``postgresql://`` journal's job adds its live
workers and the rows each holds.
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
from collections import Counter
from pathlib import Path
from typing import Final

from attrs import define, field

from ..batch import InvalidLine, JournalError, JournalRow, OutcomeKind, kind_of
from ..batch.journal import LiveWorker, PostgresJournal, SqliteFile, is_postgres_url, redact
from ..models import Usage
from ._errors import EXIT_FAILED, EXIT_OK, UsageError, in_cli_terms
from ._json import Record, emit, invalid_records, usage_record
from ._progress import tokens

#: The journal `batch` writes into its ``--out`` directory.
JOURNAL_NAME = "journal.sqlite3"


def journal_path(given: Path) -> Path:
    """The journal `given` names: the file itself, or ``DIR/journal.sqlite3`` for an out dir."""
    return given / JOURNAL_NAME if given.is_dir() else given


#: The reason `status` gives for a create whose answer was never recorded and no error either:
#: its run was killed (or is still waiting for the answer) after committing ``submitting``.
UNANSWERED: Final = (
    "its create was sent but no answer was recorded (the run sending it was killed, or is "
    "still waiting); rerun with --retry-ambiguous only if the server deduplicates creates by "
    "Idempotency-Key"
)


@define(frozen=True)
class Status:
    """What a journal holds: counts by kind, token usage, invalid lines and problem rows."""

    counts: Counter[str]
    usage: Usage
    requests: int
    invalid: list[InvalidLine]
    problems: list[JournalRow]
    #: The live workers of a shared job (None for a journal file).
    workers: list[LiveWorker] | None = None

    @property
    def ok(self) -> bool:
        """True when every line completed."""
        return self.counts.keys() <= {OutcomeKind.COMPLETED}


@define
class _Tally:
    """Counts rows one at a time, keeping only invalid lines and problem rows."""

    invalid: list[InvalidLine]
    counts: Counter[str] = field(factory=Counter)
    usage: Usage = field(factory=Usage)
    requests: int = 0
    problems: list[JournalRow] = field(factory=list)
    #: Rows whose edited input line counts as invalid instead.
    replaced: set[str] = field(init=False)

    def __attrs_post_init__(self) -> None:
        self.replaced = {line.key for line in self.invalid if line.journaled}

    def add(self, row: JournalRow) -> None:
        self.requests += 1
        self.usage += row.usage or Usage()
        if row.key in self.replaced:
            return
        kind = kind_of(row)
        self.counts[kind] += 1
        if kind != OutcomeKind.COMPLETED and (row.error or kind == OutcomeKind.AMBIGUOUS):
            self.problems.append(row)

    def status(self, workers: list[LiveWorker] | None = None) -> Status:
        counts = self.counts + Counter({OutcomeKind.INVALID: len(self.invalid)})
        return Status(counts, self.usage, self.requests, self.invalid, self.problems, workers)


def read_status(path: Path) -> Status:
    """Count `path` in one streaming pass, keeping only invalid lines and problem rows."""
    file = SqliteFile(path, create=False)
    try:
        tally = _Tally(list(file.iter_invalid()))
        for row in file.iter_rows():
            tally.add(row)
    finally:
        file.close()
    return tally.status()


async def read_shared_status(url: str, job: str) -> Status:
    """Count the rows of `job` in a PostgreSQL journal a page at a time, and its workers."""
    store = PostgresJournal(url, job=job)
    await store.open(join=False)
    try:
        tally = _Tally(await store.invalid_lines())
        async for row in store.iter_rows():
            tally.add(row)
        return tally.status(await store.live_workers())
    finally:
        await store.aclose()


def _reason(row: JournalRow) -> str:
    """Why a row is a problem; a create cut off with its worker recorded no error of its own."""
    return in_cli_terms(row.error or UNANSWERED)


def _problem_line(row: JournalRow) -> str:
    task = f", task {row.task_id}" if row.task_id else ""
    return f"  {row.key} ({kind_of(row)}{task}): {_reason(row)}"


def print_status(path: Path | str, status: Status) -> None:
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
    if status.workers is not None:
        print(f"workers alive: {len(status.workers)}")
        for worker in status.workers:
            print(
                f"  worker {worker.id} on {worker.host} (pid {worker.pid}, since "
                f"{worker.started_at:%Y-%m-%d %H:%M:%S %Z}): holds {worker.holds} rows"
            )


def status_record(path: Path | str, status: Status) -> Record:
    """`status --json` (with ``workers`` for a shared job)."""
    workers = {} if status.workers is None else {"workers": [_worker(w) for w in status.workers]}
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
                "error": _reason(row),
            }
            for row in status.problems
        ],
        **workers,
    }


def _worker(worker: LiveWorker) -> Record:
    return {
        "id": worker.id,
        "host": worker.host,
        "pid": worker.pid,
        "started_at": worker.started_at.isoformat(),
        "holds": worker.holds,
    }


def run_status(args: argparse.Namespace) -> int:
    """``status``: print a journal's counts and failures; exit 1 when any request failed."""
    location = args.journal_location or args.journal
    if location is None:
        raise UsageError("status needs a journal: status OUT_DIR, or --journal PATH_OR_URL")
    if is_postgres_url(location):
        return _shared_status(args, location)
    journal = journal_path(Path(location))
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
    return _show(args, journal, status)


def _shared_status(args: argparse.Namespace, url: str) -> int:
    if not args.job:
        raise UsageError("status --journal postgresql://... needs --job NAME, as batch ran it")
    try:
        status = asyncio.run(read_shared_status(url, args.job))
    except JournalError as exc:
        raise UsageError(str(exc)) from None
    return _show(args, f"{redact(url)} job {args.job}", status)


def _show(args: argparse.Namespace, journal: Path | str, status: Status) -> int:
    if args.json:
        emit(status_record(journal, status))
    else:
        print_status(journal, status)
    return EXIT_OK if status.ok else EXIT_FAILED
