"""The CLI's progress reporters refresh from the session's counts before any request ends."""

from __future__ import annotations

import io
from typing import Any

import anyio
import pytest
from rich.console import Console

from worldrouter_async import SessionStats, Usage
from worldrouter_async.batch import BatchSummary, Outcome
from worldrouter_async.cli._progress import (
    PlainReporter,
    RichReporter,
    outcome_line,
    summary_line,
)

pytestmark = pytest.mark.anyio


class FakeSession:
    """Live counts a test moves by hand, read like `Session.stats`."""

    def __init__(self) -> None:
        self.creates = self.pending = 0

    def stats(self) -> SessionStats:
        return SessionStats(
            creates=self.creates,
            polls=0,
            retries=0,
            rate_limit_pauses=0,
            pending=self.pending,
            completed=0,
            failed=0,
            usage=Usage(),
        )


async def _wait_for(text: str, output: io.StringIO) -> None:
    with anyio.fail_after(10):
        while text not in output.getvalue():
            await anyio.sleep(0.005)


async def test_bar_shows_submitted_and_running_before_the_first_outcome() -> None:
    """With no request finished yet, the bar already counts what was sent and is running."""
    session = FakeSession()
    output = io.StringIO()
    console = Console(file=output, force_terminal=True, width=200, color_system=None)
    async with RichReporter(19, session.stats, console=console, interval=0.01):
        session.creates = session.pending = 19
        await _wait_for("submitted 19 · running 19 · completed 0 · failed 0", output)
        session.pending = 18
        await _wait_for("running 18", output)


async def test_plain_mode_prints_a_progress_line_on_a_timer_only_when_counts_change() -> None:
    """Plain mode logs submitted/running between outcomes, and nothing while they stand still."""
    session = FakeSession()
    session.creates = session.pending = 4
    output = io.StringIO()
    async with PlainReporter(4, session.stats, stream=output, interval=0.01) as reporter:
        await _wait_for("progress: 0/4 done · submitted 4 · running 4", output)
        session.pending = 3
        reporter.outcome(Outcome("p0", "completed", "new", files=("p0-0.png",)))
        await _wait_for("progress: 1/4 done · submitted 4 · running 3 · completed 1", output)
        for _ in range(5):  # several more timer periods with nothing new
            await anyio.sleep(0.02)
    lines = output.getvalue().splitlines()
    assert lines == [
        "progress: 0/4 done · submitted 4 · running 4 · completed 0 · failed 0",
        "[1/4] p0 completed (new): p0-0.png",
        "progress: 1/4 done · submitted 4 · running 3 · completed 1 · failed 0",
    ]


def _summary(**fields: Any) -> BatchSummary:
    return BatchSummary(**fields)


def test_summary_counts_lines_the_run_never_read() -> None:
    """Lines a stopped run did not read are counted, so the summary adds up to the file."""
    summary = _summary(counts={"pending": 4, "invalid": 1}, sources={"new": 4, "journal": 1})
    line = summary_line(summary, lines=8, journal="j")
    assert line.startswith("done: 8 lines in 0.0s: invalid 1, pending 4, not read 3; tokens in 0")


def test_summary_of_a_resumed_run_shows_the_whole_jobs_tokens() -> None:
    """A rerun that created little still shows what the job cost so far."""
    summary = _summary(
        counts={"completed": 3},
        sources={"journal": 2, "new": 1},
        usage=Usage(1, 10, 11),
        job_usage=Usage(3, 30, 33),
    )
    assert summary_line(summary, lines=3, journal="j") == (
        "done: 3 lines in 0.0s: completed 3; tokens this run in 1, out 10, total 11; "
        "whole job in 3, out 30, total 33; journal j"
    )


async def test_plain_mode_reports_a_finished_job_once() -> None:
    """Requests an earlier run completed print no line each; the summary says it all."""
    output = io.StringIO()
    async with PlainReporter(2, FakeSession().stats, stream=output) as reporter:
        for key in ("a", "b"):
            reporter.outcome(Outcome(key, "completed", "journal", files=(f"{key}-0.png",)))
    summary = _summary(counts={"completed": 2}, sources={"journal": 2}, job_usage=Usage(2, 20, 22))
    reporter.summary(summary, journal="j")
    assert output.getvalue().splitlines() == [
        "done: the job was already finished, nothing created: 2 lines, completed 2; "
        "tokens in 2, out 20, total 22; journal j"
    ]


def test_invalid_outcomes_are_named_by_their_input_line() -> None:
    """An invalid line is shown as 'line N', with its reason in CLI terms."""
    outcome = Outcome("line-4", "invalid", "journal", error="not valid JSON", line=4)
    assert outcome_line(outcome) == "line 4 invalid: not valid JSON"


async def test_live_counts_show_invalid_lines_apart_from_failures() -> None:
    """The live counter names invalid lines as such, so its counts add up to the file."""
    output = io.StringIO()
    async with PlainReporter(2, FakeSession().stats, stream=output, interval=0.01) as reporter:
        reporter.outcome(Outcome("line-1", "invalid", "journal", error="not valid JSON", line=1))
        await _wait_for(
            "progress: 1/2 done · submitted 0 · running 0 · completed 0 · failed 0 · invalid 1",
            output,
        )
