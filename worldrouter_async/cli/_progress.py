"""Progress reporting for bulk runs: a live bar on a terminal, plain lines elsewhere.

Both refresh from the session's live counts on a timer, not only when a request finishes:
on the real API the first task takes 5 to 90 seconds, and until then the submitted and
running counts are the only sign of progress. The timer runs in the reporter's own task
group, for exactly as long as its ``async with`` block.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING, Final, Protocol, Self, TextIO

import anyio
from anyio.abc import TaskGroup

from .._stats import SessionStats
from ..batch import BatchSummary, Outcome

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


def _counts_line(summary: BatchSummary) -> str:
    counts = ", ".join(f"{kind} {count}" for kind, count in sorted(summary.counts.items()))
    usage = summary.usage
    return (
        f"{summary.total} requests in {summary.wall_time:.1f}s: {counts or 'nothing to do'}; "
        f"tokens in {usage.input_tokens}, out {usage.output_tokens}, total {usage.total_tokens}"
    )


class _LiveReporter:
    """Counts outcomes and calls `_refresh` every `interval` seconds while open."""

    def __init__(self, total: int, stats: StatsSource, *, interval: float) -> None:
        self._total = total
        self._stats = stats
        self._interval = interval
        self._completed = self._failed = 0
        self._started = time.monotonic()
        self._task_group: TaskGroup | None = None

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

    def _count(self, outcome: Outcome) -> None:
        if outcome.ok:
            self._completed += 1
        else:
            self._failed += 1

    def _live_counts(self, *, markup: bool = False) -> str:
        """Submitted and running from the session; completed and failed from outcomes."""
        stats = self._stats()
        completed, failed = f"completed {self._completed}", f"failed {self._failed}"
        if markup:
            completed, failed = f"[green]{completed}[/green]", f"[red]{failed}[/red]"
        return f"submitted {stats.creates} · running {stats.pending} · {completed} · {failed}"

    def _rate(self) -> str:
        elapsed = max(time.monotonic() - self._started, 1e-9)
        return f"{(self._completed + self._failed) / elapsed:.1f}/s"

    def _start(self) -> None:
        """Begin showing progress (before the first refresh)."""

    def _refresh(self) -> None:
        """Show the live counts now."""

    def _stop(self) -> None:
        """Stop showing progress."""


class PlainReporter(_LiveReporter):
    """A line per finished request and a progress line every `interval` seconds.

    The progress line is skipped when nothing changed since the last one, so an idle wait
    adds nothing to a log.
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
        detail = ", ".join(outcome.files) if outcome.files else (outcome.error or "")
        print(
            f"[{self._completed + self._failed}/{self._total}] {outcome.key} {outcome.kind} "
            f"({outcome.source})" + (f": {detail}" if detail else ""),
            file=self._stream,
        )

    def _refresh(self) -> None:
        line = f"progress: {self._completed + self._failed}/{self._total} done · " + (
            self._live_counts()
        )
        if line != self._last_line:
            self._last_line = line
            print(line, file=self._stream, flush=True)

    def _stop(self) -> None:
        self._stream.flush()

    def summary(self, summary: BatchSummary, *, journal: str) -> None:
        """Print the final counts."""
        print(f"done: {_counts_line(summary)}; journal {journal}", file=self._stream)


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
            self._console.print(f"[red]{outcome.key}[/red] {outcome.kind}: {outcome.error}")
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
        self._console.print(f"done: {_counts_line(summary)}; journal {journal}")


def make_reporter(total: int, *, plain: bool, stats: StatsSource) -> Reporter:
    """The rich bar when wanted and available on a terminal, else plain lines."""
    if not plain and sys.stderr.isatty():
        try:
            return RichReporter(total, stats)
        except ImportError:
            pass
    return PlainReporter(total, stats)
