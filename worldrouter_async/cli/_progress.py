"""Progress reporting for bulk runs: a live bar on a terminal, plain lines elsewhere.

Both refresh from the session's live counts on a timer, not only when a request finishes:
on the real API the first task takes 5 to 90 seconds, and until then the submitted and
running counts are the only sign of progress. The timer runs in the reporter's own task
group, for exactly as long as its ``async with`` block.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from types import TracebackType
from typing import TYPE_CHECKING, Final, Protocol, Self, TextIO

import anyio
from anyio.abc import TaskGroup

from .._handles import TaskHandle
from .._stats import SessionStats
from ..batch import BatchSummary, Outcome, OutcomeKind, Source
from ..models import Usage
from ._errors import in_cli_terms

if TYPE_CHECKING:
    from rich.console import Console

StatsSource = Callable[[], SessionStats]
"""Returns the session's live counts (`Session.stats`)."""

#: Seconds between refreshes of the live bar.
BAR_INTERVAL: Final = 0.5
#: Seconds between progress lines in plain mode, so CI logs stay short.
LINE_INTERVAL: Final = 10.0


class Reporter(Protocol):
    """Shows a run's progress while open, each outcome, and the final summary."""

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...

    def outcome(self, outcome: Outcome) -> None:
        """Report one finished request."""

    def summary(self, summary: BatchSummary, *, journal: str) -> None:
        """Report the end of the run."""


def tokens(usage: Usage) -> str:
    """Token usage in words: ``in 10, out 20, total 30``."""
    return f"in {usage.input_tokens}, out {usage.output_tokens}, total {usage.total_tokens}"


def summary_line(summary: BatchSummary, *, lines: int, journal: str) -> str:
    """The one line that ends a run: every input line counted once, tokens, the journal.

    Lines the run never read (it stopped sending creates first) are counted as ``not read``,
    so the counts add up to `lines`. A job finished before this run says so instead.
    """
    counts = [f"{kind} {count}" for kind, count in sorted(summary.counts.items())]
    if (not_read := lines - summary.total) > 0:
        counts.append(f"not read {not_read}")
    listed = ", ".join(counts) or "nothing to do"
    if summary.already_done:
        return (
            f"done: the job was already finished, nothing created: {lines} lines, {listed}; "
            f"tokens {tokens(summary.job_usage)}; journal {journal}"
        )
    usage = f"tokens {tokens(summary.usage)}"
    if summary.job_usage != summary.usage:  # a resumed job: its earlier runs cost too
        usage = f"tokens this run {tokens(summary.usage)}; whole job {tokens(summary.job_usage)}"
    return f"done: {lines} lines in {summary.wall_time:.1f}s: {listed}; {usage}; journal {journal}"


def outcome_line(outcome: Outcome) -> str:
    """One finished request in words (an invalid one by its input line), in CLI terms."""
    if outcome.kind == OutcomeKind.INVALID:
        name = f"line {outcome.line}" if outcome.line else outcome.key
        return f"{name} invalid: {in_cli_terms(outcome.error or '')}"
    detail = ", ".join(outcome.files) if outcome.files else in_cli_terms(outcome.error or "")
    return f"{outcome.key} {outcome.kind} ({outcome.source})" + (f": {detail}" if detail else "")


class _Refreshing:
    """While open (``async with``): `_start`, then `_refresh` every `interval` seconds in a
    task of its own, then `_stop`, whatever ends the block."""

    _interval: float
    _task_group: TaskGroup | None = None

    def _start(self) -> None:
        """Called once when the block opens."""

    def _refresh(self) -> None:
        """Called every `interval` seconds while the block is open."""

    def _stop(self) -> None:
        """Called once when the block ends."""

    async def __aenter__(self) -> Self:
        self._start()
        self._task_group = anyio.create_task_group()
        await self._task_group.__aenter__()
        self._task_group.start_soon(self._refresh_until_closed)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._task_group is not None
        self._task_group.cancel_scope.cancel()
        try:
            await self._task_group.__aexit__(exc_type, exc, tb)
        finally:
            self._stop()

    async def _refresh_until_closed(self) -> None:
        while True:
            await anyio.sleep(self._interval)
            self._refresh()


class _LiveReporter(_Refreshing):
    """Counts outcomes and refreshes its display every `interval` seconds while open."""

    def __init__(self, total: int, stats: StatsSource, *, interval: float) -> None:
        self._total = total
        self._stats = stats
        self._interval = interval
        self._completed = self._failed = self._invalid = 0
        self._started = time.monotonic()

    def _count(self, outcome: Outcome) -> None:
        if outcome.ok:
            self._completed += 1
        elif outcome.kind == OutcomeKind.INVALID:
            self._invalid += 1
        else:
            self._failed += 1

    @property
    def _done(self) -> int:
        """Input lines reported so far."""
        return self._completed + self._failed + self._invalid

    def _live_counts(self, *, markup: bool = False) -> str:
        """Submitted and running from the session; the rest (every line once) from outcomes."""
        stats = self._stats()
        completed, failed = f"completed {self._completed}", f"failed {self._failed}"
        invalid = f" · invalid {self._invalid}" if self._invalid else ""
        if markup:
            completed, failed = f"[green]{completed}[/green]", f"[red]{failed}[/red]"
        return (
            f"submitted {stats.creates} · running {stats.pending} · {completed} · {failed}"
            + invalid
        )

    def _rate(self) -> str:
        elapsed = max(time.monotonic() - self._started, 1e-9)
        return f"{self._done / elapsed:.1f}/s"


