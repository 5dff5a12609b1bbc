"""Opening a PostgreSQL journal for a run: this worker joins the job, and the output (a
directory or a bucket prefix) is claimed for the job.

This is what a ``postgresql://`` journal given to `BatchRunner` means, as ``_local.py`` is for
a journal path. The claim (``_claim.py``) names the job by its UUID, which every worker of
the job shares, so they all accept one claim, while another job, or the job made again after
its database was lost or dropped, is refused before anything is sent. The claim's mark is
the job's committed rows and sends, read from the database: they only grow, so a mark any
worker wrote is never ahead of the job. It is moved every `MARK_INTERVAL` seconds and when
the worker leaves.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from functools import partial
from typing import Final

import anyio
import anyio.from_thread
import anyio.to_thread

from .._download import writer_tag
from ._claim import JournalName, OutputClaim, claim_output
from ._errors import JournalError
from ._outputs import Output
from .journal import HighWater, PostgresJournal

#: Seconds between two reads of the job's mark to move the output's claim.
MARK_INTERVAL: Final = 2.0


class JobMark:
    """A PostgreSQL job as the claim sees it (a `ClaimingJournal`): its UUID and its mark.

    The claim reads `high_water` from a worker thread; it is read from the database then,
    so a claim another worker moved meanwhile is never ahead of it.
    """

    def __init__(self, journal: PostgresJournal) -> None:
        self._journal = journal
        self._last: HighWater | None = None
        self.on_advance: Callable[[HighWater], None] | None = None

    @property
    def journal_id(self) -> str:
        """The job's UUID, the same for every worker of the job."""
        return self._journal.job_id

    @property
    def high_water(self) -> HighWater:
        """The job's committed rows and sends, read now (call from a worker thread)."""
        return anyio.from_thread.run(self._journal.read_high_water)

    async def advance(self) -> None:
        """Read the job's mark and hand it to `on_advance` (in a thread) if it moved."""
        mark = await self._journal.read_high_water()
        if mark != self._last and self.on_advance is not None:
            self._last = mark
            await anyio.to_thread.run_sync(self.on_advance, mark)


class PostgresJob:
    """A ``postgresql://`` journal the runner opens: join the job, claim the output for it.

    Args:
        journal: the job's journal, not yet open.
        output: the run's output, claimed for the job; None: no claim.
        new_journal: accept the output of a job that is gone (or lost records) as the user's
            choice to pay again; never an output another job in a database still owns.
    """

    def __init__(
        self, journal: PostgresJournal, output: Output | None, *, new_journal: bool
    ) -> None:
        self._journal = journal
        self._output = output
        self._new_journal = new_journal
        # The key holds no password: it is written into the output for all to read.
        self._name = JournalName(f"{journal.database} --job {journal.job}", journal.path)
        self._mark = JobMark(journal)
        self._claim: OutputClaim | None = None

    async def open(self) -> PostgresJournal:
        """Join the job, then claim the output for it (leaving the job on failure)."""
        await self._journal.open()
        try:
            if self._output is not None:
                claim = partial(
                    claim_output,
                    self._output,
                    self._mark,
                    self._name,
                    new_journal=self._new_journal,
                )
                self._claim = await anyio.to_thread.run_sync(claim)
                await self._remove_partials_of_dead_workers(self._output)
        except BaseException:
            await self._journal.aclose()  # shields its own work; its task group ends there
            raise
        return self._journal

    async def _remove_partials_of_dead_workers(self, output: Output) -> None:
        """Delete the partial files of this job's dead workers; the live ones (this worker
        among them) may be writing theirs."""
        alive = await self._journal.live_workers()
        await output.remove_partials(keep={writer_tag(w.host, w.pid) for w in alive})

    async def keep_claim(self) -> None:
        """Move the output's claim as the job advances, until cancelled."""
        if self._claim is None:
            return
        async with anyio.create_task_group() as task_group:
            task_group.start_soon(self._claim.keep_up)
            while True:
                await anyio.sleep(MARK_INTERVAL)
                with contextlib.suppress(JournalError):  # the run's next write reports it
                    await self._mark.advance()

    async def close(self) -> None:
        """Write the job's last mark into the claim (best effort), then leave the job."""
        if self._claim is not None:
            with anyio.CancelScope(shield=True):
                with contextlib.suppress(JournalError):  # the run already reports it
                    await self._mark.advance()
                await anyio.to_thread.run_sync(self._claim.flush)
        # Not inside a scope of ours: the journal's heartbeat task group ends in `aclose`.
        await self._journal.aclose()
