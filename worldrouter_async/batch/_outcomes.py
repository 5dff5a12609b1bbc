"""What a bulk run reports: one `Outcome` per request, and the summary of a run."""

from __future__ import annotations

import time
from collections import Counter
from enum import StrEnum
from typing import Final

from attrs import define, field

from ..models import Usage
from .journal import JournalRow, State


class OutcomeKind(StrEnum):
    """How one request of a run ended; `worldrouter-async status` counts the same kinds."""

    COMPLETED = "completed"
    FAILED = "failed"  # the task failed, or its create was refused for good (400, 413, 422)
    EXPIRED = "expired"  # the server forgot the task (404 when tracked again)
    AMBIGUOUS = "ambiguous"  # the create may have landed; see retry_ambiguous_creates
    PENDING = "pending"  # not created (refused for now, or creates stopped); a rerun sends it
    UNFINISHED = "unfinished"  # deadline or shutdown; a rerun tracks it again
    DOWNLOAD_FAILED = "download_failed"  # done, but files are missing; a rerun fetches them
    INVALID = "invalid"  # unreadable, repeats a key, or changed since the journal recorded it


SUCCESS: Final = frozenset({OutcomeKind.COMPLETED})


class Source(StrEnum):
    """What this run did for a request."""

    NEW = "new"  # created for the first time
    RESUBMITTED = "resubmitted"  # in flight at a crash: sent again with the same key
    TRACKED = "tracked"  # created earlier: tracked again by task ID
    JOURNAL = "journal"  # nothing sent: reported from the journal


def kind_of(row: JournalRow) -> OutcomeKind:
    """The outcome a journal row stands for when nothing more is done for it."""
    if row.state == State.COMPLETED:
        return OutcomeKind.DOWNLOAD_FAILED if row.error else OutcomeKind.COMPLETED
    return {
        State.PENDING: OutcomeKind.PENDING,
        State.SUBMITTING: OutcomeKind.AMBIGUOUS,
        State.CREATED: OutcomeKind.UNFINISHED,
        State.FAILED: OutcomeKind.FAILED,
        State.EXPIRED: OutcomeKind.EXPIRED,
    }[row.state]


@define(frozen=True)
class Outcome:
    """The result of one request of a bulk run."""

    key: str
    kind: OutcomeKind
    source: Source
    task_id: str | None = None
    urls: tuple[str, ...] = ()
    files: tuple[str, ...] = ()
    usage: Usage | None = None
    error: str | None = None
    #: The input line of an invalid outcome (None when it did not come from a file).
    line: int | None = None

    @property
    def ok(self) -> bool:
        """True when the request completed (and its files, if wanted, are on disk)."""
        return self.kind in SUCCESS


@define(frozen=True)
class BatchSummary:
    """Counts by outcome kind and source, summed token usage and wall time of a run.

    `usage` is what this run's tasks used; `job_usage` adds what the journal recorded for the
    requests it reported as done earlier, so a resumed job still shows its whole cost.
    """

    counts: dict[str, int] = field(factory=dict)
    sources: dict[str, int] = field(factory=dict)
    usage: Usage = field(factory=Usage)
    wall_time: float = 0.0
    job_usage: Usage = field(factory=Usage)

    @property
    def total(self) -> int:
        """How many requests the run reported on."""
        return sum(self.counts.values())

    @property
    def ok(self) -> bool:
        """True when every request completed."""
        return all(kind in SUCCESS for kind in self.counts)

    @property
    def already_done(self) -> bool:
        """True when the job was done before this run: all completed, all from the journal."""
        return bool(self.total) and self.ok and self.sources.keys() == {Source.JOURNAL}


class Tally:
    """A run's running counts, usage and wall time, read as a `BatchSummary`."""

    def __init__(self) -> None:
        self._counts: Counter[str] = Counter()
        self._sources: Counter[str] = Counter()
        self._usage = Usage()
        self._job_usage = Usage()
        self._started = self._ended = 0.0

    def start(self) -> None:
        """The run starts: wall time counts from now."""
        self._started = time.monotonic()

    def end(self) -> None:
        """The run ended: wall time stops."""
        self._ended = time.monotonic()

    def count(self, outcome: Outcome) -> None:
        """One more outcome; usage of requests done in an earlier run counts for the job only."""
        self._counts[outcome.kind] += 1
        self._sources[outcome.source] += 1
        if outcome.usage is not None:
            self._job_usage += outcome.usage
            if outcome.source != Source.JOURNAL:
                self._usage += outcome.usage

    @property
    def summary(self) -> BatchSummary:
        """Counts, usage and wall time so far."""
        end = self._ended or time.monotonic()
        return BatchSummary(
            counts=dict(self._counts),
            sources=dict(self._sources),
            usage=self._usage,
            wall_time=end - self._started if self._started else 0.0,
            job_usage=self._job_usage,
        )
