"""Progress reporting for bulk runs: a live bar on a terminal, plain lines elsewhere."""

from __future__ import annotations

import sys
import time
from types import TracebackType
from typing import Protocol, Self, TextIO

from ..batch import BatchSummary, Outcome


class Reporter(Protocol):
    """Receives each outcome of a run and the final summary."""

    def __enter__(self) -> Self: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...

    def outcome(self, outcome: Outcome, *, submitted: int, running: int) -> None:
        """Report one finished request with the session's live counts."""

    def summary(self, summary: BatchSummary, *, journal: str) -> None:
        """Report the end of the run."""


def _counts_line(summary: BatchSummary) -> str:
    counts = ", ".join(f"{kind} {count}" for kind, count in sorted(summary.counts.items()))
    usage = summary.usage
    return (
        f"{summary.total} requests in {summary.wall_time:.1f}s: {counts or 'nothing to do'}; "
        f"tokens in {usage.input_tokens}, out {usage.output_tokens}, total {usage.total_tokens}"
    )


class PlainReporter:
    """One log line per finished request, for pipes, files and CI logs."""

    def __init__(self, total: int, stream: TextIO = sys.stdout) -> None:
        self._total = total
        self._done = 0
        self._stream = stream
        self._started = time.monotonic()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stream.flush()

    def outcome(self, outcome: Outcome, *, submitted: int, running: int) -> None:
        """Print the outcome with progress so far."""
        self._done += 1
        detail = ", ".join(outcome.files) if outcome.files else (outcome.error or "")
        print(
            f"[{self._done}/{self._total}] {outcome.key} {outcome.kind} ({outcome.source})"
            + (f": {detail}" if detail else ""),
            file=self._stream,
        )

    def summary(self, summary: BatchSummary, *, journal: str) -> None:
        """Print the final counts."""
        print(f"done: {_counts_line(summary)}; journal {journal}", file=self._stream)


class RichReporter:
    """A live bar with submitted / running / completed / failed, rate and ETA."""

    def __init__(self, total: int) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self._console = Console(stderr=True)
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
        self._completed = self._failed = 0
        self._started = time.monotonic()

    def __enter__(self) -> Self:
        self._progress.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._progress.stop()

    def outcome(self, outcome: Outcome, *, submitted: int, running: int) -> None:
        """Advance the bar and refresh the live counts."""
        if outcome.ok:
            self._completed += 1
        else:
            self._failed += 1
            self._console.print(f"[red]{outcome.key}[/red] {outcome.kind}: {outcome.error}")
        elapsed = max(time.monotonic() - self._started, 1e-9)
        self._progress.update(
            self._task,
            advance=1,
            counts=f"submitted {submitted} · running {running} · "
            f"[green]completed {self._completed}[/green] · [red]failed {self._failed}[/red]",
            rate=f"{(self._completed + self._failed) / elapsed:.1f}/s",
        )

    def summary(self, summary: BatchSummary, *, journal: str) -> None:
        """Print the final counts under the bar."""
        self._console.print(f"done: {_counts_line(summary)}; journal {journal}")


def make_reporter(total: int, *, plain: bool) -> Reporter:
    """The rich bar when wanted and available on a terminal, else plain lines."""
    if not plain and sys.stderr.isatty():
        try:
            return RichReporter(total)
        except ImportError:
            pass
    return PlainReporter(total)
