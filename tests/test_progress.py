"""The CLI's progress reporters refresh from the session's counts before any request ends."""

from __future__ import annotations

import io

import anyio
import pytest
from rich.console import Console

from worldrouter_async import SessionStats, Usage
from worldrouter_async.batch import Outcome
from worldrouter_async.cli._progress import PlainReporter, RichReporter

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