class PlainReporter(_LiveReporter):
    """A line per finished request and a progress line every `interval` seconds.

    The progress line is skipped when nothing changed since the last one, so an idle wait
    adds nothing to a log; so is a request an earlier run already completed (a finished job
    rerun says so once, in its summary, not once per request).
    """

    def __init__(
        self,
        total: int,
        stats: StatsSource,
        *,
        stream: TextIO = sys.stdout,
        interval: float = LINE_INTERVAL,
    ) -> None:
        super().__init__(total, stats, interval=interval)
        self._stream = stream
        self._last_line = ""

    def outcome(self, outcome: Outcome) -> None:
        """Print the outcome with progress so far."""
        self._count(outcome)
        if outcome.ok and outcome.source == Source.JOURNAL:
            return  # completed by an earlier run: the summary counts it
        done = self._done
        print(f"[{done}/{self._total}] {outcome_line(outcome)}", file=self._stream)

    def _refresh(self) -> None:
        line = f"progress: {self._done}/{self._total} done · " + (self._live_counts())
        if line != self._last_line:
            self._last_line = line
            print(line, file=self._stream, flush=True)

    def _stop(self) -> None:
        self._stream.flush()

    def summary(self, summary: BatchSummary, *, journal: str) -> None:
        """Print the final counts."""
        print(summary_line(summary, lines=self._total, journal=journal), file=self._stream)


class RichReporter(_LiveReporter):
    """A live bar with submitted / running / completed / failed, rate and ETA."""

    def __init__(
        self,
        total: int,
        stats: StatsSource,
        *,
        console: Console | None = None,
        interval: float = BAR_INTERVAL,
    ) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        super().__init__(total, stats, interval=interval)
        self._console = console or Console(stderr=True)
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[counts]}"),
            TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=self._console,
        )
        self._task = self._progress.add_task("generating", total=total, counts="", rate="")

    def outcome(self, outcome: Outcome) -> None:
        """Advance the bar and refresh the live counts."""
        self._count(outcome)
        if not outcome.ok:
            self._console.print(outcome_line(outcome), style="red", markup=False)
        self._progress.advance(self._task)
        self._refresh()

    def _start(self) -> None:
        self._refresh()
        self._progress.start()

    def _refresh(self) -> None:
        self._progress.update(
            self._task,
            counts=self._live_counts(markup=True),
            rate=self._rate(),
        )

    def _stop(self) -> None:
        self._progress.stop()

    def summary(self, summary: BatchSummary, *, journal: str) -> None:
        """Print the final counts under the bar."""
        line = summary_line(summary, lines=self._total, journal=journal)
        self._console.print(line, markup=False, highlight=False)


def make_reporter(
    total: int, *, plain: bool, stats: StatsSource, stream: TextIO | None = None
) -> Reporter:
    """The rich bar when wanted and available on a terminal, else plain lines on `stream`.

    `stream` defaults to stdout; `--json` passes stderr, so stdout carries only JSON.
    """
    if not plain and sys.stderr.isatty():
        try:
            return RichReporter(total, stats)
        except ImportError:
            pass
    return PlainReporter(total, stats, stream=stream or sys.stdout)


class TaskStatusLine(_Refreshing):
    """While `generate` or `wait` waits on a terminal: the task's ID, then a live status line.

    A task takes seconds to minutes, so the terminal shows which task it is (the ID `wait`
    needs) and its state and elapsed time, refreshed every `interval` seconds, until the
    block ends; the line is then cleared, leaving stdout's file paths alone.
    """

    def __init__(
        self,
        handle: TaskHandle,
        *,
        heading: str,
        console: Console | None = None,
        interval: float = BAR_INTERVAL,
    ) -> None:
        from rich.console import Console

        self._handle = handle
        self._heading = heading
        self._console = console or Console(stderr=True)
        self._interval = interval
        self._started = time.monotonic()
        self._status = self._console.status(self._text())

    def _text(self) -> str:
        elapsed = time.monotonic() - self._started
        return f"task {self._handle.task_id}: {self._handle.status or 'waiting'} · {elapsed:.0f}s"

    def _start(self) -> None:
        self._console.print(self._heading, markup=False, highlight=False)
        self._status.start()

    def _refresh(self) -> None:
        self._status.update(self._text())

    def _stop(self) -> None:
        self._status.stop()


def task_status_line(handle: TaskHandle, *, heading: str) -> AbstractAsyncContextManager[object]:
    """A `TaskStatusLine` when stdout is a terminal and rich is installed, else nothing.

    Piped output (a script reading the file paths) gets nothing extra.
    """
    if sys.stdout.isatty():
        try:
            return TaskStatusLine(handle, heading=heading)
        except ImportError:
            pass
    return contextlib.nullcontext()
